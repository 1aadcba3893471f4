"""TLS: the server SSLContext, the handshake under its own deadline, and the ``tls`` extension.

The ``tls`` scope extension (asgiref ``specs/tls.rst``) describes the
connection, not the request, so it is built once, right after the handshake,
and the same dict goes into the scope of every request (and WebSocket) the
connection carries. What it repeats for every connection (the server's
certificate, the cipher names' IANA numbers) is worked out once, when the
context is created, and kept on the context.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from palfrey.transport.errors import TLSSetupError

if TYPE_CHECKING:
    from palfrey.config.schema import Config
    from palfrey.transport.socket_stream import SocketStream
    from palfrey.transport.state import ServerState

#: ``SSLObject.version()`` as the number the TLS specifications (and the extension) use.
#: TLS 1.2 is the minimum the context accepts, so no older version can occur.
TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

#: The RFC 4514 §3 short names, keyed by the OpenSSL long names ``getpeercert()`` gives.
_RFC4514_NAMES = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL
)
#: Characters RFC 4514 §2.4 escapes anywhere in a value.
_SPECIAL = re.compile(r'(["+,;<>\\])')


class ServerSSLContext(ssl.SSLContext):
    """The server's context, with what every connection's ``tls`` extension repeats."""

    __slots__ = ("cipher_ids", "server_cert")

    #: The PEM of the certificate the server presents (the certfile's first), or None.
    server_cert: str | None
    #: OpenSSL cipher name -> IANA cipher suite number, for the suites this context enables.
    cipher_ids: dict[str, int]


def create_ssl_context(config: Config, alpn_protocols: list[str]) -> ServerSSLContext:
    """The server context; ALPN offers ``alpn_protocols`` in order of preference.

    TLS 1.2 is the minimum: older versions are deprecated (RFC 8996). The
    TLS 1.2 suites are ``--ssl-ciphers``, whose default keeps suites every
    current client offers; TLS 1.3 suites are OpenSSL's and not configurable.
    """
    context = ServerSSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
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
    context.server_cert = server_certificate_pem(config.ssl_certfile)  # type: ignore[arg-type]
    # The low 16 bits of OpenSSL's id are the two bytes of the IANA registry.
    context.cipher_ids = {cipher["name"]: cipher["id"] & 0xFFFF for cipher in context.get_ciphers()}
    return context


def server_certificate_pem(certfile: str) -> str | None:
    """The first certificate in ``certfile`` (the one the server presents), re-encoded
    from its DER so it is laid out like the client certificates' PEM; None if the
    standard library cannot re-read it."""
    match = _PEM_CERTIFICATE.search(Path(certfile).read_text(encoding="ascii", errors="replace"))
    if match is None:
        return None
    try:
        return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(match.group()))
    except ValueError:
        return None


def tls_extension(stream: trio.SSLStream[Any]) -> dict[str, Any]:
    """The ``tls`` scope extension of a connection whose handshake is done.

    ``client_cert_chain`` holds the client's own certificate only: trio's
    SSLStream forwards ``getpeercert`` but not ``get_verified_chain`` (Python
    3.13+), so the intermediates the client sent are not reachable.
    ``client_cert_error`` is always None: with ``--ssl-cert-reqs`` 1 or 2,
    OpenSSL fails the handshake on a certificate it cannot verify, so no request
    arrives on such a connection; with 0 no certificate is asked for.
    """
    context: ServerSSLContext = stream.context
    der = stream.getpeercert(binary_form=True)
    cipher = stream.cipher()
    return {
        "server_cert": context.server_cert,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": rfc4514_name(stream.getpeercert()["subject"]) if der else None,
        "client_cert_error": None,
        "tls_version": TLS_VERSIONS.get(stream.version()),
        "cipher_suite": context.cipher_ids.get(cipher[0]) if cipher else None,
    }


def rfc4514_name(subject: tuple[tuple[tuple[str, str], ...], ...]) -> str:
    """A subject as ``getpeercert()`` gives it, as an RFC 4514 string: last RDN first,
    RFC 4514's short names; other attributes keep OpenSSL's name (as ``openssl x509
    -nameopt RFC2253`` prints them)."""
    return ",".join(
        "+".join(f"{_RFC4514_NAMES.get(name, name)}={_escape(value)}" for name, value in rdn)
        for rdn in reversed(subject)
    )


def _escape(value: str) -> str:
    """RFC 4514 §2.4: the specials anywhere, a leading space or ``#``, a trailing space, NUL."""
    escaped = _SPECIAL.sub(r"\\\1", value).replace("\0", "\\00")
    if value.startswith((" ", "#")):
        escaped = "\\" + escaped
    if value.endswith(" ") and len(value) > 1:
        escaped = escaped[:-1] + "\\ "
    return escaped


def _reason(exc: OSError | ssl.SSLError) -> str:
    return exc.strerror or getattr(exc, "reason", None) or str(exc)


async def handshake(
    stream: SocketStream, context: ssl.SSLContext, timeout: float, state: ServerState
) -> trio.SSLStream[SocketStream] | None:
    """Wrap and handshake; None if the peer is not speaking TLS or is too slow."""
    tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
    with trio.move_on_after(timeout):
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        return tls
    state.count_timeout("tls_handshake")
    return None
