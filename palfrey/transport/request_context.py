"""Each HTTP/1.1 request runs in its own copy of the connection's context.

An HTTP/1.1 connection serves its requests one after another in one task.
Left at that, a context variable an app sets during one request (a request
id, a database session, a tracing span) would still be set when the next
request on the same kept-alive connection starts. A server that spawns a task
per request gives each request a fresh copy of the context for free, as
Uvicorn and Hypercorn do, and as Palfrey's HTTP/2 and HTTP/3 streams do. A
task per HTTP/1.1 request would cost more than the rest of a small request,
so instead the request's coroutine is stepped inside a copy of the context
taken when it starts: each step is one ``Context.run`` around ``send``.
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

_T = TypeVar("_T")


@types.coroutine
def run_in_context(
    context: contextvars.Context, coro: Coroutine[Any, Any, _T]
) -> Generator[Any, Any, _T]:
    """Await ``coro`` with every step of it running in ``context``.

    Behaves as ``await coro`` in every other way: what the event loop sends or
    throws in (a reschedule, ``Cancelled``, ``KeyboardInterrupt``) reaches the
    coroutine unchanged, and its result or exception is this call's. Tasks it
    starts inherit ``context``, as :func:`contextvars.copy_context` finds it
    while a step runs.
    """
    step: Any = coro.send
    value: Any = None
    while True:
        try:
            yielded = context.run(step, value)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            value = yield yielded
        except BaseException as exc:
            step, value = coro.throw, exc
        else:
            step = coro.send
