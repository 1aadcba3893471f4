"""``--pid PATH``: the serving process's pid in a file for init scripts and ``kill``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from palfrey.transport.errors import ServeError


@contextlib.contextmanager
def pid_file(path: str | None) -> Iterator[None]:
    """Write this process's pid to ``path`` for the duration; remove the file afterwards.

    The file is removed only while it still holds our pid, so a second
    instance that took the path over keeps its file.
    """
    if path is None:
        yield
        return
    pid = str(os.getpid())
    try:
        with open(path, "w", encoding="ascii") as file:
            file.write(pid + "\n")
    except OSError as exc:
        raise ServeError(f"could not write the pid file {path}: {exc.strerror}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            with open(path, encoding="ascii") as file:
                still_ours = file.read().strip() == pid
            if still_ours:
                os.unlink(path)
