"""Multi-process serving: Palfrey, Uvicorn and Granian with 1 and with 2 worker processes.

    python benchmarks/workers.py      # 5 interleaved rounds of 5 s -> results/workers.md
    python benchmarks/workers.py --rounds 3 --seconds 3 --connections 64
    python benchmarks/workers.py --only palfrey uvicorn --workers 1 2

Every server serves ``GET /plaintext`` ("Hello, world!", 13 bytes) from ``apps.py`` on
127.0.0.1 with the access log off: ``palfrey --http httptools`` (this script's interpreter),
``uvicorn --http httptools --loop uvloop`` and ``granian --interface asgi --http 1 --loop
uvloop`` (both from the peers' virtual environment, ``--peers``, default ``$WORKERPEERS`` or
``/tmp/workerpeers``), each with ``--workers N``. Load is wrk, keep-alive, ``-t1 -c64 -d5s``
by default.

Nothing is pinned: the point is to see what a second worker buys, so every process may use
every CPU. On a 2-CPU machine 2 workers plus wrk oversubscribe the CPUs (wrk alone takes a
good part of one), so the "2 workers" figures there measure sharing as much as scaling; the
report says so and records how many CPUs the server and wrk used.

Per round every (server, workers) configuration runs once, in an order rotated each round
(A B C ... then B C ... A): start it in its own session (process group), wait until it
answers, wait until it has its worker processes, warm up with wrk for 1 s, run wrk, check it
still answers, then SIGINT the leader and, after at most 10 s, SIGKILL whatever is left of
the process group (workers included). Figures are medians over rounds. Alongside req/s the
report gives the server's CPU time per request and CPUs used (whole process tree), wrk's
CPUs, and for several workers how the server's CPU time was split between the two busiest
processes (50/50 is an even share), which shows a worker that takes all the connections.
The helpers (wrk output, /proc accounting, ports) are ``run.py``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from h2c import VERSIONS_SCRIPT, peers_python
from run import (
    HERE,
    KEEP_ALIVE,
    PY,
    RESULTS,
    Sample,
    children_cpu_seconds,
    free_port,
    http_get,
    machine,
    machine_busy_seconds,
    median,
    parse_wrk,
    process_tree,
    server_env,
)

PEERS = "peers"  # Server.python: the peers' interpreter, filled in from --peers
PALFREY = "palfrey"
PACKAGES = ("palfrey", "trio", "httptools", "uvicorn", "uvloop", "granian")
STOP_TIMEOUT = 10.0  # seconds the leader has to exit after SIGINT before the group is killed
START_TIMEOUT = 30.0
QUIET = 0.15  # CPUs busy below which the machine counts as quiet before a run
DISTURBED = 0.1  # other load, in CPUs, above which a run counts as disturbed
#: Process groups started and not yet killed, so that an interrupted run leaves nothing behind.
LIVE_GROUPS: set[int] = set()


@dataclass
class Server:
    name: str
    argv: list[str]  # "{python}", "{port}" and "{workers}" are filled in
    python: str  # PY, or PEERS
    needs: tuple[str, ...]  # distributions that interpreter must have


def servers() -> list[Server]:
    common = ["apps:app", "--host", "127.0.0.1", "--port", "{port}", "--workers", "{workers}"]
    palfrey = ["{python}", "-m", "palfrey", *common, "--app-dir", str(HERE)]
    palfrey += ["--http", "httptools", "--no-access-log", "--log-level", "warning"]
    palfrey += ["--timeout-keep-alive", KEEP_ALIVE, "--backlog", "4096"]
    uvicorn = ["{python}", "-m", "uvicorn", *common, "--app-dir", str(HERE)]
    uvicorn += ["--http", "httptools", "--loop", "uvloop", "--no-access-log"]
    uvicorn += ["--log-level", "warning", "--timeout-keep-alive", KEEP_ALIVE, "--backlog", "4096"]
    granian = ["{python}", "-m", "granian", *common, "--interface", "asgi", "--http", "1"]
    granian += ["--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
    granian += ["--backlog", "4096"]
    return [
        Server(PALFREY, palfrey, PY, ("palfrey", "httptools")),
        Server("uvicorn", uvicorn, PEERS, ("uvicorn", "httptools", "uvloop")),
        Server("granian", granian, PEERS, ("granian", "uvloop")),
    ]


def fill(argv: list[str], python: str, port: int | str, workers: int | str) -> list[str]:
    values = {"{python}": python, "{port}": str(port), "{workers}": str(workers)}
    return [values.get(arg, arg) for arg in argv]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
                    members.append(int(entry.name))
    return members


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    LIVE_GROUPS.discard(pgid)


def process_cpu(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each live process in ``pids``."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return out


@dataclass
class Stop:
    seconds: float = float("nan")  # SIGINT to the leader's exit
    leftovers: list[int] = field(default_factory=list)  # group members alive after the leader
    killed: bool = False  # the leader needed SIGKILL


@contextlib.contextmanager
def running(
    server: Server, python: str, workers: int, log: Path, stop: Stop
) -> Iterator[tuple[int, int]]:
    """Start ``server`` with ``workers`` in a new session, wait until it answers and has its
    processes, yield (pid, port); then SIGINT the leader and SIGKILL the whole group."""
    port = free_port()
    argv = fill(server.argv, python, port, workers)
    with log.open("ab") as errors:
        errors.write(f"\n=== {server.name} x{workers}: {shlex.join(argv)}\n".encode())
        errors.flush()
        process = subprocess.Popen(
            argv,
            cwd=HERE,
            env=server_env(),
            stdout=errors,
            stderr=errors,
            start_new_session=True,
        )
    LIVE_GROUPS.add(process.pid)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {process.returncode}; see {log}")
            with contextlib.suppress(OSError):
                if http_get(port).startswith(b"HTTP/1.1 200"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} did not answer within 30 s; see {log}")
            time.sleep(0.1)
        # One worker answering is not all of them: wait for the process count to settle.
        settled, count = time.monotonic(), len(process_tree(process.pid))
        while time.monotonic() - settled < 1.0 and time.monotonic() < deadline:
            time.sleep(0.1)
            now = len(process_tree(process.pid))
            if now != count:
                settled, count = time.monotonic(), now
        yield process.pid, port
    finally:
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop.killed = True
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
        stop.seconds = time.monotonic() - started
        time.sleep(0.2)  # let workers that exit on their own do so
        stop.leftovers = group_members(process.pid)
        kill_group(process.pid)


@dataclass
class Run:
    sample: Sample
    processes: int  # in the server's tree during the run
    server_cpus: float  # the server's CPU time / wall time
    wrk_cpus: float
    busiest_share: float  # of the two busiest processes' CPU time, the busier one's share
    alive: bool  # answered a GET after the run
    stop: Stop
    attempts: int = 1  # runs made for this sample: disturbed ones are run again (--retries)


def measure(argv: list[str], pid: int, seconds: float) -> tuple[Sample, dict[int, float], float]:
    """One wrk run: the sample, CPU seconds per server process, wrk's CPU seconds."""
    tree = process_tree(pid)
    before = (process_cpu(tree), children_cpu_seconds(), machine_busy_seconds())
    started = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    elapsed = time.monotonic() - started
    after = process_cpu(tree)
    per_process = {p: after[p] - before[0].get(p, 0.0) for p in after}
    load = children_cpu_seconds() - before[1]
    busy = machine_busy_seconds() - before[2]
    sample = parse_wrk(out.stdout)
    server = sum(per_process.values())
    sample.cpu_us = server * 1e6 / max(1, sample.requests)
    sample.other_cpus = max(0.0, busy - server - load) / elapsed
    return sample, {p: v / elapsed for p, v in per_process.items()}, load / elapsed


