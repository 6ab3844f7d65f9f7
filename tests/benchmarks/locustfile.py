"""Load test of refund-classifier's REST contract with locust (`make loadtest USERS=32 SECONDS=60`).

Each user sends requests back to back, mixing (by weight):
  6  raw photo bytes (image/jpeg),
  2  a multipart/form-data upload,
  2  a KServe v1 batch: {"instances": [{"data": "<base64>"}, ...]} with 4 photos,
  2  a bad input, drawn from: empty body (400), text (415), truncated JPEG (415),
     decompression-bomb PNG (413), invalid base64 JSON (400), empty "instances" (400),
     a body over max_request_size (413), and a KServe batch with one bad instance among
     good ones (200, that instance answered with its own code).
A bad input counts as a success when exactly its expected 4xx arrives, as a failure otherwise.

Run as a module it is the whole load test: it uses the TorchServe of `make serve` if one
answers (127.0.0.1:8080/8081/8082), else starts one like `make serve` does and stops it
afterwards (or, with --free-ports, always starts a private one on free ports). It notes
the worker pids, runs the locust CLI headless with this file, writes CSV and HTML reports
under var/loadtest/, and then checks: zero 5xx, zero connection errors, zero failed
requests and the same worker pids (no worker restarted).

    python -m tests.benchmarks.locustfile --users 32 --seconds 60 [--free-ports]
"""

from __future__ import annotations

import os

# As a module this file only orchestrates (TorchServe, the locust CLI, the checks) and
# needs no gevent; the locust CLI that loads it as a locustfile gets the monkey-patching.
if __name__ == "__main__":
    os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"

import argparse
import base64
import csv
import io
import json
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from locust import FastHttpUser, constant, events, task
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MODEL = "refund-classifier"
PATH = f"/predictions/{MODEL}"
BATCH = 4  # images per KServe v1 request
MAX_REQUEST_SIZE = 16 * 1024 * 1024  # handlers/config.properties

# Filled on init from --sample: the photos as bytes and as base64 text.
PHOTOS: list[bytes] = []
PHOTOS_B64: list[str] = []
# (name, request keyword arguments, expected status); the handler's 4xx carry {"error": ...}.
BAD: list[tuple[str, dict, int]] = []
# "request name status" -> count, and request name -> failures; written to --status-file at the end.
STATUSES: Counter = Counter()
FAILURES: Counter = Counter()


