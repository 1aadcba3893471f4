"""The ``http.response.trailers`` and ``http.response.early_hint`` extensions on HTTP/1.1.

Through real sockets (both parsers, via the ``serve`` fixture) the exact bytes:
a chunked body followed by its trailer section, ``103 Early Hints`` heads
before the final one. Then when each extension is offered, what is dropped
where HTTP/1.x can't carry it, how bad messages fail, and that every such
``send()`` is a checkpoint. Last, the two sans-I/O handlers write the same
bytes for ``send_informational`` and ``send_trailers``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from h1_client import (
    WAIT,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    request,
)

from palfrey.asgi.scope import accepts_trailers
from palfrey.protocols.events import LocalProtocolError
from palfrey.protocols.h11 import H1Protocol
from palfrey.protocols.httptools import H1HttpToolsProtocol

Scope = dict[str, Any]
TRAILERS = "http.response.trailers"
EARLY_HINT = "http.response.early_hint"
STYLE = b"</style.css>; rel=preload; as=style"
SCRIPT = b"</app.js>; rel=preload; as=script"
HINTS = b"HTTP/1.1 103 Early Hints\r\nlink: %s\r\nlink: %s\r\n\r\n" % (STYLE, SCRIPT)


def trailers_app(
    trailers: list[list[tuple[bytes, bytes]]],
    *,
    status: int = 200,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    chunks: tuple[bytes, ...] = (b"hello ", b"world"),
    scopes: list[Scope] | None = None,
    errors: list[BaseException] | None = None,
) -> Any:
    """Streams ``chunks`` with ``"trailers": True``, then one trailers message per item."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scopes is not None:
            scopes.append(scope)
        start = {"type": "http.response.start", "status": status, "headers": list(headers)}
        await send({**start, "trailers": True})
        for index, chunk in enumerate(chunks):
            more = index < len(chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
        for index, fields in enumerate(trailers):
            more = index < len(trailers) - 1
            message = {"type": "http.response.trailers", "headers": fields, "more_trailers": more}
            try:
                await send(message)
            except Exception as exc:
                if errors is not None:
                    errors.append(exc)
                raise

    return app


async def still_alive(client: Any, status: int = 200) -> None:
    """The connection serves another request: the previous response ended cleanly."""
    await client.send(request(target="/again"))
    assert (await client.read_response()).status == status


# Trailers on the wire.


async def test_trailer_fields_follow_the_last_chunk(serve: Any) -> None:
    scopes: list[Scope] = []
    fields = [[(b"x-checksum", b"abc123")], [(b"x-count", b"2"), (b"x-note", b"done")]]
    app = trailers_app(fields, headers=[(b"trailer", b"x-checksum, x-count")], scopes=scopes)
    async with serve(app) as srv, connect(srv) as client:
        await client.send(request(headers=[("TE", "trailers")]))
        head = await client.read_head()
        assert head.status == 200
        assert head.header(b"transfer-encoding") == b"chunked"
        assert head.header(b"trailer") == b"x-checksum, x-count"
        expected = (
            b"6\r\nhello \r\n5\r\nworld\r\n"
            b"0\r\nx-checksum: abc123\r\nx-count: 2\r\nx-note: done\r\n\r\n"
        )
        assert await client.read_exactly(len(expected)) == expected
        await still_alive(client)
    files = {"http.response.pathsend": {}, "http.response.zerocopysend": {}}
    assert scopes[0]["extensions"] == {TRAILERS: {}, EARLY_HINT: {}, **files}


@pytest.mark.parametrize(
    ("version", "te", "offered"),
    [
        ("1.1", "trailers", True),
        ("1.1", "deflate, Trailers", True),
        ("1.1", "deflate;q=0.5", False),
        ("1.1", None, False),
        ("1.0", "trailers", False),
    ],
)
async def test_the_trailers_extension_needs_te_trailers_and_http11(
    serve: Any, version: str, te: str | None, offered: bool
) -> None:
    scopes: list[Scope] = []
    errors: list[BaseException] = []
    app = trailers_app([[(b"x-checksum", b"abc")]], scopes=scopes, errors=errors)
    headers = [("TE", te)] if te else []
    async with serve(app) as srv, connect(srv) as client:
        await client.send(request(headers=headers, version=version))
        head = await client.read_head()
        if version == "1.0":
            # No chunked framing for HTTP/1.0: the body ends with the connection.
            assert head.header(b"transfer-encoding") is None
            assert await client.read_until_closed() == b"hello world"
        else:
            tail = b"0\r\nx-checksum: abc\r\n\r\n" if offered else b"0\r\n\r\n"
            expected = b"6\r\nhello \r\n5\r\nworld\r\n" + tail
            assert await client.read_exactly(len(expected)) == expected
            await still_alive(client)
    assert (TRAILERS in scopes[0]["extensions"]) is offered
    assert (EARLY_HINT in scopes[0]["extensions"]) is (version == "1.1")
    assert errors == []


async def test_trailers_after_a_content_length_body_are_dropped(serve: Any) -> None:
    errors: list[BaseException] = []
    length = [(b"content-length", b"11")]
    app = trailers_app([[(b"x-checksum", b"abc")]], headers=length, errors=errors)
    async with serve(app) as srv, connect(srv) as client:
        await client.send(request(headers=[("TE", "trailers")]))
        response = await client.read_response()
        assert response.header(b"content-length") == b"11"
        assert response.body == b"hello world"
        await still_alive(client)
        assert client.buffer == b""
    assert errors == []


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 304), ("GET", 204)])
async def test_a_response_without_content_gets_no_trailers(
    serve: Any, method: str, status: int
) -> None:
    errors: list[BaseException] = []
    app = trailers_app([[(b"x-checksum", b"abc")]], status=status, chunks=(b"",), errors=errors)
    async with serve(app) as srv, connect(srv) as client:
        await client.send(request(method, headers=[("TE", "trailers")]))
        assert (await client.read_response(head_request=True)).status == status
        await still_alive(client, status)
        assert client.buffer == b""
    assert errors == []


