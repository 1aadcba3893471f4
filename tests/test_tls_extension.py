"""The ``tls`` scope extension (asgiref ``specs/tls.rst``), mTLS, and the TLS versions and
ciphers a default server accepts.

Every certificate is made here: a CA, a server certificate and a client
certificate it signed, and a client certificate from a CA the server does
not trust.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from conftest import run_server
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from h1_client import (
    WAIT,
    RawClient,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    request,
)
from h3_client import h3_client
from ws_client import in_thread, sync_client

import palfrey
from palfrey.transport.tls import create_ssl_context, rfc4514_name, server_certificate_pem

Scope = dict[str, Any]

#: IANA numbers (RFC 8446 §B.4) of the TLS 1.3 suites OpenSSL enables.
TLS13_SUITES = {0x1301, 0x1302, 0x1303}
#: TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 (RFC 7905).
ECDHE_ECDSA_CHACHA20 = 0xCCA9


@attrs.frozen
class Issued:
    """A certificate and its key on disk, and its DER and subject as the test expects them."""

    certfile: str
    keyfile: str
    der: bytes
    subject: str


@attrs.frozen
class Pki:
    ca: str
    server: Issued
    client: Issued
    #: Signed by a CA the server does not trust.
    rogue: Issued


def _name(common_name: str, organization: str = "Palfrey tests") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _issue(
    directory: Path,
    stem: str,
    subject: x509.Name,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> tuple[Issued, ec.EllipticCurvePrivateKey]:
    """A certificate for ``subject``, signed by ``issuer`` (self-signed without one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    cert = builder.sign(issuer_key, hashes.SHA256())
    certfile = directory / f"{stem}.pem"
    keyfile = directory / f"{stem}.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    issued = Issued(
        str(certfile),
        str(keyfile),
        cert.public_bytes(serialization.Encoding.DER),
        subject.rfc4514_string(),
    )
    return issued, key


def _ca(directory: Path, stem: str) -> tuple[Issued, tuple[x509.Name, ec.EllipticCurvePrivateKey]]:
    name = _name(f"{stem} CA")
    ca, key = _issue(
        directory, stem, name, None, [(x509.BasicConstraints(ca=True, path_length=None), True)]
    )
    return ca, (name, key)


def _leaf(
    directory: Path,
    stem: str,
    subject: x509.Name,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey],
    usage: x509.ObjectIdentifier,
) -> Issued:
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.ExtendedKeyUsage([usage]), False),
    ]
    if usage == x509.ExtendedKeyUsageOID.SERVER_AUTH:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        extensions.append((x509.SubjectAlternativeName(names), False))
    return _issue(directory, stem, subject, issuer, extensions)[0]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, signer = _ca(directory, "ca")
    _, rogue_signer = _ca(directory, "rogue-ca")
    client_auth = x509.ExtendedKeyUsageOID.CLIENT_AUTH
    return Pki(
        ca=ca.certfile,
        server=_leaf(
            directory, "server", _name("localhost"), signer, x509.ExtendedKeyUsageOID.SERVER_AUTH
        ),
        # A comma and a plus in a value: the name must escape them (RFC 4514 §2.4).
        client=_leaf(directory, "client", _name("alice+bob", "Acme, Inc"), signer, client_auth),
        rogue=_leaf(directory, "rogue", _name("mallory"), rogue_signer, client_auth),
    )


def server_options(pki: Pki, cert_reqs: int = 0, **options: Any) -> dict[str, Any]:
    return {
        "ssl_certfile": pki.server.certfile,
        "ssl_keyfile": pki.server.keyfile,
        "ssl_ca_certs": pki.ca,
        "ssl_cert_reqs": cert_reqs,
        **options,
    }


