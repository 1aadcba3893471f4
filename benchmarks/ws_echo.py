"""WebSocket echo benchmark: messages per second over 16 connections, one message in flight each.

Starts Palfrey, Uvicorn and Hypercorn (trio and asyncio workers) one after the
other as subprocesses on 127.0.0.1, each serving :func:`app` from this file,
and drives them with a Node.js load client (``ws_client.js``, the ``ws``
package), so the client is not the bottleneck: one V8 process echoing small
messages is several times faster than any of these Python servers. With two or
more CPUs the server is pinned to CPU 0 and the clients to the others.

Setup (once; ``benchmarks/node_modules`` must not be committed)::

    npm install --no-save --no-package-lock --prefix benchmarks ws@8

Run::

    .venv/bin/python benchmarks/ws_echo.py                 # 3 rounds of 5 s per server
    .venv/bin/python benchmarks/ws_echo.py --seconds 10 --servers palfrey uvicorn

Every run is bounded: ``--rounds`` (interleaved, best kept, to shrug off noise
from other processes) of ``--seconds`` of measurement after a one-second
warm-up, at most ``--max-messages`` echoes, and a hard timeout on every
subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An echo app free of any async library, so trio and asyncio servers run it alike."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
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


def server_commands(port: int) -> dict[str, list[str]]:
    target = "ws_echo:app"
    return {
        "palfrey": [
            str(BIN / "palfrey"),
            target,
            "--app-dir", str(HERE),
            "--port", str(port),
            "--log-level", "warning",
            "--no-access-log",
        ],
        "uvicorn": [
            str(BIN / "uvicorn"),
            target,
            "--app-dir", str(HERE),
            "--port", str(port),
            "--log-level", "warning",
            "--no-access-log",
        ],
        "uvicorn-wsproto": [
            str(BIN / "uvicorn"),
            target,
            "--app-dir", str(HERE),
            "--port", str(port),
            "--log-level", "warning",
            "--no-access-log",
            "--ws", "wsproto",
        ],
        "hypercorn-trio": [
            str(BIN / "hypercorn"),
            target,
            "--bind", f"127.0.0.1:{port}",
            "-k", "trio",
            "--log-level", "warning",
        ],
        "hypercorn-asyncio": [
            str(BIN / "hypercorn"),
            target,
            "--bind", f"127.0.0.1:{port}",
            "-k", "asyncio",
            "--log-level", "warning",
        ],
    }  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_listening(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start listening")


def run_clients(
    port: int, args: argparse.Namespace, seconds: float, cpus: list[int]
) -> dict[str, float]:
    """Split the connections over one Node process per client CPU; sum their counts."""
    connections = args.connections
    procs = max(1, min(len(cpus) or 1, connections))
    shares = [connections // procs + (i < connections % procs) for i in range(procs)]
    children = []
    for index, share in enumerate(shares):
        command = [
            "node",
            str(HERE / "ws_client.js"),
            f"ws://127.0.0.1:{port}/",
            str(share),
            str(seconds),
            str(args.size),
            str(args.max_messages // procs),
        ]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, env=_node_env())
        if cpus:
            os.sched_setaffinity(child.pid, {cpus[index % len(cpus)]})
        children.append(child)
    total = {"messages": 0.0, "seconds": 0.0, "errors": 0.0}
    for child in children:
        out, _ = child.communicate(timeout=seconds + 30)
        result = json.loads(out.decode().strip().splitlines()[-1])
        total["messages"] += result["messages"]
        total["seconds"] = max(total["seconds"], result["seconds"])
        total["errors"] += result["errors"]
    return total


def _node_env() -> dict[str, str]:
    env = dict(os.environ)
    env["NODE_PATH"] = str(HERE / "node_modules")
    return env


def bench(name: str, args: argparse.Namespace) -> float | None:
    port = free_port()
    command = server_commands(port)[name]
    server = subprocess.Popen(command, cwd=HERE, stdout=subprocess.DEVNULL)
    try:
        cpus = sorted(os.sched_getaffinity(0))
        client_cpus: list[int] = []
        if len(cpus) >= 2 and not args.no_pin:
            os.sched_setaffinity(server.pid, {cpus[0]})
            client_cpus = cpus[1:]
        wait_until_listening(port, server, 20)
        run_clients(port, args, 1.0, client_cpus)  # warm-up
        result = run_clients(port, args, args.seconds, client_cpus)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        print(f"  {name:<18} failed: {exc}", flush=True)
        return None
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    rate = result["messages"] / result["seconds"] if result["seconds"] else 0.0
    errors = f"  ({int(result['errors'])} errors)" if result["errors"] else ""
    print(f"  {name:<18} {rate:>10,.0f} msg/s{errors}", flush=True)
    return rate


def main() -> None:
    names = list(server_commands(0))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", nargs="+", choices=names, default=names)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure every server this many times, interleaved, and keep the best",
    )
    parser.add_argument("--size", type=int, default=64, help="text message size in bytes")
    parser.add_argument("--max-messages", type=int, default=5_000_000)
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    args = parser.parse_args()
    if shutil.which("node") is None or not (HERE / "node_modules" / "ws").is_dir():
        sys.exit(
            "needs node and the ws package: "
            "npm install --no-save --no-package-lock --prefix benchmarks ws@8"
        )
    print(
        f"WebSocket echo: {args.connections} connections, 1 message in flight each, "
        f"{args.size}-byte text, {args.seconds:g}s per server and round, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    best: dict[str, float | None] = dict.fromkeys(args.servers)
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number}/{args.rounds}", flush=True)
        for name in args.servers:
            rate = bench(name, args)
            if rate is not None:
                best[name] = max(rate, best[name] or 0.0)
    print("\nbest of each server:")
    for name, rate in best.items():
        print(f"  {name:<18} " + (f"{rate:>10,.0f} msg/s" if rate else "failed"))
    rates = best
    base = rates.get("palfrey")
    if base:
        print("\nratio to palfrey (higher is faster):")
        for name, rate in rates.items():
            if rate is not None:
                print(f"  {name:<18} {rate / base:5.2f}x")


if __name__ == "__main__":
    main()
