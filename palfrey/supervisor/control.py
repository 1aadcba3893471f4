"""The control channel between the supervisor and one worker: a socket pair, one byte per message.

The supervisor first sends the worker its configuration (a length-prefixed
JSON object; never on the command line, where a key password would show in
``ps``). After that each side sends single bytes. The worker's answers come
from its trio loop, not from a side thread, so a pong proves that the loop
still runs: that is the health check.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import attrs

from palfrey.config.schema import Config

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

_LENGTH = struct.Struct("!I")


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
