"""The conformance report: h2spec, Autobahn and the ASGI checklist against a fresh Palfrey.

Claims about protocol conformance are only worth something when anyone can
regenerate the evidence, so this script starts Palfrey itself (a subprocess on
127.0.0.1, one per mode, serving :func:`app` from this file), drives each
external suite against it, and writes ``docs/conformance.md`` from what the
suites report, never from expectations:

* h2spec in every HTTP/2 mode (``--http h2`` and ``--http auto``, cleartext and
  TLS), counted per case from its JUnit report;
* the Autobahn|Testsuite fuzzing client, cases 1-13 (permessage-deflate
  included), each case's behaviour read from ``reports/servers/index.json``;
* the ASGI checklist: the spec versions in each scope type and every
  extension Palfrey advertises, each exercised by one real request.

Tools: h2spec from ``--h2spec``, ``$PALFREY_H2SPEC``, PATH or
``../shared/tools/h2spec``; wstest (Python 2.7) from ``--wstest``,
``$PALFREY_WSTEST``, PATH or ``/tmp/autobahn-venv/bin/wstest``. A missing tool
skips its suite and the report says so. Setting up wstest once::

    ~/.pyenv/versions/2.7.18/bin/python -m pip install 'virtualenv<20.22'
    ~/.pyenv/versions/2.7.18/bin/python -m virtualenv /tmp/autobahn-venv
    /tmp/autobahn-venv/bin/pip install autobahntestsuite

Run (about 20 minutes on two busy CPUs, nearly all of it Autobahn's compression cases)::

    .venv/bin/python benchmarks/conformance.py
    .venv/bin/python benchmarks/conformance.py --cases 1-11 --output /tmp/report.md

This module is also the app the servers import, so its top level imports only
what a Palfrey install already has (the standard library, ``h2``, ``palfrey``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events

from palfrey import __version__

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent

#: Cases in h2spec 2.6's default run (generic, http2 and hpack).
H2SPEC_CASES = 146
#: Seconds h2spec waits for each expected frame, and for a whole run.
H2SPEC_CASE_TIMEOUT = 10
H2SPEC_RUN_TIMEOUT = 300
#: Known h2spec failures per mode, with why; anything else counts as a regression.
H2SPEC_EXPECTED_FAILURES = {
    ("auto", False): {
        "http2/3.5: Sends invalid connection preface": (
            "cleartext `--http auto` shares its port with HTTP/1.1, so bytes that are not "
            "the HTTP/2 preface are an HTTP/1.1 request and get an HTTP/1.1 400, not a GOAWAY"
        )
    },
}
#: Autobahn behaviours, best first.
BEHAVIOURS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
#: Why a case that is not OK is what it is, by case-id prefix (longest prefix wins).
AUTOBAHN_WHY = {
    **dict.fromkeys(
        ("3.", "4.", "5.15"),
        "a valid message and a protocol error arrive together: Palfrey fails the "
        "connection (1002) on parsing the bad frame, before the app's echo of the "
        "earlier message is written, so the echo is not received",
    ),
    "7.1.6": (
        "a 256 KiB message and a close back to back: the close is handled before the "
        "app's echo is written, so the echo is dropped (implementation-defined, says the case)"
    ),
    "7.13.": (
        "a close code outside every registered range: RFC 6455 leaves the answer "
        "undefined; Palfrey fails the connection with 1002"
    ),
}
#: The body the checklist's ``zerocopysend`` request slices out of this file.
ZEROCOPY_OFFSET, ZEROCOPY_COUNT = 3, 40


# --- The app every server in this script serves --------------------------------


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """HTTP: the checklist's routes, else a short text body (h2spec needs one).
    WebSocket: ``/deny`` answers with a plain HTTP 403 (``websocket.http.response``),
    ``/scope`` sends the scope's summary first, and everything echoes (Autobahn)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await websocket_app(scope, receive, send)
    elif scope["type"] == "http":
        await http_app(scope, receive, send)


def scope_summary(scope: dict[str, Any]) -> bytes:
    tls = scope.get("extensions", {}).get("tls")
    summary = {
        "type": scope["type"],
        "asgi": scope.get("asgi"),
        "http_version": scope.get("http_version"),
        "extensions": sorted(scope.get("extensions", {})),
        "tls_version": tls.get("tls_version") if tls else None,
        "server_cert": bool(tls and tls.get("server_cert")),
    }
    return json.dumps(summary).encode()


