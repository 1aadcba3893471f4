"""``palfrey --workers``: the supervisor and its worker processes, through real sockets.

Every server binds 127.0.0.1 port 0 in its own session, so cleanup can kill the
supervisor's whole process group and no worker outlives a failing test. The
apps live in ``process_apps.py``; ``process_apps:pid`` answers with the pid of
the worker that served the request.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_process import ServerProcess, palfrey_command

import palfrey

ROOT = Path(__file__).resolve().parent.parent
BANNER = re.compile(r"Palfrey running on (http://\S+)")
SERVING_WITH = re.compile(r"Serving with \d+ worker process(?:es)?: ([\d, ]+)")
WORKER_SERVING = re.compile(r"Worker \[(\d+)\] is serving")

#: Bounds for anything that waits on the server.
STARTUP_TIMEOUT = 15.0
EVENT_TIMEOUT = 8.0
REQUEST_TIMEOUT = 5.0


class Supervisor(ServerProcess):
    """``palfrey --workers`` serving ``tests/process_apps.py`` on a free port."""

    def __init__(self, *args: str) -> None:
        command = palfrey_command("--app-dir", "tests", "--host", "127.0.0.1", "--port", "0")
        super().__init__([*command, *args])
        self.url = ""
        self.initial_pids: list[int] = []

    def wait_started(self) -> None:
        self.url = self.wait_for(BANNER, timeout=STARTUP_TIMEOUT).group(1)
        pids = self.wait_for(SERVING_WITH, timeout=STARTUP_TIMEOUT).group(1)
        self.initial_pids = [int(pid) for pid in pids.split(",")]


@contextlib.contextmanager
def palfrey_process(*args: str, started: bool = True) -> Iterator[Supervisor]:
    server = Supervisor(*args)
    try:
        if started:
            server.wait_started()
        yield server
    finally:
        server.cleanup()


def get(url: str, path: str = "/", timeout: float = REQUEST_TIMEOUT) -> tuple[int, bytes]:
    """One request on a fresh connection (``Connection: close``): the status and body."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        raise ConnectionError(f"incomplete response: {data!r}")
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return int(head.split(b" ", 2)[1]), body


def _dechunk(data: bytes) -> bytes:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body
        body += data[:size]
        data = data[size + 2 :]


def request_in_thread(url: str) -> tuple[threading.Thread, list[tuple[int, bytes] | OSError]]:
    results: list[tuple[int, bytes] | OSError] = []

    def request() -> None:
        try:
            results.append(get(url))
        except OSError as exc:
            results.append(exc)

    client = threading.Thread(target=request)
    client.start()
    return client, results


def get_pid(url: str, path: str = "/") -> int:
    status, body = get(url, path)
    assert status == 200, (status, body)
    return int(body)


def pids_answering(url: str, wanted: set[int], tries: int = 10) -> set[int]:
    """The pids that answer, trying until every pid in ``wanted`` did or ``tries`` ran out.

    A shared listening socket wakes the workers' event loops in LIFO order, so
    one after another, new connections nearly all go to the newest worker. Each
    try therefore sends one ``/hold`` request per wanted pid, 0.1 s apart: each
    blocks the event loop of the worker that takes it, so the next connection is
    accepted by a worker that is not blocked yet.
    """
    seen: set[int] = set()
    hold = 0.2 + 0.1 * len(wanted)
    for _ in range(tries):
        answered: list[int | BaseException] = []

        def request() -> None:
            try:
                answered.append(get_pid(url, f"/hold?{hold:.1f}"))
            except (OSError, AssertionError, ValueError) as exc:
                answered.append(exc)

        clients = [threading.Thread(target=request) for _ in wanted]
        for client in clients:
            client.start()
            time.sleep(0.1)
        for client in clients:
            client.join(REQUEST_TIMEOUT + 1)
        for pid in answered:
            assert isinstance(pid, int), pid
            seen.add(pid)
        if wanted <= seen:
            break
    return seen


