"""HTTP/1.1 benchmark: Palfrey against Uvicorn, Hypercorn and a bare trio ceiling.

    python benchmarks/run.py            # 3 rounds, about 8 minutes
    python benchmarks/run.py --quick    # 1 round of short runs, for development
    python benchmarks/run.py --only palfrey-h11 palfrey-httptools --baseline ../palfrey-base

Every server runs as a subprocess on 127.0.0.1 with one worker, access log
off, a 60 s keep-alive timeout and the app in ``benchmarks/apps.py``. The
server is pinned to the first CPU and wrk to the others when there are two or
more. Servers are interleaved (A B C ... A B C ...) and each figure is the
median over rounds. For each server and round: start it, measure the RSS each
idle keep-alive connection costs, run each wrk workload (recording the
server's CPU time per request as well), stop it.

``--baseline`` adds ``<name>@base`` rows: the same Palfrey servers run by
another checkout's Python (the "current" code is whatever the interpreter
running this script imports). They run in the same rounds, right next to their
current counterpart, and the report gains a current ÷ baseline table.

The table goes to ``benchmarks/results/latest.md`` (``quick.md`` for
``--quick``), with the machine, versions and exact commands. See
``benchmarks/README.md`` for the tools to install.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PY = sys.executable
KEEP_ALIVE = "60"


@dataclass
class Server:
    name: str
    argv: list[str]  # "{port}" is replaced by the port
    reference: str  # the Palfrey variant its ratio is taken against
    full_app: bool = True  # False: only answers /plaintext (the bare ceilings)
    baseline_of: str | None = None  # for "<name>@base" rows: the current server's name


@dataclass
class Workload:
    name: str
    title: str
    path: str
    connections: int
    extra: list[str] = field(default_factory=list)
    full_app_only: bool = False


WORKLOADS = [
    Workload("plaintext", "plaintext (keep-alive)", "/plaintext", 64),
    Workload("post", "POST 1 KiB echo", "/echo", 64, ["-s", str(HERE / "post_1k.lua")], True),
    Workload("close", "Connection: close", "/plaintext", 32, ["-H", "Connection: close"]),
    Workload("stream", "stream 1 MiB", "/stream", 8, [], True),
]


def has(module: str) -> bool:
    try:
        importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def servers() -> list[Server]:
    palfrey = [PY, "-m", "palfrey", "apps:app", "--app-dir", str(HERE), "--host", "127.0.0.1"]
    palfrey += ["--port", "{port}", "--no-access-log", "--log-level", "warning"]
    palfrey += ["--timeout-keep-alive", KEEP_ALIVE, "--backlog", "4096"]
    uvicorn = [PY, "-m", "uvicorn", "apps:app", "--app-dir", str(HERE), "--host", "127.0.0.1"]
    uvicorn += ["--port", "{port}", "--no-access-log", "--log-level", "warning"]
    uvicorn += ["--timeout-keep-alive", KEEP_ALIVE, "--backlog", "4096", "--workers", "1"]
    hypercorn = [PY, "-m", "hypercorn", "apps:app", "--bind", "127.0.0.1:{port}", "-w", "1"]
    hypercorn += ["--keep-alive", KEEP_ALIVE, "--backlog", "4096", "--log-level", "warning"]
    bare = [PY, str(HERE / "bare_trio.py"), "--port", "{port}"]
    out = [Server("palfrey-h11", [*palfrey, "--http", "h11"], "palfrey-h11")]
    if has("httptools"):
        out.append(
            Server("palfrey-httptools", [*palfrey, "--http", "httptools"], "palfrey-httptools")
        )
        # The cost of counting: the same server with --metrics-bind on.
        argv = [*palfrey, "--http", "httptools", "--metrics-bind", "127.0.0.1:0"]
        out.append(Server("palfrey-httptools-metrics", argv, "palfrey-httptools"))
    out.append(
        Server("uvicorn-h11", [*uvicorn, "--http", "h11", "--loop", "asyncio"], "palfrey-h11")
    )
    if has("httptools") and has("uvloop"):
        argv = [*uvicorn, "--http", "httptools", "--loop", "uvloop"]
        out.append(Server("uvicorn-httptools-uvloop", argv, "palfrey-httptools"))
    out.append(Server("hypercorn-trio", [*hypercorn, "-k", "trio"], "palfrey-h11"))
    out.append(Server("hypercorn-asyncio", [*hypercorn, "-k", "asyncio"], "palfrey-h11"))
    out.append(Server("bare-trio", [*bare, "--parse", "none"], "palfrey-h11", full_app=False))
    argv = [*bare, "--parse", "h11"]
    out.append(Server("bare-trio-h11", argv, "palfrey-h11", full_app=False))
    if has("httptools"):
        argv = [*bare, "--parse", "httptools"]
        out.append(Server("bare-trio-httptools", argv, "palfrey-httptools", full_app=False))
        argv = [*bare, "--parse", "asgi"]
        out.append(Server("bare-trio-asgi", argv, "palfrey-httptools"))
    return out


BASE = "@base"
DISTURBED = 0.1  # other load, in CPUs, above which a wrk run counts as disturbed


def baseline_python(path: Path) -> str:
    """The interpreter for ``--baseline``: ``PATH/.venv/bin/python``, or PATH if it is a Python."""
    python = (path / ".venv" / "bin" / "python" if path.is_dir() else path).absolute()
    if not (python.is_file() and os.access(python, os.X_OK)):
        raise SystemExit(f"--baseline {path}: no Python at {python}")
    return str(python)  # not resolved: a venv's python is a symlink out of the venv


def with_baseline(chosen: list[Server], python: str, httptools: bool) -> list[Server]:
    """``chosen`` with a "<name>@base" copy run by ``python`` right after each Palfrey server."""
    out = []
    for server in chosen:
        out.append(server)
        if server.argv[:3] != [PY, "-m", "palfrey"]:
            continue
        if "httptools" in server.name and not httptools:
            print(f"skipping {server.name}{BASE}: the baseline Python has no httptools")
            continue
        argv = [python, *server.argv[1:]]
        out.append(Server(server.name + BASE, argv, server.reference, baseline_of=server.name))
    return out


def round_order(chosen: list[Server], round_number: int) -> list[Server]:
    """The servers in running order: every other round each current/@base pair swaps places,
    so that neither side always runs first."""
    order = list(chosen)
    if round_number % 2 == 0:
        for i, server in enumerate(order):
            if server.baseline_of:
                order[i - 1], order[i] = order[i], order[i - 1]
    return order


@dataclass
class Origin:
    """Which Palfrey an interpreter runs, to tell the two sides of a comparison apart."""

    package: Path  # the imported palfrey package directory
    digest: str  # sha256 of its *.py files (paths and contents), first 12 hex digits
    versions: dict[str, str | None]  # Python and the hot-path libraries; None: not installed


ORIGIN_SCRIPT = """
import importlib.metadata, json, pathlib, platform, palfrey
versions = {"Python": platform.python_version()}
for name in ("trio", "h11", "httptools"):
    try:
        versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        versions[name] = None