@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    parser.add_argument("--sample", default=str(ROOT.parent / "shared/datasets/returns-photos-sample"))
    parser.add_argument("--status-file", default="", help="where to write the HTTP status counts (JSON)")


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def multipart(field: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@events.init.add_listener
def load_inputs(environment, **_) -> None:
    options = environment.parsed_options
    if options is None:
        return
    PHOTOS.extend(path.read_bytes() for path in sorted((Path(options.sample) / "images").glob("*.jpg")))
    if not PHOTOS:
        raise SystemExit(f"no *.jpg under {options.sample}/images")
    PHOTOS_B64.extend(base64.b64encode(photo).decode() for photo in PHOTOS)
    raw = {"Content-Type": "application/octet-stream"}
    mixed = [{"data": b64} for b64 in PHOTOS_B64[:2]] + [{"data": "%%% not base64"}, {"data": PHOTOS_B64[2]}]
    BAD.extend(
        [
            ("bad: empty body", {"data": b"", "headers": raw}, 400),
            ("bad: not an image", {"data": b"these bytes are no image " * 40, "headers": raw}, 415),
            ("bad: truncated JPEG", {"data": PHOTOS[0][:2000], "headers": {"Content-Type": "image/jpeg"}}, 415),
            ("bad: decompression bomb", {"data": png(Image.new("1", (7000, 7000))), "headers": raw}, 413),
            ("bad: invalid base64", {"json": {"image": "%%% not base64"}}, 400),
            ("bad: empty instances", {"json": {"instances": []}}, 400),
            # Refused by TorchServe's frontend before any worker sees it: a 413 with an empty body.
            ("bad: over max_request_size", {"data": b"\xff" * (MAX_REQUEST_SIZE + 1), "headers": raw}, 413),
            ("bad: one bad instance in a batch", {"json": {"instances": mixed}}, 200),
        ]
    )


@events.request.add_listener
def count_status(name, response, exception, **_) -> None:
    STATUSES[f"{name} {getattr(response, 'status_code', 0) or 0}"] += 1
    if exception:
        FAILURES[name] += 1


@events.quitting.add_listener
def write_statuses(environment, **_) -> None:
    if environment.parsed_options and environment.parsed_options.status_file:
        counts = {"statuses": STATUSES, "failures": FAILURES}
        Path(environment.parsed_options.status_file).write_text(json.dumps(counts, indent=1, sort_keys=True))


def check_prediction(response, images: int = 1) -> None:
    """Mark the response a success only if it is a 200 with a prediction per image."""
    if response.status_code != 200:
        response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
        return
    try:
        body = response.json()
        answers = body["predictions"] if images > 1 else [body]
        ok = len(answers) == images and all("category" in answer for answer in answers)
    except (ValueError, KeyError, TypeError):
        ok = False
    if ok:
        response.success()
    else:
        response.failure(f"unexpected body: {response.text[:200]}")


class RefundClient(FastHttpUser):
    """One client sending its next request as soon as the answer to the previous one came back."""

    wait_time = constant(0)
    network_timeout = 120.0
    connection_timeout = 10.0

    @task(6)
    def raw_bytes(self) -> None:
        photo = random.choice(PHOTOS)
        with self.client.post(
            PATH, data=photo, headers={"Content-Type": "image/jpeg"}, name="raw bytes", catch_response=True
        ) as response:
            check_prediction(response)

    @task(2)
    def multipart_upload(self) -> None:
        body, content_type = multipart("data", "photo.jpg", random.choice(PHOTOS), "image/jpeg")
        with self.client.post(
            PATH, data=body, headers={"Content-Type": content_type}, name="multipart", catch_response=True
        ) as response:
            check_prediction(response)

    @task(2)
    def kserve_batch(self) -> None:
        instances = [{"data": b64} for b64 in random.sample(PHOTOS_B64, BATCH)]
        with self.client.post(
            PATH, json={"instances": instances}, name=f"kserve v1 x{BATCH}", catch_response=True
        ) as response:
            check_prediction(response, BATCH)

    @task(2)
    def bad_input(self) -> None:
        name, request, expected = random.choice(BAD)
        with self.client.post(PATH, name=name, catch_response=True, **request) as response:
            if response.status_code != expected:
                response.failure(f"expected HTTP {expected}, got {response.status_code}: {response.text[:200]}")
            elif expected == 200:
                codes = [answer.get("code") for answer in response.json()["predictions"]]
                if codes == [None, None, 400, None]:
                    response.success()
                else:
                    response.failure(f"expected per-instance codes [None, None, 400, None], got {codes}")
            elif "error" not in response.text and name != "bad: over max_request_size":
                response.failure(f"HTTP {expected} without an error message: {response.text[:200]}")
            else:
                response.success()


# --- python -m tests.benchmarks.locustfile: the whole load test -------------------------


def summary(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open() as file:
        return list(csv.DictReader(file))


def print_table(rows: list[dict[str, str]], seconds: float) -> None:
    print(f"\n{'request':<34} {'count':>7} {'failed':>6} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    for row in rows:
        name = row["Name"] if row["Name"] != "Aggregated" else "all"
        rate = int(row["Request Count"]) / seconds
        print(
            f"{name:<34} {row['Request Count']:>7} {row['Failure Count']:>6} {rate:7.1f} "
            f"{row['50%']:>7} {row['95%']:>7} {row['99%']:>7}"
        )


def handler_metrics(metrics_url: str) -> list[str]:
    import httpx

    text = httpx.get(f"{metrics_url}/metrics", timeout=10).text
    preprocess = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith("PreprocessTimePerImage")]
    counts = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("PredictionsPerCategory")]
    requests = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("ts_inference_requests_total")
    ]
    return [
        f"ts_inference_requests_total {sum(requests):.0f}",
        f"PreprocessTimePerImage (last batch) {float(preprocess[-1]) if preprocess else float('nan'):.2f} ms",
        f"PredictionsPerCategory {sum(counts):.0f} predictions in {len(counts)} categories since TorchServe started",
    ]


