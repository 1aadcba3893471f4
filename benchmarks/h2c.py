"""HTTP/2 cleartext (h2c) benchmark: Palfrey against Uvicorn + zttp, Hypercorn, Granian and a
bare trio + h2 ceiling, all driven by h2load with prior knowledge.

    python benchmarks/h2c.py              # 3 interleaved rounds of 5 s -> results/http2.md
    python benchmarks/h2c.py --quick      # 1 round of 2 s -> results/http2-quick.md
    python benchmarks/h2c.py --only palfrey-auto uvicorn-zttp --rounds 5

The peers run from their own virtual environment (``--peers``, default
``$H2PEERS`` or ``/tmp/h2peers``) so that they never touch the project's
``.venv``; Palfrey and the ``bare-h2`` ceiling run with the interpreter that
runs this script. Every server runs as a subprocess on 127.0.0.1 with one
worker, access log off, and serves ``GET /plaintext`` from ``apps.py`` (the
ceiling answers every stream with the same bytes). The machinery is
``run.py``'s: the server is pinned to the first CPU and h2load to the others,
servers are interleaved (A B C ... A B C ...), each figure is the median over
rounds, and the server's CPU time (whole process tree) is read around each
h2load run. For each server and round: start it, check that it answers an
h2c GET, warm up for 1 s, run h2load, stop it.

Load is counted, not timed: h2load's ``-D`` cuts every connection at the
deadline with streams in flight, which crashes Hypercorn's trio worker, while
``-n`` ends with every stream answered. The measured sample is a series of
h2load runs of at most ``PER_RUN`` requests (960 streams per connection: below
every peer's per-connection limit, as h2load does not reconnect), as many as
take about ``--seconds`` at the warm-up run's rate, since the servers differ by
30x in speed; ``--requests N`` fixes the total instead. Requests per second are
over h2load's own run times. h2load's ``-N`` (connection inactivity timeout)
and a process timeout bound a server that stalls. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from run import (
    DISTURBED,
    HERE,
    KEEP_ALIVE,
    PY,
    RESULTS,
    children_cpu_seconds,
    cpu_split,
    free_port,
    machine_busy_seconds,
    median,
    palfrey_origin,
    server_env,
    tree_cpu_seconds,
)

CLIENTS = 16
STREAMS = 32  # concurrent streams per connection (h2load -m)
WARM_UP = CLIENTS * STREAMS * 8  # requests in the warm-up run, which also sizes the measured one
#: Streams per connection in one h2load run: below every peer's per-connection limit (Hypercorn
#: sends GOAWAY after 1,000 requests by default, zttp 0.0.35 sends ENHANCE_YOUR_CALM after 4,096
#: streams), since h2load does not reconnect and would count the rest as failed.
PER_CONNECTION = 960
PER_RUN = CLIENTS * PER_CONNECTION
INACTIVITY = 5  # h2load -N: seconds a connection may go without activity before it gives up
PATH = "/plaintext"
BODY = b"Hello, world!"
PEERS = "peers"  # Server.python: the peers' interpreter, filled in from --peers
#: Servers whose ratio to Palfrey has a target (from the HTTP/2 issue): name -> at least.
TARGETS = {"hypercorn-trio": 5.0, "uvicorn-zttp": 1.0}


@dataclass
class Server:
    name: str
    argv: list[str]  # "{port}" is replaced by the port, "{python}" by the interpreter
    python: str  # PY, or PEERS for the peers' virtual environment
    needs: tuple[str, ...] = ()  # distributions that interpreter must have
    note: str = ""


def servers() -> list[Server]:
    common = ["apps:app", "--host", "127.0.0.1", "--port", "{port}"]
    palfrey = ["{python}", "-m", "palfrey", *common, "--app-dir", str(HERE)]
    palfrey += ["--no-access-log", "--log-level", "warning"]
    palfrey += ["--timeout-keep-alive", KEEP_ALIVE, "--backlog", "4096"]
    uvicorn = ["{python}", "-m", "uvicorn", *common, "--app-dir", str(HERE)]
    uvicorn += ["--no-access-log", "--log-level", "warning", "--timeout-keep-alive", KEEP_ALIVE]
    uvicorn += ["--backlog", "4096", "--workers", "1", "--http", "zttp", "--http2"]
    hypercorn = ["{python}", "-m", "hypercorn", "apps:app", "--bind", "127.0.0.1:{port}"]
    hypercorn += ["-w", "1", "--keep-alive", KEEP_ALIVE, "--backlog", "4096"]
    hypercorn += ["--log-level", "warning"]
    granian = ["{python}", "-m", "granian", *common, "--interface", "asgi", "--workers", "1"]
    granian += ["--backlog", "4096", "--no-access-log", "--log-level", "warning"]
    return [
        Server("palfrey-auto", [*palfrey, "--http", "auto"], PY, note="h2c and HTTP/1.1"),
        Server("palfrey-h2", [*palfrey, "--http", "h2"], PY, note="HTTP/2 only"),
        Server(
            "uvicorn-zttp",
            [*uvicorn, "--loop", "asyncio"],
            PEERS,
            ("uvicorn", "zttp"),
            "asyncio loop",
        ),
        Server(
            "uvicorn-zttp-uvloop",
            [*uvicorn, "--loop", "uvloop"],
            PEERS,
            ("uvicorn", "zttp", "uvloop"),
        ),
        Server("hypercorn-trio", [*hypercorn, "-k", "trio"], PEERS, ("hypercorn", "trio")),
        Server("hypercorn-asyncio", [*hypercorn, "-k", "asyncio"], PEERS, ("hypercorn",)),
        Server(
            "granian",
            [*granian, "--http", "auto"],
            PEERS,
            ("granian",),
            "Rust HTTP stack, ASGI interface",
        ),
        Server(
            "bare-h2",
            ["{python}", str(HERE / "bare_h2.py"), "--port", "{port}"],
            PY,
            ("trio", "h2"),
            "ceiling: trio + h2, no ASGI",
        ),
    ]


PALFREY = ("palfrey-auto", "palfrey-h2")
CEILING = "bare-h2"

VERSIONS_SCRIPT = """
import importlib.metadata, json, platform, sys
names = sys.argv[1:]
out = {"Python": platform.python_version()}
for name in names:
    try:
        out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""
