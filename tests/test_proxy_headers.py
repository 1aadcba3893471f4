"""``--proxy-headers``: client, scheme and host from trusted proxies only."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
import pytest
from h1_client import (
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    request,
)
from hypothesis import given
from hypothesis import strategies as st
from ws_client import in_thread, sync_client, ws_url

from palfrey.asgi.proxy_headers import (
    ForwardedElement,
    MalformedForwardedError,
    Node,
    ProxyHeadersMiddleware,
    TrustedHosts,
    parse_forwarded,
)

Scope = dict[str, Any]


async def client_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    host, port = scope["client"]
    body = f"{scope['scheme']}://{host}:{port}".encode()
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": body})


async def fetch(srv: Any, headers: list[tuple[str, str]]) -> tuple[str, int]:
    """The (scheme://host, port) the app saw, and the port the client really used."""
    async with connect(srv) as client:
        await client.send(request(headers=headers))
        body = (await client.read_response()).body.decode()
        port = client.stream.socket.getsockname()[1]
    return body, port


class TestThroughTheServer:
    async def test_trusted_proxy_sets_client_and_scheme(self, serve: Any) -> None:
        async with serve(client_app) as srv:
            seen, _ = await fetch(
                srv, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]
            )
        assert seen == "https://203.0.113.7:0"

    async def test_ipv6_loopback_proxy_is_trusted_by_default(
        self, serve: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Uvicorn's default, 127.0.0.1,::1: a local proxy may reach us over either.
        monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
        async with serve(client_app, host="::1") as srv:
            seen, _ = await fetch(srv, [("X-Forwarded-For", "203.0.113.7")])
        assert seen == "http://203.0.113.7:0"

    @pytest.mark.parametrize(
        ("environment", "option", "trusted"),
        [
            ("10.0.0.1", None, False),  # $FORWARDED_ALLOW_IPS replaces the default, as in Uvicorn
            ("10.0.0.1,127.0.0.1", None, True),
            ("10.0.0.1", "127.0.0.1", True),  # the option wins over it
        ],
    )
    async def test_forwarded_allow_ips_environment_variable(
        self,
        serve: Any,
        monkeypatch: pytest.MonkeyPatch,
        environment: str,
        option: str | None,
        trusted: bool,
    ) -> None:
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", environment)
        options = {} if option is None else {"forwarded_allow_ips": option}
        async with serve(client_app, **options) as srv:
            seen, port = await fetch(srv, [("X-Forwarded-For", "203.0.113.7")])
        assert seen == ("http://203.0.113.7:0" if trusted else f"http://127.0.0.1:{port}")

    async def test_chain_is_read_right_to_left(self, serve: Any) -> None:
        async with serve(client_app, forwarded_allow_ips="127.0.0.1,10.0.0.0/8") as srv:
            seen, _ = await fetch(srv, [("X-Forwarded-For", "198.51.100.1, 203.0.113.7, 10.1.2.3")])
        # 10.1.2.3 is a trusted proxy; 203.0.113.7 is the first address that is not.
        assert seen == "http://203.0.113.7:0"

    async def test_no_headers_keeps_the_socket_peer(self, serve: Any) -> None:
        async with serve(client_app) as srv:
            seen, port = await fetch(srv, [])
        assert seen == f"http://127.0.0.1:{port}"

    async def test_untrusted_peer_is_ignored(self, serve: Any) -> None:
        async with serve(client_app, forwarded_allow_ips="10.0.0.1") as srv:
            seen, port = await fetch(
                srv, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]
            )
        assert seen == f"http://127.0.0.1:{port}"

    async def test_disabled(self, serve: Any) -> None:
        async with serve(client_app, proxy_headers=False) as srv:
            seen, port = await fetch(
                srv, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]
            )
        assert seen == f"http://127.0.0.1:{port}"

    async def test_trust_everyone_takes_the_leftmost_address(self, serve: Any) -> None:
        async with serve(client_app, forwarded_allow_ips="*") as srv:
            seen, _ = await fetch(srv, [("X-Forwarded-For", "198.51.100.1, 203.0.113.7")])
        assert seen == "http://198.51.100.1:0"


