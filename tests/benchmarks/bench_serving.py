"""How fast refund-classifier answers on the sample photos, served and not (`make bench`).

In one go, on the same photos, the same weights and the same preprocessing:

a) in-process bound: one process, no HTTP, the handler's preset and network, once per runtime:
   PyTorch fp32 (channels_last) and the runtime the .mar carries (handlers/runtime.py, e.g.
   ONNX Runtime int8); for each, two ways to use the CPUs are swept over batch sizes and the
   fastest is that runtime's bound (the served runtime's is the bound):
   "pool" (a batch decoded on one thread per CPU, then the model on all CPUs) and "lanes"
   (one thread per CPU, each decoding its own batch and running the model on one thread:
   TorchServe's workers x 1 thread, without processes or HTTP);
b) served: TorchServe started from the .mar on free loopback ports, with enough clients in
   flight to fill every worker's batch twice over (workers x batchSize x 2 by default);
c) naive baseline: a one-process HTTP server answering one request at a time (what
   `flask run --without-threads` gives) that fully decodes each photo with PIL (no
   `draft`), resizes it and runs the model on that one image, with the same clients.

Both servers are started and warmed up first; then a), b) and c) are measured in turns,
`--rounds` times, so that a slow drift of the machine's speed (a shared host) hits all
three alike. Prints img/s and p50/p95 latency for each (and the share of the CPUs other
processes took meanwhile), the served path's CPU per image split into the clients, TorchServe's
Java frontend and its Python workers, and ends with one line `served/inprocess=<r> served/naive=<r>
runtime/pytorch=<r>` (targets: >= 0.90 and >= 5; the last is the fast runtime's in-process
speed-up over PyTorch fp32). The clients are a lean asyncio HTTP/1.1 keep-alive load
generator, so that on a small machine they take as little CPU from the servers as they
can. Everything listens on 127.0.0.1 only; every server started here is stopped on exit.

    python -m tests.benchmarks.bench_serving [--sample DIR] [--seconds 30] [--rounds 3] [--photos N]
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch
import yaml

from common.classes import load_classes
from handlers import serve
from handlers.network import load_model
from handlers.presets import ClassificationPresetEval, PresetConfig, decode_image, fit_to_input, to_tensor
from handlers.runtime import Loaded, TorchRunner, load_runner
from tests.ports import free_port, free_ports

ROOT = Path(__file__).resolve().parents[2]
PATH = f"/predictions/{serve.MODEL_NAME}"
BATCH_SIZES = (1, 8, 16, 32, 64)
SWEEP_SECONDS = 2.0  # per strategy and batch size, and at least one pass over the photos
STRATEGIES = ("pool", "lanes")
BUSY = 0.05  # share of the CPUs taken by other processes above which the figures are not trusted
TARGETS = {"served/inprocess": 0.90, "served/naive": 5.0}
PYTORCH = "pytorch fp32"


@dataclass
class Result:
    name: str
    images: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # per image, seconds
    statuses: Counter = field(default_factory=Counter)
    other_cpu: float = 0.0  # share of the CPUs that other processes took meanwhile
    cpu: Counter = field(default_factory=Counter)  # CPU seconds of the clients, the server and its workers
    note: str = ""

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def add(self, other: Result) -> None:
        total = self.seconds + other.seconds
        self.other_cpu = (self.other_cpu * self.seconds + other.other_cpu * other.seconds) / total
        self.images += other.images
        self.seconds = total
        self.latencies += other.latencies
        self.statuses += other.statuses
        self.cpu += other.cpu

    def percentile(self, q: int) -> float:
        return 1000 * statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]

    def line(self) -> str:
        return (
            f"{self.name:<38} {self.rate:7.1f} img/s   p50 {self.percentile(50):6.1f} ms   "
            f"p95 {self.percentile(95):6.1f} ms   others used {100 * self.other_cpu:2.0f}% CPU   {self.note}"
        )


def usable_cpus() -> int:
    return len(psutil.Process().cpu_affinity())


def loadavg() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (steal included: the hypervisor gave them to others)."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq + times.steal


def cpu_seconds(roots: set[int]) -> dict[int, float]:
    """CPU seconds each of the given processes and their descendants has used so far."""
    used = {}
    for root in roots:
        with suppress(psutil.NoSuchProcess):
            tree = psutil.Process(root)
            for process in [tree, *tree.children(recursive=True)]:
                with suppress(psutil.NoSuchProcess):
                    times = process.cpu_times()
                    used[process.pid] = times.user + times.system
    return used


class OtherCpu:
    """The share of the machine's CPUs used by anything but the given processes and their
    descendants (other people's work, the hypervisor's steal) during a measurement."""

    def __init__(self, *roots: int) -> None:
        self.roots = set(roots)
        self.share = 0.0
        self.used: dict[int, float] = {}  # CPU seconds per process of the given trees

    def __enter__(self) -> OtherCpu:
        self.started, self.busy, self.ours = time.monotonic(), busy_seconds(), cpu_seconds(self.roots)
        return self

    def __exit__(self, *_) -> None:
        self.used = {pid: seconds - self.ours.get(pid, 0.0) for pid, seconds in cpu_seconds(self.roots).items()}
        ours = sum(self.used.values())
        elapsed = time.monotonic() - self.started
        self.share = max(0.0, (busy_seconds() - self.busy - ours) / (elapsed * psutil.cpu_count()))


# --- a) in-process bound -------------------------------------------------------------


def runtimes(model_dir: Path) -> dict[str, Callable[[int], Loaded]]:
    """Each runtime to measure in-process, by name, as a runner for a thread count: PyTorch fp32 and,
    where model.json names one, the runtime the handler runs (load_runner, as the .mar does)."""
    meta = json.loads((model_dir / "model.json").read_text())
    pytorch = Loaded(TorchRunner(load_model(model_dir)), float(meta.get("temperature", 1.0)), "pytorch fp32")
    found = {pytorch.description: lambda threads: pytorch}  # torch's threads are the process's, set per strategy
    if "runtime" in meta:
        served = load_runner(model_dir, 1).description
        found[served] = lambda threads: load_runner(model_dir, threads)
    return found


class InProcess:
    """The handler's work without TorchServe: preset + one runtime's network + softmax, in one process."""

    def __init__(self, photos: list[bytes], model_dir: Path, runtime: str, runner: Callable[[int], Loaded]) -> None:
        meta = json.loads((model_dir / "model.json").read_text())
        self.runtime, self.make_runner, self.runners = runtime, runner, {}
        self.preset = ClassificationPresetEval(PresetConfig.from_dict(meta["preset"]))
        self.cpus = usable_cpus()
        self.photos = photos
        self.cycled = photos * (2 + max(BATCH_SIZES) // len(photos))

    def loaded(self, threads: int) -> Loaded:
        if threads not in self.runners:
            self.runners[threads] = self.make_runner(threads)
        return self.runners[threads]

    def run(self, loaded: Loaded, batch: list[bytes], pool: ThreadPoolExecutor | None) -> float:
        started = time.perf_counter()
        tensors = list(pool.map(self.preset, batch)) if pool else [self.preset(photo) for photo in batch]
        torch.softmax(loaded.runner(torch.stack(tensors)) / loaded.temperature, dim=1).tolist()
        return time.perf_counter() - started

    def measure(self, strategy: str, size: int, seconds: float, min_images: int = 0) -> Result:
        lanes = self.cpus if strategy == "lanes" else 1
        threads = 1 if strategy == "lanes" else self.cpus
        torch.set_num_threads(threads)
        loaded = self.loaded(threads)
        with ThreadPoolExecutor(self.cpus) as decoders, ThreadPoolExecutor(lanes) as workers:
            pool = decoders if strategy == "pool" else None
            self.run(loaded, self.cycled[:size], pool)  # warm-up: the runtime prepares its kernels for this shape
            batches, latencies = itertools.count(), []
            started = time.perf_counter()
            deadline = started + seconds

            def lane() -> None:
                while (index := next(batches)) * size < min_images or time.perf_counter() < deadline:
                    start = index * size % len(self.photos)
                    # every image of a batch waits for the whole batch
                    latencies.extend([self.run(loaded, self.cycled[start : start + size], pool)] * size)

            with OtherCpu(os.getpid()) as other:
                for future in [workers.submit(lane) for _ in range(lanes)]:
                    future.result()
            elapsed = time.perf_counter() - started
        return Result("in-process", len(latencies), elapsed, latencies, other_cpu=other.share)

    def sweep(self) -> dict[str, int]:
        """Each strategy at each batch size for a moment; the fastest batch size per strategy."""
        best = {}
        for strategy in STRATEGIES:
            rates = {size: self.measure(strategy, size, SWEEP_SECONDS, len(self.photos)).rate for size in BATCH_SIZES}
            best[strategy] = max(rates, key=rates.get)
            line = ", ".join(f"{size}: {rate:.0f}" for size, rate in rates.items())
            print(f"  in-process sweep, {self.runtime}, {strategy} (batch size: img/s): {line}", flush=True)
        return best

    def name(self, strategy: str) -> str:
        return f"in-process {self.runtime} ({strategy})"

    def setup(self, strategy: str, size: int) -> Callable[[float], Result]:
        def measure(seconds: float) -> Result:
            result = self.measure(strategy, size, seconds)
            result.name = self.name(strategy)
            return result

        return measure

    def describe(self, strategy: str, size: int) -> str:
        if strategy == "pool":
            return f"one process: batch {size} decoded on {self.cpus} threads, network on {self.cpus} threads"
        return f"one process: {self.cpus} threads x (decode batch {size} + network on 1 thread)"


# --- the load generator ----------------------------------------------------------------


def http_request(port: int, body: bytes, content_type: str = "image/jpeg") -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the connection stays open (HTTP/1.1 keep-alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if "chunked" in headers.get("transfer-encoding", ""):
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
    keep = status_line.startswith("HTTP/1.1") and headers.get("connection") != "close"
    return int(status_line.split()[1]), body, keep


async def drive(
    port: int, requests: list[bytes], concurrency: int, seconds: float, bodies: dict[int, bytes] | None
) -> Result:
    """`concurrency` connections, each sending the next request as soon as its answer came back."""
    result = Result("")
    issued = 0
    deadline = time.perf_counter() + seconds
    finished = time.perf_counter()

    async def connection() -> None:
        nonlocal issued, finished
        reader = writer = None
        while time.perf_counter() < deadline:
            index = issued % len(requests)
            issued += 1
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            sent = time.perf_counter()
            writer.write(requests[index])
            status, body, keep = await read_response(reader)
            finished = time.perf_counter()
            result.latencies.append(finished - sent)
            result.statuses[status] += 1
            if bodies is not None:
                bodies[index] = body
            if not keep:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    result.images, result.seconds = len(result.latencies), finished - started
    return result


class Clients:
    """Load on one server: the photos as raw-bytes POSTs, `concurrency` of them in flight."""

    def __init__(self, name: str, port: int, photos: list[bytes], concurrency: int, servers: list[int]) -> None:
        self.name, self.port, self.concurrency, self.servers = name, port, concurrency, servers
        self.requests = [http_request(port, photo) for photo in photos]

    def __call__(self, seconds: float, bodies: dict[int, bytes] | None = None) -> Result:
        with OtherCpu(os.getpid(), *self.servers) as other:
            result = asyncio.run(drive(self.port, self.requests, self.concurrency, seconds, bodies))
        result.name, result.other_cpu = self.name, other.share
        clients, server = other.used.pop(os.getpid(), 0.0), other.used.pop(self.servers[0], 0.0)
        result.cpu.update({"clients": clients, "server": server, "its workers": sum(other.used.values())})
        return result


# --- b) served path --------------------------------------------------------------------


def mar_settings(mar: Path) -> dict:
    with zipfile.ZipFile(mar) as archive:
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        return yaml.safe_load(archive.read(manifest["model"].get("configFile", "model-config.yaml")))


@contextmanager
def torchserve(model_store: Path, run_dir: Path) -> Iterator[tuple[serve.Ports, int]]:
    """TorchServe on free ports; yields its ports and the frontend's pid."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    try:
        ports = serve.start(model_store, run_dir, free_ports())
        yield ports, int((run_dir.resolve() / "tmp" / ".model_server.pid").read_text())
    finally:
        serve.stop(run_dir)


