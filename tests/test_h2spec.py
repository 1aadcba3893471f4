"""h2spec, the HTTP/2 conformance suite, against a real Palfrey server.

The binary comes from ``PALFREY_H2SPEC`` or ``h2spec`` on PATH (``.ci/run`` sets the
former); without it these tests are skipped.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import run_server
from tls_cert import Certificate

#: Cases in h2spec 2.6's default run (generic, http2 and hpack).
TOTAL_CASES = 146
#: Seconds h2spec waits for each expected frame, and for the whole run.
CASE_TIMEOUT = 10
RUN_TIMEOUT = 180

#: Cleartext ``--http auto`` shares its port with HTTP/1.1: bytes that are not the
#: preface are an HTTP/1.1 request, which gets an HTTP/1.1 400 rather than a GOAWAY.
AUTO_CLEARTEXT_FAILURES = {"http2/3.5: Sends invalid connection preface"}


def find_h2spec() -> str | None:
    explicit = os.environ.get("PALFREY_H2SPEC")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"PALFREY_H2SPEC={explicit} is not an executable file")
        return explicit
    return shutil.which("h2spec")


H2SPEC = find_h2spec()

pytestmark = pytest.mark.skipif(
    H2SPEC is None, reason="h2spec not found: set PALFREY_H2SPEC or put h2spec on PATH"
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = b"Palfrey speaks HTTP/2.\n" * 4
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def parse_report(path: Path) -> dict[str, str]:
    """Each case of a JUnit report, ``package: title``, with ``passed``, ``failed`` or
    ``skipped``."""
    results = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('package')}: {case.get('classname')}"
        if case.find("failure") is not None or case.find("error") is not None:
            results[name] = "failed"
        elif case.find("skipped") is not None:
            results[name] = "skipped"
        else:
            results[name] = "passed"
    return results


async def run_h2spec(
    tmp_path: Path, http: str, certificate: Certificate | None
) -> tuple[dict[str, str], str]:
    assert H2SPEC is not None
    options: dict[str, Any] = {"http": http, "log_level": "warning"}
    if certificate is not None:
        options.update(ssl_certfile=certificate.certfile, ssl_keyfile=certificate.keyfile)
    report = tmp_path / "h2spec.xml"
    async with run_server(app, **options) as srv:
        command = [H2SPEC, "-h", srv.host, "-p", str(srv.port), "-o", str(CASE_TIMEOUT)]
        if certificate is not None:
            command += ["-t", "-k"]
        command += ["--junit-report", str(report)]
        with trio.fail_after(RUN_TIMEOUT):
            process = await trio.run_process(command, capture_stdout=True, check=False)
    output = process.stdout.decode(errors="replace")
    summary = output.strip().splitlines()[-1] if output.strip() else "(no output)"
    assert report.exists(), output[-3000:]
    return parse_report(report), summary


@pytest.mark.parametrize(
    ("http", "tls"),
    [("h2", False), ("h2", True), ("auto", True)],
    ids=["h2-cleartext", "h2-tls", "auto-tls"],
)
async def test_h2spec_all_pass(
    tmp_path: Path, certificate: Certificate, http: str, tls: bool
) -> None:
    results, summary = await run_h2spec(tmp_path, http, certificate if tls else None)
    failed = sorted(name for name, result in results.items() if result != "passed")
    assert failed == [], summary
    assert len(results) == TOTAL_CASES, summary


async def test_h2spec_auto_cleartext(tmp_path: Path) -> None:
    results, summary = await run_h2spec(tmp_path, "auto", None)
    failed = {name for name, result in results.items() if result != "passed"}
    assert failed == AUTO_CLEARTEXT_FAILURES, summary
    assert len(results) == TOTAL_CASES, summary