class TestMiddleware:
    @staticmethod
    async def run(scope: Scope, trusted: str = "127.0.0.1") -> Scope:
        seen: list[Scope] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            seen.append(scope)

        await ProxyHeadersMiddleware(app, trusted)(scope, None, None)  # type: ignore[arg-type]
        return seen[0]

    @staticmethod
    def scope(kind: str = "http", scheme: str = "http", **headers: str) -> Scope:
        return {
            "type": kind,
            "scheme": scheme,
            "client": ("127.0.0.1", 5000),
            "headers": [
                (name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()
            ],
        }

    @pytest.mark.parametrize(
        ("kind", "proto", "scheme"),
        [
            ("http", "https", "https"),
            ("http", "HTTPS", "https"),
            ("http", "http", "http"),
            ("http", "wss", "https"),
            ("websocket", "https", "wss"),
            ("websocket", "http", "ws"),
            ("websocket", "wss", "wss"),
            # Without X-Forwarded-For the peer is the one trusted hop: its value, the last.
            ("http", "https, http", "http"),
            ("http", "http, https", "https"),
        ],
    )
    async def test_forwarded_proto(self, kind: str, proto: str, scheme: str) -> None:
        scope = await self.run(self.scope(kind, x_forwarded_proto=proto))
        assert scope["scheme"] == scheme

    async def test_unknown_proto_is_ignored(self) -> None:
        scope = await self.run(self.scope(scheme="http", x_forwarded_proto="gopher"))
        assert scope["scheme"] == "http"

    async def test_empty_forwarded_for_keeps_client(self) -> None:
        scope = await self.run(self.scope(x_forwarded_for=" , "))
        assert scope["client"] == ("127.0.0.1", 5000)

    async def test_lifespan_scope_untouched(self) -> None:
        scope = {"type": "lifespan"}
        assert await self.run(scope) == {"type": "lifespan"}

    async def test_unix_socket_client_is_not_trusted_by_address(self) -> None:
        scope = self.scope(x_forwarded_for="203.0.113.7")
        scope["client"] = None
        assert (await self.run(scope))["client"] is None


class TestTrustedHosts:
    def test_addresses_networks_and_literals(self) -> None:
        trusted = TrustedHosts("127.0.0.1, 10.0.0.0/8, ::1, fd00::/8, unix-proxy")
        assert "127.0.0.1" in trusted
        assert "10.200.3.4" in trusted
        assert "::1" in trusted
        assert "fd12::34" in trusted
        assert "unix-proxy" in trusted
        assert "127.0.0.2" not in trusted
        assert "11.0.0.1" not in trusted
        assert "2001:db8::1" not in trusted
        assert "not-an-address" not in trusted
        assert None not in trusted

    def test_star_trusts_everything(self) -> None:
        trusted = TrustedHosts("*")
        assert "203.0.113.7" in trusted
        assert "anything" in trusted

    def test_empty_trusts_nothing(self) -> None:
        assert "127.0.0.1" not in TrustedHosts("")


async def test_unix_socket_peer_is_trusted_with_unix_or_star(serve: Any, tmp_path: Any) -> None:
    """A UNIX socket has no peer address: ``unix`` or ``*`` in the allowed list trusts it."""
    seen: list[Any] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append((scope["scheme"], scope["client"]))
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body"})

    headers = {"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https"}
    trusted = ("https", ("203.0.113.9", 0))
    for allowed, expected in (("127.0.0.1", ("http", None)), ("*", trusted), ("unix", trusted)):
        path = str(tmp_path / f"{len(seen)}.sock")
        async with serve(app, uds=path, forwarded_allow_ips=allowed, lifespan="off"):
            transport = httpx.AsyncHTTPTransport(uds=path)
            async with httpx.AsyncClient(transport=transport) as client:
                assert (await client.get("http://palfrey/", headers=headers)).status_code == 200
        assert seen[-1] == expected


Headers = list[tuple[str, str]]


async def through(
    headers: Headers,
    *,
    trusted: str = "127.0.0.1",
    client: tuple[str, int] | None = ("127.0.0.1", 5000),
    kind: str = "http",
    host: bytes | None = b"palfrey.internal:8000",
) -> Scope:
    """The scope an app behind the middleware sees for a request from ``client``."""
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope)

    scope = {
        "type": kind,
        "scheme": "ws" if kind == "websocket" else "http",
        "client": client,
        "server": ("127.0.0.1", 8000),
        "headers": ([] if host is None else [(b"host", host)])
        + [(name.lower().encode(), value.encode("latin-1")) for name, value in headers],
    }
    await ProxyHeadersMiddleware(app, trusted)(scope, None, None)  # type: ignore[arg-type]
    return seen[0]