PACKAGES = ("palfrey", "trio", "h2", "hpack", "uvicorn", "zttp", "uvloop", "hypercorn", "granian")


def versions(python: str) -> dict[str, str | None]:
    out = subprocess.run(
        [python, "-c", VERSIONS_SCRIPT, *PACKAGES],
        cwd=HERE,
        env=server_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def peers_python(path: Path) -> str | None:
    python = (path / "bin" / "python" if path.is_dir() else path).absolute()
    return str(python) if python.is_file() and os.access(python, os.X_OK) else None


STREAM_OVER = h2.events.StreamEnded | h2.events.StreamReset | h2.events.ConnectionTerminated


def h2_get(port: int, path: str = PATH, timeout: float = 2.0) -> tuple[int, bytes]:
    """One h2c prior-knowledge GET: (status, body)."""
    config = h2.config.H2Configuration(client_side=True, header_encoding=None)
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    request = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"bench")]
    conn.send_headers(1, [*request, (b":path", path.encode())], end_stream=True)
    status, body = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(conn.data_to_send())
        while data := sock.recv(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, STREAM_OVER):
                    return status, body
            sock.sendall(conn.data_to_send())
    return status, body


def answers(port: int) -> bool:
    try:
        return h2_get(port) == (200, BODY)
    except (OSError, h2.exceptions.ProtocolError):
        return False


class StartFailed(RuntimeError):
    pass


@contextlib.contextmanager
def running(server: Server, argv: list[str], log: Path) -> Iterator[tuple[int, int]]:
    """Start ``server``, wait until it answers an h2c GET (at most 30 s), yield (pid, port)."""
    port = free_port()
    argv = [arg.replace("{port}", str(port)) for arg in argv]
    with log.open("ab") as errors:
        errors.write(f"\n=== {server.name}: {shlex.join(argv)}\n".encode())
        errors.flush()
        process = subprocess.Popen(argv, cwd=HERE, env=server_env(), stdout=errors, stderr=errors)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise StartFailed(f"{server.name} exited with {process.returncode}; see {log}")
            try:
                status, body = h2_get(port)
            except OSError:  # not listening yet
                status, body = 0, b""
            except h2.exceptions.ProtocolError as error:
                raise StartFailed(f"{server.name} does not speak h2c: {error!r}") from None
            if status == 200 and body == BODY:
                break
            if status:
                raise StartFailed(f"{server.name} answered h2c GET {PATH} with {status} {body!r}")
            if time.monotonic() > deadline:
                raise StartFailed(f"{server.name} did not answer h2c within 30 s; see {log}")
            time.sleep(0.1)
        yield process.pid, port
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Sample:
    rps: float
    done: int
    failed: int  # h2load "failed": errored streams (resets, timeouts) and non-2xx/3xx answers
    total: int  # requests asked for (-n)
    seconds: float  # h2load's own run time ("finished in")
    mean_ms: float  # h2load "time for request", mean
    max_ms: float
    cpu_us: float = float("nan")  # server CPU time per request, microseconds
    other_cpus: float = float("nan")  # CPU time used by neither the server nor h2load, in CPUs
    alive: bool = True  # the server still answered an h2c GET after the run