def wrk_argv(threads: int, connections: int, seconds: float, port: int | str) -> list[str]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s"]
    return [*argv, "--latency", f"http://127.0.0.1:{port}/plaintext"]


def settle(limit: float) -> float:
    """Wait, at most ``limit`` seconds, until the machine is quiet (under ``QUIET`` CPUs busy
    over half a second); return the seconds waited."""
    started = time.monotonic()
    while True:
        before, at = machine_busy_seconds(), time.monotonic()
        time.sleep(0.5)
        busy = (machine_busy_seconds() - before) / (time.monotonic() - at)
        waited = time.monotonic() - started
        if busy < QUIET or waited >= limit:
            return waited


def one_run(server: Server, python: str, workers: int, args: argparse.Namespace, log: Path) -> Run:
    stop = Stop()
    settle(args.settle)
    with running(server, python, workers, log, stop) as (pid, port):
        warm = wrk_argv(args.threads, args.connections, 1, port)
        subprocess.run(warm, capture_output=True, timeout=60, check=True)
        argv = wrk_argv(args.threads, args.connections, args.seconds, port)
        sample, cpus, wrk_cpus = measure(argv, pid, args.seconds)
        alive = False
        with contextlib.suppress(OSError):
            alive = http_get(port).startswith(b"HTTP/1.1 200")
        processes = len(process_tree(pid))
    busiest = sorted(cpus.values(), reverse=True)[:2]
    share = busiest[0] / sum(busiest) if len(busiest) == 2 and sum(busiest) > 0 else 1.0
    return Run(sample, processes, sum(cpus.values()), wrk_cpus, share, alive, stop)


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


