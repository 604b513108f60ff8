"""Benchmark `onnxkit serve` against the same model called in-process.

Starts the real server on 127.0.0.1 (free ports, HTTP and gRPC), sends a bounded
number of V2 infer requests at concurrency 1, 8 and 32 in three protocols: HTTP
with JSON tensors and HTTP with the binary tensor extension, both from a lean
keep-alive HTTP/1.1 client (plain asyncio streams, so the load generator takes
little of the CPU it shares with the server), and gRPC ModelInfer with raw
contents on one channel (grpc's future API). Compares requests/s with
`runtime.load(...).predict` called in a loop on inputs of the same batch size
(rows per request).

    python tools/bench_serve.py                       # text-transformer, seq 128, 1 row per request
    python tools/bench_serve.py --model digits-mlp --requests 2000
    python tools/bench_serve.py --model path/to/model.onnx --rows 4

Prints, per concurrency and protocol: requests/s, p50/p99 latency, the mean merged
batch size (from /metrics), the server's CPU time per request (Linux: /proc; the bare
endpoint's beside it, a ratio that other work on the machine shifts less than requests/s)
and the ratio of server to in-process throughput, as the
median and the min-max of `--rounds` short rounds that alternate in-process and
each protocol, since other work on a shared machine shifts them all.

Each protocol is also compared with a bare endpoint on the same HTTP stack (the
server's socket, uvicorn settings and h11 protocol with its limits, in a process of
its own) that reads the request and answers a fixed body as long as the server's JSON
reply: the floor that the server's own work (decoding, batching, the model) sits on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path

import grpc
import machine
import numpy as np

from onnxkit import runtime
from onnxkit.serve.grpc_service import SERVICE, message
from onnxkit.serve.launch import ServerProcess
from onnxkit.serve.limits import DEFAULT_LIMITS
from onnxkit.serve.server import Server, bind, http_config, load_served

PROTOCOLS = ("HTTP JSON", "HTTP binary", "gRPC")


def model_file(name_or_path: str, folder: Path) -> Path:
    if name_or_path.endswith(".onnx"):
        return Path(name_or_path)
    from onnxkit import zoo
    from onnxkit.files import save_model

    return save_model(zoo.build_model(name_or_path), folder / f"{name_or_path}.onnx")


def example(model: runtime.Model, rows: int, seq: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random inputs: free first dimension = rows, other free dimensions = seq."""
    feeds = {}
    for spec in model.inputs:
        shape = [rows] + [d if isinstance(d, int) else seq for d in spec.shape[1:]]
        if spec.dtype.kind in "iu":
            feeds[spec.name] = (
                np.ones(shape, spec.dtype) if "mask" in spec.name else rng.integers(0, 100, shape).astype(spec.dtype)
            )
        else:
            feeds[spec.name] = rng.normal(size=shape).astype(spec.dtype)
    return feeds


def in_process(model: runtime.Model, feeds: dict[str, np.ndarray], seconds: float) -> tuple[float, list[float]]:
    """Calls per second and latencies of model.predict(feeds) in a loop."""
    model.predict(feeds)
    latencies = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(latencies) < 20:
        t = time.perf_counter()
        model.predict(feeds)
        latencies.append(time.perf_counter() - t)
    return len(latencies) / (time.perf_counter() - start), latencies


def v2_type(array: np.ndarray) -> str:
    return f"{ {'f': 'FP', 'i': 'INT', 'u': 'UINT'}[array.dtype.kind] }{array.dtype.itemsize * 8}"


def request_bytes(host: str, model: str, feeds: dict[str, np.ndarray], binary: bool = False) -> bytes:
    """One HTTP/1.1 infer request: JSON tensors, or JSON header + raw tensors both ways (`binary`)."""
    inputs = [{"name": name, "shape": list(a.shape), "datatype": v2_type(a)} for name, a in feeds.items()]
    for tensor, a in zip(inputs, feeds.values(), strict=True):
        tensor["parameters" if binary else "data"] = {"binary_data_size": a.nbytes} if binary else a.ravel().tolist()
    header = json.dumps({"inputs": inputs, **({"parameters": {"binary_data_output": True}} if binary else {})})
    body = header.encode() + (b"".join(a.tobytes() for a in feeds.values()) if binary else b"")
    extra = f"Inference-Header-Content-Length: {len(header)}\r\n" if binary else ""
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/{'octet-stream' if binary else 'json'}\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def grpc_request(model: str, feeds: dict[str, np.ndarray]) -> bytes:
    """A serialized ModelInferRequest with raw input contents."""
    request = message("ModelInferRequest")(model_name=model)
    for name, a in feeds.items():
        request.inputs.add(name=name, datatype=v2_type(a), shape=a.shape)
        request.raw_input_contents.append(a.tobytes())
    return request.SerializeToString()


