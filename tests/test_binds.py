"""Listening on several sockets at once: --port, --uds, --bind, --fd and systemd socket activation.

Every server here is a real ``python -m palfrey`` process in its own session,
killed (with its workers) in a ``finally``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from server_process import WAIT, ServerProcess, palfrey_command, run_to_completion

BANNER = re.compile(r"Palfrey running on (\S+)")

APP = """
import os
import time


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/block":
        # Blocks this worker's event loop, so the next connection goes to another worker.
        time.sleep(float(scope["query_string"] or b"0.6"))
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


def banner_addresses(server: ServerProcess, count: int) -> list[str]:
    return [match.group(1) for match in server.wait_for_lines(BANNER, count)]


@contextmanager
def palfrey(*args: str, env: dict[str, str] | None = None, **popen) -> Iterator[ServerProcess]:
    server = ServerProcess(palfrey_command(*args), env=env, **popen)
    try:
        yield server
    finally:
        server.cleanup()


def run(*args: str, **popen) -> subprocess.CompletedProcess[str]:
    """``palfrey ARGS`` to completion; its whole process group is killed in any case."""
    return run_to_completion(palfrey_command(*args), **popen)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX paths are limited to about 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pf-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def app_dir(short_dir: Path) -> Path:
    (short_dir / "bindapp.py").write_text(APP)
    return short_dir


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock
    finally:
        sock.close()


def get(address: str, path: str = "/") -> str:
    """The body of GET ``path`` on a banner address (``http://...`` or ``unix:...``)."""
    if address.startswith("unix:"):
        transport = httpx.HTTPTransport(uds=address.removeprefix("unix:"))
        with httpx.Client(transport=transport, timeout=WAIT) as client:
            response = client.get("http://localhost" + path)
    else:
        with httpx.Client(timeout=WAIT) as client:
            response = client.get(address + path)
    assert response.status_code == 200
    return response.text


def tcp_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


def worker_pids(server: ServerProcess, count: int) -> set[int]:
    (match,) = server.wait_for_lines(r"Serving with (\d+) worker process(?:es)?: ([\d, ]+)")
    assert int(match.group(1)) == count
    pids = {int(pid) for pid in match.group(2).split(",")}
    assert len(pids) == count
    assert server.process.pid not in pids
    return pids


def answering_workers(address: str) -> set[int]:
    """The workers that answer on ``address``: while one worker's loop is blocked, a new
    connection to the same socket can only be accepted by another one."""
    with ThreadPoolExecutor(1) as pool:
        for _ in range(3):
            blocked = pool.submit(get, address, "/block?0.8")
            time.sleep(0.3)
            other = int(get(address))
            first = int(blocked.result(timeout=WAIT))
            if first != other:
                return {first, other}
    return {first}


def socket_mode(path: Path) -> int:
    info = os.stat(path)
    assert stat.S_ISSOCK(info.st_mode)
    return stat.S_IMODE(info.st_mode)


@pytest.mark.parametrize("workers", [1, 2])
def test_tcp_uds_bind_and_fd_all_answer(
    app_dir: Path, listening_socket: socket.socket, workers: int
) -> None:
    uds = app_dir / "a.sock"
    bound_unix = app_dir / "b.sock"
    fd = listening_socket.fileno()
    args = ["--app-dir", str(app_dir), "bindapp:app", "--lifespan", "off"]
    args += ["--host", "127.0.0.1", "--port", "0", "--uds", str(uds)]
    args += ["--bind", f"fd://{fd}", "--bind", f"unix:{bound_unix}", "--bind", "127.0.0.1:0"]
    with palfrey(*args, "--workers", str(workers), pass_fds=(fd,)) as server:
        addresses = banner_addresses(server, 5)
        # The order: --host/--port, --uds, then each --bind as given.
        assert addresses[1:4] == [f"unix:{uds}", tcp_url(listening_socket), f"unix:{bound_unix}"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", addresses[0])
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", addresses[4])
        assert addresses[0] != addresses[4]
        pids = {server.process.pid} if workers == 1 else worker_pids(server, workers)
        for address in addresses:
            assert int(get(address)) in pids
        assert socket_mode(uds) == 0o666
        assert socket_mode(bound_unix) == 0o666
        if workers > 1:
            # The supervisor bound each socket once: every worker serves every one of them.
            for address in (addresses[0], f"unix:{uds}", tcp_url(listening_socket)):
                assert answering_workers(address) == pids, address
        status = server.stop()
        assert status == 0, server.output
    assert not uds.exists()
    assert not bound_unix.exists()
    assert "Traceback" not in server.output
    assert server.output.count("Palfrey running on") == 5, server.output
    # Palfrey closed its copy of the inherited socket without shutting it down: the
    # socket the test passed still listens.
    listening_socket.settimeout(1)
    with socket.create_connection(listening_socket.getsockname(), timeout=WAIT):
        listening_socket.accept()[0].close()


def systemd_launcher(sock: socket.socket) -> list[str]:
    """A tiny wrapper that puts ``sock`` on fd 3 and sets LISTEN_PID to its own pid, which
    ``exec`` hands to palfrey (the pid is only known after the fork)."""
    code = (
        "import os, sys\n"
        "fd = int(sys.argv[1])\n"
        "if fd != 3:\n"
        "    os.dup2(fd, 3)\n"
        "    os.close(fd)\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'palfrey', *sys.argv[2:]])\n"
    )
    return [sys.executable, "-c", code, str(sock.fileno())]


@pytest.mark.parametrize("workers", [1, 2])
def test_systemd_socket_activation(
    app_dir: Path, listening_socket: socket.socket, workers: int
) -> None:
    fd = listening_socket.fileno()
    command = systemd_launcher(listening_socket)
    command += ["--app-dir", str(app_dir), "bindapp:app", "--lifespan", "off"]
    command += ["--workers", str(workers)]
    server = ServerProcess(
        command, env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}, pass_fds=(fd,)
    )
    try:
        (address,) = banner_addresses(server, 1)
        assert address == tcp_url(listening_socket)
        pids = {server.process.pid} if workers == 1 else worker_pids(server, workers)
        assert int(get(address)) in pids
        # Only the systemd socket: --host/--port were not given, so port 8000 is not bound.
        assert len(server.wait_for_lines(BANNER, 1)) == 1
        if workers > 1:
            assert answering_workers(address) == pids
        assert server.stop() == 0, server.output
    finally:
        server.cleanup()
    assert server.output.count("Palfrey running on") == 1, server.output


