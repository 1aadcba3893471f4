"""The accept loop: running out of file descriptors pauses accepting, other errors are raised.

An episode of failures is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

import pytest
import trio
import trio.testing

from palfrey.transport import tcp
from palfrey.transport.tcp import ACCEPT_RETRY_DELAY, accept_connections


class FailingListener(trio.abc.Listener[Any]):
    """Fails each accept() with the next errno given (0: accepts a stream instead),
    then waits forever."""

    def __init__(self, *errnos: int) -> None:
        self.errnos = list(errnos)
        self.calls: list[float] = []
        self.closed = False

    async def accept(self) -> Any:
        self.calls.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if self.errnos:
            code = self.errnos.pop(0)
            if code:
                raise OSError(code, "simulated")
            return object()
        await trio.sleep_forever()

    async def aclose(self) -> None:
        self.closed = True


async def test_running_out_of_descriptors_pauses_then_retries(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    listener = FailingListener(errno.EMFILE, errno.ENFILE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_connections, listener, None, None, nursery)
        await trio.sleep(3 * ACCEPT_RETRY_DELAY)
        nursery.cancel_scope.cancel()
    assert len(listener.calls) == 3
    # Virtual time: each retry comes exactly one pause after the failure before it.
    assert listener.calls[1] - listener.calls[0] == pytest.approx(ACCEPT_RETRY_DELAY)
    assert listener.calls[2] - listener.calls[1] == pytest.approx(ACCEPT_RETRY_DELAY)
    assert "EMFILE" in caplog.text
    assert listener.closed


async def test_other_accept_errors_are_raised() -> None:
    listener = FailingListener(errno.EINVAL)
    with pytest.raises(OSError, match="simulated"):
        await accept_connections(listener, None, None, None)  # type: ignore[arg-type]
    assert listener.closed


async def test_an_episode_is_logged_when_it_starts_and_when_it_ends(
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thirty failures in a row (three seconds of retries) make two lines, not thirty;
    a later episode is logged again."""
    handled: list[object] = []

    async def handle(stream: object, _state: object, _ssl_context: object) -> None:
        handled.append(stream)

    monkeypatch.setattr(tcp, "handle_connection", handle)
    listener = FailingListener(*[errno.EMFILE] * 30, 0, 0, errno.ENFILE, 0)
    with caplog.at_level(logging.WARNING, logger="palfrey.error"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_connections, listener, None, None, nursery)
            await trio.sleep(40 * ACCEPT_RETRY_DELAY)
            nursery.cancel_scope.cancel()
    assert len(handled) == 3
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 4, messages
    assert "EMFILE" in messages[0]
    assert "after 3.0 seconds (30 failed attempts)" in messages[1]
    assert "ENFILE" in messages[2]
    assert "after 0.1 seconds (1 failed attempts)" in messages[3]