def host_headers(scope: Scope) -> list[bytes]:
    return [value for name, value in scope["headers"] if name == b"host"]


def seen_by_app(scope: Scope) -> tuple[Any, str, Any, list[bytes]]:
    client = scope["client"]
    return (
        (None if client is None else tuple(client)),
        scope["scheme"],
        scope["server"],
        host_headers(scope),
    )


#: What the app sees when nothing was applied.
UNCHANGED = (("127.0.0.1", 5000), "http", ("127.0.0.1", 8000), [b"palfrey.internal:8000"])


class TestParseForwarded:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("for=192.0.2.60", [ForwardedElement(for_=Node("192.0.2.60", 0))]),
            ('for="192.0.2.60:4711"', [ForwardedElement(for_=Node("192.0.2.60", 4711))]),
            (
                'For="[2001:DB8:cafe::17]:4711"',
                [ForwardedElement(for_=Node("2001:db8:cafe::17", 4711))],
            ),
            ('for="[2001:db8::17]"', [ForwardedElement(for_=Node("2001:db8::17", 0))]),
            ("for=unknown", [ForwardedElement(for_=Node(None, 0))]),
            ('for="UNKNOWN:8080"', [ForwardedElement(for_=Node(None, 8080))]),
            ("for=_hidden", [ForwardedElement(for_=Node("_hidden", 0))]),
            ('for="_hidden:_port"', [ForwardedElement(for_=Node("_hidden", 0))]),
            ('for="10.0.0.1:_port"', [ForwardedElement(for_=Node("10.0.0.1", 0))]),
            (
                "for=192.0.2.43;PROTO=HTTPS;host=example.com;by=203.0.113.60",
                [
                    ForwardedElement(
                        for_=Node("192.0.2.43", 0),
                        by=Node("203.0.113.60", 0),
                        proto="https",
                        host="example.com",
                    )
                ],
            ),
            ('host="example.com:8443"', [ForwardedElement(host="example.com:8443")]),
            ('host="[2001:db8::1]:8443"', [ForwardedElement(host="[2001:db8::1]:8443")]),
            # Escapes inside a quoted-string stand for the escaped character.
            (r'for="\1\9\2.0.2.1"', [ForwardedElement(for_=Node("192.0.2.1", 0))]),
            # Extension parameters are skipped; empty elements and pairs are dropped.
            ('ext="a, b;c";for=192.0.2.1', [ForwardedElement(for_=Node("192.0.2.1", 0))]),
            (" , for=192.0.2.1 ;; , ;", [ForwardedElement(for_=Node("192.0.2.1", 0))]),
            (
                "for=192.0.2.43, for=198.51.100.17",
                [
                    ForwardedElement(for_=Node("192.0.2.43", 0)),
                    ForwardedElement(for_=Node("198.51.100.17", 0)),
                ],
            ),
            ("", []),
        ],
    )
    def test_valid(self, value: str, expected: list[ForwardedElement]) -> None:
        assert parse_forwarded(value) == expected

    @pytest.mark.parametrize(
        "value",
        [
            "for=2001:db8::17",  # IPv6 unquoted
            'for="2001:db8::17"',  # IPv6 without brackets
            'for="[192.0.2.1]"',  # IPv4 in brackets
            "for=192.0.2.256",
            "for=example.com",  # a name is not a node
            "for=unix",
            'for="192.0.2.1:65536"',
            'for="192.0.2.1:"',
            "for=192.0.2.1;for=192.0.2.2",  # a parameter at most once per element
            'for="192.0.2.1',  # unterminated quoted-string
            'for="192.0.2.1"x',
            "for =192.0.2.1",
            "for=",
            "=192.0.2.1",
            "for=192.0.2.1 proto=https",
            "proto=1https",
            "proto=",
            'host="bad host"',
            'host="example.com:port"',
            "for=192.0.2.1\x00",
        ],
    )
    def test_malformed(self, value: str) -> None:
        with pytest.raises(MalformedForwardedError):
            parse_forwarded(value)

    @given(st.text())
    def test_never_raises_anything_else(self, value: str) -> None:
        try:
            elements = parse_forwarded(value)
        except MalformedForwardedError:
            return
        assert all(isinstance(element, ForwardedElement) for element in elements)

    @given(
        st.lists(
            st.lists(
                st.sampled_from(
                    [
                        "for=192.0.2.1",
                        'for="[::1]:80"',
                        "for=_x",
                        "proto=https",
                        "host=a.example",
                        'by="_y"',
                        'x="\\""',
                        ";",
                        ",",
                        " ",
                        '"',
                        "=",
                    ]
                )
            ).map("".join)
        ).map(",".join)
    )
    def test_never_raises_on_near_valid_text(self, value: str) -> None:
        with contextlib.suppress(MalformedForwardedError):
            parse_forwarded(value)


