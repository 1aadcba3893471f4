"""H2Protocol under hostile input: whatever the bytes, it raises only H2ConnectionError,
and once it has, a GOAWAY is waiting in data_to_send()."""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.exceptions
import h2.settings
import hpack
from hyperframe.frame import Frame, GoAwayFrame
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from palfrey.protocols.events import RequestReceived, StreamData, StreamEnded
from palfrey.protocols.h2 import H2ConnectionError, H2Protocol, StreamClosed

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":authority", b"example.com"),
    (b":path", b"/"),
]

fuzz_settings = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def parse_frames(data: bytes) -> list[Frame]:
    frames = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


def serve(server: H2Protocol, events: list[object]) -> None:
    """Play a well-behaved application: answer requests, consume bodies, finish streams."""
    for item in events:
        try:
            if isinstance(item, RequestReceived):
                server.send_headers(item.stream_id, 200, [(b"x-fuzz", b"1")], end=False)
                server.send_data(item.stream_id, b"response body", end=False)
            elif isinstance(item, StreamData):
                event("request body")
                server.acknowledge(item.stream_id, len(item.data))
            elif isinstance(item, StreamEnded):
                server.send_data(item.stream_id, b"", end=True)
                server.stream_finished(item.stream_id)
        except StreamClosed:
            server.stream_finished(getattr(item, "stream_id", 0))


def feed(chunks: list[bytes], *, small_limits: bool = False) -> None:
    """Feed the chunks to a fresh server; check the one allowed failure and its GOAWAY."""
    if small_limits:
        server = H2Protocol(max_concurrent_streams=3, max_header_list_size=200)
    else:
        server = H2Protocol()
    server.initiate()
    parse_frames(server.data_to_send())
    received = b""
    for chunk in chunks:
        received += chunk
        try:
            events = server.receive_data(chunk)
        except H2ConnectionError as exc:
            event("connection error")
            assert isinstance(exc.error_code, int)
            frames = parse_frames(server.data_to_send())
            assert isinstance(frames[-1], GoAwayFrame), frames
            assert frames[-1].error_code == exc.error_code
            return
        if any(isinstance(e, RequestReceived) for e in events):
            event("request served")
        serve(server, events)
        # Whatever went out is well-formed HTTP/2.
        parse_frames(server.data_to_send())
    if server.goaway_sent:
        server.finish_goaway()
    parse_frames(server.data_to_send())


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


cuts = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=6)


# Plain random bytes.


@fuzz_settings
@given(st.binary(max_size=300), cuts)
def test_random_bytes(data: bytes, cut: list[int]) -> None:
    feed(split(data, cut))


@fuzz_settings
@given(st.binary(max_size=600), cuts, st.booleans())
def test_random_bytes_after_preface(data: bytes, cut: list[int], small: bool) -> None:
    feed(split(PREFACE + data, cut), small_limits=small)


# Valid client conversations, mutated.


def client_bytes(actions: list[tuple[str, int, int]]) -> bytes:
    """What an h2 client writes for a sequence of actions (those it refuses are skipped)."""
    stream_actions = ("data", "trailers", "reset", "priority")
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    client.initiate_connection()
    streams: list[int] = []
    for action, a, b in actions:
        if action in stream_actions and not streams:
            continue
        stream_id = streams[a % len(streams)] if streams else 0
        try:
            if action == "request":
                stream_id = client.get_next_available_stream_id()
                fields = [*REQUEST, (b"x-extra", b"v" * (a % 40)), (b"cookie", b"c=%d" % b)]
                client.send_headers(stream_id, fields, end_stream=b % 3 == 0)
                streams.append(stream_id)
            elif action == "big":
                stream_id = client.get_next_available_stream_id()
                # Over the frame size: the block goes out as HEADERS + CONTINUATION.
                client.send_headers(stream_id, [*REQUEST, (b"x-big", b"b" * (17000 + a))])
                streams.append(stream_id)
            elif action == "data":
                pad = b % 256 if b % 2 else None
                client.send_data(stream_id, b"d" * (a % 300), end_stream=b % 5 == 0, pad_length=pad)
            elif action == "trailers":
                client.send_headers(stream_id, [(b"x-trailer", b"t")], end_stream=True)
            elif action == "reset":
                client.reset_stream(stream_id, b % 14)
            elif action == "priority":
                client.prioritize(
                    stream_id, weight=1 + b % 256, depends_on=0, exclusive=bool(a % 2)
                )
            elif action == "window":
                client.increment_flow_control_window(1 + b, stream_id if a % 2 else None)
            elif action == "ping":
                client.ping(struct.pack(">Q", b))
            elif action == "settings":
                client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: b})
            elif action == "goaway":
                client.close_connection(b % 14)
        except (h2.exceptions.H2Error, ValueError, KeyError):
            if action in ("request", "big", "trailers"):
                # h2 may have encoded the block before refusing it: the client's HPACK
                # state is no longer the server's, and what follows would only test that.
                break
    return client.data_to_send()


actions = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "request",
                "request",
                "big",
                "data",
                "data",
                "data",
                "trailers",
                "reset",
                "priority",
                "window",
                "ping",
                "settings",
                "goaway",
            ]
        ),
        st.integers(min_value=0, max_value=1000),
        st.integers(min_value=0, max_value=70000),
    ),
    max_size=12,
)

mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "truncate", "overwrite"]),
    st.integers(min_value=0, max_value=1 << 20),
    st.integers(min_value=0, max_value=255),
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]], keep_preface: bool) -> bytes:
    start = len(PREFACE) if keep_preface else 0
    buffer = bytearray(data)
    for kind, position, value in mutations:
        span = len(buffer) - start
        if span <= 0:
            break
        at = start + position % span
        if kind == "flip":
            buffer[at] ^= 1 << (value % 8)
        elif kind == "insert":
            buffer[at:at] = bytes([value]) * (1 + value % 4)
        elif kind == "delete":
            del buffer[at : at + 1 + value % 8]
        elif kind == "truncate":
            del buffer[at:]
        else:
            buffer[at] = value
    return bytes(buffer)


@fuzz_settings
@given(actions, st.lists(mutation, max_size=5), cuts, st.booleans(), st.booleans())
def test_mutated_client_conversations(
    steps: list[tuple[str, int, int]],
    mutations: list[tuple[str, int, int]],
    cut: list[int],
    keep_preface: bool,
    small: bool,
) -> None:
    feed(split(mutate(client_bytes(steps), mutations, keep_preface), cut), small_limits=small)


# Random interleavings of frames with random fields.

stream_ids = st.sampled_from([0, 1, 2, 3, 5, 7, 9, 2**31 - 1])
flags = st.integers(min_value=0, max_value=255)
encoder_fields = st.lists(
    st.sampled_from(
        [
            *REQUEST,
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":path", b""),
            (b"host", b"example.com"),
            (b"te", b"trailers"),
            (b"connection", b"close"),
            (b"cookie", b"a=b"),
            (b"X-Upper", b"1"),
            (b"x-long", b"l" * 300),
        ]
    ),
    max_size=8,
)


@st.composite
def header_block(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        fields = draw(st.sampled_from([REQUEST, []])) + draw(encoder_fields)
        return hpack.Encoder().encode(fields)
    return draw(st.binary(max_size=40))


def settings_payload(pairs: list[tuple[int, int]]) -> bytes:
    return b"".join(struct.pack(">HL", key, value) for key, value in pairs)


def priority_payload(depends: int, weight: int) -> bytes:
    return struct.pack(">LB", depends, weight)


u31 = st.integers(min_value=0, max_value=2**31 - 1)
u32 = st.integers(min_value=0, max_value=2**32 - 1)

# (frame type, payload) for each kind, mostly well-formed, sometimes not.
payloads = st.one_of(
    st.tuples(st.just(0x0), st.binary(max_size=100)),  # DATA
    st.tuples(st.just(0x1), header_block()),  # HEADERS
    st.tuples(
        st.just(0x1),
        st.builds(lambda p, b: p + b, st.builds(priority_payload, u32, flags), header_block()),
    ),  # HEADERS with a priority block (when the PRIORITY flag is drawn)
    st.tuples(st.just(0x2), st.builds(priority_payload, u32, flags)),  # PRIORITY
    st.tuples(st.just(0x3), u32.map(lambda c: struct.pack(">L", c))),  # RST_STREAM
    st.tuples(
        st.just(0x4),
        st.lists(st.tuples(st.integers(min_value=0, max_value=9), u32), max_size=4).map(
            settings_payload
        ),
    ),  # SETTINGS
    st.tuples(st.just(0x6), st.binary(min_size=8, max_size=8)),  # PING
    st.tuples(
        st.just(0x7),
        st.builds(lambda s, c, d: struct.pack(">LL", s, c) + d, u32, u32, st.binary(max_size=8)),
    ),  # GOAWAY
    st.tuples(st.just(0x8), u32.map(lambda i: struct.pack(">L", i))),  # WINDOW_UPDATE
    st.tuples(st.just(0x9), header_block()),  # CONTINUATION
    st.tuples(st.integers(min_value=0xA, max_value=0xFF), st.binary(max_size=20)),  # unknown
    st.tuples(st.integers(min_value=0, max_value=9), st.binary(max_size=20)),  # garbage body
)


@st.composite
def frame(draw: st.DrawFn) -> bytes:
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        # A well-formed request, so that streams open and the application side runs.
        block = hpack.Encoder().encode([*REQUEST, (b"x-n", b"%d" % draw(flags))])
        stream_id = draw(st.sampled_from([1, 3, 5, 7, 9, 11]))
        end_stream = draw(st.sampled_from([0x0, 0x1]))
        header = struct.pack(">L", len(block))[1:] + bytes([0x1, 0x4 | end_stream])
        return header + struct.pack(">L", stream_id) + block
    kind, payload = draw(payloads)
    frame_flags = (
        draw(st.sampled_from([0x0, 0x1, 0x4, 0x5, 0x8, 0x20, 0x24, 0x25]))
        if draw(st.booleans())
        else draw(flags)
    )
    if frame_flags & 0x8 and kind in (0x0, 0x1) and draw(st.booleans()):
        # PADDED: a pad length, then the padding.
        pad = draw(st.integers(min_value=0, max_value=30))
        payload = bytes([pad]) + payload + b"\0" * pad
    stream_id = draw(stream_ids) if kind not in (0x4, 0x6, 0x7) or draw(st.booleans()) else 0
    length = len(payload)
    if draw(st.integers(min_value=0, max_value=19)) == 0:
        length = draw(st.integers(min_value=0, max_value=2**24 - 1))  # a lying length
    header = struct.pack(">L", length)[1:] + bytes([kind, frame_flags])
    return header + struct.pack(">L", stream_id) + payload


@fuzz_settings
@given(st.lists(frame(), max_size=15), cuts, st.booleans(), st.booleans())
def test_random_frames(
    frames: list[bytes], cut: list[int], with_settings: bool, small: bool
) -> None:
    opening = PREFACE + (b"\0\0\0\x04\0\0\0\0\0" if with_settings else b"")
    feed(split(opening + b"".join(frames), cut), small_limits=small)