def h2load_argv(pin: list[str], threads: int, port: int, requests: int) -> list[str]:
    argv = [*pin, "h2load", f"-t{threads}", f"-c{CLIENTS}", f"-m{STREAMS}", f"-n{requests}"]
    return [*argv, f"-N{INACTIVITY}", f"http://127.0.0.1:{port}{PATH}"]


def h2load(pin: list[str], threads: int, port: int, pid: int, counts: list[int]) -> Sample:
    """h2load runs of ``counts`` requests one after another, as one sample: requests per
    second over h2load's own run times, server CPU time and other load over the whole series."""
    before = (tree_cpu_seconds(pid), children_cpu_seconds(), machine_busy_seconds())
    started = time.monotonic()
    runs = []
    for count in counts:
        argv = h2load_argv(pin, threads, port, count)
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        except subprocess.TimeoutExpired as expired:
            raise RuntimeError(f"h2load did not finish within 120 s: {argv}") from expired
        runs.append(parse_h2load(out.stdout + out.stderr))
    elapsed = time.monotonic() - started
    server = tree_cpu_seconds(pid) - before[0]
    load = children_cpu_seconds() - before[1]
    busy = machine_busy_seconds() - before[2]
    done = sum(r.done for r in runs)
    sample = Sample(
        rps=done / max(1e-9, sum(r.seconds for r in runs)),
        done=done,
        failed=sum(r.failed for r in runs),
        total=sum(r.total for r in runs),
        seconds=sum(r.seconds for r in runs),
        mean_ms=sum(r.mean_ms * r.done for r in runs) / max(1, done),
        max_ms=max(r.max_ms for r in runs),
    )
    sample.cpu_us = server * 1e6 / max(1, done)
    sample.other_cpus = max(0.0, busy - server - load) / elapsed
    return sample


def sized(warm_rps: float, seconds: float) -> list[int]:
    """h2load runs for about ``seconds`` at the warm-up rate, at least ``WARM_UP`` requests,
    in whole rounds of ``CLIENTS * STREAMS``."""
    batch = CLIENTS * STREAMS
    return split(max(WARM_UP, round(warm_rps * seconds / batch) * batch))


def split(total: int) -> list[int]:
    """``total`` requests as h2load runs of at most ``PER_RUN``."""
    return [PER_RUN] * (total // PER_RUN) + ([total % PER_RUN] if total % PER_RUN else [])


def parse_h2load(text: str) -> Sample:
    finished = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", text)
    counts = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
    )
    if not finished or not counts:
        raise RuntimeError(f"unexpected h2load output:\n{text[-2000:]}")
    total, _started, done, _succeeded, failed, _errored, _timeout = map(int, counts.groups())
    times = re.search(r"time for request:\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)", text)
    mean_ms = max_ms = 0.0
    if times:
        max_ms = _ms(times[3], times[4])
        mean_ms = _ms(times[5], times[6])
    seconds = _ms(finished[1], finished[2]) / 1000
    return Sample(float(finished[3]), done, failed, total, seconds, mean_ms, max_ms)