def on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through running(), which kills the group


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="default: 1 2")
    parser.add_argument("--only", nargs="*", help="servers to run: palfrey uvicorn granian")
    parser.add_argument(
        "--peers",
        type=Path,
        default=Path(os.environ.get("WORKERPEERS", "/tmp/workerpeers")),
        help="virtual environment (or Python) with uvicorn[standard] and granian",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="before each run wait up to this many seconds for the machine to be quiet",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="run a configuration again, at most this many times, when other load disturbed it",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "workers.md")
    parser.add_argument("--log", type=Path, default=Path("/tmp/palfrey-workers-servers.log"))
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds and --seconds must be positive")
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (see benchmarks/README.md)")
        return 2
    peers = peers_python(args.peers)
    pythons = {PY: PY, PEERS: peers}
    chosen = [s for s in servers() if not args.only or s.name in args.only]
    for server in [s for s in chosen if s.python == PEERS and peers is None]:
        print(f"skipping {server.name}: no Python at {args.peers} (see --peers)")
        chosen.remove(server)
    if not chosen:
        return 2
    found = {side: versions(python) for side, python in pythons.items() if python}
    for server in list(chosen):
        missing = [name for name in server.needs if not found[server.python].get(name)]
        if missing:
            print(f"skipping {server.name}: {pythons[server.python]} has no {', '.join(missing)}")
            chosen.remove(server)
    configs = [(s, n) for n in args.workers for s in chosen]
    signal.signal(signal.SIGTERM, on_signal)
    args.log.write_text("")
    runs: dict[tuple[str, int], list[Run]] = {}
    started = time.monotonic()
    try:
        for round_number in range(args.rounds):
            shift = round_number % len(configs)
            for server, workers in configs[shift:] + configs[:shift]:
                for attempt in range(args.retries + 1):
                    run = one_run(server, pythons[server.python], workers, args, args.log)
                    run.attempts = attempt + 1
                    if run.sample.other_cpus <= DISTURBED:
                        break
                    print(
                        f"  {server.name} x{workers}: other load "
                        f"{run.sample.other_cpus:.2f} CPU during the run"
                        + (", running it again" if attempt < args.retries else ", kept"),
                        flush=True,
                    )
                runs.setdefault((server.name, workers), []).append(run)
                print(
                    f"round {round_number + 1}/{args.rounds} {server.name:8} x{workers} "
                    f"{run.sample.rps:8.0f} req/s  {run.sample.cpu_us:4.0f} µs/req  "
                    f"server {run.server_cpus:.2f} CPU  wrk {run.wrk_cpus:.2f} CPU  "
                    f"{run.processes} procs  busiest {run.busiest_share:.0%}  "
                    f"errors {run.sample.errors}  stop {run.stop.seconds:.1f} s  "
                    f"other {run.sample.other_cpus:.2f} CPU"
                    + (f"  LEFTOVERS {run.stop.leftovers}" if run.stop.leftovers else "")
                    + ("" if run.alive else "  NOT ANSWERING AFTER THE RUN"),
                    flush=True,
                )
    finally:
        for pgid in list(LIVE_GROUPS):
            kill_group(pgid)
    report = render(chosen, runs, args, found, time.monotonic() - started)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(f"\nwrote {args.output}\n")
    print(report)
    return 0