print(json.dumps([str(pathlib.Path(palfrey.__file__).parent), versions]))
"""


def palfrey_origin(python: str) -> Origin:
    """The Palfrey that ``python`` imports when started as the servers are (cwd, PYTHONPATH)."""
    out = subprocess.run(
        [python, "-c", ORIGIN_SCRIPT],
        cwd=HERE,
        env=server_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    package, versions = json.loads(out.stdout)
    digest = hashlib.sha256()
    for source in sorted(Path(package).rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0")
        digest.update(source.read_bytes())
    return Origin(Path(package), digest.hexdigest()[:12], versions)


def cpu_split() -> tuple[list[str], list[str], int]:
    """taskset prefixes for the server and for wrk, and the number of wrk threads."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return [], [], 1
    load = cpus[1:]
    return (
        ["taskset", "-c", str(cpus[0])],
        ["taskset", "-c", ",".join(map(str, load))],
        min(len(load), 4),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str = "/plaintext", timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def server_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(HERE), "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def running(server: Server, pin: list[str], log: Path) -> Iterator[tuple[int, int]]:
    """Start ``server``, wait until it answers (at most 30 s), yield (pid, port), stop it."""
    port = free_port()
    argv = [*pin, *(arg.replace("{port}", str(port)) for arg in server.argv)]
    with log.open("ab") as errors:
        process = subprocess.Popen(argv, cwd=HERE, env=server_env(), stdout=errors, stderr=errors)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {process.returncode}; see {log}")
            with contextlib.suppress(OSError):
                if http_get(port).startswith(b"HTTP/1.1 200"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} did not answer within 30 s; see {log}")
            time.sleep(0.1)
        yield process.pid, port
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Hypercorn serves from a child process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    tree = []
    todo = [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_rss_kib(pid: int) -> int:
    """VmRSS of ``pid``'s process tree."""
    total = 0
    for current in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid``'s process tree (live processes only)."""
    ticks = 0
    for current in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """Non-idle CPU time of the whole machine, all CPUs, steal included (``/proc/stat``)."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def idle_connection_kib(pid: int, port: int, count: int) -> float:
    """RSS growth per idle keep-alive connection that has served one request."""
    request = b"GET /plaintext HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(200):  # warm the request path on one connection first
        http_get(port)
    time.sleep(0.5)
    before = tree_rss_kib(pid)
    sockets: list[socket.socket] = []
    deadline = time.monotonic() + 60
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sockets.append(sock)
            sock.sendall(request)
            data = b""
            while not data.endswith(b"Hello, world!"):
                chunk = sock.recv(4096)
                if not chunk:
                    raise RuntimeError("server closed an idle-test connection")
                data += chunk
        time.sleep(1.0)
        after = tree_rss_kib(pid)
        alive = sum(1 for sock in sockets if _still_open(sock))
    finally:
        for sock in sockets:
            sock.close()
    if alive < len(sockets):
        raise RuntimeError(f"only {alive} of {len(sockets)} idle connections stayed open")
    return (after - before) / max(1, len(sockets))


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


@dataclass
class Settings:
    rounds: int
    seconds: float
    idle: int
    threads: int
    server_pin: list[str]
    load_pin: list[str]


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_us: float = math.nan  # server CPU time (user + system) per request, microseconds
    # CPUs' worth of time that neither the server nor wrk used (other processes, interrupts,
    # steal): what else the machine was doing during the run, the main source of noise.
    other_cpus: float = math.nan


def wrk(
    pin: list[str], threads: int, workload: Workload, pid: int, port: int, *, seconds: float
) -> Sample:
    argv = [*pin, "wrk", f"-t{threads}", f"-c{workload.connections}", f"-d{seconds:g}s"]
    argv += ["--timeout", "5s", "--latency", *workload.extra]
    argv.append(f"http://127.0.0.1:{port}{workload.path}")
    before = (tree_cpu_seconds(pid), children_cpu_seconds(), machine_busy_seconds())
    started = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    elapsed = time.monotonic() - started
    server = tree_cpu_seconds(pid) - before[0]
    load = children_cpu_seconds() - before[1]  # wrk, now that it has been waited for
    busy = machine_busy_seconds() - before[2]
    sample = parse_wrk(out.stdout)
    sample.cpu_us = server * 1e6 / max(1, sample.requests)
    sample.other_cpus = max(0.0, busy - server - load) / elapsed
    return sample


def parse_wrk(text: str) -> Sample:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text)[1])  # type: ignore[index]
    requests = int(re.search(r"(\d+) requests in", text)[1])  # type: ignore[index]
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", text, re.MULTILINE))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(non_2xx[1]) if non_2xx else 0
    p50, p99 = _ms(latency.get("50", "0ms")), _ms(latency.get("99", "0ms"))
    return Sample(rps, p50, p99, errors, requests)


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


WRK_COMMAND = "wrk -t{threads} -c{connections} -d{seconds:g}s --timeout 5s --latency{extra} URL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 2 s runs, 500 idle conns")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default 4, quick 2)")
    parser.add_argument("--idle", type=int, help="idle connections (default 2000, quick 500)")
    parser.add_argument("--only", nargs="*", help="server names to run (default: all)")
    parser.add_argument("--output", type=Path, help="markdown file to write")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="PATH",
        help="another Palfrey checkout with its own .venv (or the Python to use): adds "
        f"<name>{BASE} rows for the chosen Palfrey servers and a current ÷ baseline table",
    )
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (2.0 if args.quick else 4.0)
    idle = args.idle or (500 if args.quick else 2000)
    output = args.output or RESULTS / ("quick.md" if args.quick else "latest.md")
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (see benchmarks/README.md)")
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = idle + 1024
    if soft < wanted:  # servers inherit it; 2,000 idle sockets need as many descriptors
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    chosen = [s for s in servers() if not args.only or s.name in args.only]
    pythons = {"current": PY, "baseline": baseline_python(args.baseline)} if args.baseline else {}
    origins = {side: palfrey_origin(python) for side, python in pythons.items()}
    if origins:
        if origins["current"].package == origins["baseline"].package:
            print(f"--baseline imports the same palfrey as {PY}: {origins['current'].package}")
            return 2
        httptools = origins["baseline"].versions["httptools"] is not None
        chosen = with_baseline(chosen, pythons["baseline"], httptools)
        for side, origin in origins.items():
            print(f"{side}: {origin.package} (sources {origin.digest})")
    server_pin, load_pin, threads = cpu_split()
    RESULTS.mkdir(exist_ok=True)
    log = RESULTS / "servers.log"
    log.write_text("")
    samples: dict[tuple[str, str], list[Sample]] = {}
    rss: dict[str, list[float]] = {}
    started = time.monotonic()
    for round_number in range(1, rounds + 1):
        for server in round_order(chosen, round_number):
            with running(server, server_pin, log) as (pid, port):
                kib = idle_connection_kib(pid, port, idle)
                rss.setdefault(server.name, []).append(kib)
                wrk(load_pin, threads, WORKLOADS[0], pid, port, seconds=1)  # warm-up, not recorded
                line = [f"round {round_number}/{rounds} {server.name:26} rss/conn {kib:6.1f} KiB"]
                other_cpus = 0.0
                for workload in WORKLOADS:
                    if workload.full_app_only and not server.full_app:
                        continue
                    sample = wrk(load_pin, threads, workload, pid, port, seconds=seconds)
                    samples.setdefault((server.name, workload.name), []).append(sample)
                    line.append(f"{workload.name} {sample.rps:7.0f} ({sample.cpu_us:4.0f} µs)")
                    other_cpus = max(other_cpus, sample.other_cpus)
                line.append(f"other load up to {other_cpus:.2f} CPU")
                print("  ".join(line), flush=True)
    settings = Settings(rounds, seconds, idle, threads, server_pin, load_pin)
    # Each round restarts the servers, so a tree edited during the run mixes revisions.
    changed = [side for side, python in pythons.items() if palfrey_origin(python) != origins[side]]
    compared = comparison(chosen, samples, rss, origins, changed) if origins else []
    report = render(chosen, samples, rss, settings, compared)
    report += f"\nTotal run time: {time.monotonic() - started:.0f} s.\n"
    output.write_text(report)
    print(f"\nwrote {output}\n")
    print(report)
    return 0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render(
    chosen: list[Server],
    samples: dict[tuple[str, str], list[Sample]],
    rss: dict[str, list[float]],
    settings: Settings,
    compared: list[str],
) -> str:
    def rps(server: str, workload: str) -> float:
        return median([s.rps for s in samples.get((server, workload), [])])

    names = [s.name for s in chosen]
    lines = ["# Palfrey HTTP/1.1 benchmark", ""]
    command = shlex.join(["python", "benchmarks/run.py", *sys.argv[1:]])
    lines.append(
        f"`{command}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {settings.rounds} round(s), "
        f"{settings.seconds:g} s per wrk run, medians over rounds; one worker per server, "
        "access log off, loopback only. Higher is better except memory and CPU time."
    )
    others = sorted(s.other_cpus for runs in samples.values() for s in runs)
    disturbed = sum(1 for value in others if value > DISTURBED)
    lines += [
        "",
        f"Other load (CPU time used by neither the server nor wrk, in CPUs) during the "
        f"{len(others)} wrk runs: median {median(others):.2f}, highest {others[-1]:.2f}; "
        f"{disturbed} above {DISTURBED:g}. On a quiet machine it stays near 0; where it is "
        "not, something else shared the machine and the figures move with it.",
    ]
    lines += compared
    lines += ["", "## Requests per second", ""]
    header = "| server | " + " | ".join(w.title for w in WORKLOADS)
    lines += [header + " | RSS per idle connection |", "|---" * (len(WORKLOADS) + 2) + "|"]
    for name in names:
        cells = [_fmt(rps(name, w.name)) for w in WORKLOADS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {median(rss[name]):.1f} KiB |")
    lines += ["", "## Server CPU time per request (µs, user + system, median)", ""]
    lines += ["| server | " + " | ".join(w.title for w in WORKLOADS) + " |"]
    lines.append("|---" * (len(WORKLOADS) + 1) + "|")
    for name in names:
        cells = [_us(cpu_us(samples, name, w.name)) for w in WORKLOADS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    others = [
        server
        for server in chosen
        if server.name != server.reference
        and server.reference in names
        and not server.baseline_of  # those are in the current ÷ baseline table
    ]
    if others:
        lines += ["", "## Relative to Palfrey (same HTTP parser; 1.00 = as fast as Palfrey)", ""]
        lines += ["| server | against | " + " | ".join(w.title for w in WORKLOADS) + " |"]
        lines.append("|---" * (len(WORKLOADS) + 2) + "|")
    for server in others:
        cells = [_ratio(rps(server.name, w.name), rps(server.reference, w.name)) for w in WORKLOADS]
        lines.append(f"| {server.name} | {server.reference} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets (ratio per workload; PASS or MISS)", ""]
    lines += targets(rps, rss, names)
    lines += ["", "## Latency, plaintext keep-alive (median p50 / p99, ms)", ""]
    lines += [
        "| server | p50 | p99 | wrk errors (all workloads, all rounds) |",
        "|---|---|---|---|",
    ]
    for name in names:
        plain = samples.get((name, "plaintext"), [])
        errors = sum(
            s.errors for (server, _), runs in samples.items() if server == name for s in runs
        )
        p50 = median([s.p50_ms for s in plain])
        p99 = median([s.p99_ms for s in plain])
        lines.append(f"| {name} | {p50:.2f} | {p99:.2f} | {errors} |")
    lines += ["", "## Machine", ""]
    lines += machine()
    lines += ["", "## Commands", "", "```"]
    port = "PORT"
    for server in chosen:
        argv = [*settings.server_pin, *(a.replace("{port}", port) for a in server.argv)]
        argv = ["python" if a == PY else a.replace(str(HERE), "benchmarks") for a in argv]
        lines.append(f"# {server.name} (cwd benchmarks/, PYTHONPATH=benchmarks)")
        lines.append(shlex.join(argv))
    lines.append("# load, per workload (URL http://127.0.0.1:PORT<path>)")
    for w in WORKLOADS:
        extra = "".join(f" {shlex.quote(a)}" for a in w.extra).replace(str(HERE), "benchmarks")
        command = WRK_COMMAND.format(
            threads=settings.threads,
            connections=w.connections,
            seconds=settings.seconds,
            extra=extra,
        )
        lines.append(" ".join([*settings.load_pin, command.replace("URL", f"...{w.path}")]))
    lines.append(
        f"# memory: {settings.idle} keep-alive connections each served one GET /plaintext,"
        " then idle; (VmRSS after - before) / connections, over the server's process tree"
    )
    lines += ["```", ""]
    lines.append(
        "HTTP/2 is measured by `benchmarks/h2c.py` (results/http2.md). The bare-trio rows "
        "other than bare-trio-asgi answer /plaintext only, so they have no POST or "
        "streaming figures."
    )
    return "\n".join(lines) + "\n"


def cpu_us(samples: dict[tuple[str, str], list[Sample]], server: str, workload: str) -> float:
    return median([s.cpu_us for s in samples.get((server, workload), [])])


def comparison(
    chosen: list[Server],
    samples: dict[tuple[str, str], list[Sample]],
    rss: dict[str, list[float]],
    origins: dict[str, Origin],
    changed: list[str],
) -> list[str]:
    """The current ÷ baseline section: ratios of medians, with the range of per-round ratios
    (each round runs the two sides back to back, so these pair like with like)."""
    lines = ["", "## Current ÷ baseline", ""]
    for side, origin in origins.items():
        versions = ", ".join(
            f"{name} {version or 'missing'}" for name, version in origin.versions.items()
        )
        lines.append(f"- {side}: `{origin.package}`, sources {origin.digest}; {versions}")
    if origins["current"].digest == origins["baseline"].digest:
        lines.append("- The two sides have the same sources: these ratios are the run's noise.")
    for side in changed:
        lines.append(f"- WARNING: the {side} sources changed during the run; rounds mix revisions.")
    lines += [
        "",
        "Each cell: ratio of the medians over rounds, then the lowest and highest per-round "
        "ratio. Requests per second: above 1.00 is current faster. CPU time per request: "
        "below 1.00 is current cheaper.",
        "",
    ]
    header = " | ".join(w.title for w in WORKLOADS)
    lines += [f"| server | measure | {header} | RSS per idle connection, current / base |"]
    lines.append("|---" * (len(WORKLOADS) + 3) + "|")
    for base in chosen:
        if not base.baseline_of:
            continue
        current = base.baseline_of
        kib = f"{median(rss[current]):.1f} / {median(rss[base.name]):.1f} KiB"
        for measure, field_name, last in (("req/s", "rps", kib), ("CPU/req", "cpu_us", "")):
            cells = []
            for w in WORKLOADS:
                ours = [getattr(s, field_name) for s in samples.get((current, w.name), [])]
                theirs = [getattr(s, field_name) for s in samples.get((base.name, w.name), [])]
                cells.append(_paired(ours, theirs))
            lines.append(f"| {current} | {measure} | " + " | ".join(cells) + f" | {last} |")
    return lines


def _paired(ours: list[float], theirs: list[float]) -> str:
    if not ours or not theirs:
        return "—"
    overall = f"{median(ours) / median(theirs):.2f}"
    if len(ours) < 2:
        return overall
    per_round = [a / b for a, b in zip(ours, theirs, strict=True)]
    return f"{overall} ({min(per_round):.2f}-{max(per_round):.2f})"


def targets(
    rps: Callable[[str, str], float], rss: dict[str, list[float]], names: list[str]
) -> list[str]:
    checks = [
        ("palfrey-h11", "uvicorn-h11", 1.0, ("plaintext", "post", "close", "stream")),
        ("palfrey-h11", "hypercorn-trio", 3.0, ("plaintext", "post", "close", "stream")),
        ("palfrey-httptools", "uvicorn-httptools-uvloop", 0.9, ("plaintext", "post", "close")),
        ("palfrey-httptools", "uvicorn-httptools-uvloop", 0.8, ("stream",)),
        ("palfrey-httptools", "bare-trio-httptools", 0.6, ("plaintext", "close")),
        ("palfrey-httptools-metrics", "palfrey-httptools", 0.95, ("plaintext", "post", "close")),
    ]
    # Not targets: whether the httptools targets are within reach of an ASGI server on
    # Palfrey's socket layer that keeps its contracts and does nothing else.
    references = [
        ("bare-trio-asgi", "uvicorn-httptools-uvloop", 0.9, ("plaintext", "post", "close")),
        ("bare-trio-asgi", "uvicorn-httptools-uvloop", 0.8, ("stream",)),
    ]
    out = []
    for check in checks + references:
        ours, theirs, wanted, workloads = check
        if ours not in names or theirs not in names:
            continue
        parts = []
        for workload in workloads:
            ratio = rps(ours, workload) / rps(theirs, workload)
            parts.append(f"{workload} {ratio:.2f} {_mark(ratio >= wanted)}")
        note = " (a reference, not a target)" if check in references else ""
        out.append(f"- {ours} at least {wanted:g} x {theirs}{note}: " + ", ".join(parts))
    for name in names:
        if name.startswith("palfrey"):
            kib = median(rss[name])
            out.append(
                f"- {name} at most 8 KiB per idle connection: {kib:.1f} KiB {_mark(kib <= 8)}"
            )
    return out


def _mark(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def _fmt(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.0f}"


def _us(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.0f}"


def _ratio(value: float, reference: float) -> str:
    return "—" if math.isnan(value) or math.isnan(reference) else f"{value / reference:.2f}"


def machine() -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in ("palfrey", "trio", "h11", "httptools", "uvicorn", "uvloop", "hypercorn"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{package} {importlib.metadata.version(package)}")
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical CPUs; {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- {', '.join(versions)}",
        f"- {(wrk_version.stdout or wrk_version.stderr).splitlines()[0]}",
    ]


if __name__ == "__main__":
    sys.exit(main())
