"""The accept loop: running out of file descriptors pauses accepting, other errors are raised."""

from __future__ import annotations

import errno
from typing import Any

import pytest
import trio
import trio.testing

from palfrey.transport.tcp import ACCEPT_RETRY_DELAY, accept_connections


class FailingListener(trio.abc.Listener[Any]):
    """Fails each accept() with the next errno given, then waits forever."""

    def __init__(self, *errnos: int) -> None:
        self.errnos = list(errnos)
        self.calls: list[float] = []
        self.closed = False

    async def accept(self) -> Any:
        self.calls.append(trio.current_time())
        if self.errnos:
            code = self.errnos.pop(0)
            raise OSError(code, "simulated")
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
