"""WSProtocol without sockets: handshake headers in, response headers out; bytes in, events out."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ws_client import frame
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

from palfrey.protocols.events import (
    WebSocketConnected,
    WebSocketDataReceived,
    WebSocketDisconnected,
)
from palfrey.protocols.ws import (
    HandshakeError,
    WSProtocol,
    accept_token,
    check_h1_handshake,
    is_websocket_upgrade,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def handshake_headers(**extra: bytes) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"host", b"example.com"),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", KEY),
        (b"sec-websocket-version", b"13"),
    ]
    for name, value in extra.items():
        headers.append((name.replace("_", "-").encode(), value))
    return headers


def opened(max_size: int = 1 << 20, deflate: bool = False, **extra: bytes) -> WSProtocol:
    if deflate:
        extra.setdefault("sec_websocket_extensions", b"permessage-deflate")
    protocol = WSProtocol(
        handshake_headers(**extra), max_size=max_size, per_message_deflate=deflate
    )
    protocol.accept(None)
    assert protocol.next_events() == [WebSocketConnected(None)]
    return protocol


def client(deflate_response: bytes | None = None) -> Connection:
    extensions = []
    if deflate_response is not None:
        extension = PerMessageDeflate()
        extension.finalize(deflate_response.decode())
        extensions.append(extension)
    return Connection(ConnectionType.CLIENT, extensions)


def server_frames(data: bytes) -> list[object]:
    """Parse what the server wrote with a client-side wsproto connection."""
    peer = Connection(ConnectionType.CLIENT)
    peer.receive_data(data)
    return list(peer.events())


# The handshake.


def test_accept_token_matches_rfc_6455_example() -> None:
    assert accept_token(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_accept_headers() -> None:
    protocol = WSProtocol(handshake_headers(), per_message_deflate=False)
    headers = protocol.accept(None, [(b"x-app", b"1"), (b"upgrade", b"evil")])
    assert headers == [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        (b"x-app", b"1"),
    ]
    with pytest.raises(RuntimeError):
        protocol.accept(None)


def test_subprotocols_are_split_on_commas() -> None:
    headers = handshake_headers(sec_websocket_protocol=b"chat, superchat")
    headers.append((b"sec-websocket-protocol", b"v3"))
    protocol = WSProtocol(headers)
    assert protocol.subprotocols == ["chat", "superchat", "v3"]
    response = protocol.accept("chat", [(b"sec-websocket-protocol", b"other")])
    assert (b"sec-websocket-protocol", b"chat") in response
    assert (b"sec-websocket-protocol", b"other") not in response


@pytest.mark.parametrize("version", [None, b"8", b"14", b"13, 8"])
def test_unsupported_version_gets_426(version: bytes | None) -> None:
    headers = [h for h in handshake_headers() if h[0] != b"sec-websocket-version"]
    if version is not None:
        headers.append((b"sec-websocket-version", version))
    with pytest.raises(HandshakeError) as info:
        WSProtocol(headers)
    assert info.value.status_code == 426
    assert (b"sec-websocket-version", b"13") in info.value.headers


@pytest.mark.parametrize(
    "keys",
    [[], [b"not base64!"], [b"c2hvcnQ="], [b"AAAAAAAAAAAAAAAAAAAAAAAAAAAA"], [KEY, KEY]],
)
def test_bad_key_gets_400(keys: list[bytes]) -> None:
    headers = [h for h in handshake_headers() if h[0] != b"sec-websocket-key"]
    headers += [(b"sec-websocket-key", key) for key in keys]
    with pytest.raises(HandshakeError) as info:
        WSProtocol(headers)
    assert info.value.status_code == 400


def test_key_is_not_needed_over_http2() -> None:
    headers = [(b"sec-websocket-version", b"13")]
    protocol = WSProtocol(headers, require_key=False)
    assert protocol.accept(None) == []


def test_h1_handshake_rules() -> None:
    headers = handshake_headers()
    check_h1_handshake(b"GET", "1.1", headers)
    for method, version, bad in [
        (b"POST", "1.1", headers),
        (b"GET", "1.0", headers),
        (b"GET", "1.1", [h for h in headers if h[0] != b"connection"]),
        (b"GET", "1.1", [*headers, (b"content-length", b"5")]),
        (b"GET", "1.1", [*headers, (b"transfer-encoding", b"chunked")]),
    ]:
        with pytest.raises(HandshakeError) as info:
            check_h1_handshake(method, version, bad)
        assert info.value.status_code == 400
    check_h1_handshake(b"GET", "1.1", [*headers, (b"content-length", b"0")])
    check_h1_handshake(b"GET", "1.1", [*headers[:2], (b"connection", b"keep-alive, Upgrade")])


def test_is_websocket_upgrade() -> None:
    assert is_websocket_upgrade([(b"upgrade", b"WebSocket")])
    assert is_websocket_upgrade([(b"upgrade", b"foo, websocket")])
    assert not is_websocket_upgrade([(b"upgrade", b"h2c")])
    assert not is_websocket_upgrade([])


@pytest.mark.parametrize(
    ("offer", "accepted"),
    [
        (b"permessage-deflate", b"permessage-deflate"),
        (
            b"permessage-deflate; client_max_window_bits",
            b"permessage-deflate; client_max_window_bits=15",
        ),
        (
            b"permessage-deflate; client_max_window_bits=abc, permessage-deflate",
            b"permessage-deflate",
        ),
        (b"permessage-deflate; server_max_window_bits=4", None),
        (b"x-webkit-deflate-frame", None),
    ],
)
def test_deflate_negotiation(offer: bytes, accepted: bytes | None) -> None:
    protocol = WSProtocol(handshake_headers(sec_websocket_extensions=offer))
    headers = dict(protocol.accept(None))
    assert headers.get(b"sec-websocket-extensions") == accepted
    assert len(protocol.extensions) == (accepted is not None)


def test_deflate_can_be_disabled() -> None:
    protocol = WSProtocol(
        handshake_headers(sec_websocket_extensions=b"permessage-deflate"),
        per_message_deflate=False,
    )
    assert b"sec-websocket-extensions" not in dict(protocol.accept(None))


# Messages.


def test_messages_text_binary_and_fragments() -> None:
    protocol = opened()
    peer = client()
    data = peer.send(TextMessage("héllo"))
    data += peer.send(BytesMessage(b"\x00\x01"))
    data += peer.send(TextMessage("frag", message_finished=False))
    data += peer.send(Ping(b"p"))
    data += peer.send(TextMessage("mented ✓", message_finished=True))
    events = []
    for i in range(len(data)):
        events += protocol.receive_data(data[i : i + 1])
    assert events == [
        WebSocketDataReceived("héllo"),
        WebSocketDataReceived(b"\x00\x01"),
        WebSocketDataReceived("fragmented ✓"),
    ]
    assert server_frames(protocol.data_to_send()) == [Pong(b"p")]


def test_trailing_data_after_accept() -> None:
    protocol = WSProtocol(handshake_headers())
    protocol.accept("chat")
    events = protocol.receive_data(client().send(TextMessage("early")))
    assert events == [WebSocketConnected("chat"), WebSocketDataReceived("early")]


def test_send_message_and_close_handshake_started_by_us() -> None:
    protocol = opened()
    protocol.send_message("hi")
    protocol.send_message(b"\xff")
    protocol.close(4000, "bye")
    assert not protocol.open
    assert server_frames(protocol.data_to_send()) == [
        TextMessage("hi"),
        BytesMessage(b"\xff"),
        CloseConnection(4000, "bye"),
    ]
    with pytest.raises(RuntimeError):
        protocol.send_message("late")
    peer = client()
    late = peer.send(TextMessage("in flight"))
    assert protocol.receive_data(late) == [WebSocketDataReceived("in flight")]
    reply = peer.send(CloseConnection(4000, "bye"))
    assert protocol.receive_data(reply) == [WebSocketDisconnected(4000, "bye")]
    assert protocol.disconnected
    assert protocol.data_to_send() == b""
    assert protocol.receive_data(b"") == []


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (4321, "done"), (1005, "")])
def test_close_started_by_the_peer_is_echoed(code: int, reason: str) -> None:
    protocol = opened()
    peer = client()
    data = peer.send(TextMessage("last"))
    data += frame(0x8, b"") if code == 1005 else peer.send(CloseConnection(code, reason))
    assert protocol.receive_data(data) == [
        WebSocketDataReceived("last"),
        WebSocketDisconnected(code, reason),
    ]
    echo = protocol.data_to_send()
    expected = b"\x88\x00" if code == 1005 else None
    if expected is not None:
        assert echo == expected
    else:
        assert server_frames(echo) == [CloseConnection(code, reason)]
    assert not protocol.open


def test_eof_is_1006() -> None:
    protocol = opened()
    assert protocol.receive_data(b"") == [WebSocketDisconnected(1006, "")]
    assert protocol.receive_data(b"") == []
    assert protocol.receive_data(b"more") == []


def test_nothing_happens_before_accept() -> None:
    protocol = WSProtocol(handshake_headers())
    assert protocol.receive_data(b"\x81\x80abcd") == []
    assert not protocol.open


def test_pings_and_pongs() -> None:
    protocol = opened()
    protocol.send_ping()
    assert protocol.awaiting_pong
    (ping,) = server_frames(protocol.data_to_send())
    assert isinstance(ping, Ping)
    peer = client()
    assert protocol.receive_data(peer.send(Pong(b"unsolicited"))) == []
    assert protocol.awaiting_pong
    assert protocol.receive_data(peer.send(Pong(ping.payload))) == []
    assert not protocol.awaiting_pong


def test_fail_sends_close_and_reports_it() -> None:
    protocol = opened()
    assert protocol.fail(1011, "keepalive ping timeout") == [
        WebSocketDisconnected(1011, "keepalive ping timeout")
    ]
    assert server_frames(protocol.data_to_send()) == [
        CloseConnection(1011, "keepalive ping timeout")
    ]
    assert protocol.fail(1011) == []
    assert protocol.receive_data(b"") == []


# Limits and protocol violations.


def assert_failed(protocol: WSProtocol, events: list[object], code: int) -> None:
    assert isinstance(events[-1], WebSocketDisconnected)
    assert events[-1].code == code
    assert protocol.failed and protocol.disconnected and not protocol.open
    (close,) = server_frames(protocol.data_to_send())
    assert isinstance(close, CloseConnection)
    assert close.code == code
    assert protocol.receive_data(client().send(TextMessage("ignored"))) == []


@pytest.mark.parametrize("kind", ["text", "bytes"])
def test_message_too_big_across_fragments(kind: str) -> None:
    protocol = opened(max_size=100)
    peer = client()
    chunk: str | bytes = "a" * 40 if kind == "text" else b"a" * 40
    message = TextMessage if kind == "text" else BytesMessage
    ok = peer.send(message(chunk * 2 + chunk[:20]))  # type: ignore[operator]
    assert protocol.receive_data(ok) == [WebSocketDataReceived(chunk * 2 + chunk[:20])]  # type: ignore[operator]
    data = b"".join(peer.send(message(chunk, message_finished=False)) for _ in range(3))
    events = protocol.receive_data(data)
    assert_failed(protocol, events, 1009)


def test_text_size_counts_utf8_bytes() -> None:
    protocol = opened(max_size=10)
    events = protocol.receive_data(client().send(TextMessage("é" * 6)))
    assert_failed(protocol, events, 1009)


def test_invalid_utf8_is_1007() -> None:
    protocol = opened()
    events = protocol.receive_data(frame(0x1, b"ok \xff\xfe"))
    assert_failed(protocol, events, 1007)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(frame(0x1, b"unmasked", mask=False), id="unmasked"),
        pytest.param(frame(0x3, b"x"), id="reserved-opcode"),
        pytest.param(frame(0xB, b"x"), id="reserved-control-opcode"),
        pytest.param(frame(0x1, b"x", rsv=0b100), id="rsv1-without-extension"),
        pytest.param(frame(0x1, b"x", rsv=0b010), id="rsv2"),
        pytest.param(frame(0x9, b"x", fin=False), id="fragmented-ping"),
        pytest.param(frame(0x9, b"x" * 126), id="long-ping"),
        pytest.param(frame(0x0, b"x"), id="orphan-continuation"),
        pytest.param(frame(0x1, b"a", fin=False) + frame(0x2, b"b"), id="interleaved"),
        pytest.param(frame(0x8, b"\x03"), id="one-byte-close"),
        pytest.param(frame(0x8, b"\x03\xed"), id="close-1005-on-wire"),
    ],
)
def test_protocol_violations_are_1002(data: bytes) -> None:
    protocol = opened()
    events = protocol.receive_data(data)
    assert_failed(protocol, events, 1002)


def test_deflate_round_trip() -> None:
    protocol = opened(deflate=True)
    peer = client(b"permessage-deflate")
    data = peer.send(TextMessage("compressed " * 100))
    data += peer.send(BytesMessage(b"\x00" * 5000, message_finished=False))
    data += peer.send(BytesMessage(b"\x01" * 5000))
    assert len(data) < 1000
    assert protocol.receive_data(data) == [
        WebSocketDataReceived("compressed " * 100),
        WebSocketDataReceived(b"\x00" * 5000 + b"\x01" * 5000),
    ]
    protocol.send_message("z" * 10000)
    out = protocol.data_to_send()
    assert len(out) < 200
    peer.receive_data(out)
    assert [e.data for e in peer.events()] == ["z" * 10000]  # type: ignore[attr-defined]


def test_deflate_bomb_is_refused_without_inflating_it() -> None:
    protocol = opened(max_size=1 << 16, deflate=True)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = compressor.compress(b"\x00" * (64 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    payload = payload[:-4]
    assert len(payload) < 1 << 20
    events = protocol.receive_data(frame(0x2, payload, rsv=0b100))
    assert_failed(protocol, events, 1009)


def test_corrupt_deflate_data_is_1007() -> None:
    protocol = opened(deflate=True)
    events = protocol.receive_data(frame(0x2, b"\xff\xff\xff\xff", rsv=0b100))
    assert_failed(protocol, events, 1007)


# Arbitrary input: events or a clean close, never an exception.

opcodes = st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xF])
payloads = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=60).map(lambda s: s.encode()),
    st.sampled_from([b"\x03\xe8", b"\x03\xe8bye", b"\x0f\xa0\xff", b"\x03", b""]),
)


def deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


frames = st.one_of(
    st.builds(
        frame,
        opcodes,
        payloads,
        fin=st.booleans(),
        rsv=st.sampled_from([0, 0, 0, 0b100, 0b010, 0b001]),
        mask=st.sampled_from([True, True, True, False]),
    ),
    # Well-formed compressed frames, to reach the inflater and the size limit through it.
    st.builds(frame, st.sampled_from([0x1, 0x2]), payloads.map(deflated), rsv=st.just(0b100)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(frames, max_size=12),
    st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=8),
    st.booleans(),
    st.integers(min_value=1, max_value=300),
)
def test_arbitrary_frames_never_raise(
    sequence: list[bytes], cuts: list[int], deflate: bool, max_size: int
) -> None:
    protocol = opened(max_size=max_size, deflate=deflate)
    stream = b"".join(sequence)
    events: list[object] = []
    position = 0
    step = 0
    while position < len(stream):
        size = cuts[step % len(cuts)]
        events += protocol.receive_data(stream[position : position + size])
        position += size
        step += 1
        assert isinstance(protocol.data_to_send(), bytes)
    events += protocol.receive_data(b"")
    disconnects = [e for e in events if isinstance(e, WebSocketDisconnected)]
    assert len(disconnects) == 1
    assert events[-1] is disconnects[0]
    assert all(isinstance(e, WebSocketDataReceived) for e in events[:-1])
    for event in events[:-1]:
        assert isinstance(event, WebSocketDataReceived)
        size = len(event.data.encode() if isinstance(event.data, str) else event.data)
        assert size <= max_size
    assert 1000 <= disconnects[0].code <= 4999


# The direct path for plain messages must be indistinguishable from wsproto.


class WsprotoOnly(WSProtocol):
    """The same protocol with every frame parsed by wsproto: the reference."""

    def _receive_plain(self, data: bytes, events: list[Any]) -> bytes:
        return data


def long_form(data: bytes) -> bytes:
    """The same frame with its short length re-encoded in the (forbidden) 16-bit form."""
    length = data[1] & 0x7F
    assert length < 126
    return data[:1] + bytes([data[1] & 0x80 | 126]) + struct.pack("!H", length) + data[2:]


short_payloads = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda s: s.encode()),
    st.sampled_from([b"\x03\xe8", b"caf\xc3", b"\xff", b""]),
)
mostly_plain_frames = st.one_of(
    st.builds(frame, st.sampled_from([0x1, 0x2]), short_payloads),
    st.builds(
        frame,
        opcodes,
        short_payloads,
        fin=st.booleans(),
        rsv=st.sampled_from([0, 0, 0b100, 0b001]),
        mask=st.sampled_from([True, True, False]),
    ),
    st.builds(frame, st.sampled_from([0x1, 0x2]), short_payloads).map(long_form),
    st.builds(frame, st.sampled_from([0x1, 0x2]), short_payloads, mask=st.just(False)),
    st.builds(frame, st.sampled_from([0x0, 0x1, 0x2]), short_payloads, fin=st.just(False)),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(mostly_plain_frames, max_size=12),
    st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=4),
    st.lists(st.integers(min_value=0, max_value=80), min_size=1, max_size=4),
    st.integers(min_value=1, max_value=40),
)
def test_plain_messages_parse_exactly_as_wsproto_would(
    sequence: list[bytes], groups: list[int], splits: list[int], max_size: int
) -> None:
    """Chunks mostly start on frame boundaries (where the direct path applies), some do not."""
    fast = opened(max_size=max_size)
    reference = WsprotoOnly(handshake_headers(), max_size=max_size, per_message_deflate=False)
    reference.accept(None)
    reference.next_events()
    chunks = []
    position = step = 0
    while position < len(sequence):
        group = b"".join(sequence[position : position + groups[step % len(groups)]])
        split = splits[step % len(splits)]
        chunks += [group[:split], group[split:]] if split else [group]
        position += groups[step % len(groups)]
        step += 1
    for chunk in [*(chunk for chunk in chunks if chunk), b""]:
        assert fast.receive_data(chunk) == reference.receive_data(chunk)
        assert fast.data_to_send() == reference.data_to_send()
        assert (fast.open, fast.failed) == (reference.open, reference.failed)


def test_plain_path_resumes_after_control_frames_and_fragments() -> None:
    protocol = opened()
    peer = client()
    data = peer.send(TextMessage("one"))
    data += peer.send(Ping(b"p"))
    data += peer.send(BytesMessage(b"two", message_finished=False))
    data += peer.send(BytesMessage(b"!", message_finished=True))
    data += peer.send(TextMessage("three"))
    assert protocol.receive_data(data) == [
        WebSocketDataReceived("one"),
        WebSocketDataReceived(b"two!"),
        WebSocketDataReceived("three"),
    ]
    assert server_frames(protocol.data_to_send()) == [Pong(b"p")]
    assert protocol.receive_data(peer.send(TextMessage("four"))) == [WebSocketDataReceived("four")]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("kind", ["text", "bytes"])
def test_plain_frames_are_the_bytes_wsproto_writes(size: int, kind: str) -> None:
    data: str | bytes = "é" * (size // 2) + "x" * (size % 2) if kind == "text" else b"\xff" * size
    protocol = opened()
    protocol.send_message(data)
    sent = protocol.data_to_send()
    reference = Connection(ConnectionType.SERVER)
    message = TextMessage(data) if isinstance(data, str) else BytesMessage(data)
    assert sent == reference.send(message)
    (received,) = server_frames(sent)
    assert received.data == data
