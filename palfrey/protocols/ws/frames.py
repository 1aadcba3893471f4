"""The fast path: whole unfragmented text and binary frames, parsed and framed without wsproto.

Without an extension, such messages are nearly all the traffic, and handling
them here costs a small fraction of wsproto's per-message work. The parser takes
only frames wsproto would accept unchanged and leaves every other frame
(control frames, fragments, anything malformed or over ``max_size``) to
wsproto, so its checks and close codes stay the only ones.
"""

from __future__ import annotations

import struct

from palfrey.protocols.events import WebSocketDataReceived, WebSocketEvent

#: The first byte of a whole text or binary frame: FIN set, no RSV bit (RFC 6455 §5.2).
_PLAIN_OPCODES = frozenset({0x81, 0x82})
#: A server frame's head with a 16-bit or 64-bit payload length (RFC 6455 §5.2).
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


def parse_plain(data: bytes, events: list[WebSocketEvent], max_size: int) -> bytes:
    """Parse the leading whole, masked, unfragmented messages of ``data``; return the rest.

    Takes only what wsproto would accept unchanged (FIN set, no RSV bit,
    text or binary opcode, the shortest length encoding, at most
    ``max_size`` bytes, valid UTF-8 for text) and stops at the first frame
    that is anything else or incomplete, which wsproto then parses.
    """
    position = 0
    end = len(data)
    while end - position >= 6:
        first = data[position]
        second = data[position + 1]
        if first not in _PLAIN_OPCODES or second < 0x80:
            break
        length = second & 0x7F
        start = position + 6
        if length == 126:
            start += 2
            if end < start:
                break
            length = data[position + 2] << 8 | data[position + 3]
            if length < 126:
                break
        elif length == 127:
            break
        stop = start + length
        if stop > end or length > max_size:
            break
        payload = unmask(data[start:stop], data[start - 4 : start])
        if first == 0x81:
            try:
                events.append(WebSocketDataReceived(payload.decode("utf-8")))
            except UnicodeDecodeError:
                break
        else:
            events.append(WebSocketDataReceived(payload))
        position = stop
    return data[position:] if position else data


def append_plain_frame(out: bytearray, data: bytes | str) -> None:
    """Append ``data`` to ``out`` as one whole, unmasked server frame (text for ``str``)."""
    if type(data) is str:
        payload = data.encode("utf-8")
        first = 0x81
    else:
        payload = bytes(data)
        first = 0x82
    length = len(payload)
    if length < 126:
        out += bytes((first, length))
    elif length < 65536:
        out += _HEAD_16.pack(first, 126, length)
    else:
        out += _HEAD_64.pack(first, 127, length)
    out += payload


def unmask(payload: bytes, key: bytes) -> bytes:
    """XOR a client's payload with its 4-byte masking key (RFC 6455 §5.3), as one big integer."""
    length = len(payload)
    mask = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(
        length, "little"
    )