async def test_httpx_reads_a_response_with_trailers(serve: Any) -> None:
    errors: list[BaseException] = []
    trailer = [(b"trailer", b"x-checksum")]
    app = trailers_app([[(b"x-checksum", b"abc")]], headers=trailer, errors=errors)
    async with serve(app) as srv, httpx.AsyncClient() as client:
        with trio.fail_after(WAIT):
            for _ in range(2):
                response = await client.get(srv.url, headers={"te": "trailers"})
                assert response.status_code == 200
                assert response.text == "hello world"
    assert errors == []


# Trailers that can't be sent.


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ([(b"x bad", b"v")], ValueError),
        ([(b"x-sum", b"a\r\nx-evil: 1")], ValueError),
        ([(b"content-length", b"5")], ValueError),
        ([(b"transfer-encoding", b"chunked")], ValueError),
        ([(b"connection", b"close")], ValueError),
        ([("x-sum", "str")], TypeError),
    ],
)
async def test_invalid_trailers_raise_and_cut_the_response(
    serve: Any, fields: list, error: type[Exception]
) -> None:
    """Like a bad header, a bad trailer raises from ``send()``; the head is out by then,
    so the response is cut short (no last chunk) and the connection closed."""
    errors: list[BaseException] = []
    app = trailers_app([fields], errors=errors)
    async with serve(app) as srv, connect(srv) as client:
        await client.send(request(headers=[("TE", "trailers")]))
        assert (await client.read_head()).status == 200
        assert await client.read_until_closed() == b"6\r\nhello \r\n5\r\nworld\r\n"
    assert [type(exc) for exc in errors] == [error]


