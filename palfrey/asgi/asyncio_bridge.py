"""Running asyncio-flavoured ASGI apps on trio through trio-asyncio (``--loop asyncio``).

One trio-asyncio loop is opened per server (:func:`open_app_loop`, around
lifespan and every connection) so state an app keeps on "its" event loop —
tasks started at startup, queues, client sessions — is shared by lifespan and
all requests, as it would be under an asyncio server. Each call into the app
becomes an asyncio task; ``receive``/``send`` hop back into trio for every
message (see ``benchmarks/asyncio_bridge.py`` for what that costs).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

import attrs

from palfrey.asgi.types import ASGIApp, Receive, Scope, Send


def trio_asyncio_problem() -> str | None:
    """Why ``--loop asyncio`` cannot work here, or None if it can."""
    if sys.version_info >= (3, 14):
        major, minor = sys.version_info[:2]
        return (
            f"--loop asyncio needs trio-asyncio, which does not support Python {major}.{minor} yet"
        )
    try:
        import trio_asyncio  # noqa: F401, PLC0415 - optional dependency
    except ImportError:
        return "--loop asyncio needs trio-asyncio: pip install 'palfrey[asyncio]'"
    return None


def _trio_asyncio() -> ModuleType:
    problem = trio_asyncio_problem()
    if problem is not None:
        raise RuntimeError(problem)
    import trio_asyncio  # noqa: PLC0415 - optional dependency

    return trio_asyncio


@asynccontextmanager
async def open_app_loop(loop: str) -> AsyncIterator[None]:
    """Provide the event loop the app was written for, for the duration of the block."""
    if loop != "asyncio":
        yield
        return
    async with _trio_asyncio().open_loop():
        yield


@attrs.define(slots=True, eq=False)
class AsyncioBridge:
    """An ASGI 3 app (trio side) that runs an asyncio ASGI 3 app on the current trio-asyncio loop.

    The app gets asyncio-awaitable ``receive``/``send``; exceptions, including
    :class:`ClientDisconnected` from ``send``, cross the bridge unchanged.
    """

    app: ASGIApp
    _module: Any = attrs.field(init=False, factory=_trio_asyncio)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        module = self._module
        await module.aio_as_trio(self.app)(
            scope, module.trio_as_aio(receive), module.trio_as_aio(send)
        )