def render(
    chosen: list[Server],
    runs: dict[tuple[str, int], list[Run]],
    args: argparse.Namespace,
    found: dict[str, dict[str, str | None]],
    total: float,
) -> str:
    def med(name: str, workers: int, value: str) -> float:
        return median([_get(run, value) for run in runs.get((name, workers), [])])

    def span(name: str, workers: int) -> str:
        values = [run.sample.rps for run in runs.get((name, workers), [])]
        if not values:
            return "—"
        return f"{median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"

    cpus = len(os.sched_getaffinity(0))
    counts = args.workers
    lines = ["# Multi-process serving: 1 and 2 workers", ""]
    command = shlex.join(["python", "benchmarks/workers.py", *sys.argv[1:]])
    lines.append(
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{args.rounds} interleaved round(s), wrk -t{args.threads} -c{args.connections} "
        f"-d{args.seconds:g}s keep-alive `GET /plaintext` (13 bytes), medians over rounds; "
        "access log off, 127.0.0.1 only, nothing pinned."
    )
    if max(counts) + 1 > cpus:
        lines += [
            "",
            f"**Oversubscribed:** this machine has {cpus} CPUs; {max(counts)} workers plus wrk "
            "want more than that, so the many-worker figures measure sharing the CPUs with the "
            "load generator as much as scaling. See the CPUs columns.",
        ]
    lines += ["", "## Requests per second (median, with the lowest-highest round)", ""]
    lines.append("| server | " + " | ".join(f"{n} worker(s)" for n in counts) + " | scaling |")
    lines.append("|---" * (len(counts) + 2) + "|")
    low, high = min(counts), max(counts)
    for server in chosen:
        cells = [span(server.name, n) for n in counts]
        scaling = _ratio(med(server.name, high, "rps"), med(server.name, low, "rps"))
        lines.append(f"| {server.name} | " + " | ".join(cells) + f" | {scaling} |")
    lines.append("")
    lines.append(f"Scaling: median req/s with {high} workers ÷ with {low}.")
    if any(s.name == PALFREY for s in chosen) and len(chosen) > 1:
        lines += ["", "## Palfrey ÷ peer (median req/s; 1.00 = as fast as the peer)", ""]
        lines.append("| against | " + " | ".join(f"{n} worker(s)" for n in counts) + " |")
        lines.append("|---" * (len(counts) + 1) + "|")
        for server in chosen:
            if server.name == PALFREY:
                continue
            cells = [_ratio(med(PALFREY, n, "rps"), med(server.name, n, "rps")) for n in counts]
            lines.append(f"| {server.name} | " + " | ".join(cells) + " |")
    lines += ["", "## Where the CPU went (medians)", ""]
    lines.append(
        "| server | workers | processes | server CPUs | wrk CPUs | µs CPU/request "
        "| busiest of 2 top processes | p50 / p99 ms | wrk errors | stop s "
        "| other load, CPUs | disturbed samples | rerun |"
    )
    lines.append("|---" * 13 + "|")
    for server in chosen:
        for n in counts:
            rs = runs.get((server.name, n), [])
            if not rs:
                continue
            errors = sum(run.sample.errors for run in rs)
            name = server.name
            lines.append(
                f"| {name} | {n} | {median([r.processes for r in rs]):.0f} "
                f"| {med(name, n, 'server_cpus'):.2f} | {med(name, n, 'wrk_cpus'):.2f} "
                f"| {med(name, n, 'cpu_us'):.0f} | {med(name, n, 'busiest_share'):.0%} "
                f"| {med(name, n, 'p50_ms'):.2f} / {med(name, n, 'p99_ms'):.2f} "
                f"| {errors} | {med(name, n, 'stop'):.1f} "
                f"| {med(name, n, 'other_cpus'):.2f} "
                f"| {sum(r.sample.other_cpus > DISTURBED for r in rs)} of {len(rs)} "
                f"| {sum(r.attempts - 1 for r in rs)} |"
            )
    lines += [
        "",
        "Processes: the server's process tree (a supervisor, if any, counts). Server CPUs: its "
        "CPU time over the run's wall time. Busiest: of the CPU time of the tree's two busiest "
        "processes, the share of the busier one (50% = the two workers shared evenly; with one "
        "worker it is the worker against its supervisor or helper, if any). Stop: SIGINT to the "
        "leader's exit. Other load: CPU time used by neither the server nor wrk (other "
        f"processes, steal), in CPUs; a run is disturbed above {DISTURBED:g}. Before each run "
        "the script waits (up to --settle s) for the machine to be quiet, and a disturbed run "
        "is run again (up to --retries times; the last one is kept): rerun counts those.",
    ]
    problems = []
    for (name, n), rs in runs.items():
        for i, run in enumerate(rs, 1):
            if not run.alive:
                problems.append(f"- {name} x{n}, round {i}: did not answer a GET after the run")
            if run.stop.killed:
                problems.append(f"- {name} x{n}, round {i}: ignored SIGINT for {STOP_TIMEOUT} s")
            if run.stop.leftovers:
                problems.append(
                    f"- {name} x{n}, round {i}: {len(run.stop.leftovers)} process(es) of its "
                    "group still alive after the leader exited (killed)"
                )
    others = sorted(run.sample.other_cpus for rs in runs.values() for run in rs)
    lines += ["", "## Checks", ""]
    lines += problems or [
        "- Every server answered after every run, exited on SIGINT and left no process behind."
    ]
    if others:
        lines.append(
            f"- Other load (CPU used by neither the server nor wrk) during the {len(others)} "
            f"runs: median {median(others):.2f}, highest {others[-1]:.2f} CPUs."
        )
    lines += ["", "## Machine", ""]
    about = machine()
    lines += about[:2]
    lines.append(f"- nproc {cpus}; {about[-1].removeprefix('- ')}")
    for side, info in found.items():
        where = "this script's interpreter" if side == PY else f"peers ({args.peers})"
        listed = ", ".join(f"{k} {v}" for k, v in info.items() if v)
        lines.append(f"- {where}: {listed}")
    lines += ["", "## Commands", "", "```"]
    for server in chosen:
        python = "python" if server.python == PY else str(args.peers / "bin" / "python")
        argv = fill(server.argv, python, "PORT", "N")
        argv = [a.replace(str(HERE), "benchmarks") for a in argv]
        lines.append(f"# {server.name} (cwd benchmarks/, PYTHONPATH=benchmarks, own session)")
        lines.append(shlex.join(argv))
    lines.append("# load (after a 1 s warm-up with the same flags)")
    lines.append(shlex.join(wrk_argv(args.threads, args.connections, args.seconds, "PORT")))
    lines += ["```", "", f"Total run time: {total:.0f} s.", ""]
    return "\n".join(lines)


def _get(run: Run, value: str) -> float:
    if value == "stop":
        return run.stop.seconds
    if hasattr(run, value):
        return float(getattr(run, value))
    return float(getattr(run.sample, value))


def _ratio(value: float, reference: float) -> str:
    if math.isnan(value) or math.isnan(reference) or not reference:
        return "—"
    return f"{value / reference:.2f}"


if __name__ == "__main__":
    sys.exit(main())