def messages_app(messages: list[dict[str, Any]], errors: list[BaseException]) -> Any:
    """Sends ``messages`` in order and records what ``send()`` raised, then re-raises it."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            for message in messages:
                await send(message)
        except Exception as exc:
            errors.append(exc)
            raise

    return app


START = {"type": "http.response.start", "status": 200, "headers": []}
WITH_TRAILERS = {**START, "trailers": True}
LAST = {"type": "http.response.body", "body": b"hi"}
PART = {"type": "http.response.body", "body": b"hi", "more_body": True}
TRAILER = {"type": "http.response.trailers", "headers": [(b"x-sum", b"1")]}


@pytest.mark.parametrize(
    ("messages", "error", "status"),
    [
        # Trailers nobody declared: after the last body, like any message after it.
        ([START, LAST, TRAILER], "Unexpected ASGI message 'http.response.trailers'", 200),
        ([START, TRAILER], "Expected ASGI message 'http.response.body'", 500),
        ([WITH_TRAILERS, TRAILER], "Expected ASGI message 'http.response.body'", 500),
        ([WITH_TRAILERS, PART, TRAILER], "Expected ASGI message 'http.response.body'", 200),
        ([WITH_TRAILERS, LAST, LAST], "Expected ASGI message 'http.response.trailers'", 200),
        ([{**START, "trailers": 1}], "'trailers' must be a bool", 500),
        ([WITH_TRAILERS, LAST, {**TRAILER, "more_trailers": None}], "'more_trailers'", 200),
    ],
)
async def test_trailers_out_of_order_raise(
    serve: Any, messages: list, error: str, status: int
) -> None:
    errors: list[BaseException] = []
    async with serve(messages_app(messages, errors)) as srv, connect(srv) as client:
        await client.send(request(headers=[("TE", "trailers")]))
        assert (await client.read_head()).status == status
    assert len(errors) == 1
    assert error in str(errors[0])


async def test_an_app_that_never_sends_its_trailers_leaves_the_response_cut(serve: Any) -> None:
    async with serve(trailers_app([])) as srv, connect(srv) as client:
        await client.send(request(headers=[("TE", "trailers")]))
        assert (await client.read_head()).status == 200
        assert await client.read_until_closed() == b"6\r\nhello \r\n5\r\nworld\r\n"


# Early hints.


def hinting_app(
    hints: list[Any], *, after_start: bool = False, streamed: bool = False, echo: bool = False
) -> Any:
    """Sends one early hint per item (before or after ``http.response.start``), then ``ok``."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if not after_start:
            for links in hints:
                await send({"type": EARLY_HINT, "links": links})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if streamed:
            await send({"type": "http.response.body", "body": b"o", "more_body": True})
        if after_start:
            for links in hints:
                await send({"type": EARLY_HINT, "links": links})
        body = (await receive())["body"] if echo else b"ok"
        await send({"type": "http.response.body", "body": body[1:] if streamed else body})

    return app


@pytest.mark.parametrize("after_start", [False, True], ids=["before-start", "after-start"])
async def test_early_hints_precede_the_response(serve: Any, after_start: bool) -> None:
    app = hinting_app([[STYLE, SCRIPT], [b"</font.woff2>; rel=preload"]], after_start=after_start)
    async with serve(app) as srv, connect(srv) as client:
        await client.send(request())
        first = await client.read_head()
        assert first.head == HINTS
        second = await client.read_head()
        assert (
            second.head == b"HTTP/1.1 103 Early Hints\r\nlink: </font.woff2>; rel=preload\r\n\r\n"
        )
        response = await client.read_response()
        assert (response.status, response.body) == (200, b"ok")
        await client.send(request())
        assert (await client.read_head()).head == HINTS


async def test_early_hints_after_the_head_are_dropped(serve: Any) -> None:
    async with serve(hinting_app([[STYLE]], streamed=True)) as srv, connect(srv) as client:
        await client.send(request())
        response = await client.read_response()
        assert (response.status, response.body) == (200, b"ok")


async def test_no_early_hints_for_http10(serve: Any) -> None:
    async with serve(hinting_app([[STYLE]])) as srv, connect(srv) as client:
        await client.send(request(version="1.0"))
        data = await client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"103" not in data


