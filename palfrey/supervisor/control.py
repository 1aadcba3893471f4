"""The control channel between the supervisor and one worker: a socket pair, one byte per message.

The supervisor first sends the worker its configuration (a length-prefixed
JSON object; never on the command line, where a key password would show in
``ps``). After that each side sends single bytes, except the worker's metrics
snapshot (:data:`METRICS` and a length-prefixed JSON object), which the
supervisor asks for when it is scraped and which a worker also sends once
more as it finishes, so its last requests are counted. The worker's answers
come from its trio loop, not from a side thread, so a pong proves that the
loop still runs: that is the health check.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import attrs

from palfrey.config.schema import Config
from palfrey.observability.metrics import Snapshot

#: Supervisor -> worker: are you alive?
PING = b"p"
#: Worker -> supervisor: my loop is alive.
PONG = b"o"
#: Worker -> supervisor: I am listening and serving.
READY = b"r"
#: Worker -> supervisor: I reached --limit-max-requests and am shutting down; replace me.
#: (A worker stopping on a signal says nothing: the signal may have reached the whole
#: process group, supervisor included, which must then not start replacements.)
RECYCLING = b"s"

#: Supervisor -> worker: send me your metrics.
METRICS_REQUEST = b"m"
#: Worker -> supervisor: a metrics snapshot follows (length, then JSON).
METRICS = b"M"

_LENGTH = struct.Struct("!I")
#: A snapshot is a few KiB; anything near this is a broken channel, not metrics.
_MAX_SNAPSHOT = 16 * 1024 * 1024


def encode_config(config: Config) -> bytes:
    """The configuration a worker needs, as the first message on its control channel."""
    values: dict[str, Any] = {
        field.name: getattr(config, field.name) for field in attrs.fields(Config)
    }
    values["set_options"] = sorted(config.set_options)
    payload = json.dumps(values).encode()
    return _LENGTH.pack(len(payload)) + payload


def receive_config(control: socket.socket) -> Config:
    """Read the first message in the worker, before its trio loop starts."""
    (length,) = _LENGTH.unpack(_receive_exactly(control, _LENGTH.size))
    return Config(**json.loads(_receive_exactly(control, length)))


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise EOFError("the supervisor closed the control channel")
        chunks += chunk
    return bytes(chunks)


def encode_metrics(snapshot: Snapshot) -> bytes:
    """A worker's metrics snapshot as one message."""
    payload = json.dumps(snapshot, separators=(",", ":")).encode()
    return METRICS + _LENGTH.pack(len(payload)) + payload


@attrs.define(slots=True, eq=False)
class WorkerMessages:
    """Splits what a worker sends into messages: single bytes, and metrics snapshots."""

    _buffer: bytearray = attrs.Factory(bytearray)

    def feed(self, data: bytes) -> list[bytes | Snapshot]:
        """The complete messages ``data`` finishes: one-byte messages and snapshots."""
        buffer = self._buffer
        buffer += data
        messages: list[bytes | Snapshot] = []
        while buffer:
            if buffer[:1] != METRICS:
                messages.append(bytes(buffer[:1]))
                del buffer[:1]
                continue
            header = 1 + _LENGTH.size
            if len(buffer) < header:
                break
            (length,) = _LENGTH.unpack_from(buffer, 1)
            if length > _MAX_SNAPSHOT:
                raise ValueError(f"a metrics snapshot of {length} bytes")
            if len(buffer) < header + length:
                break
            messages.append(json.loads(bytes(buffer[header : header + length])))
            del buffer[: header + length]
        return messages