def main(argv: list[str] | None = None) -> int:
    import httpx

    from handlers import serve
    from handlers.serve import worker_pids
    from tests.ports import distinct_free_ports, free_ports

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--sample", type=Path, default=ROOT.parent / "shared/datasets/returns-photos-sample")
    parser.add_argument("--model-store", type=Path, default=ROOT / "var/model-store")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "var/serve", help="run dir of a TorchServe started here")
    parser.add_argument("--out", type=Path, default=ROOT / "var/loadtest", help="reports (default: var/loadtest)")
    parser.add_argument(
        "--ports",
        default="8080,8081,8082",
        help="inference,management,metrics ports of the TorchServe to use or start (default: make serve's)",
    )
    parser.add_argument(
        "--free-ports", action="store_true", help="always start a private TorchServe on free ports (and stop it)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    if args.free_ports:
        ports, run_dir = free_ports(), args.out / "torchserve"
    else:
        inference, management, metrics = (int(port) for port in args.ports.split(","))
        grpc = (7070, 7071) if (inference, management, metrics) == (8080, 8081, 8082) else tuple(distinct_free_ports(2))
        ports, run_dir = serve.Ports(inference, management, metrics, *grpc), args.run_dir
    started = False
    try:
        before = worker_pids(ports)
        print(f"using the TorchServe running at {ports.inference_url}")
    except (httpx.HTTPError, LookupError, ValueError):
        print(f"starting TorchServe at {ports.inference_url} (run dir {run_dir}) ...", flush=True)
        serve.start(args.model_store, run_dir, ports)
        started = True
        before = worker_pids(ports)
    try:
        prefix = args.out / "loadtest"
        status_file = args.out / "status_codes.json"
        status_file.unlink(missing_ok=True)
        command = [
            str(Path(sys.executable).parent / "locust"),
            *("-f", __file__, "--headless", "--only-summary", "--host", ports.inference_url),
            *("--users", str(args.users), "--spawn-rate", str(args.users), "--run-time", f"{args.seconds}s"),
            *("--csv", str(prefix), "--html", f"{prefix}.html"),
            *("--sample", str(args.sample), "--status-file", str(status_file)),
        ]
        env = {key: value for key, value in os.environ.items() if key != "LOCUST_SKIP_MONKEY_PATCH"}
        print(f"locust: {args.users} users for {args.seconds} s against {ports.inference_url}", flush=True)
        began = time.monotonic()
        locust = subprocess.run(command, env=env, cwd=ROOT, check=False)
        seconds = time.monotonic() - began
        after = worker_pids(ports)
        metrics = handler_metrics(ports.metrics_url)
    finally:
        if started:
            serve.stop(run_dir)

    counts = json.loads(status_file.read_text()) if status_file.exists() else {}
    statuses, failures = Counter(counts.get("statuses", {})), Counter(counts.get("failures", {}))
    by_code = Counter()
    for key, count in statuses.items():
        by_code[int(key.rsplit(" ", 1)[1])] += count
    rows = summary(Path(f"{prefix}_stats.csv"))
    print_table(rows, float(args.seconds))
    good = {"raw bytes": 1, "multipart": 1, f"kserve v1 x{BATCH}": BATCH}
    images = sum(statuses[f"{name} 200"] * count for name, count in good.items())
    bad_sent = sum(count for key, count in statuses.items() if key.startswith("bad: "))
    bad_failed = sum(count for name, count in failures.items() if name.startswith("bad: "))
    print(f"\nHTTP status codes: {dict(sorted(by_code.items()))}")
    print(f"good images classified: {images} ({images / args.seconds:.1f} img/s)")
    print(f"bad inputs: {bad_sent} sent, {bad_failed} not answered with their expected status")
    print("handler metrics: " + "; ".join(metrics))
    print(f"worker pids before {sorted(before.values())}, after {sorted(after.values())}")
    print(f"reports: {prefix}_stats.csv, {prefix}_failures.csv, {prefix}.html (locust ran {seconds:.0f} s)")

    problems = []
    if fivexx := sum(count for code, count in by_code.items() if code >= 500):
        problems.append(f"{fivexx} responses with a 5xx status")
    if by_code.get(0):
        problems.append(f"{by_code[0]} requests without any HTTP response (connection errors)")
    if failed := max(
        sum(failures.values()), sum(int(row["Failure Count"]) for row in rows if row["Name"] != "Aggregated")
    ):
        problems.append(f"{failed} failed requests (see {prefix}_failures.csv)")
    if before != after:
        problems.append("workers restarted or missing (pids changed)")
    if not statuses:
        problems.append(f"locust recorded no requests (exit code {locust.returncode})")
    if problems:
        print("FAILED: " + "; ".join(problems))
        return 1
    print(f"OK: {sum(statuses.values())} requests, zero 5xx, zero failures, zero worker restarts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