class TestForwarded:
    async def test_client_scheme_and_host(self) -> None:
        scope = await through([("Forwarded", "for=203.0.113.7;proto=https;host=example.org")])
        assert seen_by_app(scope) == (
            ("203.0.113.7", 0),
            "https",
            ("example.org", 443),
            [b"example.org"],
        )

    @pytest.mark.parametrize(
        ("node", "client"),
        [
            ('"203.0.113.7:4711"', ("203.0.113.7", 4711)),
            ('"[2001:db8:cafe::17]:4711"', ("2001:db8:cafe::17", 4711)),
            ('"[2001:DB8:CAFE:0::17]"', ("2001:db8:cafe::17", 0)),
            ("_hidden", ("_hidden", 0)),
            ('"_hidden:_port"', ("_hidden", 0)),
            # The proxy did not know the client: neither does the app.
            ("unknown", None),
        ],
    )
    async def test_for_forms(self, node: str, client: Any) -> None:
        scope = await through([("Forwarded", f"for={node}")])
        assert scope["client"] == client

    async def test_hops_read_right_to_left_through_trusted_proxies(self) -> None:
        forwarded = (
            "for=198.51.100.1;proto=http;host=spoofed.example, "
            "for=203.0.113.7;proto=https;host=www.example, "
            "for=10.1.2.3;proto=http;host=internal.example"
        )
        scope = await through([("Forwarded", forwarded)], trusted="127.0.0.1, 10.0.0.0/8")
        # 10.1.2.3 is a trusted proxy; 203.0.113.7 is the client it saw.
        assert seen_by_app(scope) == (
            ("203.0.113.7", 0),
            "https",
            ("www.example", 443),
            [b"www.example"],
        )

    async def test_only_the_peer_trusted(self) -> None:
        forwarded = "for=203.0.113.7;proto=https;host=www.example, for=10.1.2.3;proto=http"
        scope = await through([("Forwarded", forwarded)])
        assert seen_by_app(scope) == (
            ("10.1.2.3", 0),
            "http",
            ("127.0.0.1", 8000),
            [b"palfrey.internal:8000"],
        )

    async def test_every_hop_trusted_takes_the_leftmost(self) -> None:
        forwarded = "for=10.0.0.9;proto=https, for=10.1.2.3;proto=http"
        scope = await through([("Forwarded", forwarded)], trusted="127.0.0.1, 10.0.0.0/8")
        assert (scope["client"], scope["scheme"]) == (("10.0.0.9", 0), "https")

    async def test_obfuscated_proxy_named_in_allow_ips(self) -> None:
        forwarded = "for=203.0.113.7;proto=https, for=_edge;proto=http"
        scope = await through([("Forwarded", forwarded)], trusted="127.0.0.1, _edge")
        assert (scope["client"], scope["scheme"]) == (("203.0.113.7", 0), "https")

    async def test_unknown_stops_the_walk(self) -> None:
        forwarded = "for=203.0.113.7;proto=http, for=unknown;proto=https"
        scope = await through([("Forwarded", forwarded)], trusted="*")
        assert (scope["client"], scope["scheme"]) == (None, "https")

    async def test_element_without_for_keeps_the_peer(self) -> None:
        scope = await through([("Forwarded", "for=203.0.113.7, proto=https")], trusted="*")
        assert (scope["client"], scope["scheme"]) == (("127.0.0.1", 5000), "https")

    async def test_header_lines_form_one_list(self) -> None:
        headers = [("Forwarded", "for=203.0.113.7;proto=https"), ("Forwarded", "for=10.1.2.3")]
        scope = await through(headers, trusted="127.0.0.1, 10.0.0.0/8")
        assert (scope["client"], scope["scheme"]) == (("203.0.113.7", 0), "https")

    async def test_x_forwarded_for_wins_over_it(self) -> None:
        # The usual nginx: it maintains X-Forwarded-* and passes the client's own
        # Forwarded through, which must then not choose the client's address.
        headers = [
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "x.example"),
            ("Forwarded", "for=203.0.113.7;proto=https;host=forged.example"),
        ]
        scope = await through(headers)
        assert seen_by_app(scope) == (
            ("198.51.100.1", 0),
            "http",
            ("x.example", 80),
            [b"x.example"],
        )

    async def test_is_read_without_x_forwarded_for_and_not_mixed(self) -> None:
        headers = [
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "x.example"),
            ("Forwarded", "for=203.0.113.7;proto=https"),
        ]
        scope = await through(headers)
        # Forwarded has no host here; X-Forwarded-Host is not mixed in.
        assert seen_by_app(scope) == (("203.0.113.7", 0), "https", *UNCHANGED[2:])

    @pytest.mark.parametrize(
        "forwarded",
        [
            "for=2001:db8::17;proto=https",
            'for="203.0.113.7;proto=https',
            "for=203.0.113.7;for=203.0.113.8",
            "for=203.0.113.7;proto=https;host=bad\thost",
            ",,, ;",
        ],
    )
    async def test_malformed_or_empty_changes_nothing(self, forwarded: str) -> None:
        headers = [("Forwarded", forwarded), ("X-Forwarded-Proto", "https")]
        assert seen_by_app(await through(headers)) == UNCHANGED

    @pytest.mark.parametrize(
        ("proto", "scheme"),
        [("https", "wss"), ("wss", "wss"), ("http", "ws"), ("ws", "ws"), ("gopher", "ws")],
    )
    async def test_websocket_scheme(self, proto: str, scheme: str) -> None:
        scope = await through([("Forwarded", f"proto={proto}")], kind="websocket")
        assert scope["scheme"] == scheme

    async def test_host_with_port(self) -> None:
        scope = await through([("Forwarded", 'host="[2001:db8::1]:8443";proto=https')])
        assert (scope["server"], host_headers(scope)) == (
            ("2001:db8::1", 8443),
            [b"[2001:db8::1]:8443"],
        )


