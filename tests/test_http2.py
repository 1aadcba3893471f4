"""HTTP/2 end to end through real clients: httpx, a raw h2 client, curl and h2load.

The scope an app sees, errors and disconnects on one stream while the others
go on, ``Upgrade: h2c``, ALPN and prior knowledge per ``--http`` mode, and
the access log. Flow control, shutdown and limits are in ``test_http2_flow.py``,
misbehaving clients in ``test_http2_abuse.py``.
"""

from __future__ import annotations

import json
import logging
import shutil
import ssl
from typing import Any

import h2.config
import h2.connection
import httpx
import pytest
import trio
from conftest import RunningServer, run_server
from h1_client import (
    WAIT,
    RawClient,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    request,
)
from h2_client import (
    ErrorCodes,
    H2Client,
    StreamResult,
    get_headers,
    h2_connect,
    parse_frames,
)
from hyperframe.frame import GoAwayFrame, PingFrame
from tls_cert import Certificate

Scope = dict[str, Any]


def tls_options(certificate: Certificate, **options: Any) -> dict[str, Any]:
    return {"ssl_certfile": certificate.certfile, "ssl_keyfile": certificate.keyfile, **options}


def scope_summary(scope: Scope) -> dict[str, Any]:
    return {
        "http_version": scope["http_version"],
        "method": scope["method"],
        "scheme": scope["scheme"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "root_path": scope["root_path"],
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        "client": list(scope["client"]) if scope["client"] else None,
        "server": list(scope["server"]) if scope["server"] else None,
    }


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """``/scope``: the scope as JSON; ``/echo``: what was read; ``/boom*``: failures."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path.endswith("/scope"):
        await read_body(receive)
        body = json.dumps(scope_summary(scope)).encode()
    elif path == "/echo":
        body = await read_body(receive)
    elif path == "/boom":
        raise RuntimeError("failing before the response")
    elif path == "/boom-after-head":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("failing after the head")
    else:
        body = f"ok {scope['http_version']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"palfrey")]})
    await send({"type": "http.response.body", "body": body})


async def assert_h2_serving(srv: RunningServer, tls: ssl.SSLContext | None = None) -> None:
    """A fresh HTTP/2 connection gets an answer."""
    async with h2_connect(srv, tls=tls) as client:
        result = await client.get("/still-alive")
    assert result.status == 200
    assert bytes(result.body) == b"ok 2"


# The scope.


async def test_scope_over_h2c_prior_knowledge() -> None:
    async with run_server(app, root_path="/api") as srv, h2_connect(srv) as client:
        headers = get_headers(
            "/a%20b/scope?x=1&y=%20",
            method="POST",
            authority="authority.example:8443",
            extra=[(b"x-custom", b"value"), (b"host", b"authority.example:8443")],
        )
        result = await client.response(client.request(headers, b"body"))
        local = client.sock.socket.getsockname()
    assert result.status == 200
    assert result.header(b"x-app") == b"palfrey"
    seen = json.loads(result.body)
    assert seen["http_version"] == "2"
    assert seen["method"] == "POST"
    assert seen["scheme"] == "http"
    assert seen["path"] == "/api/a b/scope"
    assert seen["raw_path"] == "/api/a%20b/scope"
    assert seen["query_string"] == "x=1&y=%20"
    assert seen["root_path"] == "/api"
    # :authority stands for Host and comes first; the Host field it repeats is dropped.
    assert seen["headers"][0] == ["host", "authority.example:8443"]
    assert [name for name, _ in seen["headers"]].count("host") == 1
    assert ["x-custom", "value"] in seen["headers"]
    assert not any(name.startswith(":") for name, _ in seen["headers"])
    assert seen["client"] == [local[0], local[1]]
    assert seen["server"] == ["127.0.0.1", srv.port]


async def test_scope_host_header_without_authority() -> None:
    async with run_server(app) as srv, h2_connect(srv) as client:
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":path", b"/scope"),
            (b"host", b"only-host.example"),
        ]
        result = await client.response(client.request(headers))
    assert result.status == 200
    assert ["host", "only-host.example"] in json.loads(result.body)["headers"]


async def test_authority_and_host_that_differ_are_malformed() -> None:
    """RFC 9113 §8.3.1: a stream error; the connection goes on."""
    async with run_server(app) as srv, h2_connect(srv) as client:
        headers = get_headers("/scope", authority="a.example", extra=[(b"host", b"b.example")])
        result = await client.response(client.request(headers))
        assert result.reset == ErrorCodes.PROTOCOL_ERROR
        assert result.headers is None
        assert bytes((await client.get("/after")).body) == b"ok 2"


async def test_scope_over_tls_with_httpx(certificate: Certificate) -> None:
    async with run_server(app, **tls_options(certificate)) as srv:
        async with httpx.AsyncClient(http2=True, verify=certificate.client_context()) as client:
            response = await client.get(f"https://localhost:{srv.port}/scope?q=1")
            again = await client.get(f"https://localhost:{srv.port}/")
    assert response.http_version == "HTTP/2"
    seen = response.json()
    assert seen["http_version"] == "2"
    assert seen["scheme"] == "https"
    assert seen["query_string"] == "q=1"
    assert seen["headers"][0] == ["host", f"localhost:{srv.port}"]
    assert again.text == "ok 2"


async def test_httpx_h2c_prior_knowledge() -> None:
    async with (
        run_server(app) as srv,
        httpx.AsyncClient(http1=False, http2=True) as client,
    ):
        responses = []
        async with trio.open_nursery() as nursery:

            async def get(index: int) -> None:
                response = await client.post(srv.url + "/echo", content=b"x%d" % index)
                responses.append((index, response))

            for index in range(20):
                nursery.start_soon(get, index)
    assert len(responses) == 20
    for index, response in responses:
        assert response.http_version == "HTTP/2"
        assert response.content == b"x%d" % index


async def test_http1_still_served_on_auto_cleartext() -> None:
    async with run_server(app) as srv, httpx.AsyncClient() as client:
        response = await client.get(srv.url + "/scope")
    assert response.http_version == "HTTP/1.1"
    assert response.json()["http_version"] == "1.1"


# Failures and disconnects on one stream.


async def test_app_error_before_response_is_500_on_that_stream() -> None:
    async with run_server(app) as srv, h2_connect(srv) as client:
        failing = client.request(get_headers("/boom"))
        fine = client.request(get_headers("/"))
        await client.run_until(lambda: client.streams[failing].done and client.streams[fine].done)
        assert client.streams[failing].status == 500
        assert client.streams[failing].ended
        assert bytes(client.streams[fine].body) == b"ok 2"
        # The connection goes on.
        assert bytes((await client.get("/after")).body) == b"ok 2"
        assert client.goaways == []


async def test_app_error_after_head_resets_the_stream() -> None:
    async with run_server(app) as srv, h2_connect(srv) as client:
        result = await client.get("/boom-after-head")
        assert result.status == 200
        assert bytes(result.body) == b"partial"
        assert not result.ended
        assert result.reset == ErrorCodes.INTERNAL_ERROR
        assert bytes((await client.get("/after")).body) == b"ok 2"
        assert client.goaways == []


async def test_client_reset_while_app_waits_in_receive() -> None:
    """RST_STREAM: the app's receive() gives http.disconnect and its send() then raises an
    OSError (the ASGI spec's ClientDisconnected); the other streams are not affected."""
    waiting = trio.Event()
    finished = trio.Event()
    seen: list[Any] = []

    async def recording_app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/wait":
            await app(scope, receive, send)
            return
        try:
            first = await receive()
            seen.append(first["type"])
            waiting.set()
            seen.append((await receive())["type"])
            try:
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"late"})
            except Exception as exc:
                seen.append(exc)
        finally:
            finished.set()

    async with run_server(recording_app) as srv, h2_connect(srv) as client:
        other = client.request(get_headers("/echo", method="POST"), end=False)
        client.send_body(other, b"first half ", end=False)
        waiting_id = client.request(get_headers("/wait", method="POST"), b"some", end=False)
        await client.run_until(waiting.is_set)
        client.reset_stream(waiting_id)
        await client.flush()
        with trio.fail_after(WAIT):
            await finished.wait()
        client.send_body(other, b"second half")
        result = await client.response(other)
        assert bytes(result.body) == b"first half second half"
        assert bytes((await client.get("/after")).body) == b"ok 2"
    assert seen[:2] == ["http.request", "http.disconnect"]
    assert len(seen) == 3, seen
    assert isinstance(seen[2], OSError)
    assert type(seen[2]).__name__ == "ClientDisconnected"


