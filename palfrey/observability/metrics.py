"""Prometheus metrics: counted in process, summed across workers, rendered as text.

Recording is a handful of dictionary updates at the end of a request, with no
lock (one trio thread) and no I/O; everything else happens when someone
scrapes. A process's numbers leave it as a :data:`Snapshot` (plain JSON), so
a supervisor can add up its workers' snapshots with :func:`merge` and keep
the counters of workers that are gone (:func:`retire`): Prometheus counters
must never go down just because a worker was replaced.

Labels are kept small and bounded: protocol, status class, a fixed reason
per status, a fixed kind per timeout.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

import attrs

#: Upper bounds of the request duration buckets, in seconds (``+Inf`` is implied).
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

#: ASGI ``http_version`` to the protocol label (``ws`` stays ``ws``).
PROTOCOL_LABELS = {"1.0": "http/1.0", "1.1": "http/1.1", "2": "h2", "3": "h3"}

#: The reason label of each status Palfrey sends itself (the app never saw the request).
SERVER_RESPONSE_REASONS = {
    400: "bad_request",
    408: "timeout",
    413: "body_too_large",
    414: "target_too_long",
    431: "head_too_large",
    500: "application_error",
    501: "not_implemented",
    503: "overloaded",
    505: "version_not_supported",
}

#: Family name -> (type, help). The order is the order of the exposition.
FAMILIES: dict[str, tuple[str, str]] = {
    "palfrey_requests_total": (
        "counter",
        "Requests the application handled, by protocol (http/1.0, http/1.1, h2, h3, ws)"
        " and status class.",
    ),
    "palfrey_request_duration_seconds": (
        "histogram",
        "Time from the request head to the end of the response, by protocol.",
    ),
    "palfrey_request_body_bytes_total": ("counter", "Request body bytes the app read."),
    "palfrey_response_body_bytes_total": ("counter", "Response body bytes sent."),
    "palfrey_connections_total": ("counter", "Connections accepted (TCP, and QUIC)."),
    "palfrey_connections_open": ("gauge", "Open connections, by the protocol they speak."),
    "palfrey_streams_open": (
        "gauge",
        "Requests and WebSockets in flight on HTTP/2 and HTTP/3 connections, by protocol.",
    ),
    "palfrey_websockets_open": ("gauge", "WebSocket sessions in progress."),
    "palfrey_server_responses_total": (
        "counter",
        "Responses Palfrey sent itself instead of the app, by status and reason.",
    ),
    "palfrey_timeouts_total": ("counter", "Waits given up by timeout, by kind."),
    "palfrey_worker_restarts_total": ("counter", "Workers replaced by the supervisor, by cause."),
    "palfrey_workers": ("gauge", "Worker processes serving."),
}

#: One process's numbers: family -> rendered label set (``a="x",b="y"``) -> value.
#: A histogram's value is its per-bucket counts (last one ``+Inf``), then the sum.
Snapshot = dict[str, dict[str, Any]]


@attrs.define(slots=True, eq=False)
class ProtocolRecord:
    """Everything counted per request for one protocol, so a request costs one lookup."""

    #: Requests by status class: index ``status // 100`` (0 when no response was sent).
    statuses: list[int] = attrs.Factory(lambda: [0] * 10)
    #: Requests per duration bucket; the last is ``+Inf``.
    buckets: list[int] = attrs.Factory(lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    received: int = 0
    sent: int = 0


@attrs.define(slots=True, eq=False)
class Metrics:
    """The counters of one serving process."""

    #: By ASGI ``http_version`` (or ``ws``), labelled only when a snapshot is taken.
    records: dict[str, ProtocolRecord] = attrs.Factory(dict)
    server_responses: dict[int, int] = attrs.Factory(dict)
    timeouts: dict[str, int] = attrs.Factory(dict)
    connections_total: int = 0
    websockets_open: int = 0

    def request_done(
        self, http_version: str, status: int, received: int, sent: int, duration: float
    ) -> None:
        """One HTTP request ended, with the response status it got (0: none was sent)."""
        record = self.records.get(http_version)
        if record is None:
            record = self.records[http_version] = ProtocolRecord()
        record.statuses[status // 100] += 1
        record.buckets[bisect_left(DURATION_BUCKETS, duration)] += 1
        record.duration_sum += duration
        record.received += received
        record.sent += sent

    def websocket_done(self, status: int, duration: float) -> None:
        """A WebSocket session ended; ``status`` answered its handshake (101 when accepted)."""
        self.request_done("ws", status, 0, 0, duration)

    def server_response(self, status: int) -> None:
        """Palfrey answered a request itself (bad input, overload, timeout, a failed app)."""
        self.server_responses[status] = self.server_responses.get(status, 0) + 1

    def timeout(self, kind: str) -> None:
        """A wait was given up by timeout: ``keep_alive``, ``request_head``, ``request_body``,
        ``send``, ``tls_handshake``."""
        self.timeouts[kind] = self.timeouts.get(kind, 0) + 1

    def snapshot(self) -> Snapshot:
        """The counters as plain JSON (gauges that need the server's state are added by it)."""
        requests: dict[str, Any] = {}
        durations: dict[str, Any] = {}
        request_bytes: dict[str, Any] = {}
        response_bytes: dict[str, Any] = {}
        for version, record in self.records.items():
            protocol = f'protocol="{PROTOCOL_LABELS.get(version, version)}"'
            for status_class, count in enumerate(record.statuses):
                if count:
                    requests[f'{protocol},status="{status_class}xx"'] = count
            durations[protocol] = [*record.buckets, record.duration_sum]
            if version != "ws":
                request_bytes[protocol] = record.received
                response_bytes[protocol] = record.sent
        return {
            "palfrey_requests_total": requests,
            "palfrey_request_duration_seconds": durations,
            "palfrey_request_body_bytes_total": request_bytes,
            "palfrey_response_body_bytes_total": response_bytes,
            "palfrey_connections_total": {"": self.connections_total},
            "palfrey_websockets_open": {"": self.websockets_open},
            "palfrey_server_responses_total": {
                f'status="{status}",reason="{SERVER_RESPONSE_REASONS.get(status, "other")}"': count
                for status, count in self.server_responses.items()
            },
            "palfrey_timeouts_total": {
                f'kind="{kind}"': count for kind, count in self.timeouts.items()
            },
        }


def by_label(labels: dict[str, int], name: str) -> dict[str, Any]:
    """Render ``{label value: number}`` as one label set each under the label ``name``."""
    return {f'{name}="{value}"': number for value, number in labels.items()}


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """Add up snapshots sample by sample (histogram buckets element by element)."""
    total: Snapshot = {}
    for snapshot in snapshots:
        for family, samples in snapshot.items():
            into = total.setdefault(family, {})
            for labels, value in samples.items():
                known = into.get(labels)
                if known is None:
                    into[labels] = list(value) if isinstance(value, list) else value
                elif isinstance(value, list):
                    into[labels] = [a + b for a, b in zip(known, value, strict=True)]
                else:
                    into[labels] = known + value
    return total


def retire(snapshot: Snapshot) -> Snapshot:
    """What a stopped process leaves behind: its counters and histograms, not its gauges."""
    return {
        family: dict(samples)
        for family, samples in snapshot.items()
        if FAMILIES.get(family, ("gauge", ""))[0] != "gauge"
    }


def render(snapshot: Snapshot) -> str:
    """The Prometheus text exposition format (version 0.0.4) of ``snapshot``.

    Every known family is listed, empty ones included, so a dashboard's query
    finds its series' family (and its type) before the first request.
    """
    lines: list[str] = []
    for family, (kind, help_text) in FAMILIES.items():
        samples = snapshot.get(family)
        if samples is None:
            continue
        lines.append(f"# HELP {family} {help_text}")
        lines.append(f"# TYPE {family} {kind}")
        for labels, value in sorted(samples.items()):
            if kind == "histogram":
                lines.extend(_histogram_lines(family, labels, value))
            else:
                lines.append(f"{family}{_braced(labels)} {_number(value)}")
    return "\n".join(lines) + "\n"


def _histogram_lines(family: str, labels: str, value: list[float]) -> list[str]:
    *counts, total = value
    prefix = f"{labels}," if labels else ""
    lines = []
    cumulative = 0
    bounds = [*(_number(bound) for bound in DURATION_BUCKETS), "+Inf"]
    for bound, count in zip(bounds, counts, strict=True):
        cumulative += int(count)
        lines.append(f'{family}_bucket{{{prefix}le="{bound}"}} {cumulative}')
    lines.append(f"{family}_sum{_braced(labels)} {_number(total)}")
    lines.append(f"{family}_count{_braced(labels)} {cumulative}")
    return lines


def _braced(labels: str) -> str:
    return f"{{{labels}}}" if labels else ""


def _number(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return str(int(value))
