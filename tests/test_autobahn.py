"""Autobahn|Testsuite's fuzzing client, cases 1-11, against a real Palfrey server.

Cases 12 and 13 (permessage-deflate) take most of the suite's quarter of an
hour, so CI leaves them to ``benchmarks/conformance.py``, which regenerates
``docs/conformance.md``; 1-11 cover framing, pings, reserved bits, opcodes,
fragmentation, UTF-8, closing, limits and big messages in under a minute.

wstest runs on Python 2.7: it comes from ``PALFREY_WSTEST`` or ``wstest`` on PATH
(``.ci/run`` sets the former); without it these tests are skipped, as
``tests/test_h2spec.py`` treats h2spec.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import run_server

#: The sections CI runs: 1-11 has no 8 or 11 (Autobahn numbers none); 12 and 13 are
#: compression (see the module docstring).
SECTIONS = {"1", "2", "3", "4", "5", "6", "7", "9", "10"}
CASES = [f"{section}.*" for section in sorted(SECTIONS, key=int)]
#: Seconds for the whole run (it takes about half a minute on a laptop).
RUN_TIMEOUT = 600
#: Behaviours that pass: RFC 6455 allows them, see docs/conformance.md for each case.
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


def find_wstest() -> str | None:
    explicit = os.environ.get("PALFREY_WSTEST")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"PALFREY_WSTEST={explicit} is not an executable file")
        return explicit
    return shutil.which("wstest")


WSTEST = find_wstest()

pytestmark = pytest.mark.skipif(
    WSTEST is None,
    reason="wstest not found: set PALFREY_WSTEST or put wstest (autobahntestsuite) on PATH",
)


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes every message as it came, text or binary: what Autobahn's cases expect."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send(
            {"type": "websocket.send", "bytes": message.get("bytes"), "text": message.get("text")}
        )


async def test_autobahn_cases_1_to_11(tmp_path: Path) -> None:
    assert WSTEST is not None
    outdir = tmp_path / "reports"
    options = {"log_level": "warning", "ws_per_message_deflate": True}
    async with run_server(echo_app, **options) as srv:
        spec = {
            "outdir": str(outdir),
            "servers": [{"agent": "palfrey", "url": f"ws://{srv.host}:{srv.port}"}],
            "cases": CASES,
            "exclude-cases": [],
            "exclude-agent-cases": {},
        }
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        command = [WSTEST, "-m", "fuzzingclient", "-s", str(tmp_path / "spec.json")]
        with trio.fail_after(RUN_TIMEOUT):
            process = await trio.run_process(
                command, cwd=tmp_path, capture_stdout=True, capture_stderr=True, check=False
            )
    output = (process.stdout + process.stderr).decode(errors="replace")
    assert (outdir / "index.json").exists(), output[-3000:]
    cases = json.loads((outdir / "index.json").read_text())["palfrey"]
    failed = {
        case: (entry["behavior"], entry["behaviorClose"])
        for case, entry in cases.items()
        if entry["behavior"] not in PASSING or entry["behaviorClose"] not in PASSING
    }
    assert failed == {}
    # Every section ran (a crash part-way through leaves later sections out).
    assert {case.split(".")[0] for case in cases} == SECTIONS