async def one_connection(host: str, port: int, payload: bytes, count: int, latencies: list[float]) -> bytes:
    """`count` requests on one keep-alive connection; the last reply's head and body."""
    reader, writer = await asyncio.open_connection(host, port)
    head = body = b""
    try:
        for _ in range(count):
            t = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            body = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"request failed: {head.splitlines()[0].decode()} {body[:200]!r}")
            latencies.append(time.perf_counter() - t)
    finally:
        writer.close()
    return head + body


def load(url: str, payload: bytes, concurrency: int, requests: int) -> tuple[float, list[float], bytes]:
    """HTTP: requests/s, latencies and the last reply with `concurrency` connections."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []

    async def run() -> list[bytes]:
        per = max(1, requests // concurrency)
        return await asyncio.gather(
            *(one_connection(host, int(port), payload, per, latencies) for _ in range(concurrency))
        )

    start = time.perf_counter()
    bodies = asyncio.run(run())
    return len(latencies) / (time.perf_counter() - start), latencies, bodies[0]


def load_grpc(address: str, payload: bytes, concurrency: int, requests: int) -> tuple[float, list[float], bytes]:
    """gRPC: the same, with `concurrency` calls in flight on one channel.

    Each client sends its next call from the previous one's completion callback: grpc's
    future API costs the client about half the CPU per call of grpc.aio here.
    """
    latencies: list[float] = []
    replies: list[bytes] = []
    finished = threading.Semaphore(0)
    per = max(1, requests // concurrency)
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(f"/{SERVICE}/ModelInfer")  # bytes in, bytes out

        def send(left: int) -> None:
            sent = time.perf_counter()

            def done(future: grpc.Future) -> None:
                latencies.append(time.perf_counter() - sent)
                replies.append(future.result())
                if left > 1:
                    send(left - 1)
                else:
                    finished.release()

            call.future(payload).add_done_callback(done)

        start = time.perf_counter()
        for _ in range(concurrency):
            send(per)
        for _ in range(concurrency):
            finished.acquire()
        return len(latencies) / (time.perf_counter() - start), latencies, replies[-1]


def first_output(protocol: str, reply: bytes) -> np.ndarray:
    """The first output of a reply, decoded as its protocol sends it."""
    if protocol == "gRPC":
        decoded = message("ModelInferResponse").FromString(reply)
        out = decoded.outputs[0]
        return np.frombuffer(decoded.raw_output_contents[0], np.float32).reshape(list(out.shape))
    head, body = reply.split(b"\r\n\r\n", 1)
    if protocol == "HTTP binary":
        size = int(re.search(rb"(?i)inference-header-content-length:\s*(\d+)", head).group(1))
        out = json.loads(body[:size])["outputs"][0]
        return np.frombuffer(body[size:], np.float32).reshape(out["shape"])
    out = json.loads(body)["outputs"][0]
    return np.reshape(out["data"], out["shape"])


def serve_bare(size: int, grpc_size: int) -> None:
    """Run the bare endpoints: every HTTP request's body is read and answered with `size` fixed bytes
    of JSON; every gRPC ModelInfer call, on the same event loop, with `grpc_size` fixed bytes."""
    reply = b'{"pad":"' + b"x" * max(0, size - 10) + b'"}'
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(reply)).encode())],
    }
    with bind("127.0.0.1", 0) as probe:
        grpc_address = f"127.0.0.1:{probe.getsockname()[1]}"

    async def grpc_reply(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"x" * grpc_size

    async def lifespan(receive: Callable, send: Callable) -> None:
        await receive()  # startup
        grpc_server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(grpc_reply)
        grpc_server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler})])
        grpc_server.add_insecure_port(grpc_address)
        await grpc_server.start()
        await send({"type": "lifespan.startup.complete"})
        await receive()  # shutdown
        await grpc_server.stop(1)
        await send({"type": "lifespan.shutdown.complete"})

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        while (await receive()).get("more_body"):
            pass
        await send(start)
        await send({"type": "http.response.body", "body": reply})

    sock = bind("127.0.0.1", 0)
    print(f"gRPC (bare) at {grpc_address}", file=sys.stderr)
    print(f"serving the bare endpoint at http://127.0.0.1:{sock.getsockname()[1]}/v2", file=sys.stderr, flush=True)
    Server(http_config(app, DEFAULT_LIMITS, lifespan="on")).run(sockets=[sock])


def bare_server(size: int, grpc_size: int) -> ServerProcess:
    """The bare endpoints in a child process, started like the server."""
    bare = ServerProcess([])
    bare.command = [sys.executable, __file__, "--serve-bare", str(size), str(grpc_size)]
    return bare


def batch_stats(url: str, model: str) -> tuple[float, float]:
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    value = {
        kind: float(re.search(rf'onnxkit_batch_size_{kind}{{model="{model}"}} (\S+)', text).group(1))
        for kind in ("sum", "count")
    }
    return value["sum"], value["count"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc); NaN where there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(latencies: list[float], q: float) -> float:
    return sorted(latencies)[min(len(latencies) - 1, int(q * len(latencies)))] * 1000


def levels(text: str) -> list[int]:
    """--concurrency "1,8,32" -> [1, 8, 32]."""
    try:
        values = [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers separated by commas, e.g. 1,8,32") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every concurrency must be 1 or more")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="text-transformer", help="zoo name or .onnx path")
    parser.add_argument("--rows", type=machine.count, default=1, help="rows per request (the batch size compared)")
    parser.add_argument("--seq", type=int, default=128, help="size of other free dimensions (sequence)")
    parser.add_argument("--requests", type=machine.count, default=600, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=levels, default="1,8,32", help="levels, comma-separated")
    parser.add_argument("--rounds", type=machine.count, default=3, help="alternating baseline/server rounds per level")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads, both sides (default: serve's)")
    parser.add_argument("--serve-bare", type=int, nargs=2, help=argparse.SUPPRESS)  # the bare endpoints' child
    args = parser.parse_args()
    if args.requests < args.rounds:
        parser.error(f"--requests {args.requests} is fewer than --rounds {args.rounds}: each round needs one")
    if args.serve_bare is not None:
        serve_bare(*args.serve_bare)
        return
    print(machine.machine_line(), flush=True)

    with tempfile.TemporaryDirectory() as folder:
        path = model_file(args.model, Path(folder))
        # the baseline uses the server's session settings, so only HTTP and batching differ
        model = load_served(path.stem, path, "cpu", args.threads)
        feeds = example(model, args.rows, args.seq, np.random.default_rng(0))
        expected = model.predict(feeds).scores
        big = example(model, args.rows * args.max_batch_size, args.seq, np.random.default_rng(1))
        big_rps = in_process(model, big, seconds=1.0)[0] * args.max_batch_size
        print(f"model {model.name}: {model.describe()}; {args.rows} row(s) per request, seq {args.seq}")
        print(f"in-process at batch {args.rows * args.max_batch_size}: {big_rps:.1f} rows-of-{args.rows}/s")
        options = ["--max-batch-size", str(args.max_batch_size), "--max-delay-ms", str(args.max_delay_ms)]
        if args.threads:
            options += ["--threads", str(args.threads)]
        json_request = request_bytes("127.0.0.1", model.name, feeds)
        grpc_payload = grpc_request(model.name, feeds)
        with ServerProcess([str(path)], "--grpc-port", "0", *options) as server:
            reply_size = len(load(server.url, json_request, 1, 1)[2].split(b"\r\n\r\n", 1)[1])
            grpc_size = len(load_grpc(server.grpc, grpc_payload, 1, 1)[2])
            with bare_server(reply_size, grpc_size) as bare:
                clients: dict[str, Callable[[int, int], tuple[float, list[float], bytes]]] = {
                    "HTTP JSON": partial(load, server.url, json_request),
                    "HTTP binary": partial(
                        load, server.url, request_bytes("127.0.0.1", model.name, feeds, binary=True)
                    ),
                    "gRPC": partial(load_grpc, server.grpc, grpc_payload),
                }
                for send in clients.values():
                    send(4, 20)  # warm the connections and the batcher
                load(bare.url, json_request, 4, 20)
                load_grpc(bare.grpc, grpc_payload, 4, 20)
                for concurrency in args.concurrency:
                    # baseline and each protocol alternate in short rounds: the shared machine's load drifts
                    base_rps, base_lat, bare_rps, bare_grpc_rps = [], [], [], []
                    rps, lat, ratios, to_bare, cpu = ({p: [] for p in PROTOCOLS} for _ in range(5))
                    bare_cpu: list[float] = []  # µs of the bare endpoint's CPU per HTTP request
                    per_round = args.requests // args.rounds
                    batches = {p: [0.0, 0.0] for p in PROTOCOLS}  # rows, runs
                    for _ in range(args.rounds):
                        calls, calls_lat = in_process(model, feeds, seconds=0.5)
                        base_rps.append(calls)
                        base_lat += calls_lat
                        for protocol, send in clients.items():
                            before = batch_stats(server.url, model.name)
                            used = cpu_seconds(server.process.pid)
                            served, served_lat, reply = send(concurrency, per_round)
                            cpu[protocol].append((cpu_seconds(server.process.pid) - used) / per_round * 1e6)
                            after = batch_stats(server.url, model.name)
                            batches[protocol] = [batches[protocol][i] + after[i] - before[i] for i in range(2)]
                            rps[protocol].append(served)
                            ratios[protocol].append(served / calls)
                            lat[protocol] += served_lat
                            got = first_output(protocol, reply)
                            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
                        used = cpu_seconds(bare.process.pid)
                        bare_rps.append(load(bare.url, json_request, concurrency, per_round)[0])
                        bare_cpu.append((cpu_seconds(bare.process.pid) - used) / per_round * 1e6)
                        bare_grpc_rps.append(load_grpc(bare.grpc, grpc_payload, concurrency, per_round)[0])
                        for protocol in PROTOCOLS:  # each against the bare endpoint of its own stack
                            bare_of = bare_grpc_rps if protocol == "gRPC" else bare_rps
                            to_bare[protocol].append(rps[protocol][-1] / bare_of[-1])
                    print(
                        f"concurrency {concurrency:>2}: in-process {statistics.median(base_rps):7.1f} calls/s "
                        f"p50 {pct(base_lat, 0.5):6.2f} ms p99 {pct(base_lat, 0.99):6.2f} ms | bare stack "
                        f"{statistics.median(bare_rps):7.1f} req/s (rounds {min(bare_rps):.1f}-{max(bare_rps):.1f}; "
                        f"{statistics.median(bare_cpu):.0f} µs CPU/request), "
                        f"gRPC {statistics.median(bare_grpc_rps):7.1f} req/s "
                        f"(rounds {min(bare_grpc_rps):.1f}-{max(bare_grpc_rps):.1f})"
                    )
                    for protocol in PROTOCOLS:
                        mean_batch = batches[protocol][0] / max(1.0, batches[protocol][1])
                        print(
                            f"  {protocol:<11} {statistics.median(rps[protocol]):7.1f} req/s "
                            f"(rounds {min(rps[protocol]):.1f}-{max(rps[protocol]):.1f}) "
                            f"p50 {pct(lat[protocol], 0.5):7.2f} ms p99 {pct(lat[protocol], 0.99):7.2f} ms, "
                            f"mean batch {mean_batch:4.1f}, {statistics.median(cpu[protocol]):.0f} µs CPU/request | "
                            f"server/in-process {statistics.median(ratios[protocol]):4.2f}x "
                            f"(rounds {min(ratios[protocol]):.2f}-{max(ratios[protocol]):.2f}) | server/bare "
                            f"{statistics.median(to_bare[protocol]):4.2f}x "
                            f"(rounds {min(to_bare[protocol]):.2f}-{max(to_bare[protocol]):.2f})"
                        )


if __name__ == "__main__":
    machine.run(main)
