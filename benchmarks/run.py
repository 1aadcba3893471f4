"""HTTP/1.1 benchmark: Palfrey against Uvicorn, Hypercorn and a bare trio ceiling.

    python benchmarks/run.py            # 3 rounds, about 8 minutes
    python benchmarks/run.py --quick    # 1 round of short runs, for development

Every server runs as a subprocess on 127.0.0.1 with one worker, access log
off, a 60 s keep-alive timeout and the app in ``benchmarks/apps.py``. The
server is pinned to the first CPU and wrk to the others when there are two or
more. Servers are interleaved (A B C ... A B C ...) and each figure is the
median over rounds. For each server and round: start it, measure the RSS each
idle keep-alive connection costs, run each wrk workload, stop it.

The table goes to ``benchmarks/results/latest.md`` (``quick.md`` for
``--quick``), with the machine, versions and exact commands. See
``benchmarks/README.md`` for the tools to install.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
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
    return out


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


@contextlib.contextmanager
def running(server: Server, pin: list[str], log: Path) -> Iterator[tuple[int, int]]:
    """Start ``server``, wait until it answers (at most 30 s), yield (pid, port), stop it."""
    port = free_port()
    argv = [*pin, *(arg.replace("{port}", str(port)) for arg in server.argv)]
    env = {**os.environ, "PYTHONPATH": str(HERE), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as errors:
        process = subprocess.Popen(argv, cwd=HERE, env=env, stdout=errors, stderr=errors)
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


def tree_rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` and all its descendants (Hypercorn serves from a child process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


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
    quick: bool


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(pin: list[str], threads: int, workload: Workload, port: int, seconds: float) -> Sample:
    argv = [*pin, "wrk", f"-t{threads}", f"-c{workload.connections}", f"-d{seconds:g}s"]
    argv += ["--timeout", "5s", "--latency", *workload.extra]
    argv.append(f"http://127.0.0.1:{port}{workload.path}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    return parse_wrk(out.stdout)


def parse_wrk(text: str) -> Sample:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text)[1])  # type: ignore[index]
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", text, re.MULTILINE))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(non_2xx[1]) if non_2xx else 0
    return Sample(rps, _ms(latency.get("50", "0ms")), _ms(latency.get("99", "0ms")), errors)


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
    server_pin, load_pin, threads = cpu_split()
    RESULTS.mkdir(exist_ok=True)
    log = RESULTS / "servers.log"
    log.write_text("")
    samples: dict[tuple[str, str], list[Sample]] = {}
    rss: dict[str, list[float]] = {}
    started = time.monotonic()
    for round_number in range(1, rounds + 1):
        for server in chosen:
            with running(server, server_pin, log) as (pid, port):
                kib = idle_connection_kib(pid, port, idle)
                rss.setdefault(server.name, []).append(kib)
                wrk(load_pin, threads, WORKLOADS[0], port, 1)  # warm-up, not recorded
                line = [f"round {round_number}/{rounds} {server.name:26} rss/conn {kib:6.1f} KiB"]
                for workload in WORKLOADS:
                    if workload.full_app_only and not server.full_app:
                        continue
                    sample = wrk(load_pin, threads, workload, port, seconds)
                    samples.setdefault((server.name, workload.name), []).append(sample)
                    line.append(f"{workload.name} {sample.rps:9.0f}")
                print("  ".join(line), flush=True)
    settings = Settings(rounds, seconds, idle, threads, server_pin, load_pin, args.quick)
    report = render(chosen, samples, rss, settings)
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
) -> str:
    def rps(server: str, workload: str) -> float:
        return median([s.rps for s in samples.get((server, workload), [])])

    names = [s.name for s in chosen]
    lines = ["# Palfrey HTTP/1.1 benchmark", ""]
    lines.append(
        f"`python benchmarks/run.py{' --quick' if settings.quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {settings.rounds} round(s), "
        f"{settings.seconds:g} s per wrk run, medians over rounds; one worker per server, "
        "access log off, loopback only. Higher is better except memory."
    )
    lines += ["", "## Requests per second", ""]
    header = "| server | " + " | ".join(w.title for w in WORKLOADS)
    lines += [header + " | RSS per idle connection |", "|---" * (len(WORKLOADS) + 2) + "|"]
    for name in names:
        cells = [_fmt(rps(name, w.name)) for w in WORKLOADS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {median(rss[name]):.1f} KiB |")
    lines += ["", "## Relative to Palfrey (same HTTP parser; 1.00 = as fast as Palfrey)", ""]
    lines += ["| server | against | " + " | ".join(w.title for w in WORKLOADS) + " |"]
    lines.append("|---" * (len(WORKLOADS) + 2) + "|")
    for server in chosen:
        if server.name == server.reference or server.reference not in names:
            continue
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
        "HTTP/2 (h2load) is not measured yet: Palfrey does not serve HTTP/2. Bare-trio rows "
        "answer /plaintext only, so they have no POST or streaming figures."
    )
    return "\n".join(lines) + "\n"


def targets(
    rps: Callable[[str, str], float], rss: dict[str, list[float]], names: list[str]
) -> list[str]:
    checks = [
        ("palfrey-h11", "uvicorn-h11", 1.0, ("plaintext", "post", "close", "stream")),
        ("palfrey-h11", "hypercorn-trio", 3.0, ("plaintext", "post", "close", "stream")),
        (
            "palfrey-httptools",
            "uvicorn-httptools-uvloop",
            0.8,
            ("plaintext", "post", "close", "stream"),
        ),
        ("palfrey-httptools", "bare-trio-httptools", 0.6, ("plaintext", "close")),
    ]
    out = []
    for ours, theirs, wanted, workloads in checks:
        if ours not in names or theirs not in names:
            continue
        parts = []
        for workload in workloads:
            ratio = rps(ours, workload) / rps(theirs, workload)
            parts.append(f"{workload} {ratio:.2f} {_mark(ratio >= wanted)}")
        out.append(f"- {ours} at least {wanted:g} x {theirs}: " + ", ".join(parts))
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