# Upgrade: h2c.


def h2c_client() -> tuple[h2.connection.H2Connection, bytes]:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    settings = conn.initiate_upgrade_connection()
    return conn, settings.rstrip(b"=")


async def test_h2c_upgrade_with_body_answers_on_stream_1() -> None:
    async with run_server(app) as srv, connect(srv) as raw:
        conn, settings = h2c_client()
        await raw.send(
            request(
                "POST",
                "/echo",
                headers=[
                    ("Connection", "Upgrade, HTTP2-Settings"),
                    ("Upgrade", "h2c"),
                    ("HTTP2-Settings", settings.decode()),
                ],
                body=b"upgrade body",
            )
        )
        head = await raw.read_head()
        assert head.status == 101
        assert head.header(b"upgrade") == b"h2c"
        client = H2Client(raw.stream)
        client.conn = conn
        client.feed(raw.buffer)
        client.streams[1] = StreamResult(1)
        await client.flush()  # the client preface
        result = await client.response(1)
        assert result.status == 200
        assert bytes(result.body) == b"upgrade body"
        # The connection is HTTP/2 from now on.
        assert bytes((await client.get("/next")).body) == b"ok 2"


def h2c_request(path: str = "/echo", body: bytes = b"", chunked: bool = False) -> bytes:
    _, settings = h2c_client()
    headers = [
        ("Connection", "Upgrade, HTTP2-Settings"),
        ("Upgrade", "h2c"),
        ("HTTP2-Settings", settings.decode()),
    ]
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
        return request("POST", path, headers=headers) + b"5\r\nhello\r\n0\r\n\r\n"
    return request("POST", path, headers=headers, body=body)