# --- c) naive baseline -----------------------------------------------------------------


def naive_server(port: int, model_dir: Path) -> None:
    """One process, one request at a time: full PIL decode, resize, the model on one image."""
    model, meta = load_model(model_dir), json.loads((model_dir / "model.json").read_text())
    config = PresetConfig.from_dict(meta["preset"])
    classes = load_classes(model_dir / "index_to_name.json")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers["Content-Length"]))
            tensor = to_tensor(fit_to_input(decode_image(data), config), config)
            with torch.no_grad():
                probabilities = torch.softmax(model(tensor[None]) / meta.get("temperature", 1.0), dim=1)[0]
            best = int(probabilities.argmax())
            body = json.dumps({"category": classes[best], "probability": float(probabilities[best])}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    class Server(http.server.HTTPServer):
        request_queue_size = 256  # all the clients' connections wait in the backlog, none are refused

    with Server(("127.0.0.1", port), Handler) as server:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print(f"ready {torch.get_num_threads()}", flush=True)
        server.serve_forever()


@contextmanager
def naive(model_dir: Path) -> Iterator[tuple[int, int, int]]:
    """The naive server in a child process; yields its port, pid and torch threads."""
    port = free_port()
    command = [sys.executable, "-m", "tests.benchmarks.bench_serving", "--naive-server", str(port)]
    process = subprocess.Popen([*command, "--model", str(model_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        ready = process.stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise RuntimeError(f"naive server did not start (exit code {process.wait(30)})")
        yield port, process.pid, int(ready[1])
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- main ------------------------------------------------------------------------------


def expected_probabilities(photos: list[bytes], model_dir: Path) -> list[dict[str, float]]:
    """What the evaluation code says for each photo with the runtime the .mar runs, to hold the served
    answers against."""
    loaded, meta = load_runner(model_dir, usable_cpus()), json.loads((model_dir / "model.json").read_text())
    classes = load_classes(model_dir / "index_to_name.json")
    preset = ClassificationPresetEval(PresetConfig.from_dict(meta["preset"]))
    rows = []
    for start in range(0, len(photos), 32):
        inputs = torch.stack([preset(photo) for photo in photos[start : start + 32]])
        rows += torch.softmax(loaded.runner(inputs) / loaded.temperature, dim=1).tolist()
    return [dict(zip(classes, row, strict=True)) for row in rows]


def check_answers(bodies: dict[int, bytes], expected: list[dict[str, float]]) -> None:
    """The served answers are the in-process ones: no skew, no mixed-up batch rows."""

    def same(index: int, body: bytes) -> bool:
        served = json.loads(body).get("probabilities", {})
        return served.keys() == expected[index].keys() and all(
            abs(served[name] - p) < 1e-4 for name, p in expected[index].items()
        )

    wrong = [index for index, body in bodies.items() if not same(index, body)]
    if wrong:
        raise AssertionError(f"{len(wrong)} of {len(bodies)} served answers differ from the in-process ones")
    print(f"  the served answers for {len(bodies)} photos equal the in-process ones")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=Path, default=ROOT.parent / "shared/datasets/returns-photos-sample")
    parser.add_argument("--model", type=Path, default=ROOT / "var/model", help="the trained model folder")
    parser.add_argument("--model-store", type=Path, default=ROOT / "var/model-store")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "var/bench-serving")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per setup (default: 30)")
    parser.add_argument("--rounds", type=int, default=3, help="turns the seconds are split into (default: 3)")
    parser.add_argument(
        "--warmup",
        type=float,
        # TorchServe's JVM compiles its hot paths for about the first minute under load (its C2 compiler threads
        # took 0.26 ms of CPU an image in the first 20 s, 0.02 ms after 60 s); a night runs for hours.
        default=90.0,
        help="seconds of load on TorchServe before measuring, until its JIT compiler is done (default: 90)",
    )
    parser.add_argument("--concurrency", type=int, help="clients in flight (default: workers x batchSize x 2)")
    parser.add_argument("--photos", type=int, help="the first N sample photos only (default: all; a quick check)")
    parser.add_argument("--naive-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive_server:
        naive_server(args.naive_server, args.model)
        return 0

    photos = [path.read_bytes() for path in sorted((args.sample / "images").glob("*.jpg"))[: args.photos]]
    if not photos:
        parser.error(f"no *.jpg under {args.sample / 'images'}")
    mar = args.model_store / f"{serve.MODEL_NAME}.mar"
    settings = mar_settings(mar)
    # TorchServe's worker count (the .mar carries none): TS_DEFAULT_WORKERS_PER_MODEL, else one per usable CPU.
    workers = int(os.environ.get("TS_DEFAULT_WORKERS_PER_MODEL") or usable_cpus())
    batch_size = int(settings["batchSize"])
    concurrency = args.concurrency or 2 * workers * batch_size
    with OtherCpu(os.getpid()) as before:
        time.sleep(2)
    size = sum(map(len, photos)) / len(photos) / 1e3
    print(f"{len(photos)} photos ({size:.0f} kB average), {usable_cpus()} usable CPUs, {loadavg()}")
    print(f"other processes use {100 * before.share:.0f}% of the CPUs before the start", flush=True)

    expected = expected_probabilities(photos, args.model)
    inprocess = [InProcess(photos, args.model, name, runner) for name, runner in runtimes(args.model).items()]
    best_sizes = {(bound, strategy): size for bound in inprocess for strategy, size in bound.sweep().items()}
    print(f"starting TorchServe ({mar}) and the naive server ...", flush=True)
    with ExitStack() as stack:
        ports, frontend = stack.enter_context(torchserve(args.model_store, args.run_dir / "torchserve"))
        naive_port, naive_pid, naive_threads = stack.enter_context(naive(args.model))
        setups: dict[str, Callable[[float], Result]] = {
            bound.name(strategy): bound.setup(strategy, size) for (bound, strategy), size in best_sizes.items()
        }
        setups |= {
            "served": Clients("served", ports.inference, photos, concurrency, [frontend]),
            "naive": Clients("naive", naive_port, photos, concurrency, [naive_pid]),
        }
        # The Java frontend needs ~30 s of load to compile its hot paths; until then it takes
        # about twice the CPU it needs in steady state, which the workers then lack.
        print(f"warming up TorchServe for {args.warmup:.0f} s ...", flush=True)
        bodies: dict[int, bytes] = {}
        setups["served"](args.warmup, bodies)
        check_answers(bodies, expected)
        setups["naive"](2.0)
        results = {name: Result(name) for name in setups}
        print(f"measuring {args.rounds} rounds of {args.seconds / args.rounds:.0f} s per setup ...", flush=True)
        for turn in range(1, args.rounds + 1):
            rates = []
            for name, setup in setups.items():
                result = setup(args.seconds / args.rounds)
                results[name].add(result)
                rates.append(f"{name} {result.rate:.1f}")
            print(f"  round {turn}/{args.rounds} (img/s): {', '.join(rates)}   {loadavg()}", flush=True)

    for (runtime, strategy), size in best_sizes.items():
        results[runtime.name(strategy)].note = runtime.describe(strategy, size)
    bounds = {
        runtime.runtime: max((results[runtime.name(strategy)] for strategy in STRATEGIES), key=lambda r: r.rate)
        for runtime in inprocess
    }
    served_runtime = inprocess[-1].runtime  # what the .mar runs: the last of runtimes()
    bound = bounds[served_runtime]
    bound.note += "   <- the bound"
    if served_runtime != PYTORCH:
        bounds[PYTORCH].note += "   <- PyTorch's bound"
    results["served"].note = (
        f"TorchServe ({served_runtime}) {workers} workers x batchSize {batch_size}, "
        f"maxBatchDelay {settings['maxBatchDelay']} ms, {concurrency} clients in flight"
    )
    results["naive"].note = (
        f"http.server, one request at a time, full decode, batch 1, {naive_threads} torch threads, "
        f"{concurrency} clients in flight"
    )
    print()
    for result in results.values():
        print(result.line())
        if result.statuses and set(result.statuses) != {200}:
            print(f"  unexpected HTTP statuses: {dict(result.statuses)}")
    if (busiest := max(result.other_cpu for result in results.values())) > BUSY:
        print(f"warning: other processes took up to {100 * busiest:.0f}% of the CPUs; re-run on a quiet machine")
    served = results["served"].rate
    # Where the served path's CPU goes: TorchServe's Java frontend is "server", its Python workers the rest.
    spent = {part: 1000 * seconds / results["served"].images for part, seconds in results["served"].cpu.items()}
    print(
        "served CPU per image: "
        + ", ".join(f"{part} {ms:.2f} ms" for part, ms in spent.items())
        + f"; the bound spends {1000 * usable_cpus() / bound.rate:.2f} ms in all"
    )
    ratios = {"served/inprocess": served / bound.rate, "served/naive": served / results["naive"].rate}
    ratios |= {
        "served/inprocess-pytorch": served / bounds[PYTORCH].rate,
        "runtime/pytorch": bound.rate / bounds[PYTORCH].rate,
    }
    missed = [f"{name} {ratio:.2f} < {TARGETS[name]}" for name, ratio in ratios.items() if ratio < TARGETS.get(name, 0)]
    if missed:
        print("target missed: " + ", ".join(missed))
    print(" ".join(f"{name}={ratio:.2f}" for name, ratio in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
