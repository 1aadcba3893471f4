"""permessage-deflate (RFC 7692) with the inflated size of a message bounded.

wsproto inflates whatever arrives in one go, so a few kilobytes of compressed
zeros could become gigabytes before its size check sees the message. The
subclass here caps inflation at what the message may still grow by.
"""

from __future__ import annotations

import zlib
from typing import Any

from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import server_extensions_handshake


class BoundedPerMessageDeflate(PerMessageDeflate):
    """permessage-deflate that never inflates a message beyond ``max_size``.

    Inflating with ``max_length`` caps the output of each chunk at what the
    message may still grow by; wsproto turns the returned close reason into a
    1009 close. This relies on wsproto's private inbound state
    (``_inbound_compressed``, ``_inbound_is_compressible``, ``_decompressor``).
    """

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self.max_size = max_size
        self._inflated = 0

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        decompressor = self._decompressor
        assert decompressor is not None
        budget = self.max_size - self._inflated
        try:
            out = decompressor.decompress(data, budget + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if len(out) > budget or decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if fin:
            self._inflated = 0
        return super().frame_inbound_complete(proto, fin)


def negotiate_deflate(offers: list[str], max_size: int) -> tuple[bytes | None, list[Extension]]:
    """Accept the first acceptable permessage-deflate offer (RFC 7692 §5).

    wsproto's ``accept`` mutates the extension for every offer it sees, so
    each offer is tried on a fresh extension and the first one that is
    accepted wins; offers with malformed parameters are skipped.
    """
    for offer in offers:
        if offer.split(";", 1)[0].strip() != PerMessageDeflate.name:
            continue
        extension = BoundedPerMessageDeflate(max_size)
        try:
            accepted = server_extensions_handshake([offer], [extension])
        except ValueError:
            continue
        if accepted is not None:
            return accepted, [extension]
    return None, []
