"""``--reload``: a change to the source starts a new worker with the new code, and the old
one is retired gracefully; code that does not import leaves the old worker serving.

watchfiles is in the dev extra: without it these tests fail at import, they do not skip.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import watchfiles  # noqa: F401 - a missing watchfiles must fail this module, not skip it
from server_process import WAIT, ServerProcess, palfrey_command
from websockets.exceptions import ConnectionClosed
from ws_client import sync_client

BANNER = re.compile(r"Palfrey running on (http://\S+)")
#: How long a change may take to be served: the watcher's quiet period, a fresh
#: interpreter importing palfrey and the app, and a slow CI machine.
RELOAD_WITHIN = 10.0

APP = """
import os

import trio

VERSION = {version!r}


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({{"type": "websocket.accept"}})
        await send({{"type": "websocket.send", "text": f"{{VERSION}} {{os.getpid()}}"}})
        if scope["path"] == "/stubborn":
            # Ignores the server's goodbye: only the graceful-shutdown timeout ends it.
            await trio.sleep_forever()
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    body = f"{{VERSION}} {{os.getpid()}}".encode()
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": body}})
"""


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step, as editors do, so no half-written file is ever seen."""
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def write_app(directory: Path, version: str) -> None:
    write_atomically(directory / "app.py", APP.format(version=version))


def reload_process(directory: Path, args: list[str]) -> ServerProcess:
    # No .pyc files: a same-size edit within the same second would look unchanged to the
    # import system (it compares the source's mtime in seconds and its size).
    environment = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    return ServerProcess(palfrey_command(*args), cwd=directory, env=environment)


@contextmanager
def reloading(directory: Path, *args: str) -> Iterator[tuple[ServerProcess, str]]:
    server = reload_process(
        directory,
        [
            *("app:app", "--app-dir", str(directory), "--reload"),
            *("--host", "127.0.0.1", "--port", "0", "--reload-delay", "0.1", "--lifespan", "off"),
            *args,
        ],
    )
    try:
        url = server.wait_for(BANNER.pattern).group(1)
        server.wait_for(r"Serving with 1 worker process")
        yield server, url
    finally:
        server.cleanup()


def get(url: str) -> tuple[str, int]:
    """(version, worker pid) from the app."""
    response = httpx.get(url, timeout=WAIT)
    assert response.status_code == 200
    version, pid = response.text.split()
    return version, int(pid)


def wait_for_version(url: str, version: str, timeout: float = RELOAD_WITHIN) -> int:
    """Poll until the app answers with ``version``; the pid of the worker that did."""
    deadline = time.monotonic() + timeout
    seen: object = None
    while time.monotonic() < deadline:
        try:
            seen = get(url)
        except httpx.TransportError as exc:
            # A request that meets the switch-over can be dropped: that is
            # test_a_rolling_restart_drops_no_request's business, not this poll's.
            seen = exc
        else:
            if seen[0] == version:
                return seen[1]
        time.sleep(0.05)
    raise AssertionError(f"still serving {seen} after {timeout}s, expected {version!r}")


def test_an_edit_is_served(tmp_path: Path) -> None:
    write_app(tmp_path, "one")
    with reloading(tmp_path) as (server, url):
        assert "Watching for changes in: " + str(tmp_path) in server.output
        version, old_pid = get(url)
        assert version == "one"
        write_app(tmp_path, "two")
        new_pid = wait_for_version(url, "two")
        assert new_pid != old_pid
        server.wait_for(r"Detected changes in app\.py; reloading")
        # The old worker is told to stop once the new one serves, and exits.
        server.wait_for(rf"\[{old_pid}\] Finished server process \[{old_pid}\]")
        # A second edit reloads again.
        write_app(tmp_path, "three")
        assert wait_for_version(url, "three") not in (old_pid, new_pid)
        assert server.stop() == 0, server.output
    assert len(server.matching(r"Detected changes in")) == 2, server.output
    assert "Traceback" not in server.output


def test_a_syntax_error_keeps_the_old_code_serving(tmp_path: Path) -> None:
    write_app(tmp_path, "one")
    with reloading(tmp_path) as (server, url):
        _, old_pid = get(url)
        write_atomically(tmp_path / "app.py", "def broken(:\n    pass\n")
        server.wait_for(rf"worker \[{old_pid}\] keeps serving")
        assert "SyntaxError" in server.output
        for _ in range(3):
            assert get(url) == ("one", old_pid)
        # Fixing the code is the next change: it is served.
        write_app(tmp_path, "fixed")
        new_pid = wait_for_version(url, "fixed")
        assert new_pid != old_pid
        server.wait_for(rf"\[{old_pid}\] Finished server process \[{old_pid}\]")
        assert server.stop() == 0, server.output


def test_a_failing_first_import_waits_for_a_fix(tmp_path: Path) -> None:
    write_atomically(tmp_path / "app.py", "raise RuntimeError('not yet')\n")
    server = reload_process(
        tmp_path,
        [
            *("app:app", "--app-dir", str(tmp_path), "--reload", "--lifespan", "off"),
            *("--host", "127.0.0.1", "--port", "0", "--reload-delay", "0.1"),
        ],
    )
    try:
        server.wait_for(r"during start-up; waiting for the next change")
        assert server.process.poll() is None
        assert not server.matching(BANNER.pattern)
        write_app(tmp_path, "one")
        url = server.wait_for(BANNER.pattern, timeout=RELOAD_WITHIN).group(1)
        assert get(url)[0] == "one"
        assert server.stop() == 0, server.output
    finally:
        server.cleanup()


