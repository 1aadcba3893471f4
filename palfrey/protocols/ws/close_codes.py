"""WebSocket close codes the server sends or reports (RFC 6455 §7.4.1).

One home for them, so the protocol, the ASGI session and the transport agree
on what each ending of a connection is called.
"""

from __future__ import annotations

NORMAL_CLOSURE = 1000
#: Reported when a close frame carried no code; never sent on the wire with a code.
NO_STATUS = 1005
#: Reported when the transport closed without a closing handshake; never sent.
ABNORMAL_CLOSURE = 1006
INTERNAL_ERROR = 1011
#: From the IANA registry rather than RFC 6455: the server is restarting (sent on shutdown).
SERVICE_RESTART = 1012