class TestXForwardedHostAndPort:
    @pytest.mark.parametrize(
        ("headers", "server", "host"),
        [
            ([("X-Forwarded-Host", "example.org")], ("example.org", 80), b"example.org"),
            (
                [("X-Forwarded-Host", "example.org"), ("X-Forwarded-Proto", "https")],
                ("example.org", 443),
                b"example.org",
            ),
            (
                [("X-Forwarded-Host", "example.org:8080")],
                ("example.org", 8080),
                b"example.org:8080",
            ),
            (
                [("X-Forwarded-Host", "example.org:8080"), ("X-Forwarded-Port", "9090")],
                ("example.org", 9090),
                b"example.org:9090",
            ),
            (
                [("X-Forwarded-Host", "example.org"), ("X-Forwarded-Port", "8443")],
                ("example.org", 8443),
                b"example.org:8443",
            ),
            # The scheme's default port is left out of the host header.
            (
                [
                    ("X-Forwarded-Host", "example.org"),
                    ("X-Forwarded-Port", "443"),
                    ("X-Forwarded-Proto", "https"),
                ],
                ("example.org", 443),
                b"example.org",
            ),
            # A port alone keeps the name of the request's own host header.
            ([("X-Forwarded-Port", "8443")], ("palfrey.internal", 8443), b"palfrey.internal:8443"),
            (
                [("X-Forwarded-Host", "[2001:db8::1]:8080")],
                ("2001:db8::1", 8080),
                b"[2001:db8::1]:8080",
            ),
        ],
    )
    async def test_sets_server_and_host_header(
        self, headers: Headers, server: tuple[str, int], host: bytes
    ) -> None:
        scope = await through(headers)
        assert (scope["server"], host_headers(scope)) == (server, [host])

    @pytest.mark.parametrize(
        "headers",
        [
            [("X-Forwarded-Host", "bad host")],
            [("X-Forwarded-Host", "")],
            [("X-Forwarded-Host", "example.org:http")],
            [("X-Forwarded-Port", "https")],
            [("X-Forwarded-Port", "70000")],
            [("X-Forwarded-Port", "-1")],
        ],
    )
    async def test_invalid_values_are_ignored(self, headers: Headers) -> None:
        assert seen_by_app(await through(headers)) == UNCHANGED

    async def test_values_of_the_same_hop_as_the_client(self) -> None:
        headers = [
            ("X-Forwarded-For", "198.51.100.1, 203.0.113.7, 10.1.2.3"),
            ("X-Forwarded-Proto", "http, https, http"),
            ("X-Forwarded-Host", "spoofed.example, www.example, internal.example"),
            ("X-Forwarded-Port", "1, 8443, 8000"),
        ]
        scope = await through(headers, trusted="127.0.0.1, 10.0.0.0/8")
        assert seen_by_app(scope) == (
            ("203.0.113.7", 0),
            "https",
            ("www.example", 8443),
            [b"www.example:8443"],
        )

    async def test_fewer_values_than_trusted_hops_are_ignored(self) -> None:
        # Two trusted hops, but only one proxy added a proto and a host.
        headers = [
            ("X-Forwarded-For", "203.0.113.7, 10.1.2.3"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "www.example"),
        ]
        scope = await through(headers, trusted="127.0.0.1, 10.0.0.0/8")
        assert seen_by_app(scope) == (("203.0.113.7", 0), *UNCHANGED[1:])

    async def test_host_header_replaced_in_place_and_duplicates_dropped(self) -> None:
        scope = {
            "type": "http",
            "scheme": "http",
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
            "headers": [
                (b"accept", b"*/*"),
                (b"host", b"a"),
                (b"x-forwarded-host", b"example.org"),
                (b"host", b"b"),
            ],
        }
        seen: list[Scope] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            seen.append(scope)

        await ProxyHeadersMiddleware(app, "127.0.0.1")(scope, None, None)  # type: ignore[arg-type]
        assert seen[0]["headers"] == [
            (b"accept", b"*/*"),
            (b"host", b"example.org"),
            (b"x-forwarded-host", b"example.org"),
        ]

    async def test_host_header_added_when_missing(self) -> None:
        scope = await through([("X-Forwarded-Host", "example.org")], host=None)
        assert scope["headers"][0] == (b"host", b"example.org")

    async def test_port_alone_needs_a_host_header(self) -> None:
        scope = await through([("X-Forwarded-Port", "8443")], host=None)
        assert (scope["server"], host_headers(scope)) == (("127.0.0.1", 8000), [])


