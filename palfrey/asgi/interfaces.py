"""Turning whatever the user gave us into an ASGI 3 callable.

Detection for ``--interface auto``: a coroutine function (or an object whose
``__call__`` is one) is ASGI 3; a class, or a callable taking only the scope,
is ASGI 2. WSGI is never guessed, because a WSGI callable and an ASGI 2
callable look the same from outside; it must be asked for.
"""

from __future__ import annotations

import inspect
from typing import Any

from palfrey.asgi.types import ASGIApp, Receive, Scope, Send


class AppInterfaceError(Exception):
    """The object is not an application of the requested (or any) interface."""


def detect_interface(app: Any) -> str:
    if not callable(app):
        raise AppInterfaceError(
            f"the application must be callable, got {type(app).__name__} {app!r:.60}"
        )
    if inspect.isclass(app):
        return "asgi2"
    call = app if inspect.isroutine(app) else getattr(app, "__call__", None)  # noqa: B004
    if inspect.iscoroutinefunction(call):
        return "asgi3"
    return "asgi2"


def wrap_app(app: Any, interface: str) -> tuple[ASGIApp, str]:
    """The ASGI 3 callable the bridge will call, and the interface that was used."""
    if interface == "auto":
        interface = detect_interface(app)
    elif not callable(app):
        raise AppInterfaceError(f"the application must be callable, got {app!r:.60}")
    if interface == "asgi3":
        return app, interface
    if interface == "asgi2":
        return ASGI2Adapter(app), interface
    raise AppInterfaceError(f"unsupported interface {interface!r}")


class ASGI2Adapter:
    """Calls a double-callable ASGI 2 app and reports ``asgi.version`` 2.0 to it."""

    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["asgi"] = {**scope.get("asgi", {}), "version": "2.0"}
        instance = self.app(scope)
        await instance(receive, send)
