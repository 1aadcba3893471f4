"""TLS: building the server SSLContext and running the handshake under its own deadline."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import trio

from palfrey.transport.errors import TLSSetupError

if TYPE_CHECKING:
    from palfrey.config.schema import Config
    from palfrey.transport.socket_stream import SocketStream


def create_ssl_context(config: Config, alpn_protocols: list[str]) -> ssl.SSLContext:
    """The server context; ALPN offers ``alpn_protocols`` in order of preference."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(
            config.ssl_certfile,  # type: ignore[arg-type]
            config.ssl_keyfile,
            password=config.ssl_keyfile_password,
        )
    except (OSError, ssl.SSLError) as exc:
        raise TLSSetupError(
            f"could not load the TLS certificate {config.ssl_certfile!r}"
            f"{f' with key {config.ssl_keyfile!r}' if config.ssl_keyfile else ''}: {_reason(exc)}"
        ) from None
    context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    try:
        if config.ssl_ca_certs:
            context.load_verify_locations(config.ssl_ca_certs)
        if config.ssl_ciphers:
            context.set_ciphers(config.ssl_ciphers)
    except (OSError, ssl.SSLError) as exc:
        raise TLSSetupError(f"invalid TLS CA certificates or ciphers: {_reason(exc)}") from None
    context.set_alpn_protocols(alpn_protocols)
    return context


def _reason(exc: OSError | ssl.SSLError) -> str:
    return exc.strerror or getattr(exc, "reason", None) or str(exc)


async def handshake(
    stream: SocketStream, context: ssl.SSLContext, timeout: float
) -> trio.SSLStream[SocketStream] | None:
    """Wrap and handshake; None if the peer is not speaking TLS or is too slow."""
    tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
    with trio.move_on_after(timeout):
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        return tls
    return None
