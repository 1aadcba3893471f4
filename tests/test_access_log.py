"""``--access-log-format`` and the ``palfrey.access`` records: atoms, errors, structured fields."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio
from server_process import palfrey_command, run_to_completion
from ws_client import WAIT, in_thread, sync_client, ws_url

import palfrey
from palfrey.observability import access_log
from palfrey.observability.access_format import AccessEntry, AccessFormat, compile_format

Scope = dict[str, Any]


def http_scope(**changes: Any) -> Scope:
    scope: Scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/caf\u00e9/items",
        "raw_path": b"/caf%C3%A9/items",
        "query_string": b"page=2&q=a%20b",
        "client": ("10.0.0.7", 51234),
        "headers": [
            (b"host", b"example.com"),
            (b"user-agent", b"curl/8.5"),
            (b"referer", b"https://example.com/start"),
            (b"x-request-id", b"req-42"),
            (b"x-tag", b"one"),
            (b"x-tag", b"two"),
        ],
    }
    scope.update(changes)
    return scope


def ws_scope() -> Scope:
    scope = http_scope(type="websocket")
    del scope["method"]
    return scope


RESPONSE_HEADERS = [(b"content-type", b"text/plain"), (b"X-Cache", b"hit")]


def render(text: str, scope: Scope | None = None, **entry: Any) -> str:
    values = {"status": 201, "size": 1234, "duration": 2.5012345} | entry
    return compile_format(text).render(
        AccessEntry(
            scope or http_scope(),
            values["status"],
            values["size"],
            values["duration"],
            values.get("headers", RESPONSE_HEADERS),
        )
    )


@pytest.fixture(autouse=True)
def default_access_log() -> Iterator[None]:
    """Each test starts, and leaves, with Palfrey's own line and structured fields."""
    access_log.use_format(None)
    yield
    access_log.use_format(None)


# Every atom, on a fake scope.


@pytest.mark.parametrize(
    ("atom", "expected"),
    [
        ("h", "10.0.0.7:51234"),
        ("l", "-"),
        ("u", "-"),
        ("r", "POST /caf%C3%A9/items?page=2&q=a%20b HTTP/1.1"),
        ("m", "POST"),
        ("U", "/caf\u00e9/items"),
        ("q", "page=2&q=a%20b"),
        ("H", "HTTP/1.1"),
        ("s", "201"),
        ("b", "1234"),
        ("B", "1234"),
        ("D", "2501234"),
        ("M", "2501"),
        ("L", "2.501234"),
        ("T", "2"),
        ("p", f"<{os.getpid()}>"),
        ("a", "curl/8.5"),
        ("f", "https://example.com/start"),
        ("{X-Request-ID}i", "req-42"),
        ("{x-tag}i", "one, two"),
        ("{x-missing}i", "-"),
        ("{x-cache}o", "hit"),
        ("{content-type}o", "text/plain"),
        ("{etag}o", "-"),
    ],
)
def test_atom(atom: str, expected: str) -> None:
    assert render(f"%({atom})s") == expected


def test_time_atom_is_the_common_log_format_date() -> None:
    assert re.fullmatch(r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", render("%(t)s"))


def test_environment_atom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PALFREY_TEST_REGION", "eu-west")
    assert render("%({PALFREY_TEST_REGION}e)s %({PALFREY_TEST_UNSET}e)s") == "eu-west -"


def test_zero_bytes_is_a_dash_for_b_and_zero_for_b_upper() -> None:
    assert render("%(b)s %(B)s", size=0) == "- 0"


@pytest.mark.parametrize(
    ("version", "protocol"), [("1.0", "HTTP/1.0"), ("2", "HTTP/2"), ("3", "HTTP/3")]
)
def test_protocol_follows_the_scope(version: str, protocol: str) -> None:
    assert (
        render("%(H)s|%(r)s", http_scope(http_version=version))
        == f"{protocol}|POST /caf%C3%A9/items?page=2&q=a%20b {protocol}"
    )


def test_missing_client_and_headers_are_dashes() -> None:
    scope = http_scope(client=None, headers=[], query_string=b"")
    assert render('%(h)s "%(r)s" %(a)s %(f)s %(q)s.', scope, headers=None) == (
        '- "POST /caf%C3%A9/items HTTP/1.1" - - .'
    )


def test_a_format_may_use_other_conversions_and_percent_signs() -> None:
    assert render("%(s)d %(D)08d 100%% %(h)20s") == "201 02501234 100%       10.0.0.7:51234"
    assert render("no atoms, 100%%") == "no atoms, 100%"


def test_only_the_atoms_a_format_names_are_looked_up_and_computed() -> None:
    assert set(compile_format('%(h)s "%(r)s" %(s)s').getters) == {"h", "r", "s"}

    def never(_entry: AccessEntry) -> str:
        raise AssertionError("an atom the format doesn't name was computed")

    spy = AccessFormat("%(a)s", {"a": lambda _entry: "x", "t": never})
    assert spy.render(AccessEntry(http_scope(), 200, 0, 0.0)) == "x"


# A bad format.


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("%(h)s %(x)s", "unknown access log atom '%(x)s'"),
        ("%(zz)d", "unknown access log atom '%(zz)d'"),
        ("%({}i)s", "unknown access log atom '%({}i)s'"),
        ("%({name}z)s", "unknown access log atom '%({name}z)s'"),
        ("%s %(h)s", "has a '%' that names no atom"),
        ("100% sure", "has a '%' that names no atom"),
        ("%(h", "has a '%' that names no atom"),
        ("%(s)y", "unsupported format character 'y'"),
    ],
)
def test_bad_format_is_a_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        compile_format(text)


