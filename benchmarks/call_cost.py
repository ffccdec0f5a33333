"""The server CPU one call costs: lookalike's GetInfo and Search against bare grpc.aio.

    python benchmarks/call_cost.py --model null.onnx --index idxnull --images q300

Starts ``lookalike serve`` and, beside it, a bare grpc.aio server whose GetInfo
answers a fixed message from its coroutine (no interceptor, telemetry or logging):
the least a Python gRPC call costs on this machine. Clients run in processes of
their own, each call waiting for the last; the server's CPU comes from /proc. With
the null model (``benchmarks/null_model.py``), Search's cost is the serving path's
alone. Prints ms of server CPU a call and the ratio to the bare call, in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from search_load import free_port, serve_command, wait_until_up


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare_server(port: int) -> None:
    """A grpc.aio server with GetInfo alone, answered from its coroutine."""
    import grpc

    from lookalike.v1 import search_pb2, search_pb2_grpc

    class Bare(search_pb2_grpc.SearchServiceServicer):
        async def GetInfo(self, request, context):  # noqa: N802 (gRPC method name)
            return search_pb2.GetInfoResponse(model_name="bare")

    async def run() -> None:
        server = grpc.aio.server()
        search_pb2_grpc.add_SearchServiceServicer_to_server(Bare(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(run())


def caller(target: str, rpc: str, image: bytes, until: float, out) -> None:
    """One client: ``rpc`` again and again until ``until``; sends back the calls made."""
    import grpc

    from lookalike.v1 import search_pb2, search_pb2_grpc

    calls = 0
    with grpc.insecure_channel(target) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        request = search_pb2.SearchRequest(image=image, k=20)
        while time.time() < until:
            if rpc == "GetInfo":
                stub.GetInfo(search_pb2.GetInfoRequest(), timeout=30)
            else:
                stub.Search(request, timeout=30)
            calls += 1
    out.put(calls)


def measure(target: str, pid: int, rpc: str, image: bytes, clients: int, seconds: float):
    """Calls/s and ms of server CPU a call, ``clients`` processes calling at once."""
    results: multiprocessing.Queue = multiprocessing.Queue()
    until = time.time() + seconds
    processes = [
        multiprocessing.Process(target=caller, args=(target, rpc, image, until, results))
        for _ in range(clients)
    ]
    before, started = cpu_seconds(pid), time.perf_counter()
    for process in processes:
        process.start()
    calls = sum(results.get() for _ in processes)
    for process in processes:
        process.join()
    elapsed, used = time.perf_counter() - started, cpu_seconds(pid) - before
    return calls / elapsed, used / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True, help="Search sends the first")
    parser.add_argument("--clients", type=int, default=16, help="processes calling at once")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--serve-args", default="", help="extra flags for lookalike serve")
    args = parser.parse_args()
    image = sorted(args.images.rglob("*.jpg"))[0].read_bytes()

    bare_port, port, metrics_port = free_port(), free_port(), free_port()
    bare = multiprocessing.Process(target=bare_server, args=(bare_port,), daemon=True)
    bare.start()
    server = subprocess.Popen(
        serve_command(args.model, args.index, port, metrics_port, *args.serve_args.split())
    )
    try:
        wait_until_up(f"127.0.0.1:{port}")
        rows = [
            ("bare grpc.aio", "GetInfo", f"127.0.0.1:{bare_port}", bare.pid),
            ("lookalike", "GetInfo", f"127.0.0.1:{port}", server.pid),
            ("lookalike", "Search", f"127.0.0.1:{port}", server.pid),
        ]
        print(f"{'server':<14} {'rpc':<8} {'calls/s':>8} {'CPU ms/call':>12} {'vs bare':>8}")
        floor = None
        for name, rpc, target, pid in rows:
            measure(target, pid, rpc, image, 2, 1.0)  # connections and first calls
            rate, cost = measure(target, pid, rpc, image, args.clients, args.seconds)
            floor = floor or cost
            print(f"{name:<14} {rpc:<8} {rate:>8.0f} {cost:>12.3f} {cost / floor:>8.2f}")
            sys.stdout.flush()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        bare.terminate()


if __name__ == "__main__":
    main()
