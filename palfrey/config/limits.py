"""Every bounded resource in one table: what it bounds, its default, what the client sees.

The option rows take their flag, TOML key and default from the schema, so the
table in ``docs/limits.md`` cannot drift from the code; what the schema cannot
say (what the limit bounds, what the client sees, which test proves it) is
written here, once. Limits that are constants rather than options are rows
too, marked fixed: this layer may not import the modules that define them, so
``tests/test_limits_table.py`` checks each stated value against its constant.

``python -m palfrey.config.limits write docs/limits.md`` rewrites the table
between the markers; ``check`` instead exits 1 when it is stale. (Words, not
flags: the docs test takes every ``--flag`` the docs mention for Palfrey's.)
"""

from __future__ import annotations

import sys
from typing import Any

import attrs

from palfrey.config.generated_section import GeneratedSection
from palfrey.config.schema import Option, options

START_MARKER = "<!-- limits-table:start (python -m palfrey.config.limits write docs/limits.md) -->"
END_MARKER = "<!-- limits-table:end -->"

#: Groups whose every option is a limit and must have a row.
LIMIT_GROUPS = frozenset(("limits", "timeouts"))
#: Options outside those groups that bound something a client controls.
LIMIT_PREFIXES = ("h2_", "h3_", "h11_max_", "ws_max_")
LIMIT_NAMES = frozenset(("limit_request_body",))

KiB = 1024


@attrs.frozen(slots=True)
class Limit:
    """One row: an option of the schema, or a fixed constant."""

    #: What is bounded, as a user would look for it.
    bounds: str
    #: What the client sees when the limit is reached.
    client_sees: str
    #: ``tests/<file>.py::<test name>`` of the tests that prove it.
    tests: tuple[str, ...]
    #: The :class:`~palfrey.config.schema.Config` field, for a configurable limit.
    option: str | None = None
    #: Unit of the option's value, shown after its default.
    unit: str = ""
    #: For a fixed limit: ``module:NAME`` of each constant and the value it must have.
    constants: tuple[tuple[str, Any], ...] = ()
    #: For a fixed limit: its value as the table shows it.
    value: str = ""