async def test_h2c_upgrade_not_taken_for_a_chunked_body() -> None:
    async with run_server(app) as srv, connect(srv) as raw:
        await raw.send(h2c_request(chunked=True))
        response = await raw.read_response()
        assert response.http_version == b"HTTP/1.1"
        assert response.status == 200
        assert response.body == b"hello"
        # (Like any refused upgrade with a chunked body, the HTTP/1.1 connection then closes.)


@pytest.mark.parametrize("split", [True, False], ids=["head-then-body", "one-write"])
async def test_h2c_upgrade_not_taken_for_a_body_over_64KiB(split: bool) -> None:
    body = b"x" * (1024 * 1024)
    message = h2c_request(body=body)
    async with run_server(app) as srv, connect(srv) as raw:
        if split:
            head_end = message.index(b"\r\n\r\n") + 4
            await raw.send(message[:head_end])
            await trio.sleep(0.05)
            message = message[head_end:]
        await raw.send(message)
        response = await raw.read_response()
        assert response.http_version == b"HTTP/1.1"
        assert response.status == 200
        assert response.body == body
        await raw.send(request("GET", "/scope"))
        assert json.loads((await raw.read_response()).body)["http_version"] == "1.1"


async def test_h2c_upgrade_limit_counts_the_body_that_came_with_the_head() -> None:
    body = b"x" * (100 * 1024)
    async with run_server(app) as srv, connect(srv) as raw:
        await raw.send(h2c_request(body=body))
        response = await raw.read_head()
        assert response.status == 200  # HTTP/1.1, not 101


@pytest.mark.parametrize("http", ["h11", "httptools", "h2"])
async def test_h2c_upgrade_only_in_auto_mode(http: str) -> None:
    _, settings = h2c_client()
    message = request(
        "GET",
        "/",
        headers=[
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", settings.decode()),
        ],
    )
    async with run_server(app, http=http) as srv, connect(srv) as raw:
        await raw.send(message)
        if http == "h2":
            # Not HTTP/2's preface: the connection is refused at once.
            data = await raw.read_until_closed()
            assert not data.startswith(b"HTTP/1.1")
        else:
            response = await raw.read_response()
            assert response.status == 200
            assert response.body == b"ok 1.1"


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


