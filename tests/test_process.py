"""The ``palfrey`` process: CLI start-up, signals, graceful shutdown and exit statuses."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent
BANNER = re.compile(r"Palfrey running on (http://\S+)")


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "palfrey", "--app-dir", "tests", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_url(process: subprocess.Popen[str], lines: list[str]) -> str:
    deadline = time.monotonic() + 15
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = BANNER.search(line)
        if match:
            return match.group(1)
    process.kill()
    raise AssertionError("server did not start:\n" + "".join(lines))


def finish(process: subprocess.Popen[str], lines: list[str]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=15)
    return process.returncode, "".join(lines) + output


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palfrey", *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_serves_the_bundled_config() -> None:
    process = start("--config", "config/palfrey.toml")
    lines: list[str] = []
    url = wait_for_url(process, lines)
    response = httpx.get(url + "/hello", headers={"accept": "application/json"})
    assert response.status_code == 200
    assert response.json()["path"] == "/hello"
    process.send_signal(signal.SIGTERM)
    status, output = finish(process, lines)
    assert status == 0
    assert '"GET /hello HTTP/1.1" 200' in output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_lets_the_in_flight_request_finish(signum: signal.Signals) -> None:
    process = start("process_apps:slow")
    lines: list[str] = []
    url = await trio.to_thread.run_sync(wait_for_url, process, lines)
    async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
        responses: list[httpx.Response] = []

        async def request() -> None:
            responses.append(await client.get(url))

        nursery.start_soon(request)
        await trio.sleep(0.2)
        process.send_signal(signum)
    assert responses[0].status_code == 200
    assert responses[0].text == "finished"
    status, output = await trio.to_thread.run_sync(finish, process, lines)
    assert status == 0, output
    assert "lifespan shutdown ran" in output
    # Once shutdown started nothing accepts connections any more.
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()


def test_graceful_timeout_cancels_a_stuck_request() -> None:
    process = start("process_apps:stuck", "--timeout-graceful-shutdown", "0.3")
    lines: list[str] = []
    url = wait_for_url(process, lines)
    with socket.create_connection(url.removeprefix("http://").rsplit(":", 1)) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status, output = finish(process, lines)
        assert time.monotonic() - started < 5
        assert conn.recv(100) == b""
    assert status == 0, output
    assert "graceful shutdown timeout" in output


def test_second_sigint_forces_exit() -> None:
    process = start("process_apps:stuck", "--timeout-graceful-shutdown", "60")
    lines: list[str] = []
    url = wait_for_url(process, lines)
    with socket.create_connection(url.removeprefix("http://").rsplit(":", 1)) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        time.sleep(0.2)
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        status, output = finish(process, lines)
    assert "Second interrupt" in output
    assert status == 130


def test_failed_startup_exits_3_without_serving() -> None:
    result = run("--app-dir", "tests", "process_apps:failing_startup", "--port", "0")
    assert result.returncode == 3
    assert "database unreachable" in result.stderr
    assert "Palfrey running on" not in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("palfrey.demo:app", "--port", str(port), "--lifespan", "off")
    assert result.returncode == 1
    assert f"could not bind 127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("nosuchmodule:app", "module 'nosuchmodule' not found"),
        ("palfrey.demo:nope", "has no attribute 'nope'"),
        ("process_apps:not_an_app", "must be callable"),
    ],
)
def test_bad_application_is_one_line(app: str, message: str) -> None:
    result = run("--app-dir", "tests", app)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_flag_and_version() -> None:
    help_text = run("--help").stdout
    for flag in ("--port", "--timeout-keep-alive", "--limit-concurrency", "--no-access-log"):
        assert flag in help_text
    assert run("--version").stdout.startswith("palfrey ")


def test_env_var_reaches_the_server() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "palfrey", "palfrey.demo:app"],
        cwd=ROOT,
        env={**os.environ, "PALFREY_PORT": "0", "PALFREY_HEADER": "x-from-env:yes"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    url = wait_for_url(process, lines)
    assert httpx.get(url).headers["x-from-env"] == "yes"
    process.send_signal(signal.SIGTERM)
    assert finish(process, lines)[0] == 0


def test_missing_tls_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    """Reported before the application is imported or anything is bound; status 2."""
    missing = tmp_path / "missing.pem"
    result = run("palfrey.demo:app", "--port", "0", "--ssl-certfile", str(missing))
    assert result.returncode == 2
    assert result.stderr == f"palfrey: error: --ssl-certfile: file '{missing}' does not exist\n"


def test_unreadable_tls_certificate_is_one_line(tmp_path: Path) -> None:
    """A file that exists but isn't a certificate still fails at startup, in one line."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    result = run("palfrey.demo:app", "--port", "0", "--ssl-certfile", str(garbage))
    assert result.returncode == 1
    assert f"could not load the TLS certificate '{garbage}'" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Application startup" not in result.stderr


def test_banner_names_the_protocols_in_use() -> None:
    process = start("palfrey.demo:app", "--http", "h11", "--ws", "none", "--lifespan", "off")
    lines: list[str] = []
    wait_for_url(process, lines)
    process.send_signal(signal.SIGTERM)
    _, output = finish(process, lines)
    assert "Protocols: HTTP/1.1 (h11), WebSocket (off)" in output
    assert "Application interface: asgi3" in output
