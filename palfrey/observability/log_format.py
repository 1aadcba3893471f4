"""``--log-format json``: one JSON object per line, for log shippers that parse fields.

Every record gets ``timestamp`` (ISO 8601, UTC, milliseconds), ``level``,
``logger`` and ``message``; ``pid`` when several processes write; the
traceback as ``exception`` (and ``stack``) when there is one. Whatever the
record's ``extra`` carried follows as keys of its own: for the access log
these are the request's fields (``method``, ``path``, ``status``, ...), so no
one has to parse the line back.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JSONFormatter(logging.Formatter):
    """Formats a record as one line of JSON; ``show_pid`` adds the process id."""

    def __init__(self, *, show_pid: bool = False) -> None:
        super().__init__()
        self.show_pid = show_pid

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.show_pid:
            line["pid"] = record.process
        for key, value in vars(record).items():
            # An access record without ``x-request-id`` leaves ``request_id`` out.
            if key not in _RECORD_ATTRIBUTES and value is not None and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)