async def run_curl(*args: str) -> tuple[int, str, str]:
    with trio.fail_after(WAIT * 2):
        result = await trio.run_process(
            ["curl", "--silent", "--show-error", "--max-time", "5", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@needs_curl
async def test_curl_h2c_upgrade_with_body() -> None:
    async with run_server(app) as srv:
        code, out, err = await run_curl(
            "--http2", "--data-binary", "curl body", "--write-out", "\n%{http_version}",
            srv.url + "/echo",
        )  # fmt: skip
    assert code == 0, err
    assert out == "curl body\n2"


@needs_curl
async def test_curl_prior_knowledge_and_tls(certificate: Certificate) -> None:
    async with run_server(app) as srv:
        code, out, err = await run_curl(
            "--http2-prior-knowledge", "--write-out", " %{http_version}", srv.url + "/"
        )
    assert code == 0, err
    assert out == "ok 2 2"
    async with run_server(app, **tls_options(certificate)) as srv:
        code, out, err = await run_curl(
            "--http2", "--cacert", certificate.certfile, "--write-out", " %{http_version}",
            f"https://localhost:{srv.port}/",
        )  # fmt: skip
    assert code == 0, err
    assert out == "ok 2 2"


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load is not installed")
async def test_h2load_h2c() -> None:
    async with run_server(app, timeout_keep_alive=30) as srv:
        with trio.fail_after(30):
            result = await trio.run_process(
                ["h2load", "-n", "2000", "-c", "4", "-m", "16", srv.url + "/"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "2000 succeeded, 0 failed, 0 errored" in out, out
    assert "status codes: 2000 2xx" in out, out


# Protocol selection per --http mode.


async def tls_handshake(srv: RunningServer, context: ssl.SSLContext) -> trio.SSLStream[Any]:
    with trio.fail_after(WAIT):
        tcp = await trio.open_tcp_stream(srv.host, srv.port)
        stream = trio.SSLStream(tcp, context, server_hostname="localhost")
        await stream.do_handshake()
    return stream


@pytest.mark.parametrize(
    ("http", "offered", "selected"),
    [
        ("auto", ["h2", "http/1.1"], "h2"),
        ("auto", ["http/1.1", "h2"], "h2"),
        ("auto", ["http/1.1"], "http/1.1"),
        ("h11", ["h2", "http/1.1"], "http/1.1"),
        ("httptools", ["h2", "http/1.1"], "http/1.1"),
        ("h2", ["h2", "http/1.1"], "h2"),
    ],
)
async def test_alpn_per_mode(
    http: str, offered: list[str], selected: str, certificate: Certificate
) -> None:
    async with run_server(app, http=http, **tls_options(certificate)) as srv:
        stream = await tls_handshake(srv, certificate.client_context(offered))
        assert stream.selected_alpn_protocol() == selected
        if selected == "h2":
            client = H2Client(stream)
            await client.start()
            result = await client.get("/scope", scheme="https")
            assert json.loads(result.body)["http_version"] == "2"
        else:
            raw = RawClient(stream)
            await raw.send(request("GET", "/scope"))
            assert json.loads((await raw.read_response()).body)["http_version"] == "1.1"
        await stream.aclose()


@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_httpx_over_tls_gets_http1_in_http1_modes(
    http: str, certificate: Certificate
) -> None:
    async with run_server(app, http=http, **tls_options(certificate)) as srv:
        async with httpx.AsyncClient(http2=True, verify=certificate.client_context()) as client:
            response = await client.get(f"https://localhost:{srv.port}/")
    assert response.http_version == "HTTP/1.1"
    assert response.text == "ok 1.1"


async def test_h2_mode_refuses_an_http1_only_tls_client(certificate: Certificate) -> None:
    """``--http h2`` offers only h2: a client offering only http/1.1 fails the handshake
    (OpenSSL's no_application_protocol alert) or, if it gets through, gets no ALPN and
    then HTTP/2's answer to an HTTP/1.1 request (a GOAWAY, and the connection closes)."""
    async with run_server(app, http="h2", **tls_options(certificate)) as srv:
        try:
            stream = await tls_handshake(srv, certificate.client_context(["http/1.1"]))
        except trio.BrokenResourceError:
            pass
        else:
            # What happens with this OpenSSL: no ALPN, then SETTINGS and GOAWAY PROTOCOL_ERROR.
            assert stream.selected_alpn_protocol() is None
            raw = RawClient(stream)
            await raw.send(request())
            data = await raw.read_until_closed()
            assert not data.startswith(b"HTTP/")
            assert any(isinstance(f, GoAwayFrame) for f in parse_frames(data))
            await stream.aclose()
        await assert_h2_serving(srv, certificate.client_context(["h2"]))


async def test_tls_without_alpn_in_auto_mode_is_http1(certificate: Certificate) -> None:
    async with run_server(app, **tls_options(certificate)) as srv:
        stream = await tls_handshake(srv, certificate.client_context())
        assert stream.selected_alpn_protocol() is None
        raw = RawClient(stream)
        await raw.send(request("GET", "/scope"))
        assert json.loads((await raw.read_response()).body)["http_version"] == "1.1"
        await stream.aclose()


@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_cleartext_http1_mode_answers_a_preface_as_http1(http: str) -> None:
    async with run_server(app, http=http) as srv:
        async with connect(srv) as raw:
            client = H2Client(raw.stream)
            await client.start()
            response = await raw.read_response()
            assert response.http_version == b"HTTP/1.1"
            assert 400 <= response.status <= 505  # 505 (h11) or 400 (httptools)
            await raw.read_until_closed()
        async with connect(srv) as raw:
            await raw.send(request("GET", "/scope"))
            assert (await raw.read_response()).status == 200


async def test_cleartext_h2_mode_answers_http1_with_goaway() -> None:
    async with run_server(app, http="h2") as srv:
        async with connect(srv) as raw:
            await raw.send(request())
            data = await raw.read_until_closed()
        assert not data.startswith(b"HTTP/")
        if data:
            # The server's SETTINGS may come first; then a GOAWAY.
            assert any(isinstance(f, GoAwayFrame) for f in parse_frames(data))
        await assert_h2_serving(srv)
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            response = await client.get(srv.url + "/")
        assert response.text == "ok 2"


# The access log.


async def test_access_log_one_line_per_stream(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="palfrey.access"):
        async with run_server(app) as srv, h2_connect(srv) as client:
            ids = [client.request(get_headers(f"/log/{index}?n={index}")) for index in range(3)]
            failing = client.request(get_headers("/boom"))
            await client.run_until(lambda: all(client.streams[i].done for i in [*ids, failing]))
    lines = [r.getMessage() for r in caplog.records if r.name == "palfrey.access"]
    assert len(lines) == 4, lines
    for index in range(3):
        assert sum(f'"GET /log/{index}?n={index} HTTP/2" 200' in line for line in lines) == 1
    assert sum('"GET /boom HTTP/2" 500' in line for line in lines) == 1
    assert all(line.startswith("127.0.0.1:") for line in lines)


# Responses.


async def response_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/trailers":
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"body"})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})
        return
    if scope["path"] == "/hop-by-hop":
        headers = [
            (b"connection", b"close"),
            (b"keep-alive", b"timeout=5"),
            (b"transfer-encoding", b"chunked"),
            (b"upgrade", b"h2c"),
            (b"x-kept", b"1"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hi"})
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    await send({"type": "http.response.body", "body": b"hello"})


async def test_head_response_has_no_body() -> None:
    async with run_server(response_app) as srv, h2_connect(srv) as client:
        result = await client.get("/", method="HEAD")
    assert result.status == 200
    assert result.header(b"content-length") == b"5"
    assert bytes(result.body) == b""
    assert result.ended


async def test_trailers_when_the_client_accepts_them() -> None:
    async with run_server(response_app) as srv, h2_connect(srv) as client:
        result = await client.get("/trailers", extra=[(b"te", b"trailers")])
    assert bytes(result.body) == b"body"
    assert result.trailers == [(b"x-checksum", b"abc")]


async def test_connection_specific_response_fields_are_dropped() -> None:
    async with run_server(response_app) as srv, h2_connect(srv) as client:
        result = await client.get("/hop-by-hop")
    names = [name for name, _ in result.headers or []]
    for name in (b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"):
        assert name not in names
    assert result.header(b"x-kept") == b"1"
    assert bytes(result.body) == b"hi"


@pytest.mark.parametrize(
    ("claimed", "seen"), [("https", "https"), ("http", "http"), ("ftp", "http")]
)
async def test_scheme_is_the_requests_when_asgi_can_carry_it(claimed: str, seen: str) -> None:
    """RFC 9113 §8.3.1: ``:scheme`` is the request target's scheme (behind an h2c proxy
    that terminates TLS it is ``https``); one a scope cannot carry falls back to the
    connection's."""
    async with run_server(app) as srv, h2_connect(srv) as client:
        result = await client.get("/scope", scheme=claimed)
    assert json.loads(result.body)["scheme"] == seen


# The client ends the connection.


def slow_app_and_release() -> tuple[Any, trio.Event, list[Any]]:
    release = trio.Event()
    seen: list[Any] = []

    async def slow_app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await release.wait()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"finished"})
        except OSError as exc:
            seen.append(exc)

    return slow_app, release, seen


async def test_client_goaway_lets_the_stream_in_flight_finish() -> None:
    """RFC 9113 §6.8: GOAWAY stops new streams; those already open are still answered.
    (The client's last_stream_id names the server's streams, so 0 here.)"""
    slow_app, release, seen = slow_app_and_release()
    async with run_server(slow_app) as srv, h2_connect(srv) as client:
        await client.run_until(lambda: client.settings_acked)
        stream_id = client.request(get_headers("/"))
        await client.flush()
        # Raw: h2 would refuse every frame after its own GOAWAY.
        client.queue_frame(GoAwayFrame(0, last_stream_id=0))
        await client.flush()
        release.set()
        result = await client.response(stream_id)
        assert seen == []
        assert bytes(result.body) == b"finished"
        await client.until_closed()
        assert client.goaway_codes() == [ErrorCodes.NO_ERROR]


async def test_frames_after_the_clients_goaway_are_not_an_error() -> None:
    slow_app, release, _ = slow_app_and_release()
    async with run_server(slow_app) as srv, h2_connect(srv, raw=True) as client:
        await client.run_until(lambda: client.settings_acked)
        client.request(get_headers("/"))
        client.queue_frame(GoAwayFrame(0, last_stream_id=0))
        client.queue_frame(PingFrame(0, opaque_data=b"stillhere"[:8]))
        await client.flush()
        with trio.move_on_after(0.3):
            await client.run_until(lambda: client.closed)
        release.set()
        assert ErrorCodes.PROTOCOL_ERROR not in client.goaway_codes()


async def test_client_leaving_disconnects_every_stream() -> None:
    disconnected: list[str] = []
    started = trio.Event()

    async def waiting_app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if len(disconnected) == 0 and scope["path"] == "/2":
            started.set()
        message = await receive()
        while message["type"] == "http.request":
            message = await receive()
        disconnected.append(message["type"])

    async with run_server(waiting_app) as srv:
        async with h2_connect(srv) as client:
            for index in range(3):
                client.request(get_headers(f"/{index}", method="POST"), end=False)
            await client.run_until(started.is_set)
        with trio.fail_after(WAIT):
            while len(disconnected) < 3:
                await trio.sleep(0.01)
    assert disconnected == ["http.disconnect"] * 3


async def test_raised_max_inbound_frame_size_takes_frames_that_large() -> None:
    # httpx's h2 sends DATA frames as large as the server allows (here one of 60,000
    # bytes): the advertised limit must be the one enforced.
    body = b"y" * 60_000
    async with (
        run_server(app, h2_max_inbound_frame_size=65_536) as srv,
        httpx.AsyncClient(http1=False, http2=True) as client,
    ):
        response = await client.post(srv.url + "/echo", content=body)
        second = await client.post(srv.url + "/echo", content=body)
    assert response.http_version == "HTTP/2"
    assert response.content == body
    assert second.content == body