def _ms(number: str, unit: str) -> float:
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s runs")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    parser.add_argument(
        "--seconds", type=float, help="aimed length of a measured run (default 5, quick 2)"
    )
    parser.add_argument(
        "--requests", type=int, default=0, help="requests per measured sample (default: sized)"
    )
    parser.add_argument("--only", nargs="*", help="server names to run (default: all)")
    parser.add_argument(
        "--peers",
        type=Path,
        default=Path(os.environ.get("H2PEERS", "/tmp/h2peers")),
        help="virtual environment (or Python) with the peers: uvicorn, zttp, uvloop, "
        "hypercorn[trio], granian (default $H2PEERS or /tmp/h2peers)",
    )
    parser.add_argument("--output", type=Path, help="markdown file to write")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    output = args.output or RESULTS / ("http2-quick.md" if args.quick else "http2.md")
    if shutil.which("h2load") is None:
        print("h2load is not installed: apt-get install -y nghttp2-client")
        return 2
    peers = peers_python(args.peers)
    pythons = {PY: versions(PY)}
    if peers:
        pythons[peers] = versions(peers)
    else:
        print(f"no Python at {args.peers}: the peers are skipped (see --peers)")
    chosen: list[Server] = []
    skipped: list[str] = []
    for server in servers():
        if args.only and server.name not in args.only:
            continue
        python = peers if server.python == PEERS else PY
        missing = [n for n in server.needs if python and not pythons[python].get(n)]
        if python is None or missing:
            why = "no peers environment" if python is None else f"missing {', '.join(missing)}"
            skipped.append(f"{server.name}: {why}")
            print(f"skipping {server.name}: {why}")
            continue
        server.python = python
        chosen.append(server)
    server_pin, load_pin, threads = cpu_split()
    RESULTS.mkdir(exist_ok=True)
    log = RESULTS / "servers-h2c.log"
    log.write_text("")
    origin = palfrey_origin(PY)
    samples: dict[str, list[Sample]] = {}
    started = time.monotonic()
    for round_number in range(1, rounds + 1):
        for server in list(chosen):
            argv = [*server_pin, *(a.replace("{python}", server.python) for a in server.argv)]
            try:
                with running(server, argv, log) as (pid, port):
                    warm = h2load(load_pin, threads, port, pid, [WARM_UP])  # not recorded
                    counts = split(args.requests) if args.requests else sized(warm.rps, seconds)
                    sample = h2load(load_pin, threads, port, pid, counts)
                    sample.alive = answers(port)
            except StartFailed as error:
                print(f"round {round_number}/{rounds} {server.name}: {error}; dropped")
                skipped.append(f"{server.name}: {error}")
                chosen.remove(server)
                continue
            samples.setdefault(server.name, []).append(sample)
            print(
                f"round {round_number}/{rounds} {server.name:20} {sample.rps:8.0f} req/s  "
                f"{sample.done}/{sample.total} done, {sample.failed} failed  "
                f"{sample.cpu_us:5.0f} µs CPU/req  other load {sample.other_cpus:.2f} CPU"
                + ("" if sample.alive else "  STOPPED ANSWERING"),
                flush=True,
            )
    changed = palfrey_origin(PY) != origin
    settings = {
        "rounds": rounds,
        "seconds": seconds,
        "requests": args.requests,
        "origin": origin,
        "changed": changed,
        "threads": threads,
        "server_pin": server_pin,
        "load_pin": load_pin,
    }
    report = render(chosen, samples, skipped, settings, pythons)
    report += f"\nTotal run time: {time.monotonic() - started:.0f} s.\n"
    output.write_text(report)
    print(f"\nwrote {output}\n")
    print(report)
    return 0


def _rps(runs: list[Sample]) -> float:
    return median([s.rps for s in runs])


def _per_round(ours: list[Sample], theirs: list[Sample]) -> str:
    """Palfrey ÷ peer: ratio of the medians, then the lowest and highest per-round ratio."""
    if not ours or not theirs or not _rps(theirs):
        return "—"
    overall = _rps(ours) / _rps(theirs)
    if len(ours) < 2 or len(ours) != len(theirs) or not all(s.rps for s in theirs):
        return f"{overall:.2f}"
    per_round = [a.rps / b.rps for a, b in zip(ours, theirs, strict=True)]
    return f"{overall:.2f} ({min(per_round):.2f}-{max(per_round):.2f})"