class TestSpoofing:
    HEADERS: Headers = [
        ("Forwarded", "for=198.51.100.1;proto=https;host=evil.example"),
        ("X-Forwarded-For", "198.51.100.1"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Port", "443"),
    ]

    @pytest.mark.parametrize(
        ("client", "trusted"),
        [
            (("203.0.113.50", 5000), "127.0.0.1"),
            (("203.0.113.50", 5000), "10.0.0.0/8, unix"),
            (("127.0.0.2", 5000), "127.0.0.1"),
            (None, "127.0.0.1"),
            (("127.0.0.1", 5000), ""),
        ],
    )
    async def test_untrusted_peer_changes_nothing(
        self, client: tuple[str, int] | None, trusted: str
    ) -> None:
        for headers in ([h] for h in self.HEADERS[1:]):
            scope = await through(headers, client=client, trusted=trusted)
            assert seen_by_app(scope) == (client, *UNCHANGED[1:])
        scope = await through(self.HEADERS, client=client, trusted=trusted)
        assert seen_by_app(scope) == (client, *UNCHANGED[1:])

    async def test_client_entries_left_of_the_trusted_hops_are_not_read(self) -> None:
        # The client sent its own Forwarded; the trusted proxy appended the truth.
        forwarded = "for=10.9.9.9;proto=https;host=evil.example, for=203.0.113.7;proto=http"
        scope = await through([("Forwarded", forwarded)], trusted="127.0.0.1, 10.0.0.0/8")
        assert seen_by_app(scope) == (("203.0.113.7", 0), *UNCHANGED[1:])

    async def test_no_proxy_header_leaves_the_scope_alone(self) -> None:
        headers = [(b"host", b"palfrey.internal:8000"), (b"accept", b"*/*")]
        scope = {
            "type": "http",
            "scheme": "http",
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
            "headers": headers,
        }
        before = dict(scope)
        seen: list[Scope] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            seen.append(scope)

        await ProxyHeadersMiddleware(app, "*")(scope, None, None)  # type: ignore[arg-type]
        assert seen[0] == before
        assert seen[0]["headers"] is headers

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        b"forwarded",
                        b"x-forwarded-for",
                        b"x-forwarded-proto",
                        b"x-forwarded-host",
                        b"x-forwarded-port",
                        b"host",
                    ]
                ),
                st.binary(max_size=40),
            ),
            max_size=6,
        )
    )
    async def test_any_header_values_never_raise(self, headers: list[tuple[bytes, bytes]]) -> None:
        seen: list[Scope] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            seen.append(scope)

        for kind in ("http", "websocket"):
            scope = {
                "type": kind,
                "scheme": "http",
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
                "headers": list(headers),
            }
            await ProxyHeadersMiddleware(app, "*")(scope, None, None)  # type: ignore[arg-type]
        assert len(seen) == 2