async def test_an_early_hint_does_not_answer_expect_100_continue(serve: Any) -> None:
    """Only ``100 Continue`` tells a waiting client to send its body (RFC 9110 §10.1.1)."""
    async with serve(hinting_app([[STYLE]], echo=True)) as srv, connect(srv) as client:
        head = request("POST", headers=[("Expect", "100-continue"), ("Content-Length", "5")])
        await client.send(head)
        assert (await client.read_head()).status == 103
        assert (await client.read_head()).head == b"HTTP/1.1 100 Continue\r\n\r\n"
        await client.send(b"hello")
        response = await client.read_response()
        assert (response.status, response.body) == (200, b"hello")


async def test_httpx_skips_early_hints(serve: Any) -> None:
    async with serve(hinting_app([[STYLE, SCRIPT]])) as srv, httpx.AsyncClient() as client:
        with trio.fail_after(WAIT):
            response = await client.get(srv.url)
    assert (response.status_code, response.text) == (200, "ok")


@pytest.mark.parametrize(
    ("links", "error"),
    [
        (STYLE, TypeError),
        (["</a>; rel=preload"], TypeError),
        ([b"</a>\r\nset-cookie: x=1"], ValueError),
        ([b""], ValueError),
    ],
)
async def test_invalid_links_raise_before_anything_is_sent(
    serve: Any, links: Any, error: type[Exception]
) -> None:
    errors: list[BaseException] = []
    app = messages_app([{"type": EARLY_HINT, "links": links}], errors)
    async with serve(app) as srv, connect(srv) as client:
        await client.send(request())
        assert (await client.read_response()).status == 500
    assert [type(exc) for exc in errors] == [error]


async def test_a_cancelled_early_hint_writes_nothing(serve: Any) -> None:
    cancelled: list[bool] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        with trio.CancelScope() as cancel_scope:
            cancel_scope.cancel()
            await send({"type": EARLY_HINT, "links": [SCRIPT]})
        cancelled.append(cancel_scope.cancelled_caught)
        await send({"type": EARLY_HINT, "links": [STYLE]})
        await send(START)
        await send(LAST)

    async with serve(app) as srv, connect(srv) as client:
        await client.send(request())
        assert (await client.read_head()).head == HINTS.replace(b"link: %s\r\n" % SCRIPT, b"")
        response = await client.read_response()
        assert (response.status, response.body) == (200, b"hi")
        await still_alive(client)
    assert cancelled == [True, True]


# Checkpoints.


async def test_every_extension_send_is_a_checkpoint(serve: Any) -> None:
    passed: list[str] = []
    failed: list[str] = []
    done = trio.Event()

    async def checked(label: str, send: Callable[..., Any], message: dict[str, Any]) -> None:
        try:
            with trio.testing.assert_checkpoints():
                await send(message)
        except AssertionError:
            failed.append(label)
        else:
            passed.append(label)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            hint = {"type": EARLY_HINT, "links": [STYLE]}
            await checked("early hint sent", send, hint)
            await checked("empty early hint", send, {"type": EARLY_HINT, "links": []})
            await send(WITH_TRAILERS)
            await send(PART)
            await checked("early hint after the head", send, hint)
            await send(LAST)
            await checked("trailers, more", send, {**TRAILER, "more_trailers": True})
            await checked("trailers, last", send, TRAILER)
        finally:
            done.set()

    async with serve(app) as srv:
        for version, te in (("1.1", "trailers"), ("1.1", None), ("1.0", None)):
            done = trio.Event()
            async with connect(srv) as client:
                await client.send(request(headers=[("TE", te)] if te else [], version=version))
                await client.read_response()
                with trio.fail_after(WAIT):
                    await done.wait()
    assert failed == []
    assert len(passed) == 3 * 5


# The handlers on their own: both write the same bytes.

HANDLERS = [H1Protocol, H1HttpToolsProtocol]
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(params=HANDLERS, ids=["h11", "httptools"])
def handler(request: pytest.FixtureRequest) -> Any:
    return request.param


def test_handler_writes_an_informational_head(handler: Any) -> None:
    protocol = handler()
    protocol.receive_data(GET)
    out = protocol.send_informational(103, [(b"link", STYLE), (b"link", SCRIPT)])
    assert out == HINTS
    assert protocol.send_response(200, [(b"content-length", b"0")]) == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    )