@pytest.mark.parametrize("path", ["/", "/stubborn"])
def test_an_open_websocket_does_not_hold_the_reload(tmp_path: Path, path: str) -> None:
    graceful = 1.0
    write_app(tmp_path, "one")
    with reloading(tmp_path, "--timeout-graceful-shutdown", str(graceful)) as (server, url):
        with sync_client(url.replace("http://", "ws://") + path, close_timeout=2) as ws:
            version, old_pid = ws.recv(timeout=WAIT).split()
            assert version == "one"
            changed = time.monotonic()
            write_app(tmp_path, "two")
            new_pid = wait_for_version(url, "two")
            served = time.monotonic()
            assert int(new_pid) != int(old_pid)
            assert served - changed < RELOAD_WITHIN
            # The old worker closes the WebSocket (1012, service restart) ...
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=graceful + 2)
            assert time.monotonic() - served < graceful + 2
        assert closed.value.rcvd is not None, closed.value
        assert closed.value.rcvd.code == 1012
        # ... and exits within its graceful-shutdown timeout (and a margin).
        remaining = graceful + 2 - (time.monotonic() - served)
        server.wait_for(rf"\[{old_pid}\] Finished server process \[{old_pid}\]", timeout=remaining)
        if path == "/stubborn":
            assert f"[{old_pid}] Cancelled in-flight requests after the 1.0s" in server.output
        assert "did not finish shutting down in time" not in server.output
        # A new WebSocket reaches the new code.
        with sync_client(url.replace("http://", "ws://") + "/") as ws:
            assert ws.recv(timeout=WAIT) == f"two {new_pid}"
        assert server.stop() == 0, server.output


def test_include_and_exclude(tmp_path: Path) -> None:
    write_app(tmp_path, "one")
    (tmp_path / "ignored_helpers.py").write_text("X = 1\n")
    (tmp_path / "notes.txt").write_text("a\n")
    (tmp_path / "settings.cfg").write_text("a = 1\n")
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "tool.py").write_text("Y = 1\n")
    args = ["--reload-include", "*.py", "--reload-include", "*.cfg"]
    args += ["--reload-exclude", "ignored_*", "--reload-exclude", "scratch"]
    with reloading(tmp_path, *args) as (server, url):
        _, old_pid = get(url)
        # Excluded files and files no include matches do not reload...
        write_atomically(tmp_path / "ignored_helpers.py", "X = 2\n")
        write_atomically(tmp_path / "scratch" / "tool.py", "Y = 2\n")
        write_atomically(tmp_path / "notes.txt", "b\n")
        time.sleep(1.0)
        assert not server.matching(r"Detected changes"), server.output
        assert get(url) == ("one", old_pid)
        # ... an included one does, and the log names only it.
        write_atomically(tmp_path / "settings.cfg", "a = 2\n")
        server.wait_for(r"Detected changes in", timeout=RELOAD_WITHIN)
        server.wait_for(rf"\[{old_pid}\] Finished server process")
        assert get(url)[1] != old_pid
        assert server.stop() == 0, server.output
    changes = [match.string for match in server.matching(r"Detected changes in")]
    assert len(changes) == 1, server.output
    assert changes[0].rstrip().endswith("Detected changes in settings.cfg; reloading")


def test_a_rolling_restart_drops_no_request(tmp_path: Path) -> None:
    """Clients hammer the server while it reloads: the listening socket stays open in the
    supervisor and the new worker serves before the old one stops, so every request made
    during the switch-over must be answered, by one worker or the other."""
    write_app(tmp_path, "v0")
    with reloading(tmp_path, "--no-access-log") as (server, url):
        address = url.removeprefix("http://").rsplit(":", 1)
        answered = [0]
        failures: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                try:
                    with socket.create_connection((address[0], int(address[1])), timeout=5) as c:
                        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        data = b""
                        while chunk := c.recv(65536):
                            data += chunk
                except OSError as exc:
                    failures.append(repr(exc))
                    continue
                if data.startswith(b"HTTP/1.1 200 "):
                    answered[0] += 1
                else:
                    failures.append(repr(data[:60]) if data else "closed without a response")

        clients = [threading.Thread(target=hammer) for _ in range(4)]
        for client in clients:
            client.start()
        try:
            for n in range(1, 4):
                write_app(tmp_path, f"v{n}")
                # The old worker has finished: its replacement served for a while already.
                server.wait_for(r"Finished server process", timeout=RELOAD_WITHIN, count=n)
        finally:
            stop.set()
            for client in clients:
                client.join(WAIT)
        assert get(url)[0] == "v3"
        assert server.stop() == 0, server.output
    assert answered[0] > 0
    assert failures == [], f"{len(failures)} of {answered[0] + len(failures)}: {failures[:5]}"
