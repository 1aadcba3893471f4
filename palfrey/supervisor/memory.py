"""A worker's resident memory, for ``--workers-max-rss``, read from ``/proc`` (Linux)."""

from __future__ import annotations

import os

_PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024) if hasattr(os, "sysconf") else 0.0


def resident_mib(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB, or None when it cannot be read (gone, not Linux)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as file:
            fields = file.read().split()
    except OSError:
        return None
    return int(fields[1]) * _PAGE_MIB