async def websocket_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    if scope["path"] == "/deny":
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"denied"})
        return
    await send({"type": "websocket.accept"})
    if scope["path"] == "/scope":
        await send({"type": "websocket.send", "text": scope_summary(scope).decode()})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send(
            {"type": "websocket.send", "bytes": message.get("bytes"), "text": message.get("text")}
        )


async def http_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    path = scope["path"]
    start: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": []}
    if path == "/scope":
        body = scope_summary(scope)
        await send({**start, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    elif path == "/trailers":
        await send({**start, "trailers": True})
        await send({"type": "http.response.body", "body": b"body", "more_body": True})
        await send({"type": "http.response.body", "body": b" before trailers"})
        trailers = [(b"x-checksum", b"palfrey")]
        await send({"type": "http.response.trailers", "headers": trailers})
    elif path == "/early-hint":
        links = [b"</style.css>; rel=preload; as=style"]
        await send({"type": "http.response.early_hint", "links": links})
        await send(start)
        await send({"type": "http.response.body", "body": b"hinted"})
    elif path == "/pathsend":
        await send(start)
        await send({"type": "http.response.pathsend", "path": str(Path(__file__).resolve())})
    elif path == "/zerocopysend":
        await send(start)
        with open(__file__, "rb") as file:
            await send(
                {
                    "type": "http.response.zerocopysend",
                    "file": file,
                    "offset": ZEROCOPY_OFFSET,
                    "count": ZEROCOPY_COUNT,
                }
            )
    else:
        body = b"Palfrey speaks HTTP/2.\n" * 4
        await send({**start, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


# --- Servers and tools -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Tls:
    certfile: str
    keyfile: str

    def client_context(self, alpn: list[str]) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.certfile)
        context.set_alpn_protocols(alpn)
        return context


def make_tls(directory: Path) -> Tls:
    """The test suite's throwaway certificate (``tests/tls_cert.py``), for 127.0.0.1."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from tls_cert import make_certificate  # noqa: PLC0415 - only on sys.path here
    finally:
        sys.path.remove(str(ROOT / "tests"))
    certificate = make_certificate(directory)
    return Tls(certificate.certfile, certificate.keyfile)


@contextlib.contextmanager
def palfrey(*options: str, tls: Tls | None = None, log: Path | None = None) -> Iterator[int]:
    """A fresh Palfrey serving :func:`app` on a free loopback port, stopped afterwards."""
    port = free_port()
    command = [
        str(BIN / "palfrey"), "conformance:app",
        "--app-dir", str(HERE),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--log-level", "warning",
        "--no-access-log",
        *options,
    ]  # fmt: skip
    if tls is not None:
        command += ["--ssl-certfile", tls.certfile, "--ssl-keyfile", tls.keyfile]
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(open(log, "ab")) if log else subprocess.DEVNULL
        server = subprocess.Popen(command, cwd=HERE, stdout=output, stderr=output)
        try:
            deadline = time.monotonic() + 20
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"palfrey exited with status {server.returncode}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("palfrey did not start listening") from None
                    time.sleep(0.05)
            yield port
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def find_tool(explicit: str | None, variable: str, name: str, *fallbacks: Path) -> str | None:
    """The first executable of: the option, the environment variable, PATH, fallbacks."""
    for candidate in (explicit, os.environ.get(variable), shutil.which(name), *fallbacks):
        if candidate and os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return str(candidate)
    return None


def tool_version(command: list[str], pattern: str) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    match = re.search(pattern, result.stdout + result.stderr)
    return match.group(1) if match else "unknown"


# --- h2spec ----------------------------------------------------------------------


@dataclass
class H2specRun:
    mode: str
    tls: bool
    results: dict[str, str]
    summary: str
    seconds: float

    @property
    def label(self) -> str:
        return f"`--http {self.mode}`, {'TLS' if self.tls else 'cleartext'}"

    def count(self, result: str) -> int:
        return sum(1 for value in self.results.values() if value == result)

    @property
    def failures(self) -> list[str]:
        return sorted(name for name, value in self.results.items() if value != "passed")


def parse_junit(path: Path) -> dict[str, str]:
    """Each case of h2spec's JUnit report, ``package: title`` -> passed/failed/skipped
    (the same reading as ``tests/test_h2spec.py``)."""
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


def run_h2spec(h2spec: str, mode: str, tls: Tls | None, work: Path) -> H2specRun:
    report = work / f"h2spec-{mode}-{'tls' if tls else 'clear'}.xml"
    started = time.monotonic()
    with palfrey("--http", mode, tls=tls, log=work / "h2spec-server.log") as port:
        command = [h2spec, "-h", "127.0.0.1", "-p", str(port), "-o", str(H2SPEC_CASE_TIMEOUT)]
        if tls is not None:
            command += ["-t", "-k"]
        command += ["-j", str(report)]
        process = subprocess.run(
            command, capture_output=True, text=True, timeout=H2SPEC_RUN_TIMEOUT, check=False
        )
    output = process.stdout.strip()
    summary = output.splitlines()[-1] if output else "(no output)"
    results = parse_junit(report) if report.exists() else {}
    return H2specRun(mode, tls is not None, results, summary, time.monotonic() - started)


# --- Autobahn|Testsuite ---------------------------------------------------------


@dataclass
class AutobahnCase:
    case: str
    behavior: str
    behavior_close: str
    result: str


@dataclass
class AutobahnRun:
    cases: list[AutobahnCase]
    seconds: float
    error: str | None = None

    def counts(self) -> Counter[str]:
        return Counter(case.behavior for case in self.cases)


def case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def case_patterns(cases: str) -> list[str]:
    """``1-13`` or ``1,2,5`` (whole sections) or ``6.4.*`` -> wstest case patterns."""
    patterns = []
    for item in cases.split(","):
        low, dash, high = item.strip().partition("-")
        if dash:
            patterns += [f"{n}.*" for n in range(int(low), int(high) + 1)]
        else:
            patterns.append(low if "." in low else f"{low}.*")
    return patterns


def parse_autobahn(outdir: Path) -> list[AutobahnCase]:
    """Every case in ``index.json`` (one agent), in case order, with its result text."""
    index = json.loads((outdir / "index.json").read_text())
    cases = []
    for agent_cases in index.values():
        for case, entry in agent_cases.items():
            detail: dict[str, Any] = {}
            report = outdir / entry.get("reportfile", "")
            if entry.get("reportfile") and report.exists():
                detail = json.loads(report.read_text())
            cases.append(
                AutobahnCase(
                    case=case,
                    behavior=entry["behavior"],
                    behavior_close=entry.get("behaviorClose", ""),
                    result=str(detail.get("result", "")),
                )
            )
    return sorted(cases, key=lambda item: case_key(item.case))


def run_autobahn(wstest: str, patterns: list[str], work: Path, timeout: float) -> AutobahnRun:
    """wstest's fuzzing client against :func:`app` with permessage-deflate on."""
    started = time.monotonic()
    outdir = work / "autobahn" / "reports" / "servers"
    with palfrey("--ws-per-message-deflate", log=work / "autobahn-server.log") as port:
        spec = {
            "outdir": str(outdir),
            "servers": [{"agent": "palfrey", "url": f"ws://127.0.0.1:{port}"}],
            "cases": patterns,
            "exclude-cases": [],
            "exclude-agent-cases": {},
        }
        spec_path = work / "autobahn" / "spec.json"
        spec_path.parent.mkdir(parents=True, exist_ok=True)
        spec_path.write_text(json.dumps(spec))
        with open(work / "autobahn" / "wstest.log", "wb") as log:
            try:
                subprocess.run(
                    [wstest, "-m", "fuzzingclient", "-s", str(spec_path)],
                    cwd=spec_path.parent,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return AutobahnRun([], time.monotonic() - started, f"timed out after {timeout}s")
    if not (outdir / "index.json").exists():
        error = "wstest wrote no report; see its log"
        return AutobahnRun([], time.monotonic() - started, error)
    return AutobahnRun(parse_autobahn(outdir), time.monotonic() - started)


def autobahn_why(case: AutobahnCase) -> str:
    prefixes = [prefix for prefix in AUTOBAHN_WHY if case.case.startswith(prefix)]
    if prefixes:
        return AUTOBAHN_WHY[max(prefixes, key=len)]
    return case.result or "(no explanation recorded)"


# --- The ASGI checklist ---------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    informational: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)


def read_until_closed(sock: socket.socket | ssl.SSLSocket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ssl.SSLZeroReturnError, ConnectionResetError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def parse_fields(lines: list[bytes]) -> dict[str, str]:
    fields = {}
    for line in lines:
        name, _, value = line.partition(b":")
        fields[name.strip().lower().decode()] = value.strip().decode()
    return fields


def parse_http1(data: bytes) -> Response:
    """One HTTP/1.1 response (after any 1xx heads), chunked or not, with its trailers."""
    informational = []
    while True:
        head, _, data = data.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        status = int(status_line.split()[1])
        headers = parse_fields(lines)
        if 100 <= status < 200:
            informational.append((status, headers))
            continue
        break
    if headers.get("transfer-encoding", "").lower() != "chunked":
        return Response(status, headers, data, informational)
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body, data = body + data[:size], data[size + 2 :]
    trailer_block = data.partition(b"\r\n\r\n")[0]
    trailers = parse_fields([line for line in trailer_block.split(b"\r\n") if line])
    return Response(status, headers, body, informational, trailers)


def connect(port: int, tls: Tls, alpn: list[str]) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return tls.client_context(alpn).wrap_socket(raw, server_hostname="127.0.0.1")


def http1_get(port: int, tls: Tls, path: str, headers: str = "") -> Response:
    with connect(port, tls, ["http/1.1"]) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n".encode()
        )
        return parse_http1(read_until_closed(sock))


def h2_get(port: int, tls: Tls, path: str) -> Response:
    """One request over HTTP/2 (ALPN ``h2``) with the ``h2`` library Palfrey uses."""
    with connect(port, tls, ["h2"]) as sock:
        assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        request = [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "127.0.0.1"),
            (":path", path),
            ("te", "trailers"),
        ]
        conn.send_headers(1, request, end_stream=True)
        sock.sendall(conn.data_to_send())
        response = Response(0, {}, b"")
        ended = False
        while not ended:
            data = sock.recv(65536)
            if not data:
                raise RuntimeError("connection closed before the response ended")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.InformationalResponseReceived):
                    fields = {k.decode(): v.decode() for k, v in event.headers}
                    response.informational.append((int(fields.pop(":status")), fields))
                elif isinstance(event, h2.events.ResponseReceived):
                    response.headers = {k.decode(): v.decode() for k, v in event.headers}
                    response.status = int(response.headers.pop(":status"))
                elif isinstance(event, h2.events.DataReceived):
                    response.body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.TrailersReceived):
                    response.trailers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    ended = True
            sock.sendall(conn.data_to_send())
        return response


def websocket_handshake(
    port: int, tls: Tls, path: str, extensions: str | None = None
) -> tuple[ssl.SSLSocket, bytes, bytes]:
    """A raw client handshake; the socket, the response head and what followed it."""
    sock = connect(port, tls, ["http/1.1"])
    key = base64.b64encode(os.urandom(16)).decode()
    extra = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return sock, head, rest


def websocket_first_text(sock: ssl.SSLSocket, buffered: bytes) -> str:
    """The first (unmasked, unfragmented, uncompressed) server text frame."""
    data = buffered
    while True:
        if len(data) >= 2:
            length, offset = data[1] & 0x7F, 2
            if length == 126:
                length, offset = int.from_bytes(data[2:4], "big"), 4
            elif length == 127:
                length, offset = int.from_bytes(data[2:10], "big"), 10
            if len(data) >= offset + length:
                assert data[0] == 0x81, f"expected one text frame, got {data[0]:#x}"
                return data[offset : offset + length].decode()
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before the first frame")
        data += chunk


@dataclass
class Check:
    item: str
    exercised_by: str
    observed: str
    ok: bool


def check(item: str, exercised_by: str, probe: Callable[[], tuple[str, bool]]) -> Check:
    try:
        observed, ok = probe()
    except Exception as exc:  # a failed probe is a failed check, reported, not a crash
        observed, ok = f"error: {type(exc).__name__}: {exc}", False
    return Check(item, exercised_by, observed, ok)


def run_checklist(tls: Tls, work: Path) -> list[Check]:
    """Each scope type's versions, and each extension, over a TLS ``--http auto`` server."""
    this_file = Path(__file__).resolve().read_bytes()
    checks = []
    with palfrey("--http", "auto", tls=tls, log=work / "checklist-server.log") as port:

        def http_scope(getter: Callable[[int, Tls, str], Response]) -> Callable[[], Any]:
            def probe() -> tuple[str, bool]:
                scope = json.loads(getter(port, tls, "/scope").body)
                extensions = ", ".join(scope["extensions"])
                observed = (
                    f"HTTP/{scope['http_version']}: asgi {scope['asgi']}; extensions: {extensions}"
                )
                return observed, scope["asgi"].get("version") == "3.0"

            return probe

        checks.append(
            check(
                "`http` scope, HTTP/1.1",
                "`GET /scope` (no `TE: trailers`, so no trailers extension)",
                http_scope(http1_get),
            )
        )
        checks.append(check("`http` scope, HTTP/2", "`GET /scope` over h2", http_scope(h2_get)))

        def websocket_scope() -> tuple[str, bool]:
            sock, head, rest = websocket_handshake(port, tls, "/scope")
            with sock:
                scope = json.loads(websocket_first_text(sock, rest))
            extensions = ", ".join(scope["extensions"])
            observed = (
                f"{head.split(b' ')[1].decode()}; asgi {scope['asgi']}; extensions: {extensions}"
            )
            ok = scope["asgi"].get("spec_version") == "2.5"
            return observed, ok and "websocket.http.response" in scope["extensions"]

        checks.append(check("`websocket` scope", "WebSocket to `/scope`", websocket_scope))

        def trailers(getter: Callable[..., Response], *args: str) -> Callable[[], Any]:
            def probe() -> tuple[str, bool]:
                response = getter(port, tls, "/trailers", *args)
                observed = f"body {response.body!r}, trailers {response.trailers}"
                good = response.body == b"body before trailers"
                return observed, good and response.trailers.get("x-checksum") == "palfrey"

            return probe

        checks.append(
            check(
                "`http.response.trailers`",
                "`GET /trailers` with `TE: trailers`, HTTP/1.1 (chunked)",
                trailers(http1_get, "TE: trailers\r\n"),
            )
        )
        checks.append(
            check("`http.response.trailers`", "`GET /trailers` over h2", trailers(h2_get))
        )

        def early_hint(getter: Callable[[int, Tls, str], Response]) -> Callable[[], Any]:
            def probe() -> tuple[str, bool]:
                response = getter(port, tls, "/early-hint")
                hints = [(status, fields.get("link")) for status, fields in response.informational]
                observed = f"informational {hints}, then {response.status}"
                ok = hints == [(103, "</style.css>; rel=preload; as=style")]
                return observed, ok and response.status == 200

            return probe

        checks.append(
            check(
                "`http.response.early_hint`", "`GET /early-hint`, HTTP/1.1", early_hint(http1_get)
            )
        )
        checks.append(
            check("`http.response.early_hint`", "`GET /early-hint` over h2", early_hint(h2_get))
        )

        def pathsend() -> tuple[str, bool]:
            response = h2_get(port, tls, "/pathsend")
            same = response.body == this_file
            return f"{len(response.body)} bytes, identical to the file: {same}", same

        checks.append(check("`http.response.pathsend`", "`GET /pathsend` over h2", pathsend))

        def zerocopysend() -> tuple[str, bool]:
            response = http1_get(port, tls, "/zerocopysend")
            expected = this_file[ZEROCOPY_OFFSET : ZEROCOPY_OFFSET + ZEROCOPY_COUNT]
            same = response.body == expected
            observed = f"{len(response.body)} bytes (offset {ZEROCOPY_OFFSET}), as sliced: {same}"
            return observed, same

        checks.append(
            check("`http.response.zerocopysend`", "`GET /zerocopysend`, HTTP/1.1", zerocopysend)
        )

        def tls_extension() -> tuple[str, bool]:
            with connect(port, tls, ["http/1.1"]) as sock:
                client_version = sock.version()
            scope = json.loads(http1_get(port, tls, "/scope").body)
            version = {0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}.get(scope["tls_version"])
            observed = (
                f"tls_version {scope['tls_version']:#06x} ({version}, client saw "
                f"{client_version}), server_cert present: {scope['server_cert']}"
            )
            return observed, version == client_version and scope["server_cert"]

        checks.append(check("`tls`", "`GET /scope` over TLS", tls_extension))

        def websocket_http_response() -> tuple[str, bool]:
            sock, head, rest = websocket_handshake(port, tls, "/deny")
            with sock:
                response = parse_http1(head + b"\r\n\r\n" + rest + read_until_closed(sock))
            observed = f"{response.status} {response.body!r}"
            return observed, response.status == 403 and response.body == b"denied"

        checks.append(
            check(
                "`websocket.http.response`",
                "WebSocket to `/deny`, answered with an HTTP response",
                websocket_http_response,
            )
        )

        def deflate() -> tuple[str, bool]:
            sock, head, _ = websocket_handshake(port, tls, "/", "permessage-deflate")
            with sock:
                fields = parse_fields(head.split(b"\r\n")[1:])
            negotiated = fields.get("sec-websocket-extensions", "(none)")
            return negotiated, negotiated.startswith("permessage-deflate")

        checks.append(
            check("permessage-deflate (RFC 7692)", "WebSocket offering it to `/`", deflate)
        )
    return checks


# --- The report -----------------------------------------------------------------


@dataclass
class Report:
    versions: dict[str, str]
    h2spec: list[H2specRun] | str
    autobahn: AutobahnRun | str
    checklist: list[Check]
    cases: str
    seconds: float = 0.0


def render(report: Report) -> str:
    today = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        "# Conformance",
        "",
        "<!-- Generated by benchmarks/conformance.py; do not edit by hand. -->",
        "",
        "What Palfrey's protocol support is checked against, by suites other people wrote,",
        "run against a freshly started server on 127.0.0.1. Regenerate it with:",
        "",
        "```sh",
        ".venv/bin/python benchmarks/conformance.py",
        "```",
        "",
        "(`benchmarks/conformance.py -h` lists where it looks for h2spec and wstest,",
        "and how to install wstest.) CI runs h2spec (`tests/test_h2spec.py`) and",
        "Autobahn cases 1-11 (`tests/test_autobahn.py`) on every change.",
        "",
        f"Generated {today:%Y-%m-%d %H:%M} UTC in {report.seconds / 60:.1f} minutes.",
        "",
        "| Component | Version |",
        "| --- | --- |",
    ]
    lines += [f"| {name} | {version} |" for name, version in report.versions.items()]
    lines += ["", "## h2spec (HTTP/2)", ""]
    if isinstance(report.h2spec, str):
        lines += [f"Not run: {report.h2spec}", ""]
    else:
        lines += [
            f"h2spec's default run, {H2SPEC_CASES} cases, in every mode Palfrey speaks HTTP/2 in.",
            "",
            "| Mode | Passed | Failed | Skipped | Total | Seconds |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for run in report.h2spec:
            lines.append(
                f"| {run.label} | {run.count('passed')} | {run.count('failed')} | "
                f"{run.count('skipped')} | {len(run.results)} | {run.seconds:.0f} |"
            )
        lines.append("")
        for run in report.h2spec:
            expected = H2SPEC_EXPECTED_FAILURES.get((run.mode, run.tls), {})
            for name in run.failures:
                why = expected.get(name, "unexpected: a regression to fix")
                lines.append(f"- {run.label} fails *{name}*: {why}.")
            if not run.results:
                lines.append(f"- {run.label}: no JUnit report ({run.summary}).")
        lines.append("")
    lines += ["## Autobahn|Testsuite (WebSocket)", ""]
    if isinstance(report.autobahn, str):
        lines += [f"Not run: {report.autobahn}", ""]
    elif report.autobahn.error:
        lines += [f"Run failed: {report.autobahn.error}.", ""]
    else:
        run = report.autobahn
        counts = run.counts()
        lines += [
            f"The fuzzing client, cases {report.cases} ({len(run.cases)} cases; 12 and 13 are",
            "permessage-deflate), against an echo app with `--ws-per-message-deflate`,",
            f"in {run.seconds / 60:.1f} minutes.",
            "",
            "| Behaviour | Cases |",
            "| --- | --- |",
        ]
        lines += [f"| {behavior} | {counts.get(behavior, 0)} |" for behavior in BEHAVIOURS]
        others = sorted(set(counts) - set(BEHAVIOURS))
        lines += [f"| {behavior} | {counts[behavior]} |" for behavior in others]
        lines.append("")
        not_ok = [case for case in run.cases if case.behavior != "OK"]
        if not_ok:
            lines += ["Every case that is not OK, and why:", ""]
            lines += ["| Case | Behaviour | Close | Why |", "| --- | --- | --- | --- |"]
            for case in not_ok:
                why = autobahn_why(case).replace("|", "\\|")
                lines.append(f"| {case.case} | {case.behavior} | {case.behavior_close} | {why} |")
            lines.append("")
    lines += [
        "## ASGI checklist",
        "",
        "The spec versions each scope reports and every extension Palfrey advertises,",
        "each exercised by a real request to a TLS `--http auto` server.",
        "",
        "| Item | Exercised by | Observed | Result |",
        "| --- | --- | --- | --- |",
    ]
    for item in report.checklist:
        observed = item.observed.replace("|", "\\|")
        result = "pass" if item.ok else "**FAIL**"
        lines.append(f"| {item.item} | {item.exercised_by} | {observed} | {result} |")
    lines.append("")
    return "\n".join(lines)


def versions(h2spec: str | None, wstest: str | None) -> dict[str, str]:
    found = {
        "Palfrey": __version__,
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "h2spec": tool_version([h2spec, "--version"], r"Version:\s*(\S+)") if h2spec else "-",
        "autobahntestsuite": "-",
    }
    if wstest:
        found["autobahntestsuite"] = tool_version(
            [wstest, "--autobahnversion"], r"AutobahnTestSuite\s+(\S+)"
        )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("--h2spec", help="the h2spec binary")
    parser.add_argument("--wstest", help="Autobahn|Testsuite's wstest (in a Python 2.7 env)")
    parser.add_argument("--cases", default="1-13", help="Autobahn sections (default 1-13)")
    parser.add_argument("--autobahn-timeout", type=float, default=3600.0, help="seconds")
    parser.add_argument("--skip", nargs="*", default=[], choices=["h2spec", "autobahn"])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "conformance.md")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    h2spec = find_tool(
        args.h2spec, "PALFREY_H2SPEC", "h2spec",
        ROOT.parent / "shared" / "tools" / "h2spec", Path("/work/shared/tools/h2spec"),
    )  # fmt: skip
    wstest = find_tool(
        args.wstest, "PALFREY_WSTEST", "wstest", Path("/tmp/autobahn-venv/bin/wstest")
    )
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="palfrey-conformance-"))
    try:
        tls = make_tls(work)
        h2spec_runs: list[H2specRun] | str
        if "h2spec" in args.skip:
            h2spec_runs = "skipped on the command line"
        elif h2spec is None:
            h2spec_runs = "h2spec not found (PATH, ../shared/tools/h2spec)"
            print(f"h2spec: {h2spec_runs}", flush=True)
        else:
            h2spec_runs = []
            for mode, use_tls in (("h2", False), ("h2", True), ("auto", True), ("auto", False)):
                run = run_h2spec(h2spec, mode, tls if use_tls else None, work)
                print(f"h2spec {run.label}: {run.summary}", flush=True)
                h2spec_runs.append(run)
        autobahn: AutobahnRun | str
        if "autobahn" in args.skip:
            autobahn = "skipped on the command line"
        elif wstest is None:
            autobahn = (
                "wstest not found: install autobahntestsuite into a Python 2.7 virtualenv "
                "(see `benchmarks/conformance.py -h`)"
            )
            print(f"Autobahn: {autobahn}", flush=True)
        else:
            print(f"Autobahn cases {args.cases} (several minutes)...", flush=True)
            autobahn = run_autobahn(wstest, case_patterns(args.cases), work, args.autobahn_timeout)
            print(f"Autobahn: {dict(autobahn.counts())} {autobahn.error or ''}", flush=True)
        checklist = run_checklist(tls, work)
        for item in checklist:
            verdict = "pass" if item.ok else "FAIL"
            print(f"checklist {item.item}: {verdict}: {item.observed}", flush=True)
        report = Report(versions(h2spec, wstest), h2spec_runs, autobahn, checklist, args.cases)
        report.seconds = time.monotonic() - started
        args.output.write_text(render(report))
        print(f"wrote {args.output}", flush=True)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = [item for item in checklist if not item.ok]
    if isinstance(autobahn, AutobahnRun) and (autobahn.error or autobahn.counts()["FAILED"]):
        return 1
    if isinstance(h2spec_runs, list):
        for run in h2spec_runs:
            expected = set(H2SPEC_EXPECTED_FAILURES.get((run.mode, run.tls), {}))
            if set(run.failures) != expected or len(run.results) != H2SPEC_CASES:
                return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