class Traffic:
    """Requests one after another, each on a new connection, from a thread; bounded."""

    def __init__(self, url: str, *, limit: int = 2000, seconds: float = 20.0) -> None:
        self.url = url
        self.limit = limit
        self.seconds = seconds
        self.pids: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        for _ in range(self.limit):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                status, body = get(self.url)
                if status != 200:
                    self.failures.append(f"status {status}: {body!r}")
                else:
                    self.pids.append(int(body))
            except (OSError, ValueError) as exc:
                self.failures.append(repr(exc))
            time.sleep(0.005)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.seconds + REQUEST_TIMEOUT + 1)
        assert not self._thread.is_alive()

    def wait_for_count(self, count: int, timeout: float = EVENT_TIMEOUT) -> None:
        """Wait until ``count`` requests answered (or any failed)."""
        deadline = time.monotonic() + timeout
        while len(self.pids) < count and not self.failures:
            assert time.monotonic() < deadline, f"only {len(self.pids)} requests answered"
            assert self._thread.is_alive(), "the traffic thread ended early"
            time.sleep(0.02)

    def finish(self) -> None:
        """Let the thread run through its bounded loop to the end."""
        self._thread.join(self.seconds + REQUEST_TIMEOUT + 1)
        assert not self._thread.is_alive()


