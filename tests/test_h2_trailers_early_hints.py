"""Trailers and early hints over HTTP/2: the same ASGI extensions as over HTTP/1.1,
framed as HEADERS (a final HEADERS with END_STREAM; a 1xx HEADERS before the response)."""

from __future__ import annotations

from typing import Any

from conftest import run_server
from h2_client import get_headers, h2_connect

TE_TRAILERS = [(b"te", b"trailers")]


async def trailers_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    offered = "http.response.trailers" in scope["extensions"]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"trailer", b"x-checksum"), (b"x-offered", str(offered).encode())],
            "trailers": offered,
        }
    )
    await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
    await send({"type": "http.response.body", "body": b"part two"})
    if offered:
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"x-checksum", b"abc")],
                "more_trailers": True,
            }
        )
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"x-count", b"2")],
                "more_trailers": False,
            }
        )


async def early_hint_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert "http.response.early_hint" in scope["extensions"]
    await send(
        {
            "type": "http.response.early_hint",
            "links": [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload"],
        }
    )
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hinted"})


async def test_trailers_follow_the_body_as_a_final_headers_frame() -> None:
    async with run_server(trailers_app, http="h2") as server, h2_connect(server) as client:
        result = await client.response(client.request(get_headers("/", extra=TE_TRAILERS)))
    assert result.status == 200
    assert result.header(b"x-offered") == b"True"
    assert bytes(result.body) == b"part one, part two"
    assert result.trailers == [(b"x-checksum", b"abc"), (b"x-count", b"2")]
    assert result.ended and result.reset is None


async def test_trailers_not_offered_without_te_trailers() -> None:
    async with run_server(trailers_app, http="auto") as server, h2_connect(server) as client:
        result = await client.get("/")
    assert result.header(b"x-offered") == b"False"
    assert bytes(result.body) == b"part one, part two"
    assert result.trailers is None and result.ended


async def test_early_hints_are_a_103_before_the_response() -> None:
    async with run_server(early_hint_app, http="h2") as server, h2_connect(server) as client:
        result = await client.get("/")
    assert [dict(block)[b":status"] for block in result.informational] == [b"103"]
    links = [value for name, value in result.informational[0] if name == b"link"]
    assert links == [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload"]
    assert result.status == 200 and bytes(result.body) == b"hinted"
