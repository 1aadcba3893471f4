"""HTTP/3 benchmark: Palfrey ``--http h3`` against Hypercorn's ``--quic-bind`` (trio and asyncio
workers), all driven by ``h3_load.py`` (aioquic) on ``GET /plaintext``.

    python benchmarks/h3.py               # 3 interleaved rounds of about 5 s -> results/http3.md
    python benchmarks/h3.py --quick       # 1 round of about 2 s -> results/http3-quick.md
    python benchmarks/h3.py --profile 10  # Palfrey under py-spy for 10 s -> results/profile-h3.txt

There is no HTTP/3 load generator in Debian (h2load is built without ngtcp2),
so ``h3_load.py`` is the load: ``-c`` QUIC connections with ``-m`` streams in
flight each, a request count and a time bound. Every server runs as a
subprocess on 127.0.0.1 with one worker, access log off, serving ``apps.py``
over HTTP/3 with a throwaway self-signed certificate made for the run. The
machinery is ``run.py``'s and ``h2c.py``'s: the server is pinned to the first
CPU and the load to the others, servers are interleaved (A B C ... A B C ...),
each figure is the median over rounds, and the server's CPU time (whole
process tree) is read around each load run. Per server and round: start it,
check that an HTTP/3 GET gets the 13-byte answer, a warm-up run (not
recorded), then as many requests as the warm-up's rate gives in about
``--seconds`` (at least ``MIN_REQUESTS``), bounded in time as well
(3 x ``--seconds``), then stop it. Hypercorn comes from ``--peers`` (default
``$H2PEERS`` or ``/tmp/h2peers``) with ``aioquic`` installed there. See
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h3_load
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from h2c import VERSIONS_SCRIPT, StartFailed, _per_round, _rps, peers_python
from profile_server import by_owner, fold
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

CONNECTIONS = 8
STREAMS = 16  # streams in flight per connection
WARM_UP = 2000  # requests in the warm-up run (bounded to WARM_UP_SECONDS), which sizes the next
WARM_UP_SECONDS = 2.0
MIN_REQUESTS = 1000
GRACE = 5.0  # seconds the load waits for answers after its last request started
PATH = "/plaintext"
BODY = b"Hello, world!"
PEERS = "peers"
#: Servers whose ratio to Palfrey has a target (from the HTTP/3 issue): name -> at least.
TARGETS = {"hypercorn-trio": 2.0}
PALFREY = "palfrey-h3"
PACKAGES = ("palfrey", "trio", "aioquic", "pylsqpack", "cryptography", "hypercorn")
LOAD = str(HERE / "h3_load.py")
CERT, KEY = "{certfile}", "{keyfile}"


@dataclass
class Server:
    name: str
    argv: list[str]  # "{port}" (UDP), "{tcp}", "{python}", "{certfile}", "{keyfile}" filled in
    python: str
    needs: tuple[str, ...] = ()
    note: str = ""


def servers() -> list[Server]:
    palfrey = ["{python}", "-m", "palfrey", "apps:app", "--app-dir", str(HERE), "--http", "h3"]
    palfrey += ["--host", "127.0.0.1", "--port", "{port}", "--ssl-certfile", CERT]
    palfrey += ["--ssl-keyfile", KEY, "--no-access-log", "--log-level", "warning"]
    palfrey += ["--timeout-keep-alive", KEEP_ALIVE]
    hypercorn = ["{python}", "-m", "hypercorn", "apps:app", "--bind", "127.0.0.1:{tcp}"]
    hypercorn += ["--quic-bind", "127.0.0.1:{port}", "--certfile", CERT, "--keyfile", KEY]
    hypercorn += ["-w", "1", "--keep-alive", KEEP_ALIVE, "--log-level", "warning"]
    return [
        Server(PALFREY, palfrey, PY, note="HTTP/3 only, UDP"),
        Server(
            "hypercorn-trio",
            [*hypercorn, "-k", "trio"],
            PEERS,
            ("hypercorn", "trio", "aioquic"),
            "HTTP/3 beside HTTP/1.1 and HTTP/2 over TLS on TCP",
        ),
        Server(
            "hypercorn-asyncio",
            [*hypercorn, "-k", "asyncio"],
            PEERS,
            ("hypercorn", "aioquic"),
            "HTTP/3 beside HTTP/1.1 and HTTP/2 over TLS on TCP",
        ),
    ]


def make_certificate(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for localhost and 127.0.0.1, valid for a day (as the tests')."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "palfrey benchmark")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(certfile), str(keyfile)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def udp_receive_drops() -> int:
    """Datagrams the kernel dropped for a full socket receive buffer, machine-wide
    (``RcvbufErrors`` in ``/proc/net/snmp``; the load's sockets take 4 MiB, the servers' the
    default, so in practice these are the server's)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        rows = [r.split() for r in Path("/proc/net/snmp").read_text().splitlines()]
        names, values = [r for r in rows if r[0] == "Udp:"][:2]
        return int(values[names.index("RcvbufErrors")])
    return 0


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


def h3_get(port: int) -> dict:
    """One HTTP/3 GET in this process, bounded to about 3 s: h3_load's result."""
    args = h3_load.parser().parse_args(
        [
            *("--port", str(port), "--path", PATH, "-c1", "-m1", "-n1", "--duration", "1"),
            *("--grace", "1", "--handshake-timeout", "1", "--expect", BODY.decode()),
        ]
    )
    return h3_load.run(args)


def answers(port: int) -> bool:
    return h3_get(port)["done"] == 1


def fill(argv: list[str], python: str, port: int, tcp: int, cert: tuple[str, str]) -> list[str]:
    values = {"{python}": python, "{port}": str(port), "{tcp}": str(tcp)}
    values |= {CERT: cert[0], KEY: cert[1]}
    out = []
    for arg in argv:
        filled = arg
        for key, value in values.items():
            filled = filled.replace(key, value)
        out.append(filled)
    return out


@contextlib.contextmanager
def running(
    server: Server, pin: list[str], cert: tuple[str, str], log: Path
) -> Iterator[tuple[int, int]]:
    """Start ``server``, wait until it answers an HTTP/3 GET (at most 30 s), yield (pid, port).
    Stopping: SIGINT, then SIGKILL after 5 s (its CPU time has been read by then)."""
    port, tcp = free_udp_port(), free_port()
    argv = [*pin, *fill(server.argv, server.python, port, tcp, cert)]
    with log.open("ab") as errors:
        errors.write(f"\n=== {server.name}: {shlex.join(argv)}\n".encode())
        errors.flush()
        process = subprocess.Popen(argv, cwd=HERE, env=server_env(), stdout=errors, stderr=errors)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise StartFailed(f"{server.name} exited with {process.returncode}; see {log}")
            result = h3_get(port)
            if result["done"] == 1:
                break
            if result["failed"]:
                raise StartFailed(f"{server.name} answered HTTP/3 GET {PATH}: {result['errors']}")
            if time.monotonic() > deadline:
                raise StartFailed(f"{server.name} did not answer HTTP/3 within 30 s; see {log}")
            time.sleep(0.2)
        yield process.pid, port
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Sample:
    rps: float
    done: int
    failed: int
    asked: int
    seconds: float
    mean_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    unstarted: int = 0  # requests not started within the time bound (not failures)
    drops: int = 0  # UDP datagrams dropped for a full receive buffer during the run
    cpu_us: float = float("nan")  # server CPU time per request done, microseconds
    server_cpus: float = float("nan")  # server CPU time over the run's wall time, in CPUs
    load_cpus: float = float("nan")  # the load generator's, likewise
    other_cpus: float = float("nan")  # CPU time used by neither, in CPUs
    alive: bool = True


@dataclass
class Shape:
    connections: int = CONNECTIONS
    streams: int = STREAMS  # in flight per connection
    processes: int = 1  # load processes, the connections split between them


def load_argv(pin: list[str], port: int, requests: int, seconds: float, shape: Shape):
    argv = [*pin, PY, LOAD, "--port", str(port), "--path", PATH, "--expect", BODY.decode()]
    argv += ["-c", str(shape.connections), "-m", str(shape.streams), "-n", str(requests)]
    return [*argv, "--duration", f"{seconds:g}", "--grace", f"{GRACE:g}"]


def h3load(
    pin: list[str], shape: Shape, port: int, pid: int, *, requests: int, seconds: float
) -> Sample:
    """One load run of ``requests`` (at most ``seconds`` of starting requests), split over
    ``processes`` load processes: req/s over the longest one's run time, server CPU time and
    other load over the whole run."""
    before = (tree_cpu_seconds(pid), children_cpu_seconds(), machine_busy_seconds())
    drops = udp_receive_drops()
    started = time.monotonic()
    processes, connections = shape.processes, shape.connections
    share = [requests // processes + (i < requests % processes) for i in range(processes)]
    conns = [connections // processes + (i < connections % processes) for i in range(processes)]
    running_loads = [
        subprocess.Popen(
            load_argv(pin, port, n, seconds, Shape(c, shape.streams)),
            cwd=HERE,
            env=server_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, c in zip(share, conns, strict=True)
    ]
    results = []
    bound = seconds + GRACE + 30
    for process in running_loads:
        try:
            out, err = process.communicate(timeout=bound)
        except subprocess.TimeoutExpired:
            process.kill()
            raise RuntimeError(f"h3_load did not finish within {bound:g} s") from None
        lines = out.strip().splitlines()
        if not lines:
            raise RuntimeError(f"h3_load printed nothing:\n{err[-2000:]}")
        results.append(json.loads(lines[-1]))
    elapsed = time.monotonic() - started
    server = tree_cpu_seconds(pid) - before[0]
    load = children_cpu_seconds() - before[1]
    busy = machine_busy_seconds() - before[2]
    done = sum(r["done"] for r in results)
    run_seconds = max(r["seconds"] for r in results)
    errors: collections.Counter[str] = collections.Counter()
    for r in results:
        errors.update(r["errors"])
    return Sample(
        rps=done / run_seconds if run_seconds else 0.0,
        done=done,
        failed=sum(r["failed"] for r in results),
        unstarted=sum(r["asked"] - r["started"] for r in results),
        asked=requests,
        seconds=run_seconds,
        mean_ms=sum(r["mean_ms"] * r["done"] for r in results) / max(1, done),
        p99_ms=max(r["p99_ms"] for r in results),
        max_ms=max(r["max_ms"] for r in results),
        errors=dict(errors),
        drops=udp_receive_drops() - drops,
        cpu_us=server * 1e6 / max(1, done),
        server_cpus=server / elapsed,
        load_cpus=load / elapsed,
        other_cpus=max(0.0, busy - server - load) / elapsed,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of about 2 s")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, help="aimed length of a run (default 5)")
    parser.add_argument("--only", nargs="*", help="server names to run (default: all)")
    parser.add_argument("-c", "--connections", type=int, default=CONNECTIONS)
    parser.add_argument("-m", "--streams", type=int, default=STREAMS, help="in flight each")
    parser.add_argument(
        "--peers",
        type=Path,
        default=Path(os.environ.get("H2PEERS", "/tmp/h2peers")),
        help="virtual environment (or Python) with hypercorn[trio] and aioquic",
    )
    parser.add_argument("--output", type=Path, help="markdown file to write")
    parser.add_argument(
        "--profile", type=float, metavar="SECONDS", help="profile Palfrey under py-spy instead"
    )
    args = parser.parse_args()
    server_pin, load_pin, threads = cpu_split()
    shape = Shape(args.connections, args.streams, max(1, min(threads, args.connections)))
    RESULTS.mkdir(exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="palfrey-h3-bench-"))
    try:
        cert = make_certificate(directory)
        if args.profile:
            return profile(args.profile, server_pin, load_pin, cert, shape)
        return compare(args, server_pin, load_pin, shape, cert)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def compare(
    args: argparse.Namespace,
    server_pin: list[str],
    load_pin: list[str],
    shape: Shape,
    cert: tuple[str, str],
) -> int:
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    output = args.output or RESULTS / ("http3-quick.md" if args.quick else "http3.md")
    peers = peers_python(args.peers)
    pythons = {PY: versions(PY)}
    if peers:
        pythons[peers] = versions(peers)
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
    log = RESULTS / "servers-h3.log"
    log.write_text("")
    origin = palfrey_origin(PY)
    samples: dict[str, list[Sample]] = {}
    started = time.monotonic()
    for round_number in range(1, rounds + 1):
        for server in list(chosen):
            try:
                with running(server, server_pin, cert, log) as (pid, port):
                    warm = h3load(
                        load_pin, shape, port, pid, requests=WARM_UP, seconds=WARM_UP_SECONDS
                    )
                    count = max(MIN_REQUESTS, round(warm.rps * seconds))
                    sample = h3load(load_pin, shape, port, pid, requests=count, seconds=seconds * 3)
                    sample.alive = answers(port)
            except StartFailed as error:
                print(f"round {round_number}/{rounds} {server.name}: {error}; dropped")
                skipped.append(f"{server.name}: {error}")
                chosen.remove(server)
                continue
            samples.setdefault(server.name, []).append(sample)
            print(
                f"round {round_number}/{rounds} {server.name:18} {sample.rps:7.0f} req/s  "
                f"{sample.done}/{sample.asked} done, {sample.failed} failed {sample.errors or ''} "
                f"{sample.cpu_us:5.0f} µs CPU/req  server {sample.server_cpus:.2f} CPU  "
                f"load {sample.load_cpus:.2f} CPU  other {sample.other_cpus:.2f} CPU  "
                f"{sample.drops} UDP drops" + ("" if sample.alive else "  STOPPED ANSWERING"),
                flush=True,
            )
    settings = {
        "rounds": rounds,
        "seconds": seconds,
        "origin": origin,
        "changed": palfrey_origin(PY) != origin,
        "shape": shape,
        "server_pin": server_pin,
        "load_pin": load_pin,
    }
    report = render(chosen, samples, skipped, settings, pythons)
    report += f"\nTotal run time: {time.monotonic() - started:.0f} s.\n"
    output.write_text(report)
    print(f"\nwrote {output}\n")
    print(report)
    return 0


def render(
    chosen: list[Server],
    samples: dict[str, list[Sample]],
    skipped: list[str],
    settings: dict,
    pythons: dict[str, dict[str, str | None]],
) -> str:
    names = [s.name for s in chosen if s.name in samples]
    command = shlex.join(["python", "benchmarks/h3.py", *sys.argv[1:]])
    origin = settings["origin"]
    shape = settings["shape"]
    lines = ["# Palfrey HTTP/3 benchmark", ""]
    lines.append(
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{settings['rounds']} interleaved round(s) of `h3_load.py -c{shape.connections} "
        f"-m{shape.streams}` ({shape.connections} QUIC connections, {shape.streams} streams in "
        "flight on each) "
        f"against `GET {PATH}` (13 bytes) over HTTP/3: per server and round a warm-up of "
        f"-n{WARM_UP} (at most {WARM_UP_SECONDS:g} s), then as many requests as the warm-up's "
        f"rate gives in {settings['seconds']:g} s (at least {MIN_REQUESTS}, at most "
        f"{settings['seconds'] * 3:g} s). Medians over rounds; one worker per server, access "
        "log off, loopback only, a self-signed certificate the client does not verify. Higher "
        "is better except CPU time and request time."
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
            f"Other load (CPU time used by neither the server nor the load, in CPUs) during the "
            f"{len(others)} measured runs: median {median(others):.2f}, highest "
            f"{others[-1]:.2f}; {disturbed} above {DISTURBED:g}.",
        ]
    lines += ["", "## Results", ""]
    ours = PALFREY in names
    header = "| server | req/s | failed | CPU µs/req | server CPUs | load CPUs | UDP drops "
    header += "| mean / p99 request time |" + (f" {PALFREY} ÷ this |" if ours else "")
    lines += [header, "|---" * (8 + ours) + "|"]
    for name in names:
        runs = samples[name]
        failed = f"{sum(s.failed for s in runs)} of {sum(s.asked for s in runs):,}"
        errors: collections.Counter[str] = collections.Counter()
        for s in runs:
            errors.update(s.errors)
        if errors:
            failed += " (" + ", ".join(f"{why}: {n}" for why, n in errors.most_common()) + ")"
        unstarted = sum(s.unstarted for s in runs)
        if unstarted:
            failed += f"; {unstarted} not started within the time bound"
        stopped = sum(1 for s in runs if not s.alive)
        if stopped:
            failed += f"; stopped answering in {stopped} of {len(runs)} rounds"
        cells = [
            f"{_rps(runs):,.0f}",
            failed,
            f"{median([s.cpu_us for s in runs]):.0f}",
            f"{median([s.server_cpus for s in runs]):.2f}",
            f"{median([s.load_cpus for s in runs]):.2f}",
            f"{median([s.drops for s in runs]):,.0f}",
            f"{median([s.mean_ms for s in runs]):.1f} / {median([s.p99_ms for s in runs]):.0f} ms",
        ]
        if ours:
            cells.append("—" if name == PALFREY else _per_round(samples[PALFREY], runs))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Failed: requests not answered with 200 and the 13 bytes (stream reset, connection "
        "closed under it, or timed out 5 s after the last request was started), summed over "
        "rounds, of all asked for. CPU µs/req: the server's user + system time over its "
        "process tree during the measured run, per request done. "
        "Server / load CPUs: their CPU time over the run's wall time (1.00 is one CPU busy: "
        "the side that is at 1.00 is the bottleneck). UDP drops: datagrams the kernel dropped "
        "during the run because a socket's receive buffer was full (`RcvbufErrors`, "
        "machine-wide; the load's sockets have 4 MiB, the servers the default 208 KiB), which "
        "QUIC then recovers by retransmission after a timeout. Request time: from starting a "
        "stream to its last byte, as the load client saw it. Ratio: Palfrey's median req/s "
        "over the row's, in brackets the lowest and highest per-round ratio; above 1.00 is Palfrey "
        "faster.",
    ]
    if ours:
        lines += ["", "## Targets", ""]
        mine = samples[PALFREY]
        for peer, wanted in TARGETS.items():
            if peer in names and _rps(samples[peer]):
                ratio = _rps(mine) / _rps(samples[peer])
                cpu = median([s.cpu_us for s in samples[peer]]) / median([s.cpu_us for s in mine])
                mark = "PASS" if ratio >= wanted else "MISS"
                lines.append(
                    f"- {PALFREY} at least {wanted:g} x {peer} (req/s): {ratio:.2f} {mark}; "
                    f"server CPU per request {cpu:.2f} x less"
                )
        failed = sum(s.failed for s in mine)
        mark = "PASS" if not failed else "MISS"
        lines.append(f"- {PALFREY} zero failed requests: {failed} {mark}")
    if skipped:
        lines += ["", "## Not run", ""]
        lines += [f"- {why}" for why in skipped]
    lines += ["", "## Machine", ""]
    lines += machine(pythons)
    lines += ["", "## Commands", "", "```"]
    for server in chosen:
        python = "python" if server.python == PY else server.python
        argv = [*settings["server_pin"], *server.argv]
        argv = [
            a.replace("{python}", python)
            .replace("{port}", "PORT")
            .replace("{tcp}", "TCPPORT")
            .replace(CERT, "cert.pem")
            .replace(KEY, "key.pem")
            .replace(str(HERE), "benchmarks")
            for a in argv
        ]
        note = f"; {server.note}" if server.note else ""
        lines.append(f"# {server.name} (cwd benchmarks/, PYTHONPATH=benchmarks{note})")
        lines.append(shlex.join(argv))
    argv = load_argv(
        settings["load_pin"], 0, 0, 0, Shape(shape.connections // shape.processes, shape.streams)
    )
    argv = [a.replace(PY, "python").replace(str(HERE), "benchmarks") for a in argv]
    text = shlex.join(argv).replace("--port 0", "--port PORT").replace("-n 0", "-n N")
    text = text.replace("--duration 0", "--duration SECONDS")
    lines.append(f"# load ({shape.processes} process(es)); N and SECONDS as above")
    lines += [text, "```", ""]
    return "\n".join(lines) + "\n"


def machine(pythons: dict[str, dict[str, str | None]]) -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    uname = os.uname()
    out = [f"- CPU: {cpu}, {os.cpu_count()} logical CPUs; {uname.sysname} {uname.release}"]
    for python, found in pythons.items():
        side = "Palfrey and the load" if python == PY else "peers"
        listed = ", ".join(f"{name} {version}" for name, version in found.items() if version)
        out.append(f"- {side} (`{python}`): {listed}")
    return out


def profile(
    seconds: float, server_pin: list[str], load_pin: list[str], cert: tuple[str, str], shape: Shape
) -> int:
    """Palfrey under ``py-spy record`` while h3_load drives it for ``seconds``; the samples
    folded as ``profile_server.py`` does, with aioquic's share, into results/profile-h3.txt."""
    py_spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(py_spy).exists():
        print("needs py-spy on PATH, e.g. PATH=/tmp/h2peers/bin:$PATH")
        return 2
    raw = Path(tempfile.mkdtemp()) / "samples.txt"
    port = free_udp_port()
    server = fill(servers()[0].argv, PY, port, 0, cert)
    argv = [*load_pin, py_spy, "record", "--rate", "500", "--format", "raw", "-o", str(raw)]
    argv += ["--", *server_pin, *server]
    process = subprocess.Popen(
        argv, cwd=HERE, env=server_env(), start_new_session=True, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while not answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                print("palfrey did not start")
                return 1
            time.sleep(0.2)
        load = load_argv(load_pin, port, 10**9, seconds, shape)
        out = subprocess.run(
            load, capture_output=True, text=True, timeout=seconds + GRACE + 30, check=True
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    # Only samples serving requests: inside trio.run, not importing a module (startup).
    text = "\n".join(
        entry
        for entry in raw.read_text().splitlines()
        if "unrolled_run (" in entry and "_find_and_load (" not in entry
    )
    total, lines, functions, sites = fold(text)
    served, own, anywhere = by_owner(text)
    quic = sum(n for name, n in own.items() if name in ("aioquic (package)", "pylsqpack (package)"))
    top = 30
    report = [
        f"py-spy, palfrey --http h3, h3_load -c{shape.connections} -m{shape.streams} "
        f"GET {PATH} for "
        f"{seconds:g} s: {result['rps']:,.0f} req/s under sampling, {result['failed']} failed, "
        f"{total} samples",
        "",
        f"aioquic + pylsqpack self time: {100 * quic / max(1, served):.1f}% of the {served} "
        "samples inside trio.run that are not importing a module (all tables below count "
        "only those); C extensions count at the Python line that called them",
        "",
        "Self time by owner: the Palfrey module, package or stdlib whose code was running",
        *(f"{100 * n / served:5.1f}%  {name}" for name, n in own.most_common(top)),
        "",
        "Inclusive time by package: those samples with the package anywhere on the stack",
        *(f"{100 * n / served:5.1f}%  {name}" for name, n in anywhere.most_common(10)),
        "",
        "Self time: the line being executed when sampled",
        *(f"{100 * n / total:5.1f}%  {where}" for where, n in lines.most_common(top)),
        "",
        "Inclusive time: functions anywhere on the stack",
        *(f"{100 * n / total:5.1f}%  {name}" for name, n in functions.most_common(top)),
        "",
        "Inclusive time by Palfrey line (the call site that led to the work)",
        *(f"{100 * n / total:5.1f}%  {site}" for site, n in sites.most_common(top)),
    ]
    output = RESULTS / "profile-h3.txt"
    output.write_text("\n".join(report) + "\n")
    print("\n".join(report))
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