def test_bad_format_is_a_configuration_error() -> None:
    with pytest.raises(
        ValueError, match=re.escape("access_log_format: unknown access log atom '%(x)s'")
    ):
        palfrey.Config(app="m:a", access_log_format="%(h)s %(x)s")


def test_cli_exits_2_naming_the_unknown_atom() -> None:
    environ = {name: value for name, value in os.environ.items() if not name.startswith("PALFREY")}
    result = run_to_completion(
        palfrey_command("--access-log-format", "%(zz)s", "palfrey.demo:app"), env=environ
    )
    assert result.returncode == 2, result
    assert "unknown access log atom '%(zz)s'" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# Records.


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "palfrey.access"]


def test_default_lines_are_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="palfrey.access"):
        access_log.log_http(http_scope(), 200, 316, 0.00042, RESPONSE_HEADERS)
        access_log.log_websocket(ws_scope(), 101)
    http_line, ws_line = (record.getMessage() for record in access_records(caplog))
    assert (
        http_line
        == '10.0.0.7:51234 - "POST /caf%C3%A9/items?page=2&q=a%20b HTTP/1.1" 200 316 0.4ms'
    )
    assert ws_line == '10.0.0.7:51234 - "WebSocket /caf%C3%A9/items?page=2&q=a%20b" 101'


def test_records_carry_the_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="palfrey.access"):
        access_log.log_http(http_scope(), 404, 9, 0.25)
    (record,) = access_records(caplog)
    assert {name: getattr(record, name) for name in access_log.FIELDS} == {
        "method": "POST",
        "path": "/caf\u00e9/items",
        "query": "page=2&q=a%20b",
        "status": 404,
        "bytes": 9,
        "duration": 0.25,
        "protocol": "HTTP/1.1",
        "client": "10.0.0.7:51234",
        "user_agent": "curl/8.5",
        "request_id": "req-42",
    }


def test_fields_absent_from_the_request_are_none(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="palfrey.access"):
        access_log.log_http(http_scope(client=None, headers=[]), 200, 0, 0.0)
    (record,) = access_records(caplog)
    assert (record.client, record.user_agent, record.request_id) == (None, None, None)  # type: ignore[attr-defined]
    assert record.getMessage().startswith('- - "POST ')


def test_custom_format_is_the_message(caplog: pytest.LogCaptureFixture) -> None:
    access_log.use_format('%(h)s "%(r)s" %(s)s %(b)s %({x-cache}o)s')
    with caplog.at_level(logging.INFO, logger="palfrey.access"):
        access_log.log_http(http_scope(), 200, 0, 0.01, RESPONSE_HEADERS)
        access_log.log_websocket(ws_scope(), 403)
    http_line, ws_line = (record.getMessage() for record in access_records(caplog))
    assert http_line == '10.0.0.7:51234 "POST /caf%C3%A9/items?page=2&q=a%20b HTTP/1.1" 200 - hit'
    assert ws_line == '10.0.0.7:51234 "WebSocket /caf%C3%A9/items?page=2&q=a%20b HTTP/1.1" 403 - -'


