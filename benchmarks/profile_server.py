"""Where Palfrey spends its time under load: py-spy samples while wrk drives /plaintext.

    python benchmarks/profile_server.py [--http h11|httptools] [--seconds 10] [--workload plaintext]
    python benchmarks/profile_server.py --http h2c     # HTTP/2: --http auto, h2load as in h2c.py

Palfrey runs on the first CPU under ``py-spy record`` (which samples from the
second CPU, next to wrk), with the same options as in ``run.py``. The samples
are folded into two tables, written to ``benchmarks/results/profile-<http>.txt``:
the source lines where the interpreter was when sampled (self time), and the
functions on the stack (inclusive time), both with file:line. Needs
``pip install py-spy`` and wrk (see ``benchmarks/README.md``).

``--http h2c`` runs Palfrey with ``--http auto`` and drives it with h2load
(cleartext HTTP/2 with prior knowledge, ``-c16 -m32`` as in ``h2c.py``) for
``--seconds``; ``--http h2`` does the same with ``--http h2``. Both write
``profile-<http>.txt`` too.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h2c
from run import HERE, PY, RESULTS, WORKLOADS, cpu_split, free_port, http_get, parse_wrk

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def short(path: str) -> str:
    """Paths relative to the repository or site-packages, so the table stays readable."""
    for marker in ("site-packages/", str(HERE.parent) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.rsplit("/lib/", 1)[-1]


Counter = collections.Counter


HTTP2_LIBRARY = {"h2 (package)", "hpack (package)", "hyperframe (package)"}


def owner(path: str) -> str:
    """Who a source file belongs to: a Palfrey module, a package, the app, or the stdlib."""
    name = short(path)
    if name.startswith("palfrey/"):
        return name
    if name == "apps.py" or name.startswith("benchmarks/"):
        return "the app (apps.py)"
    top = name.split("/", 1)[0]
    if name.startswith(("<", "python3.")) or "/" not in name or top in sys.stdlib_module_names:
        return "Python stdlib"
    return top + " (package)"


def by_owner(raw: str) -> tuple[int, Counter[str], Counter[str]]:
    """Samples whose innermost frame (self) and any frame (inclusive) belongs to each owner,
    counting only samples inside ``trio.run`` (not the imports at startup)."""
    total = 0
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    for entry in raw.splitlines():
        stack, _, count_text = entry.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        parsed = [m for m in (FRAME.match(frame) for frame in stack.split(";")) if m]
        if not any(m["function"] == "unrolled_run" for m in parsed):
            continue
        count = int(count_text)
        total += count
        own[owner(parsed[-1]["file"])] += count
        packages = {owner(m["file"]) for m in parsed}
        for name in packages:
            if name.endswith("(package)"):
                anywhere[name] += count
        if packages & HTTP2_LIBRARY:
            anywhere["h2 + hpack + hyperframe"] += count
    return total, own, anywhere


def fold(raw: str) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """Total samples, and samples per innermost line, per function on the stack and per
    Palfrey call site on the stack (file:line inside Palfrey that led to the work)."""
    total = 0
    lines: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    sites: Counter[str] = Counter()
    for entry in raw.splitlines():
        stack, _, count_text = entry.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [FRAME.match(frame) for frame in stack.split(";")]
        parsed = [match for match in frames if match]
        if not parsed:
            continue
        leaf = parsed[-1]
        lines[f"{short(leaf['file'])}:{leaf['line']} {leaf['function']}"] += count
        for name in {f"{short(m['file'])} {m['function']}" for m in parsed}:
            functions[name] += count
        ours = {
            f"{short(m['file'])}:{m['line']} {m['function']}"
            for m in parsed
            if "palfrey/" in m["file"] and "palfrey/config" not in m["file"]
        }
        for site in ours:
            sites[site] += count
    return total, lines, functions, sites


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", choices=("h11", "httptools", "h2c", "h2"), default="httptools")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workload", choices=[w.name for w in WORKLOADS], default="plaintext")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    http2 = args.http in ("h2c", "h2")
    load_tool = "h2load" if http2 else "wrk"
    if not Path(py_spy).exists() or shutil.which(load_tool) is None:
        print(f"needs py-spy (pip install py-spy) and {load_tool} (see benchmarks/README.md)")
        return 2
    server_pin, load_pin, threads = cpu_split()
    port = free_port()
    raw = Path(tempfile.mkdtemp()) / "samples.txt"
    palfrey = [PY, "-m", "palfrey", "apps:app", "--app-dir", str(HERE), "--port", str(port)]
    server_http = {"h2c": "auto"}.get(args.http, args.http)
    palfrey += ["--no-access-log", "--log-level", "warning", "--http", server_http]
    palfrey += ["--timeout-keep-alive", "60", "--backlog", "4096"]
    argv = [*load_pin, py_spy, "record", "--rate", "500", "--format", "raw", "-o", str(raw)]
    argv += ["--", *server_pin, *palfrey]
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    # A session of its own, so one signal to the group stops py-spy and the server together.
    process = subprocess.Popen(
        argv, cwd=HERE, env=env, start_new_session=True, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while not (_ready_h2(port) if http2 else _ready(port)):
            if process.poll() is not None or time.monotonic() > deadline:
                print("palfrey did not start")
                return 1
            time.sleep(0.2)
        if http2:
            load = [*load_pin, "h2load", f"-t{threads}", f"-c{h2c.CLIENTS}", f"-m{h2c.STREAMS}"]
            load += [f"-D{args.seconds:g}", f"http://127.0.0.1:{port}{h2c.PATH}"]
            what = f"h2load -c{h2c.CLIENTS} -m{h2c.STREAMS} GET {h2c.PATH}"
        else:
            workload = next(w for w in WORKLOADS if w.name == args.workload)
            load = [*load_pin, "wrk", f"-t{threads}", f"-c{workload.connections}"]
            load += [f"-d{args.seconds:g}s", "--latency", *workload.extra]
            load.append(f"http://127.0.0.1:{port}{workload.path}")
            what = f"wrk {args.workload}"
        result = subprocess.run(
            load, capture_output=True, text=True, timeout=args.seconds + 30, check=True
        )
        rps = (h2c.parse_h2load if http2 else parse_wrk)(result.stdout).rps
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    total, lines, functions, sites = fold(raw.read_text())
    served, own, anywhere = by_owner(raw.read_text())
    report = [
        f"py-spy, palfrey --http {server_http}, {what} for {args.seconds:g} s: "
        f"{rps:,.0f} req/s under sampling, {total} samples",
        "",
        f"Self time by owner: the Palfrey module, package or stdlib whose code was running "
        f"(the {served} samples inside trio.run, startup left out)",
        *(f"{100 * n / served:5.1f}%  {name}" for name, n in own.most_common(args.top)),
        "",
        "Inclusive time by package: those samples with the package anywhere on the stack",
        *(f"{100 * n / served:5.1f}%  {name}" for name, n in anywhere.most_common(10)),
        "",
        "Self time: the line being executed when sampled",
        *(f"{100 * n / total:5.1f}%  {where}" for where, n in lines.most_common(args.top)),
        "",
        "Inclusive time: functions anywhere on the stack",
        *(f"{100 * n / total:5.1f}%  {name}" for name, n in functions.most_common(args.top)),
        "",
        "Inclusive time by Palfrey line (the call site that led to the work)",
        *(f"{100 * n / total:5.1f}%  {site}" for site, n in sites.most_common(args.top)),
    ]
    RESULTS.mkdir(exist_ok=True)
    output = RESULTS / f"profile-{args.http}.txt"
    output.write_text("\n".join(report) + "\n")
    print("\n".join(report))
    print(f"\nwrote {output}")
    return 0


def _ready_h2(port: int) -> bool:
    return h2c.answers(port)


def _ready(port: int) -> bool:
    try:
        return http_get(port).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