def render(
    chosen: list[Server],
    samples: dict[str, list[Sample]],
    skipped: list[str],
    settings: dict,
    pythons: dict[str, dict[str, str | None]],
) -> str:
    names = [s.name for s in chosen if s.name in samples]
    ours = [name for name in PALFREY if name in names]
    if settings["requests"]:
        count = f"{settings['requests']:,} requests"
    else:
        count = f"requests for about {settings['seconds']:g} s at the warm-up's rate"
    command = shlex.join(["python", "benchmarks/h2c.py", *sys.argv[1:]])
    origin = settings["origin"]
    lines = ["# Palfrey HTTP/2 (h2c) benchmark", ""]
    lines.append(
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{settings['rounds']} interleaved round(s) of `h2load -c{CLIENTS} -m{STREAMS}` "
        f"against `GET {PATH}` (13 bytes), cleartext HTTP/2 with prior knowledge: per server "
        f"and round a warm-up run of -n{WARM_UP}, then {count}, in h2load runs of at most "
        f"-n{PER_RUN} ({PER_CONNECTION} streams per connection). Medians over rounds; one "
        "worker per server, access log off, loopback only. Higher is better except CPU time "
        "and request time."
    )
    lines += [
        "",
        f"Palfrey: `{origin.package}`, sources {origin.digest} (sha256 of its *.py files)"
        + (
            "; WARNING: its sources changed during the run, so rounds mix revisions."
            if settings["changed"]
            else ", unchanged during the run."
        ),
    ]
    others = sorted(s.other_cpus for runs in samples.values() for s in runs)
    if others:
        disturbed = sum(1 for value in others if value > DISTURBED)
        lines += [
            "",
            f"Other load (CPU time used by neither the server nor h2load, in CPUs) during the "
            f"{len(others)} measured runs: median {median(others):.2f}, highest "
            f"{others[-1]:.2f}; {disturbed} above {DISTURBED:g}. On a quiet machine it stays "
            "near 0; where it is not, something else shared the machine.",
        ]
    lines += ["", "## Results", ""]
    header = "| server | req/s | failed streams | CPU µs/req | req per server CPU-second "
    header += "| mean request time |" + "".join(f" {name} ÷ this |" for name in ours)
    lines += [header, "|---" * (6 + len(ours)) + "|"]
    for name in names:
        runs = samples[name]
        cpu = median([s.cpu_us for s in runs])
        failed = f"{sum(s.failed for s in runs)} of {sum(s.total for s in runs):,}"
        stopped = sum(1 for s in runs if not s.alive)
        if stopped:
            failed += f"; stopped answering in {stopped} of {len(runs)} rounds"
        cells = [
            f"{_rps(runs):,.0f}",
            failed,
            f"{cpu:.0f}",
            f"{1e6 / cpu:,.0f}" if cpu > 0 else "—",
            f"{median([s.mean_ms for s in runs]):.1f} ms",
        ]
        cells += ["—" if name == mine else _per_round(samples[mine], runs) for mine in ours]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Failed streams: h2load's `failed` summed over rounds (streams reset, errored or "
        "timed out, and answers other than 2xx/3xx), of all requests asked for. CPU: the "
        "server's user + system time over its process tree during the measured runs, per "
        "request done. Mean request time: h2load's, from sending a request to its response "
        "complete, with 32 in flight per connection. Ratios: Palfrey's median req/s over the "
        "row's, in brackets the lowest and highest per-round ratio (every round runs each "
        "server once, close together in time); above 1.00 is Palfrey faster.",
    ]
    if ours:
        lines += ["", "## Targets", ""]
        for mine in ours:
            for peer, wanted in TARGETS.items():
                if peer in names and _rps(samples[peer]):
                    ratio = _rps(samples[mine]) / _rps(samples[peer])
                    lines.append(
                        f"- {mine} at least {wanted:g} x {peer}: {ratio:.2f} {_mark(ratio, wanted)}"
                    )
            failed = sum(s.failed for s in samples[mine])
            mark = "PASS" if failed == 0 else "MISS"
            lines.append(f"- {mine} zero failed streams: {failed} {mark}")
            if CEILING in names:
                ratio = _rps(samples[mine]) / _rps(samples[CEILING])
                lines.append(f"- {mine} ÷ {CEILING} (the ceiling; no target): {ratio:.2f}")
    if skipped:
        lines += ["", "## Not run", ""]
        lines += [f"- {why}" for why in skipped]
    lines += ["", "## Machine", ""]
    lines += machine(pythons)
    lines += ["", "## Commands", "", "```"]
    for server in chosen:
        python = "python" if server.python == PY else server.python
        argv = [*settings["server_pin"]]
        argv += [a.replace("{python}", python).replace("{port}", "PORT") for a in server.argv]
        argv = [a.replace(str(HERE), "benchmarks") for a in argv]
        note = f"; {server.note}" if server.note else ""
        lines.append(f"# {server.name} (cwd benchmarks/, PYTHONPATH=benchmarks{note})")
        lines.append(shlex.join(argv))
    argv = h2load_argv(settings["load_pin"], settings["threads"], 0, 0)
    lines.append(f"# load: N = {WARM_UP} (warm-up), then N = {PER_RUN} repeated (the last shorter)")
    lines.append(shlex.join(argv).replace("-n0", "-nN").replace("127.0.0.1:0", "127.0.0.1:PORT"))
    lines += ["```", ""]
    return "\n".join(lines) + "\n"


def _mark(ratio: float, wanted: float) -> str:
    return "PASS" if ratio >= wanted else "MISS"


def machine(pythons: dict[str, dict[str, str | None]]) -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    h2load_version = subprocess.run(
        ["h2load", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    out = [f"- CPU: {cpu}, {os.cpu_count()} logical CPUs; {platform.system()} {platform.release()}"]
    for python, found in pythons.items():
        side = "Palfrey and bare-h2" if python == PY else "peers"
        listed = ", ".join(f"{name} {version}" for name, version in found.items() if version)
        out.append(f"- {side} (`{python}`): {listed}")
    out.append(f"- {h2load_version}")
    return out


if __name__ == "__main__":
    sys.exit(main())