def test_without_fields_the_records_stay_plain(caplog: pytest.LogCaptureFixture) -> None:
    access_log.use_format(None, fields=False)
    with caplog.at_level(logging.INFO, logger="palfrey.access"):
        access_log.log_http(http_scope(), 200, 1, 0.0)
    (record,) = access_records(caplog)
    assert not hasattr(record, "method")
    assert record.getMessage().endswith('HTTP/1.1" 200 1 0.0ms')


# Through a real server.


async def header_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b"hello" if scope["path"] != "/empty" else b""
    await send(
        {
            "type": "http.response.start",
            "status": 203,
            "headers": [(b"content-length", b"%d" % len(body)), (b"x-cache", b"miss")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def test_atoms_through_a_real_server(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    access_log.use_format(
        '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s %(B)s "%(f)s" "%(a)s" %(m)s %(U)s %(q)s '
        "%(H)s %(p)s %(D)s %(M)s %(L)s %(T)s %({x-request-id}i)s %({x-cache}o)s"
    )
    with caplog.at_level(logging.INFO, logger="palfrey.access"):
        async with serve(header_app) as srv, httpx.AsyncClient(base_url=srv.url) as client:
            with trio.fail_after(WAIT):
                await client.get(
                    "/path/x?a=1",
                    headers={"user-agent": "agent/1", "referer": "r", "x-request-id": "id-9"},
                )
                await client.get("/empty")
    first, second = access_records(caplog)
    line = re.fullmatch(
        r'127\.0\.0\.1:\d+ - - \[[^]]+\] "GET /path/x\?a=1 HTTP/1\.1" 203 5 5 "r" "agent/1" GET '
        r"/path/x a=1 HTTP/1\.1 <(\d+)> (\d+) (\d+) (\d+\.\d{6}) (\d+) id-9 miss",
        first.getMessage(),
    )
    assert line, first.getMessage()
    assert int(line[1]) == os.getpid()
    assert int(line[2]) // 1000 == int(line[3]) == int(float(line[4]) * 1000)
    assert first.request_id == "id-9"  # type: ignore[attr-defined]
    assert (first.status, first.bytes, first.protocol) == (203, 5, "HTTP/1.1")  # type: ignore[attr-defined]
    assert '"GET /empty HTTP/1.1" 203 - 0 "-"' in second.getMessage()


async def failing_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        raise RuntimeError("no answer")


async def test_a_500_palfrey_sent_is_logged(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    access_log.use_format("%(s)s %(b)s %({content-type}o)s")
    with caplog.at_level(logging.INFO, logger="palfrey.access"):
        async with serve(failing_app) as srv, httpx.AsyncClient(base_url=srv.url) as client:
            with trio.fail_after(WAIT):
                assert (await client.get("/")).status_code == 500
    (record,) = access_records(caplog)
    assert record.getMessage().startswith("500 ")
    assert record.status == 500  # type: ignore[attr-defined]


async def ws_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()
    if scope["path"] == "/deny":
        await send({"type": "websocket.close"})
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close"})


@pytest.mark.parametrize("custom", [False, True], ids=["default", "custom"])
async def test_websocket_access_lines(
    serve: Any, caplog: pytest.LogCaptureFixture, custom: bool
) -> None:
    if custom:
        access_log.use_format('"%(r)s" %(s)s %(m)s %({x-request-id}i)s')
    with caplog.at_level(logging.INFO, logger="palfrey.access"):
        async with serve(ws_app, lifespan="off") as srv:
            with trio.fail_after(WAIT):

                def talk() -> None:
                    with sync_client(
                        ws_url(srv, "/chat?room=1"), additional_headers={"x-request-id": "ws-1"}
                    ):
                        pass
                    with pytest.raises(Exception, match="403"):
                        sync_client(ws_url(srv, "/deny"))

                await in_thread(talk)
    accepted, denied = access_records(caplog)
    if custom:
        assert accepted.getMessage() == '"WebSocket /chat?room=1 HTTP/1.1" 101 WebSocket ws-1'
        assert denied.getMessage() == '"WebSocket /deny HTTP/1.1" 403 WebSocket -'
    else:
        assert re.fullmatch(
            r'127\.0\.0\.1:\d+ - "WebSocket /chat\?room=1" 101', accepted.getMessage()
        )
        assert re.fullmatch(r'127\.0\.0\.1:\d+ - "WebSocket /deny" 403', denied.getMessage())
    assert (accepted.method, accepted.status, accepted.request_id) == ("WebSocket", 101, "ws-1")  # type: ignore[attr-defined]
    assert (accepted.path, accepted.query, accepted.bytes) == ("/chat", "room=1", 0)  # type: ignore[attr-defined]
