"""HTTPS: a self-signed certificate, scheme, ALPN and misbehaving TLS clients."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from h1_client import (
    WAIT,
    RawClient,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    request,
)
from tls_cert import Certificate

Scope = dict[str, Any]


def tls_options(certificate: Certificate, **options: Any) -> dict[str, Any]:
    return {"ssl_certfile": certificate.certfile, "ssl_keyfile": certificate.keyfile, **options}


async def scope_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = f"{scope['scheme']} {scope['http_version']}".encode()
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": body})


async def open_tls(srv: Any, context: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    with trio.fail_after(WAIT):
        tcp = await trio.open_tcp_stream(srv.host, srv.port)
        tls = trio.SSLStream(tcp, context, server_hostname="localhost")
        await tls.do_handshake()
    return tls


async def test_https_scheme(serve: Any, certificate: Certificate) -> None:
    async with serve(scope_app, **tls_options(certificate)) as srv:
        assert srv.url.startswith("https://")
        async with httpx.AsyncClient(verify=certificate.client_context()) as client:
            response = await client.get(srv.url)
    assert response.text == "https 1.1"


async def test_alpn_selects_http11(serve: Any, certificate: Certificate) -> None:
    async with serve(scope_app, **tls_options(certificate)) as srv:
        tls = await open_tls(srv, certificate.client_context(["h2", "http/1.1"]))
        assert tls.selected_alpn_protocol() == "http/1.1"
        client = RawClient(tls)
        await client.send(request())
        assert (await client.read_response()).body == b"https 1.1"
        await tls.aclose()


async def test_plaintext_on_tls_port_closes_only_that_connection(
    serve: Any, certificate: Certificate
) -> None:
    async with serve(scope_app, **tls_options(certificate)) as srv:
        tls = await open_tls(srv, certificate.client_context())
        good = RawClient(tls)
        async with connect(srv) as plain:
            await plain.send(request())
            received = await plain.read_until_closed()
        assert not received.startswith(b"HTTP/")
        # The TLS connection opened before still works, and so do new ones.
        await good.send(request())
        assert (await good.read_response()).body == b"https 1.1"
        await tls.aclose()
        async with httpx.AsyncClient(verify=certificate.client_context()) as client:
            assert (await client.get(srv.url)).status_code == 200


async def test_handshake_timeout(
    serve: Any, certificate: Certificate, autojump_clock: trio.testing.MockClock
) -> None:
    # On the mock clock: shorter than the head timeout (10 s), so only the handshake's own
    # deadline can close the connection this early.
    timeout = 5.0
    options = tls_options(certificate, timeout_tls_handshake=timeout)
    async with serve(scope_app, **options) as srv:
        start = trio.current_time()
        async with connect(srv) as silent:
            await silent.assert_closed(timeout=timeout + WAIT)
            waited = trio.current_time() - start
    assert timeout - 1e-6 <= waited < timeout + 1


async def test_untrusted_client_abort_is_harmless(serve: Any, certificate: Certificate) -> None:
    async with serve(scope_app, **tls_options(certificate)) as srv:
        with pytest.raises(trio.BrokenResourceError):
            await open_tls(srv, ssl.create_default_context())
        async with httpx.AsyncClient(verify=certificate.client_context()) as client:
            assert (await client.get(srv.url)).status_code == 200


async def test_keep_alive_over_tls(serve: Any, certificate: Certificate) -> None:
    async with serve(scope_app, **tls_options(certificate)) as srv:
        tls = await open_tls(srv, certificate.client_context())
        client = RawClient(tls)
        await client.send(request() + request())
        assert (await client.read_response()).body == b"https 1.1"
        assert (await client.read_response()).body == b"https 1.1"
        await tls.aclose()


async def test_disconnect_listener_then_keep_alive_over_tls(
    serve: Any, certificate: Certificate
) -> None:
    """A receive() cancelled mid-read (response done) must leave the TLS stream usable."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        async with trio.open_nursery() as nursery:

            async def listen() -> None:
                assert (await receive())["type"] == "http.disconnect"

            nursery.start_soon(listen)
            await trio.sleep(0.01)
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"one", "more_body": True})
            await send({"type": "http.response.body", "body": b"two"})

    async with serve(app, **tls_options(certificate)) as srv:
        tls = await open_tls(srv, certificate.client_context())
        client = RawClient(tls)
        for _ in range(3):
            await client.send(request())
            assert (await client.read_response()).body == b"onetwo"
        await tls.aclose()


async def test_a_large_body_arrives_whole_over_tls(serve: Any, certificate: Certificate) -> None:
    # Over TLS the head and body are joined before encryption (no gathering ``sendmsg``).
    body = bytes(range(256)) * 4 * 1024

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async with serve(app, **tls_options(certificate)) as srv:
        async with httpx.AsyncClient(verify=certificate.client_context()) as client:
            for _ in range(2):
                assert (await client.get(srv.url)).content == body