def test_systemd_variables_for_another_process_are_ignored(
    app_dir: Path, listening_socket: socket.socket
) -> None:
    # LISTEN_PID names another process: fd 3 is not ours, so palfrey binds --host/--port.
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "1"}
    with palfrey(
        "--app-dir", str(app_dir), "bindapp:app", "--lifespan", "off", "--port", "0", env=env
    ) as server:
        (address,) = banner_addresses(server, 1)
        assert address != tcp_url(listening_socket)
        assert int(get(address)) == server.process.pid
        assert server.stop() == 0


def test_uds_mode_sets_the_socket_file_permissions(app_dir: Path) -> None:
    uds = app_dir / "a.sock"
    bound_unix = app_dir / "b.sock"
    # A socket file left behind by a previous run does not stop a new one from binding.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(uds))
    stale.close()
    assert uds.exists()
    args = ["--app-dir", str(app_dir), "bindapp:app", "--lifespan", "off", "--uds", str(uds)]
    with palfrey(*args, "--bind", f"unix:{bound_unix}", "--uds-mode", "600") as server:
        addresses = banner_addresses(server, 2)
        assert addresses == [f"unix:{uds}", f"unix:{bound_unix}"]
        assert socket_mode(uds) == 0o600
        assert socket_mode(bound_unix) == 0o600
        assert int(get(addresses[0])) == server.process.pid
        assert server.stop() == 0, server.output
    # No TCP socket was opened: only unix sockets were named.
    assert "http://" not in server.output
    assert not uds.exists()
    assert not bound_unix.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_socket_file_removed_after_a_signal_under_the_supervisor(
    app_dir: Path, signum: int
) -> None:
    uds = app_dir / "s.sock"
    args = ["--app-dir", str(app_dir), "bindapp:app", "--lifespan", "off", "--uds", str(uds)]
    with palfrey(*args, "--workers", "2", "--uds-mode", "640") as server:
        (address,) = banner_addresses(server, 1)
        worker_pids(server, 2)
        assert socket_mode(uds) == 0o640
        get(address)
        assert server.stop(signum) == 0, server.output
    assert not uds.exists()


def test_a_regular_file_in_the_way_is_not_removed(short_dir: Path) -> None:
    path = short_dir / "important.txt"
    path.write_text("keep me")
    result = run("palfrey.demo:app", "--lifespan", "off", "--uds", str(path))
    assert result.returncode == 1
    assert f"could not bind unix socket {path}" in result.stderr
    assert "Traceback" not in result.stderr
    assert path.read_text() == "keep me"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("nope", "expected HOST:PORT, [V6]:PORT, unix:PATH or fd://N"),
        ("unix:", "expected a path after 'unix:'"),
        ("fd://three", "expected a file descriptor number after 'fd://'"),
        ("127.0.0.1:99999", "expected HOST:PORT"),
    ],
)
def test_bad_bind_value_exits_2_naming_it(value: str, reason: str) -> None:
    result = run("palfrey.demo:app", "--bind", "127.0.0.1:0", "--bind", value)
    assert result.returncode == 2
    assert result.stderr.startswith(f"palfrey: error: --bind: entry {value!r}: {reason}")
    assert len(result.stderr.splitlines()) == 1
    assert "Palfrey running on" not in result.stderr


def test_bad_uds_mode_exits_2() -> None:
    result = run("palfrey.demo:app", "--uds", "/tmp/never.sock", "--uds-mode", "9")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "palfrey: error: --uds-mode: must be octal file permissions such as 660, got '9'"
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_bind_port_in_use_is_one_line(short_dir: Path, workers: int) -> None:
    uds = short_dir / "a.sock"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            *("palfrey.demo:app", "--lifespan", "off", "--uds", str(uds)),
            *("--bind", f"127.0.0.1:{port}", "--workers", str(workers)),
        )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line or "error" in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].endswith(f"could not bind 127.0.0.1:{port}: address already in use")
    assert "Traceback" not in result.stderr
    assert "Palfrey running on" not in result.stderr


def test_unusable_fd_is_one_line() -> None:
    # A file descriptor that is open but is not a socket.
    read_end, write_end = os.pipe()
    try:
        result = run("palfrey.demo:app", "--bind", f"fd://{read_end}", pass_fds=(read_end,))
    finally:
        os.close(read_end)
        os.close(write_end)
    assert result.returncode == 1, result.stderr
    assert f"could not use file descriptor {read_end}" in result.stderr
    assert "Traceback" not in result.stderr