def test_handler_sends_no_1xx_to_http10(handler: Any) -> None:
    protocol = handler()
    protocol.receive_data(b"GET / HTTP/1.0\r\n\r\n")
    assert protocol.send_informational(103, [(b"link", STYLE)]) == b""
    assert protocol.send_response(200, []).startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("status", [101, 99, 200])
def test_handler_refuses_other_statuses_as_informational(handler: Any, status: int) -> None:
    protocol = handler()
    protocol.receive_data(GET)
    with pytest.raises(LocalProtocolError):
        protocol.send_informational(status, [])
    # Nothing was sent: the response can still start.
    assert protocol.send_response(200, [(b"content-length", b"0")])


def test_handler_refuses_an_informational_after_the_head(handler: Any) -> None:
    protocol = handler()
    protocol.receive_data(GET)
    protocol.send_response(200, [])
    with pytest.raises(LocalProtocolError):
        protocol.send_informational(103, [(b"link", STYLE)])


def test_handler_keeps_a_client_waiting_for_100_continue(handler: Any) -> None:
    protocol = handler()
    protocol.receive_data(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    )
    assert protocol.send_informational(103, [(b"link", STYLE)]).startswith(b"HTTP/1.1 103 ")
    assert protocol.send_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert protocol.send_continue() == b""


def test_handler_writes_trailers_after_a_chunked_body(handler: Any) -> None:
    protocol = handler()
    protocol.receive_data(GET)
    out = protocol.send_response(200, [(b"trailer", b"x-sum")])
    assert out.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    out = protocol.send_body(b"abc", more=True)
    out += protocol.send_trailers([(b"x-sum", b"1"), (b"X-Other", b"two words")])
    assert out == b"3\r\nabc\r\n0\r\nx-sum: 1\r\nX-Other: two words\r\n\r\n"
    assert protocol.response_complete and protocol.keep_alive


@pytest.mark.parametrize(
    ("request_bytes", "headers", "body", "expected"),
    [
        (GET, [(b"content-length", b"3")], b"abc", b"abc"),
        (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", [], b"abc", b""),
        (GET, [(b"transfer-encoding", b"chunked")], b"", b""),
        (b"GET / HTTP/1.0\r\n\r\n", [], b"abc", b"abc"),
    ],
    ids=["content-length", "head", "no-body", "http10"],
)
def test_handler_drops_trailers_it_cannot_frame(
    handler: Any, request_bytes: bytes, headers: list, body: bytes, expected: bytes
) -> None:
    protocol = handler()
    protocol.receive_data(request_bytes)
    status = 204 if body == b"" else 200
    protocol.send_response(status, headers)
    out = protocol.send_body(body, more=True) + protocol.send_trailers([(b"x-sum", b"1")])
    assert out == expected
    assert protocol.response_complete


@pytest.mark.parametrize("fields", [[(b"x bad", b"1")], [(b"x-sum", b"a\nb")]])
def test_handler_refuses_invalid_trailers(handler: Any, fields: list) -> None:
    protocol = handler()
    protocol.receive_data(GET)
    protocol.send_response(200, [])
    with pytest.raises(LocalProtocolError):
        protocol.send_trailers(fields)
    assert not protocol.keep_alive


def test_handler_trailers_need_the_whole_content_length_body(handler: Any) -> None:
    protocol = handler()
    protocol.receive_data(GET)
    protocol.send_response(200, [(b"content-length", b"5")])
    protocol.send_body(b"abc", more=True)
    with pytest.raises(LocalProtocolError):
        protocol.send_trailers([(b"x-sum", b"1")])


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(b"trailers", True), (b"gzip, TRAILERS", True), (b"trailers;q=1", True), (b"gzip", False)],
)
def test_accepts_trailers(value: bytes, accepted: bool) -> None:
    assert accepts_trailers([(b"host", b"x"), (b"te", value)]) is accepted
    assert not accepts_trailers([(b"x-te", b"trailers")])
