"""Turning whatever the user gave us into an ASGI 3 callable.

Detection for ``--interface auto`` (each rule is tested in
``tests/test_interfaces.py``):

1. Not callable: an error naming what was found.
2. A coroutine function, or an object whose ``__call__`` is one: ASGI 3.
3. Anything else is judged by how many positional arguments it accepts: one
   (``scope``; an ASGI 2 class or double callable) is ASGI 2, two
   (``environ, start_response``) is WSGI, three is ASGI 3 (a plain function
   returning an awaitable). A class counts its constructor's arguments.
4. A callable that accepts several of these (``*args``) or none of them is an
   error asking for ``--interface``: guessing wrong fails on the first request,
   far from the cause.

``--loop asyncio`` then wraps an ASGI app in the trio-asyncio bridge, so the
server below only ever sees a trio-flavoured ASGI 3 app.
"""

from __future__ import annotations

import inspect
from typing import Any

import attrs

from palfrey.asgi.asyncio_bridge import AsyncioBridge, trio_asyncio_problem
from palfrey.asgi.types import ASGIApp, Receive, Scope, Send
from palfrey.asgi.wsgi import DEFAULT_WSGI_THREADS, WSGIAdapter

_ARITIES = {1: "asgi2", 2: "wsgi", 3: "asgi3"}
_SIGNATURES = (
    "ASGI 3 apps are 'async def app(scope, receive, send)', ASGI 2 apps 'app(scope)'"
    " returning 'async (receive, send)', WSGI apps 'app(environ, start_response)'"
)


class AppInterfaceError(Exception):
    """The object is not an application of the requested (or any) interface."""


def _named(name: str | None) -> str:
    return f"application {name!r}" if name else "the application"


def _describe(app: Any, name: str | None) -> str:
    return f"{_named(name)} ({type(app).__name__} {app!r:.60})"


def _not_callable(app: Any, name: str | None) -> AppInterfaceError:
    return AppInterfaceError(
        f"{_named(name)} must be callable, but it is {type(app).__name__} {app!r:.60};"
        f" {_SIGNATURES}"
    )


def _accepts(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def _is_coroutine_callable(app: Any) -> bool:
    if inspect.isclass(app):
        return False
    if inspect.iscoroutinefunction(app):
        return True
    return inspect.iscoroutinefunction(getattr(type(app), "__call__", None))  # noqa: B004


def detect_interface(app: Any, name: str | None = None) -> str:
    """``asgi3``, ``asgi2`` or ``wsgi`` for ``app``; ``name`` (e.g. ``main:app``) is for errors."""
    if not callable(app):
        raise _not_callable(app, name)
    try:
        signature = inspect.signature(app)
    except (TypeError, ValueError):
        signature = None
    if _is_coroutine_callable(app):
        if signature is not None and not _accepts(signature, 3):
            raise AppInterfaceError(
                f"{_describe(app, name)} is a coroutine function with signature {signature}; "
                f"{_SIGNATURES}"
            )
        return "asgi3"
    if signature is None:
        raise AppInterfaceError(
            f"cannot inspect the signature of {_describe(app, name)}; "
            "choose one with --interface asgi3|asgi2|wsgi"
        )
    matches = [interface for count, interface in _ARITIES.items() if _accepts(signature, count)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise AppInterfaceError(
            f"{_describe(app, name)} has signature {signature}, which fits no interface; "
            f"{_SIGNATURES}"
        )
    raise AppInterfaceError(
        f"{_describe(app, name)} has signature {signature}, which fits "
        f"{' and '.join(matches)}; choose one with --interface"
    )


def prepare_loop(loop: str) -> None:
    """Check ``--loop``; for ``asyncio``, import trio-asyncio now, before the app is imported.

    trio-asyncio patches ``asyncio.get_running_loop`` and friends, and
    libraries that bind those names at import time (anyio's asyncio backend,
    for one) only ever see the versions that existed when they were imported.
    """
    if loop not in ("trio", "asyncio"):
        raise AppInterfaceError(f"unsupported loop {loop!r}")
    if loop == "asyncio":
        problem = trio_asyncio_problem()
        if problem is not None:
            raise AppInterfaceError(problem)


def wrap_app(
    app: Any,
    interface: str,
    *,
    loop: str = "trio",
    wsgi_threads: int = DEFAULT_WSGI_THREADS,
    name: str | None = None,
) -> tuple[ASGIApp, str]:
    """The trio-flavoured ASGI 3 callable the bridge will call, and the interface used.

    ``name`` is how the user named the app (``module:attribute``), for error messages.
    """
    prepare_loop(loop)
    if interface == "auto":
        interface = detect_interface(app, name)
    elif not callable(app):
        raise _not_callable(app, name)
    if interface == "wsgi":
        if loop == "asyncio":
            raise AppInterfaceError(
                "--loop asyncio applies to ASGI applications; a WSGI application runs in "
                "worker threads and needs no event loop"
            )
        return WSGIAdapter(app, wsgi_threads), interface
    if interface == "asgi2":
        app = ASGI2Adapter(app)
    elif interface != "asgi3":
        raise AppInterfaceError(f"unsupported interface {interface!r}")
    if loop == "asyncio":
        app = AsyncioBridge(app)
    return app, interface


@attrs.define(slots=True, eq=False)
class ASGI2Adapter:
    """Calls a double-callable ASGI 2 app and reports ``asgi.version`` 2.0 to it."""

    app: Any

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["asgi"] = {**scope.get("asgi", {}), "version": "2.0"}
        instance = self.app(scope)
        await instance(receive, send)
