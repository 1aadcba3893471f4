"""The ASGI bridge: scopes, ``receive``/``send`` state machines and app adapters.

Written once and shared by every HTTP version; the transports only provide a
small stream object (see :class:`palfrey.asgi.http.HTTPStream`).
"""