class TestTrustedPeers:
    def test_unix_trusts_unix_socket_peers_only(self) -> None:
        trusted = TrustedHosts("10.0.0.0/8, unix")
        assert trusted.peer_trusted(None)
        assert trusted.peer_trusted(("10.0.0.1", 1))
        assert not trusted.peer_trusted(("127.0.0.1", 1))
        assert "unix" not in trusted

    def test_star_trusts_unix_socket_peers(self) -> None:
        assert TrustedHosts("*").peer_trusted(None)

    def test_addresses_alone_do_not_trust_unix_socket_peers(self) -> None:
        assert not TrustedHosts("127.0.0.1, ::1").peer_trusted(None)

    @pytest.mark.parametrize(
        ("trusted", "peer", "applied"),
        [
            ("10.0.0.0/8", "10.200.3.4", True),
            ("10.0.0.0/8", "11.0.0.1", False),
            ("fd00::/8", "fd12::34", True),
            ("192.0.2.1", "192.0.2.1", True),
            ("192.0.2.1", "192.0.2.2", False),
            ("*", "198.51.100.9", True),
        ],
    )
    async def test_peer_by_address_network_or_star(
        self, trusted: str, peer: str, applied: bool
    ) -> None:
        scope = await through(
            [("Forwarded", "for=203.0.113.7;proto=https")], trusted=trusted, client=(peer, 1)
        )
        assert (scope["client"] == ("203.0.113.7", 0)) is applied
        assert (scope["scheme"] == "https") is applied