def process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def live_children(parent: int) -> set[int]:
    """The pids of ``parent``'s children that have not exited (zombies left out)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            children.add(int(entry.name))
    return children


def wait_until(condition: object, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def test_two_workers_answer() -> None:
    with palfrey_process("process_apps:pid", "--workers", "2", "--no-access-log") as server:
        pids = set(server.initial_pids)
        assert len(pids) == 2
        assert server.pid not in pids
        assert live_children(server.pid) == pids
        assert pids_answering(server.url, pids) == pids


def test_killed_worker_is_replaced() -> None:
    with palfrey_process("process_apps:pid", "--workers", "2", "--no-access-log") as server:
        victim, survivor = server.initial_pids
        mark = server.mark()
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        server.wait_for(
            rf"Worker \[{victim}\] was killed by SIGKILL; starting a replacement", after=mark
        )
        new = int(server.wait_for(WORKER_SERVING, after=mark).group(1))
        assert time.monotonic() - killed_at < 5
        assert new not in (victim, survivor)
        seen = pids_answering(server.url, {new, survivor})
        assert seen == {new, survivor}
        assert live_children(server.pid) == {new, survivor}


def test_worker_with_a_blocked_loop_is_replaced() -> None:
    with palfrey_process(
        "process_apps:pid",
        "--workers",
        "2",
        "--no-access-log",
        "--timeout-worker-healthcheck",
        "1",
    ) as server:
        victim, survivor = server.initial_pids
        mark = server.mark()
        stopped_at = time.monotonic()
        os.kill(victim, signal.SIGSTOP)
        try:
            server.wait_for(
                rf"Worker \[{victim}\] did not answer the health check within 1.0s", after=mark
            )
            assert time.monotonic() - stopped_at >= 0.9
            server.wait_for(
                rf"Worker \[{victim}\] was killed by SIGKILL; starting a replacement", after=mark
            )
            new = int(server.wait_for(WORKER_SERVING, after=mark).group(1))
            assert time.monotonic() - stopped_at < 6
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGCONT)
        assert new not in (victim, survivor)
        assert pids_answering(server.url, {new, survivor}) == {new, survivor}
        # The healthy worker was left alone.
        assert f"Worker [{survivor}] did not answer" not in server.output


def test_rolling_restart_on_sighup_drops_no_request() -> None:
    with palfrey_process("process_apps:pid", "--workers", "2", "--no-access-log") as server:
        old = set(server.initial_pids)
        with Traffic(server.url) as traffic:
            traffic.wait_for_count(10)
            mark = server.mark()
            server.signal(signal.SIGHUP)
            server.wait_for("Received SIGHUP; restarting the workers", after=mark)
            for pid in old:
                server.wait_for(rf"Replacing worker \[{pid}\]", after=mark)
                server.wait_for(rf"\[{pid}\] Finished server process \[{pid}\]", after=mark)
            new = {int(m) for m in WORKER_SERVING.findall("".join(server.lines[mark:]))}
            answered = len(traffic.pids)
            traffic.wait_for_count(answered + 20)
        assert traffic.failures == []
        assert len(new) == 2
        assert not new & old
        after = set(traffic.pids[answered:])
        assert after <= new, (after, new)
        # "Finished server process" comes before the interpreter has exited.
        wait_until(lambda: live_children(server.pid) == new, EVENT_TIMEOUT, "old workers linger")
        # One at a time: the k-th old worker is told to stop only once k replacements serve.
        output = "".join(server.lines[mark:])
        retired = sorted(output.index(f"[{pid}] Received SIGTERM") for pid in old)
        served = sorted(output.index(f"Worker [{pid}] is serving") for pid in new)
        assert served[0] < retired[0] < served[1] < retired[1], output


def test_sigterm_lets_the_in_flight_request_finish() -> None:
    with palfrey_process(
        "process_apps:slow", "--workers", "2", "--timeout-graceful-shutdown", "2"
    ) as server:
        client, results = request_in_thread(server.url)
        time.sleep(0.2)
        server.signal(signal.SIGTERM)
        client.join(REQUEST_TIMEOUT + 1)
        assert results == [(200, b"finished")], server.output
        assert server.wait_exit() == 0, server.output
        output = server.output
        assert output.count("lifespan shutdown ran") == 2
        assert "Received SIGTERM; shutting down the workers gracefully" in output
        assert "starting a replacement" not in output
        with pytest.raises(OSError):
            socket.create_connection(
                server.url.removeprefix("http://").rsplit(":", 1), timeout=1
            ).close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("in_flight", [False, True], ids=["idle", "in-flight"])
def test_signal_to_the_whole_process_group(signum: signal.Signals, in_flight: bool) -> None:
    """Ctrl+C in a terminal (SIGINT), or systemd's KillMode=control-group (SIGTERM),
    signal the supervisor and every worker at once: still a graceful stop, status 0."""
    with palfrey_process(
        "process_apps:slow", "--workers", "2", "--timeout-graceful-shutdown", "2"
    ) as server:
        if in_flight:
            client, results = request_in_thread(server.url)
            time.sleep(0.2)
        os.killpg(server.pid, signum)
        if in_flight:
            client.join(REQUEST_TIMEOUT + 1)
            assert results == [(200, b"finished")], server.output
        status = server.wait_exit()
        output = server.output
        assert f"Received {signum.name}; shutting down the workers gracefully" in output
        assert "starting a replacement" not in output
        assert "Second interrupt" not in output
        assert output.count("lifespan shutdown ran") == 2, output
        for pid in server.initial_pids:
            assert f"Finished server process [{pid}]" in output, output
        assert status == 0, output


def test_second_sigint_forces_the_workers_and_exits_130() -> None:
    with palfrey_process(
        "process_apps:stuck", "--workers", "2", "--timeout-graceful-shutdown", "60"
    ) as server:
        client, _ = request_in_thread(server.url)
        time.sleep(0.3)
        server.signal(signal.SIGINT)
        # Both workers heard the graceful request first (a person's second Ctrl+C
        # comes later than the few milliseconds this takes).
        server.wait_for(r"Received SIGTERM; shutting down gracefully", count=2)
        server.signal(signal.SIGINT)
        assert server.wait_exit() == 130, server.output
        client.join(REQUEST_TIMEOUT)
    assert "Second interrupt" in server.output


def test_failed_lifespan_startup_exits_3() -> None:
    with palfrey_process("process_apps:failing_startup", "--workers", "2", started=False) as server:
        started = time.monotonic()
        status = server.wait_exit(10)
        elapsed = time.monotonic() - started
        output = server.output
    assert status == 3, output
    assert elapsed < 5, output
    assert "database unreachable" in output
    assert "Palfrey running on" not in output
    assert "Traceback" not in output


def test_request_limit_recycles_workers_without_dropping_requests() -> None:
    with palfrey_process(
        "process_apps:pid", "--workers", "2", "--no-access-log", "--limit-max-requests", "5"
    ) as server:
        with Traffic(server.url, limit=60) as traffic:
            traffic.finish()
        assert traffic.failures == [], server.output
        assert len(traffic.pids) == 60
        assert len(set(traffic.pids)) > 2
        # No worker served more than its limit.
        assert max(traffic.pids.count(pid) for pid in set(traffic.pids)) <= 5
        assert "reached its request limit; starting a replacement" in server.output


def test_sigttin_adds_and_sigttou_removes_a_worker() -> None:
    with palfrey_process("process_apps:pid", "--workers", "2", "--no-access-log") as server:
        first = set(server.initial_pids)
        mark = server.mark()
        server.signal(signal.SIGTTIN)
        server.wait_for(r"Received SIGTTIN; adding a worker \(now 3\)", after=mark)
        added = int(server.wait_for(WORKER_SERVING, after=mark).group(1))
        assert added not in first
        wait_until(
            lambda: live_children(server.pid) == first | {added},
            5,
            f"not 3 workers: {live_children(server.pid)}",
        )
        assert pids_answering(server.url, first | {added}) == first | {added}

        mark = server.mark()
        server.signal(signal.SIGTTOU)
        server.wait_for("Received SIGTTOU; removing a worker", after=mark)
        removed = int(server.wait_for(r"\[(\d+)\] Finished server process", after=mark).group(1))
        remaining = (first | {added}) - {removed}
        wait_until(
            lambda: live_children(server.pid) == remaining,
            5,
            f"not 2 workers: {live_children(server.pid)}",
        )
        assert "starting a replacement" not in server.output
        seen = {get_pid(server.url) for _ in range(20)}
        assert seen <= remaining


def test_workers_lifetime_replaces_workers() -> None:
    with palfrey_process(
        "process_apps:pid", "--workers", "2", "--no-access-log", "--workers-lifetime", "2"
    ) as server:
        old = set(server.initial_pids)
        started = time.monotonic()
        with Traffic(server.url) as traffic:
            for pid in old:
                server.wait_for(
                    rf"Replacing worker \[{pid}\]: it reached --workers-lifetime \(2.0s\)"
                )
                server.wait_for(rf"\[{pid}\] Finished server process \[{pid}\]")
            replaced_after = time.monotonic() - started
            answered = len(traffic.pids)
            traffic.wait_for_count(answered + 10)
        assert traffic.failures == [], server.output
        assert 1.0 < replaced_after < 8, replaced_after
        assert not set(traffic.pids[answered:]) & old
        assert len(set(traffic.pids)) > 2


def test_workers_max_rss_replaces_a_worker_that_grows() -> None:
    with palfrey_process(
        "process_apps:pid", "--workers", "2", "--no-access-log", "--workers-max-rss", "250"
    ) as server:
        status, body = get(server.url, "/grow?300")
        assert status == 200
        grown = int(body)
        with Traffic(server.url) as traffic:
            server.wait_for(
                rf"Replacing worker \[{grown}\]: its memory \(\d+ MiB\) passed"
                r" --workers-max-rss \(250 MiB\)"
            )
            server.wait_for(rf"\[{grown}\] Finished server process \[{grown}\]")
            answered = len(traffic.pids)
            traffic.wait_for_count(answered + 10)
        assert traffic.failures == [], server.output
        assert grown not in traffic.pids[answered:]
        others = set(server.initial_pids) - {grown}
        assert all(f"Replacing worker [{pid}]" not in server.output for pid in others)


def test_pid_file_names_the_supervisor(tmp_path: Path) -> None:
    pid_path = tmp_path / "palfrey.pid"
    with palfrey_process(
        "process_apps:pid", "--workers", "2", "--pid", str(pid_path), "--no-access-log"
    ) as server:
        assert pid_path.read_text().strip() == str(server.pid)
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0, server.output
        assert not pid_path.exists()


def test_workers_exit_when_the_supervisor_is_killed() -> None:
    with palfrey_process("process_apps:pid", "--workers", "2", "--no-access-log") as server:
        workers = server.initial_pids
        server.signal(signal.SIGKILL)
        assert server.wait_exit() == -signal.SIGKILL
        wait_until(
            lambda: all(process_state(pid) in (None, "Z") for pid in workers),
            5,
            f"workers still running after the supervisor died:\n{server.output}",
        )
        for pid in workers:
            server.wait_for(rf"\[{pid}\] Finished server process \[{pid}\]")


def test_workers_need_an_import_string() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError

    with pytest.raises(ValueError, match="import string"):
        palfrey.Config(app=app, workers=2)


def test_reload_and_workers_cannot_be_combined() -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "palfrey", "--app-dir", "tests", "process_apps:pid"),
            *("--reload", "--workers", "2", "--port", "0"),
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "reload and workers > 1 cannot be combined" in result.stderr
    assert "Traceback" not in result.stderr