LIMITS: tuple[Limit, ...] = (
    # Connections.
    Limit(
        "Open TCP connections per process",
        "At the cap Palfrey stops accepting: new clients wait unanswered in the listen queue"
        " and are served, in order, when a connection closes; past `--backlog` the kernel"
        " drops them. HTTP/3 is not counted",
        (
            "tests/test_limit_connections.py::"
            "test_a_flood_of_idle_sockets_does_not_raise_the_descriptor_count_past_the_cap",
            "tests/test_limit_connections.py::test_a_waiting_client_is_served_once_a_slot_frees",
        ),
        option="limit_connections",
    ),
    Limit(
        "TLS handshake",
        "The connection is closed without a response",
        ("tests/test_tls.py::test_handshake_timeout",),
        option="timeout_tls_handshake",
        unit="s",
    ),
    Limit(
        "Idle keep-alive connection",
        "HTTP/1.1: closed without a response; HTTP/2: `GOAWAY`, then closed",
        (
            "tests/test_http11_limits.py::test_idle_keep_alive_connection_closes_silently",
            "tests/test_http2_flow.py::test_keep_alive_timeout_sends_goaway_and_closes",
        ),
        option="timeout_keep_alive",
        unit="s",
    ),
    Limit(
        "Requests per process",
        "The response that reaches it has `connection: close`; the process then shuts down"
        " gracefully",
        ("tests/test_shutdown.py::test_limit_max_requests_shuts_down",),
        option="limit_max_requests",
    ),
    Limit(
        "Random extra requests added to `--limit-max-requests`",
        "As above, so that workers do not all restart at once",
        ("tests/test_shutdown.py::test_limit_max_requests_jitter_adds_up_to_n_requests",),
        option="limit_max_requests_jitter",
    ),
    Limit(
        "Requests and WebSockets in the application at once",
        "`503` at once (not queued); HTTP/1.1 then closes, HTTP/2 and HTTP/3 go on",
        (
            "tests/test_http11_limits.py::test_request_over_the_limit_gets_503_at_once",
            "tests/test_http2_flow.py::test_limit_concurrency_answers_503_per_stream",
        ),
        option="limit_concurrency",
    ),
    Limit(
        "Requests still running at shutdown",
        "Cut off and their connections closed",
        ("tests/test_shutdown.py::test_graceful_timeout_cancels_a_stuck_request",),
        option="timeout_graceful_shutdown",
        unit="s",
    ),
    # HTTP/1.1 requests.
    Limit(
        "HTTP/1.1 request head (request line and headers)",
        "`431`, then close",
        (
            "tests/test_http11_limits.py::test_large_head_in_one_piece_is_431",
            "tests/test_http11_limits.py::test_large_head_trickled_is_431",
        ),
        option="h11_max_incomplete_event_size",
        unit="bytes",
    ),
    Limit(
        "HTTP/1.1 request-target length, apart from the head size",
        "`414`, then close, however the target is split across TCP segments",
        (
            "tests/test_http11_edges.py::test_server_answers_414_to_a_trickled_target",
            "tests/test_http11_edges.py::test_target_length_is_independent_of_the_head_limit",
        ),
        option="limit_request_target",
        unit="bytes",
    ),
    Limit(
        "Header count",
        "No count of its own: HTTP/1.1 fields count towards the head size, HTTP/2 and"
        " HTTP/3 fields towards the header list (32 bytes each beyond name and value): `431`",
        (
            "tests/test_http11_limits.py::test_large_head_in_one_piece_is_431",
            "tests/test_h2_protocol.py::test_header_list_over_limit_answered_431",
        ),
        value="within the head or header list size",
    ),
    Limit(
        "Request body",
        "`413` (before the application runs when the length is declared); HTTP/1.1 then closes",
        (
            "tests/test_http11_limits.py::test_declared_length_over_limit_is_413_before_the_app_runs",
            "tests/test_http2_flow.py::test_limit_request_body_is_413",
            "tests/test_http3.py::test_limit_request_body_gives_413",
        ),
        option="limit_request_body",
        unit="bytes",
    ),
    Limit(
        "Time to receive a request head",
        "`408` if part of a head arrived, otherwise closed without a response",
        (
            "tests/test_http11_limits.py::test_partial_head_gets_408",
            "tests/test_http11_limits.py::test_silent_client_is_closed_without_answer",
        ),
        option="timeout_request_header",
        unit="s",
    ),
    Limit(
        "Wait for the next piece of a request body",
        "`408` if the response has not started, otherwise the connection (HTTP/2: the stream)"
        " is closed; the application's `receive()` returns `http.disconnect`",
        (
            "tests/test_http11_io_timeouts.py::test_a_stalled_request_body_gets_408",
            "tests/test_http2_flow.py::test_request_body_timeout_is_408",
        ),
        option="timeout_request_body",
        unit="s",
    ),
    Limit(
        "Wait for the client to read a response",
        "HTTP/1.1 and WebSocket: the connection is closed; HTTP/2: the stream is reset;"
        " the application's `send()` raises",
        (
            "tests/test_http11_io_timeouts.py::test_a_client_that_stops_reading_is_closed_and_frees_its_slot",
            "tests/test_http2_flow.py::test_send_timeout_resets_only_the_stuck_stream",
        ),
        option="timeout_send",
        unit="s",
    ),
    Limit(
        "Unread HTTP/1.1 input buffered per connection",
        "Reading pauses (TCP back-pressure)",
        (
            "tests/test_http11_integrity.py::"
            "test_read_ahead_stops_at_the_limit_while_the_app_waits_for_a_disconnect",
        ),
        constants=(("palfrey.transport.http11:READ_AHEAD_LIMIT", 64 * KiB),),
        value="64 KiB",
    ),
    # HTTP/2.
    Limit(
        "HTTP/2 and HTTP/3 streams open at once per connection",
        "HTTP/2: `RST_STREAM REFUSED_STREAM` on the extra stream, the connection goes on;"
        " HTTP/3: the client cannot open more (QUIC `initial_max_streams_bidi`, raised"
        " again as streams finish)",
        (
            "tests/test_h2_protocol.py::test_streams_over_limit_before_settings_ack_refused",
            "tests/test_http2_flow.py::test_streams_over_max_concurrent_streams_are_refused",
            "tests/test_http3_abuse.py::test_h3_concurrent_streams_are_bounded_by_the_h2_limit",
        ),
        option="h2_max_concurrent_streams",
    ),
    Limit(
        "HTTP/2 and HTTP/3 request header list",
        "`431` on that stream; the connection goes on",
        (
            "tests/test_http2_flow.py::test_header_list_over_the_limit_is_431_and_the_connection_goes_on",
            "tests/test_h3_protocol.py::test_requests_answered_without_the_app",
        ),
        option="h2_max_header_list_size",
        unit="bytes",
    ),
    Limit(
        "HTTP/2 header list far over the limit",
        "`GOAWAY`: the connection ends",
        ("tests/test_http2_flow.py::test_header_list_far_over_the_limit_ends_the_connection",),
        constants=(("palfrey.protocols.h2:_HARD_HEADER_LIST_FACTOR", 4),),
        value="4 times `--h2-max-header-list-size`",
    ),
    Limit(
        "HTTP/2 CONTINUATION frames in one header block",
        "`GOAWAY` with an error code; an unfinished block also ends at `--timeout-request-header`",
        (
            "tests/test_http2_abuse.py::test_continuation_flood_is_a_connection_error",
            "tests/test_http2_abuse.py::test_unfinished_header_block_times_out",
        ),
        constants=(("h2.frame_buffer:CONTINUATION_BACKLOG", 64),),
        value="64 frames (h2's)",
    ),
    Limit(
        "HTTP/2 frame size the client may send",
        "`GOAWAY FRAME_SIZE_ERROR`, refused at the frame's header",
        ("tests/test_h2_protocol.py::test_frame_over_max_frame_size_refused_at_its_header",),
        option="h2_max_inbound_frame_size",
        unit="bytes",
    ),
    Limit(
        "HTTP/2 stream resets (the client's and refused streams)",
        "`GOAWAY ENHANCE_YOUR_CALM` (the rapid-reset attack)",
        (
            "tests/test_http2_abuse.py::test_rapid_reset_gets_enhance_your_calm",
            "tests/test_http2_abuse.py::test_resets_under_the_budget_are_fine",
        ),
        constants=(
            ("palfrey.transport.http2:RESET_LIMIT", 200),
            ("palfrey.transport.http2:ABUSE_INTERVAL", 1.0),
        ),
        value="200 per second",
    ),
    Limit(
        "HTTP/2 frames that carry nothing: PING, SETTINGS, PRIORITY, empty DATA,"
        " tiny WINDOW_UPDATE",
        "`GOAWAY ENHANCE_YOUR_CALM`",
        (
            "tests/test_http2_abuse.py::test_control_frame_flood_from_a_client_that_does_not_read",
            "tests/test_abuse.py::test_h2_cheap_frame_flood_is_calmed",
        ),
        constants=(
            ("palfrey.transport.http2:CONTROL_FRAME_LIMIT", 1000),
            ("palfrey.transport.http2:ABUSE_INTERVAL", 1.0),
        ),
        value="1000 per second",
    ),
    # HTTP/3.
    Limit(
        "HTTP/3 connections per process",
        "New connections are turned away",
        ("tests/test_http3_abuse.py::test_h3_max_connections_turns_new_connections_away",),
        option="h3_max_connections",
    ),
    Limit(
        "HTTP/3 connections still in their handshake",
        "Further Initial packets are dropped",
        ("tests/test_http3_abuse.py::test_an_initial_flood_leaves_bounded_state",),
        constants=(("palfrey.transport.quic:MAX_HANDSHAKES", 256),),
        value="256",
    ),
    Limit(
        "Datagrams queued for one HTTP/3 connection",
        "Further datagrams are dropped; QUIC resends them",
        ("tests/test_http3_abuse.py::test_a_connection_queues_a_bounded_number_of_datagrams",),
        constants=(("palfrey.transport.quic:MAX_QUEUED_DATAGRAMS", 256),),
        value="256",
    ),
    Limit(
        "Unread HTTP/3 request body per stream",
        "Flow control: the client waits for the window (the connection: 4 windows)",
        ("tests/test_http3_abuse.py::test_h3_receive_window_bounds_an_unread_body",),
        option="h3_receive_window",
        unit="bytes",
    ),
    # WebSocket.
    Limit(
        "WebSocket message (also after permessage-deflate inflation)",
        "Close `1009`",
        (
            "tests/test_websocket_lifecycle.py::test_message_too_big_across_fragments_is_1009",
            "tests/test_h2_websocket.py::test_message_over_max_size_is_1009",
            "tests/test_ws_protocol.py::test_deflate_bomb_is_refused_without_inflating_it",
        ),
        option="ws_max_size",
        unit="bytes",
    ),
    Limit(
        "WebSocket empty fragments in one message",
        "Close `1008`",
        ("tests/test_abuse.py::test_websocket_empty_fragment_flood_is_closed",),
        constants=(("palfrey.protocols.ws.protocol:MAX_EMPTY_FRAGMENTS", 1024),),
        value="1024",
    ),
    Limit(
        "WebSocket messages read ahead of the application",
        "Reading pauses (TCP or HTTP/2 flow-control back-pressure)",
        ("tests/test_websocket_reading.py::test_read_ahead_stops_at_max_queue_and_resumes_inline",),
        option="ws_max_queue",
    ),
)


