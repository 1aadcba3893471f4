"""Every WebSocket ``receive()`` and ``send()`` is a trio checkpoint, through a real server.

The states where the answer is at hand without I/O are the ones that used to
skip it: the connect message, messages the connection task read ahead,
messages that came in one read with an earlier one, the disconnect, and a
send after it. An app looping in any of them must let other tasks run.
"""

from __future__ import annotations

import contextlib
from typing import Any

import trio
import trio.testing
from ws_client import WAIT, Recorder, frame, neighbour_turns, upgrade

from palfrey.transport.ws_reader import READ_AHEAD_DELAY

LOOPS = 100


async def open_client(srv: Any) -> trio.SocketStream:
    stream = await trio.open_tcp_stream(srv.host, srv.port)
    await upgrade(stream)
    return stream


def checked(verdicts: list[str], label: str) -> Any:
    """An ``assert_checkpoints`` whose failure is recorded, not raised into the server."""

    class Check:
        def __enter__(self) -> None:
            self._inner = trio.testing.assert_checkpoints()
            self._inner.__enter__()

        def __exit__(self, *exc_info: Any) -> bool:
            try:
                self._inner.__exit__(*exc_info)
            except AssertionError:
                verdicts.append(f"{label}: no checkpoint")
                return True
            return False

    return Check()


def under_timeout(action: Any) -> Any:
    """``action`` called the way a polling app calls it, under a short timeout."""

    async def call() -> None:
        with trio.move_on_after(0.01):
            await action()

    return call


async def test_receive_and_send_checkpoint_in_every_state(serve: Any) -> None:
    progress = Recorder()
    verdicts: list[str] = []
    messages: list[Any] = []
    turns: dict[str, int] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        with checked(verdicts, "connect"):
            messages.append(await receive())
        await send({"type": "websocket.accept"})
        progress.add("accepted")
        await trio.sleep(READ_AHEAD_DELAY * 4)  # away: the connection task reads ahead
        for number in range(3):
            with checked(verdicts, f"read ahead {number}"):
                messages.append(await receive())
        progress.add("ready for a batch")
        messages.append(await receive())  # read inline, with the two after it
        for number in range(2):
            with checked(verdicts, f"same read {number}"):
                messages.append(await receive())
        messages.append(await receive())  # the client's close
        with checked(verdicts, "after the disconnect"):
            messages.append(await receive())
        try:
            with checked(verdicts, "send after the disconnect"):
                await send({"type": "websocket.send", "text": "too late"})
        except OSError:
            messages.append("send refused")
        turns["receive"] = await neighbour_turns(under_timeout(receive), LOOPS)

        async def send_refused() -> None:
            with contextlib.suppress(OSError):
                await send({"type": "websocket.send", "text": "too late"})

        turns["send"] = await neighbour_turns(under_timeout(send_refused), LOOPS)
        progress.add("done")

    async with serve(app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            stream = await open_client(srv)
            await progress.wait_for(lambda items: "accepted" in items)
            await stream.send_all(b"".join(frame(0x1, b"ahead %d" % i) for i in range(3)))
            await progress.wait_for(lambda items: "ready for a batch" in items)
            await trio.sleep(READ_AHEAD_DELAY / 5)
            await stream.send_all(b"".join(frame(0x1, b"batch %d" % i) for i in range(3)))
            await stream.send_all(frame(0x8, (4000).to_bytes(2, "big") + b"bye"))
            await progress.wait_for(lambda items: "done" in items)
            await stream.aclose()
    assert verdicts == []
    disconnect = {"type": "websocket.disconnect", "code": 4000, "reason": "bye"}
    assert messages == [
        {"type": "websocket.connect"},
        *({"type": "websocket.receive", "text": f"ahead {i}"} for i in range(3)),
        *({"type": "websocket.receive", "text": f"batch {i}"} for i in range(3)),
        disconnect,
        disconnect,
        "send refused",
    ]
    # Looping on either under a timeout lets the rest of the server run every time.
    assert min(turns.values()) >= LOOPS - 1


async def test_an_inline_read_that_finds_a_message_waiting_is_a_checkpoint(serve: Any) -> None:
    """The socket stream lets a read that finds data right after its task's own yield skip
    its yield; a WebSocket ``receive()`` after an echo's ``send()`` is such a read, and
    must still let other tasks run."""
    progress = Recorder()
    verdicts: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        for number in range(4):
            await send({"type": "websocket.send", "text": message["text"]})
            progress.add(f"echoed {number}")
            # The next message arrives while the app is away, too briefly for the
            # connection task to read ahead: the next receive() finds it waiting.
            await trio.sleep(READ_AHEAD_DELAY / 5)
            with checked(verdicts, f"inline read {number}"):
                message = await receive()
        progress.add("done")

    async with serve(app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            stream = await open_client(srv)
            await stream.send_all(frame(0x1, b"0"))
            for number in range(4):
                await progress.wait_for(lambda items, n=number: f"echoed {n}" in items)
                await stream.send_all(frame(0x1, b"%d" % (number + 1)))
            await progress.wait_for(lambda items: "done" in items)
            await stream.aclose()
    assert verdicts == []