async def scope_app(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with the parts of the scope that proxy headers can change, as JSON."""
    if scope["type"] != "http":
        return
    seen = {
        "client": scope["client"],
        "scheme": scope["scheme"],
        "server": scope["server"],
        "host": [v.decode() for k, v in scope["headers"] if k == b"host"],
    }
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": json.dumps(seen).encode()})


async def seen_over_socket(srv: Any, headers: Headers) -> dict[str, Any]:
    async with connect(srv) as client:
        await client.send(request(headers=[("Host", "palfrey.internal"), *headers]))
        return dict(json.loads((await client.read_response()).body))


class TestForwardedThroughTheServer:
    async def test_forwarded(self, serve: Any) -> None:
        forwarded = 'for="[2001:db8::7]:4711";proto=https;host="www.example:8443"'
        async with serve(scope_app) as srv:
            seen = await seen_over_socket(srv, [("Forwarded", forwarded)])
        assert seen == {
            "client": ["2001:db8::7", 4711],
            "scheme": "https",
            "server": ["www.example", 8443],
            "host": ["www.example:8443"],
        }

    async def test_x_forwarded_host_and_port(self, serve: Any) -> None:
        headers = [
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "www.example"),
            ("X-Forwarded-Port", "8443"),
        ]
        async with serve(scope_app) as srv:
            seen = await seen_over_socket(srv, headers)
        assert seen == {
            "client": ["203.0.113.7", 0],
            "scheme": "https",
            "server": ["www.example", 8443],
            "host": ["www.example:8443"],
        }

    async def test_spoofed_headers_from_an_untrusted_peer(self, serve: Any) -> None:
        headers = [
            ("Forwarded", "for=198.51.100.1;proto=https;host=evil.example"),
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Port", "443"),
        ]
        async with serve(scope_app, forwarded_allow_ips="10.0.0.1") as srv:
            seen = await seen_over_socket(srv, headers)
        assert seen["client"][0] == "127.0.0.1"
        assert (seen["scheme"], seen["server"], seen["host"]) == (
            "http",
            ["127.0.0.1", srv.port],
            ["palfrey.internal"],
        )

    async def test_malformed_forwarded_is_served(self, serve: Any) -> None:
        headers = [("Forwarded", 'for="[2001:db8::7'), ("X-Forwarded-Proto", "https")]
        async with serve(scope_app) as srv:
            seen = await seen_over_socket(srv, headers)
        assert (seen["client"][0], seen["scheme"]) == ("127.0.0.1", "http")

    async def test_websocket_behind_tls_terminating_proxy(self, serve: Any) -> None:
        schemes: list[str] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            if scope["type"] == "websocket":
                schemes.append(scope["scheme"])
                await receive()
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close"})

        def handshake(url: str, proto: str) -> None:
            with sync_client(url, additional_headers={"X-Forwarded-Proto": proto}):
                pass

        async with serve(app) as srv:
            await in_thread(lambda: handshake(ws_url(srv), "https"))
            await in_thread(lambda: handshake(ws_url(srv), "http"))
        assert schemes == ["wss", "ws"]