def required_options() -> list[str]:
    """Every schema option that bounds something and so must have a row."""
    return [
        field.name
        for field, option in options()
        if option.group in LIMIT_GROUPS
        or field.name.startswith(LIMIT_PREFIXES)
        or field.name in LIMIT_NAMES
    ]


def _option_cell(name: str, option: Option) -> str:
    flag = "--" + name.replace("_", "-")
    return f"[`{flag}`](configuration.md#{flag}) · TOML `{name}` in `[{option.group}]`"


def _default_cell(default: Any, unit: str) -> str:
    if default is None:
        return "unset (no limit)"
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    text = f"{default:,}".replace(",", " ") if isinstance(default, int) else str(default)
    return f"{text} {unit}".strip()


def render() -> str:
    """The table, as Markdown: option rows read their flag, group and default off the schema."""
    schema = {field.name: (field, option) for field, option in options()}
    lines = [
        "| Limit | Option | Default | What the client sees | Proved by |",
        "| --- | --- | --- | --- | --- |",
    ]
    for limit in LIMITS:
        if limit.option is not None:
            field, option = schema[limit.option]
            where = _option_cell(limit.option, option)
            default = _default_cell(field.default, limit.unit)
        else:
            names = ", ".join(f"`{constant.partition(':')[2]}`" for constant, _ in limit.constants)
            where = f"fixed ({names})" if names else "fixed"
            default = limit.value
        tests = "<br>".join(f"`{test.removeprefix('tests/')}`" for test in limit.tests)
        lines.append(f"| {limit.bounds} | {where} | {default} | {limit.client_sees} | {tests} |")
    return "\n".join(lines) + "\n"


SECTION = GeneratedSection(
    "the limits table", "palfrey.config.limits", START_MARKER, END_MARKER, render
)
#: ``text`` with the section between the markers rendered afresh.
replace_table = SECTION.replace
#: ``python -m palfrey.config.limits print|write|check [FILE]``.
main = SECTION.main


if __name__ == "__main__":
    sys.exit(main())
