"""A ``palfrey`` process for subprocess tests: its own session, its output read as it comes.

Each server runs in a new session, so :meth:`ServerProcess.cleanup` can kill
the whole process group (a supervisor and its workers) and no process
outlives a failing test. A thread reads the combined output; the ``wait_for``
methods wait for a line, bounded in time, and fail with the whole output.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WAIT = 15.0
SIGTERM = signal.SIGTERM


def palfrey_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "palfrey", *args]


class ServerProcess:
    def __init__(
        self,
        command: list[str],
        *,
        cwd: Path = ROOT,
        env: dict[str, str] | None = None,
        **popen: Any,
    ) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            **popen,
        )
        self.lines: list[str] = []
        self.eof = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.eof = True
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def mark(self) -> int:
        """A position in the output, for ``after=`` to search beyond."""
        with self._changed:
            return len(self.lines)

    def matching(self, pattern: str | re.Pattern[str], *, after: int = 0) -> list[re.Match[str]]:
        """Every line printed so far (after ``after``) that matches ``pattern``."""
        regex = re.compile(pattern)
        with self._changed:
            return [match for match in map(regex.search, self.lines[after:]) if match]

    def wait_for_lines(
        self,
        pattern: str | re.Pattern[str],
        count: int = 1,
        *,
        after: int = 0,
        timeout: float = WAIT,
    ) -> list[re.Match[str]]:
        """The first ``count`` lines matching ``pattern``, waiting for them to be printed."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matches = [match for match in map(regex.search, self.lines[after:]) if match]
                if len(matches) >= count:
                    return matches[:count]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.eof:
                    raise AssertionError(
                        f"no {count} line(s) matching {regex.pattern!r} within {timeout}s:\n"
                        + "".join(self.lines)
                    )
                self._changed.wait(remaining)

    def wait_for(
        self,
        pattern: str | re.Pattern[str],
        *,
        count: int = 1,
        after: int = 0,
        timeout: float = WAIT,
    ) -> re.Match[str]:
        """The ``count``-th line matching ``pattern`` (after ``after``), once printed."""
        return self.wait_for_lines(pattern, count, after=after, timeout=timeout)[-1]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = WAIT) -> int:
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"palfrey did not exit in {timeout}s:\n{self.output}") from None
        self._reader.join(timeout)
        return status

    def stop(self, signum: int = SIGTERM, timeout: float = WAIT) -> int:
        """Signal the main process and return its exit status."""
        self.signal(signum)
        return self.wait_exit(timeout)

    def cleanup(self) -> None:
        """Kill the whole process group (workers included; stopped ones too) and reap."""
        for signum in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(WAIT)
        self._reader.join(WAIT)
        if self.process.stdout is not None:
            self.process.stdout.close()


def run_to_completion(
    command: list[str],
    *,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 30,
    **popen: Any,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to its end; its whole process group is killed in any case."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **popen,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
