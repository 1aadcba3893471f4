"""Following the frame boundaries of a client's HTTP/2 byte stream, ahead of h2.

Two things h2 does not do the way a server needs are done here, on the
9-byte frame headers alone (bodies are skipped by count, never parsed):

- a frame longer than SETTINGS_MAX_FRAME_SIZE is refused at its header; h2
  checks only once the whole frame has arrived, so a peer could make it
  buffer up to 16 MiB per connection;
- the client's GOAWAY is taken out of the stream and reported as a
  :class:`PeerGoaway`: h2 closes its connection state on receiving one and
  then refuses every frame, so the server could neither answer the streams
  the client already opened nor read their WINDOW_UPDATEs, both of which
  RFC 9113 §6.8 expects to go on. A GOAWAY that is malformed (not on stream
  0, too short) or that interrupts a header block is left to h2, which
  reports the connection error.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import h2.exceptions

#: What an HTTP/2 client sends first (RFC 9113 §3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_HEADER_SIZE = 9
_HEADERS, _PUSH_PROMISE, _GOAWAY, _CONTINUATION = 0x1, 0x5, 0x7, 0x9
_END_HEADERS = 0x4
_GOAWAY_MIN_PAYLOAD = 8


@attrs.frozen(slots=True)
class PeerGoaway:
    """A well-formed GOAWAY from the client."""

    last_stream_id: int
    error_code: int


class InboundFrames:
    """Splits what the client sends into runs of bytes for h2 and the GOAWAYs between them."""

    __slots__ = (
        "_frame_left",
        "_goaway",
        "_held",
        "_in_header_block",
        "_max_frame_size",
        "_preface_left",
    )

    def __init__(self, max_frame_size: Callable[[], int]) -> None:
        #: The frame size currently allowed (h2's, which moves when settings are acknowledged).
        self._max_frame_size = max_frame_size
        self._preface_left = len(PREFACE)
        #: The start of a frame header that has not all arrived: held back from h2.
        self._held = b""
        #: Body bytes of the current frame still to come.
        self._frame_left = 0
        #: The payload of a GOAWAY being taken out, while it arrives.
        self._goaway: bytearray | None = None
        #: A HEADERS or PUSH_PROMISE without END_HEADERS awaits its CONTINUATION frames.
        self._in_header_block = False

    def split(self, data: bytes) -> list[bytes | PeerGoaway]:
        """The pieces of ``data``, in order: bytes to feed h2, and GOAWAYs taken out.

        Raises h2's ``FrameTooLargeError`` or ``ProtocolError`` (bad preface).
        """
        if self._held:
            data = self._held + data
            self._held = b""
        size = len(data)
        pieces: list[bytes | PeerGoaway] = []
        start = position = 0
        if self._preface_left:
            position = min(self._preface_left, size)
            offset = len(PREFACE) - self._preface_left
            if data[:position] != PREFACE[offset : offset + position]:
                raise h2.exceptions.ProtocolError("invalid connection preface")
            self._preface_left -= position
        while position < size:
            if self._frame_left:
                step = min(self._frame_left, size - position)
                if self._goaway is not None:
                    self._goaway += data[position : position + step]
                position += step
                self._frame_left -= step
                if not self._frame_left and self._goaway is not None:
                    pieces.append(self._goaway_received())
                    start = position
                continue
            if size - position < _HEADER_SIZE:
                self._held = data[position:]
                break
            length = int.from_bytes(data[position : position + 3], "big")
            kind = data[position + 3]
            flags = data[position + 4]
            limit = self._max_frame_size()
            if length > limit:
                raise h2.exceptions.FrameTooLargeError(
                    f"frame of {length} bytes; the limit is {limit}"
                )
            if (
                kind == _GOAWAY
                and not self._in_header_block
                and length >= _GOAWAY_MIN_PAYLOAD
                and not int.from_bytes(data[position + 5 : position + 9], "big") & 0x7FFFFFFF
            ):
                if position > start:
                    pieces.append(data[start:position])
                self._goaway = bytearray()
            elif kind in (_HEADERS, _PUSH_PROMISE):
                self._in_header_block = not flags & _END_HEADERS
            elif kind == _CONTINUATION and flags & _END_HEADERS:
                self._in_header_block = False
            position += _HEADER_SIZE
            self._frame_left = length
            if not length and self._goaway is not None:
                pieces.append(self._goaway_received())
                start = position
        end = size - len(self._held)
        if end > start and self._goaway is None:
            pieces.append(data if start == 0 and end == size else data[start:end])
        return pieces

    def _goaway_received(self) -> PeerGoaway:
        payload = self._goaway
        assert payload is not None
        self._goaway = None
        return PeerGoaway(
            int.from_bytes(payload[:4], "big") & 0x7FFFFFFF, int.from_bytes(payload[4:8], "big")
        )