def client_context(
    pki: Pki,
    cert: Issued | None = None,
    *,
    alpn: list[str] | None = None,
    version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """Trusts the test CA; presents ``cert``; speaks only ``version`` when given."""
    context = ssl.create_default_context(cafile=pki.ca)
    if cert is not None:
        context.load_cert_chain(cert.certfile, cert.keyfile)
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    if version is not None:
        context.minimum_version = context.maximum_version = version
    return context


async def tls_app(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with the scope's ``tls`` extension (null when absent) and the dict's id."""
    tls = scope["extensions"].get("tls")
    seen = {"tls": tls, "id": id(tls), "http_version": scope["http_version"]}
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(seen)})
        await send({"type": "websocket.close"})
        return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": json.dumps(seen).encode()})


@attrs.frozen
class Seen:
    """What the app saw on two requests of one connection, and what the client negotiated."""

    first: dict[str, Any]
    second: dict[str, Any]
    client_version: int
    client_cipher: int

    @property
    def tls(self) -> dict[str, Any]:
        return self.first["tls"]  # type: ignore[no-any-return]


async def two_requests(srv: Any, context: ssl.SSLContext) -> Seen:
    """Two requests on one HTTP/1.1 connection with ``context``."""
    with trio.fail_after(WAIT):
        tcp = await trio.open_tcp_stream(srv.host, srv.port)
        tls = trio.SSLStream(tcp, context, server_hostname="localhost")
        await tls.do_handshake()
        client = RawClient(tls)
        await client.send(request() + request())
        first = json.loads((await client.read_response()).body)
        second = json.loads((await client.read_response()).body)
        version = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}[tls.version()]
        ids = {cipher["name"]: cipher["id"] & 0xFFFF for cipher in context.get_ciphers()}
        cipher = ids[tls.cipher()[0]]
        await tls.aclose()
    return Seen(first, second, version, cipher)


def pem_der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


def assert_without_client_cert(tls: dict[str, Any], pki: Pki) -> None:
    assert pem_der(tls["server_cert"]) == pki.server.der
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None


def assert_client_cert(tls: dict[str, Any], pki: Pki) -> None:
    assert pem_der(tls["server_cert"]) == pki.server.der
    assert [pem_der(pem) for pem in tls["client_cert_chain"]] == [pki.client.der]
    assert tls["client_cert_chain"][0].startswith("-----BEGIN CERTIFICATE-----\n")
    assert tls["client_cert_name"] == pki.client.subject
    assert tls["client_cert_name"] == "CN=alice\\+bob,O=Acme\\, Inc,C=NL"
    assert tls["client_cert_error"] is None


async def test_http11_without_client_certificate(serve: Any, pki: Pki) -> None:
    async with serve(tls_app, **server_options(pki)) as srv:
        seen = await two_requests(srv, client_context(pki, alpn=["http/1.1"]))
    assert_without_client_cert(seen.tls, pki)
    assert seen.tls["tls_version"] == seen.client_version == 0x0304
    assert seen.tls["cipher_suite"] == seen.client_cipher
    assert seen.client_cipher in TLS13_SUITES
    # One dict per connection, shared by its requests.
    assert seen.first == seen.second


@pytest.mark.parametrize("cert_reqs", [1, 2])
async def test_http11_client_certificate(serve: Any, pki: Pki, cert_reqs: int) -> None:
    async with serve(tls_app, **server_options(pki, cert_reqs)) as srv:
        seen = await two_requests(srv, client_context(pki, pki.client, alpn=["http/1.1"]))
    assert_client_cert(seen.tls, pki)
    assert seen.tls["tls_version"] == 0x0304
    assert seen.first == seen.second


async def test_optional_client_certificate_may_be_absent(serve: Any, pki: Pki) -> None:
    async with serve(tls_app, **server_options(pki, 1)) as srv:
        seen = await two_requests(srv, client_context(pki))
    assert_without_client_cert(seen.tls, pki)


@pytest.mark.parametrize("cert_reqs", [1, 2])
async def test_untrusted_client_certificate_never_reaches_the_app(pki: Pki, cert_reqs: int) -> None:
    """OpenSSL fails the handshake, so ``client_cert_error`` never carries an error."""
    async with run_server(tls_app, **server_options(pki, cert_reqs)) as srv:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            async with httpx.AsyncClient(verify=client_context(pki, pki.rogue)) as client:
                await client.get(f"https://localhost:{srv.port}/")
        # The server goes on serving.
        async with httpx.AsyncClient(verify=client_context(pki, pki.client)) as client:
            response = await client.get(f"https://localhost:{srv.port}/")
    assert response.json()["tls"]["client_cert_name"] == pki.client.subject


async def test_required_client_certificate_missing(pki: Pki) -> None:
    async with run_server(tls_app, **server_options(pki, 2)) as srv:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            async with httpx.AsyncClient(verify=client_context(pki)) as client:
                await client.get(f"https://localhost:{srv.port}/")


async def test_http2_streams_share_the_connection_extension(pki: Pki) -> None:
    async with run_server(tls_app, **server_options(pki, 2)) as srv:
        context = client_context(pki, pki.client)
        async with httpx.AsyncClient(http2=True, verify=context) as client:
            first = await client.get(f"https://localhost:{srv.port}/")
            second = await client.get(f"https://localhost:{srv.port}/")
    assert first.http_version == "HTTP/2"
    seen = first.json()
    assert seen["http_version"] == "2"
    assert_client_cert(seen["tls"], pki)
    assert seen["tls"]["tls_version"] == 0x0304
    assert seen["tls"]["cipher_suite"] in TLS13_SUITES
    assert second.json() == seen


async def test_http2_without_client_certificate(pki: Pki) -> None:
    async with run_server(tls_app, **server_options(pki)) as srv:
        async with httpx.AsyncClient(http2=True, verify=client_context(pki)) as client:
            response = await client.get(f"https://localhost:{srv.port}/")
    assert response.json()["http_version"] == "2"
    assert_without_client_cert(response.json()["tls"], pki)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_http3_carries_the_extension_without_client_certificates(pki: Pki) -> None:
    options = server_options(pki, lifespan="off", http="h3")
    async with run_server(tls_app, **options) as srv:
        [quic] = [address for address in srv.addresses if address.startswith("quic://")]
        async with h3_client(int(quic.rsplit(":", 1)[1])) as client:
            first = json.loads(bytes((await client.request("GET", "/")).body))
            second = json.loads(bytes((await client.request("GET", "/")).body))
    assert first["http_version"] == "3"
    assert_without_client_cert(first["tls"], pki)
    assert first["tls"]["tls_version"] == 0x0304
    assert first["tls"]["cipher_suite"] in TLS13_SUITES
    assert second == first


async def test_websocket_over_tls(serve: Any, pki: Pki) -> None:
    async with serve(tls_app, **server_options(pki, 2)) as srv:
        context = client_context(pki, pki.client)
        url = f"wss://localhost:{srv.port}/"

        def exchange() -> str:
            with sync_client(url, ssl=context) as ws:
                return str(ws.recv(timeout=WAIT))

        seen = json.loads(await in_thread(exchange))
    assert_client_cert(seen["tls"], pki)
    assert seen["tls"]["tls_version"] == 0x0304


async def test_cleartext_scope_has_no_tls_extension(serve: Any) -> None:
    async with serve(tls_app) as srv, httpx.AsyncClient() as client:
        response = await client.get(srv.url)
    assert response.json()["tls"] is None


async def test_tls12_only_client_with_defaults(serve: Any, pki: Pki) -> None:
    async with serve(tls_app, **server_options(pki)) as srv:
        seen = await two_requests(srv, client_context(pki, version=ssl.TLSVersion.TLSv1_2))
    assert seen.tls["tls_version"] == seen.client_version == 0x0303
    assert seen.tls["cipher_suite"] == seen.client_cipher
    # ECDHE-ECDSA with AES-GCM or ChaCha20 (the server's key is ECDSA).
    assert seen.client_cipher in {0xC02B, 0xC02C, ECDHE_ECDSA_CHACHA20}


async def test_tls13_only_client_with_defaults(serve: Any, pki: Pki) -> None:
    async with serve(tls_app, **server_options(pki)) as srv:
        seen = await two_requests(srv, client_context(pki, version=ssl.TLSVersion.TLSv1_3))
    assert seen.tls["tls_version"] == 0x0304
    assert seen.tls["cipher_suite"] == seen.client_cipher


def test_context_refuses_versions_before_tls12(pki: Pki) -> None:
    config = palfrey.Config(app=tls_app, **server_options(pki))
    context = create_ssl_context(config, ["http/1.1"])
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


async def test_ssl_ciphers_override(pki: Pki) -> None:
    options = server_options(pki, ssl_ciphers="ECDHE-ECDSA-CHACHA20-POLY1305")
    async with run_server(tls_app, **options) as srv:
        seen = await two_requests(srv, client_context(pki, version=ssl.TLSVersion.TLSv1_2))
        # A TLS 1.2 client that offers only suites outside the override is refused.
        only_aes = client_context(pki, version=ssl.TLSVersion.TLSv1_2)
        only_aes.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        with pytest.raises(trio.BrokenResourceError):
            await two_requests(srv, only_aes)
    assert seen.tls["cipher_suite"] == seen.client_cipher == ECDHE_ECDSA_CHACHA20


def test_server_cert_is_the_first_certificate_of_a_combined_file(pki: Pki, tmp_path: Path) -> None:
    combined = tmp_path / "combined.pem"
    combined.write_text(
        Path(pki.server.keyfile).read_text()
        + Path(pki.server.certfile).read_text()
        + Path(pki.ca).read_text()
    )
    pem = server_certificate_pem(str(combined))
    assert pem is not None
    assert pem_der(pem) == pki.server.der


def test_rfc4514_name() -> None:
    subject = (
        (("countryName", "NL"),),
        (("organizationName", " #lead;<trail> "),),
        (("commonName", 'a\\b"c'), ("userId", "7")),
        (("emailAddress", "a@example.com"),),
    )
    assert rfc4514_name(subject) == (
        'emailAddress=a@example.com,CN=a\\\\b\\"c+UID=7,O=\\ #lead\\;\\<trail\\>\\ ,C=NL'
    )
