"""Start and stop a local TorchServe for refund-classifier, and wait until it can answer.

    refund-serve start [--model-store var/model-store] [--run-dir var/serve]
    refund-serve stop  [--run-dir var/serve]

TorchServe's own state (pid file, unpacked .mar, logs) stays in --run-dir instead of the
shared /tmp. Ports come from handlers/config.properties unless given (tests use free ones).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from common.cli import add_command, add_version, require_extra

HANDLERS = Path(__file__).resolve().parent
DEFAULT_CONFIG = HANDLERS / "config.properties"
LOG_CONFIG = HANDLERS / "log4j2.xml"
MODEL_NAME = "refund-classifier"


@dataclass(frozen=True)
class Ports:
    inference: int = 8080
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 7070
    grpc_management: int = 7071

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.inference}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics}"


def properties(text: str) -> dict[str, str]:
    """A config.properties as key -> value (comments and blank lines left out)."""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def write_config(run_dir: Path, ports: Ports, base: Path = DEFAULT_CONFIG) -> Path:
    """The checked-in config with this run's ports."""
    text = base.read_text()
    for key, port in (("inference", ports.inference), ("management", ports.management), ("metrics", ports.metrics)):
        text = re.sub(rf"^{key}_address=.*$", f"{key}_address=http://127.0.0.1:{port}", text, flags=re.M)
    for key, port in (("inference", ports.grpc_inference), ("management", ports.grpc_management)):
        text = re.sub(rf"^grpc_{key}_port=.*$", f"grpc_{key}_port={port}", text, flags=re.M)
    path = run_dir / "config.properties"
    path.write_text(text)
    return path


def torchserve_env(run_dir: Path) -> dict[str, str]:
    """Keep pid file, unpacked models and logs inside run_dir; workers use this venv's python."""
    tmp, logs = run_dir / "tmp", run_dir / "logs"
    tmp.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "TMPDIR": str(tmp),
        "LOG_LOCATION": str(logs),
        "METRICS_LOCATION": str(logs),
        "JAVA_TOOL_OPTIONS": f"-Djava.io.tmpdir={tmp}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def worker_pids(ports: Ports, model: str = MODEL_NAME) -> dict[str, int]:
    """Each READY worker's id and pid: a pid that changes is a worker that died and was restarted."""
    answer = httpx.get(f"{ports.management_url}/models/{model}", timeout=10)
    answer.raise_for_status()
    return {worker["id"]: worker["pid"] for worker in answer.json()[0]["workers"] if worker["status"] == "READY"}


def wait_ready(ports: Ports, model: str = MODEL_NAME, timeout: float = 180.0) -> None:
    """Until every worker of the model is READY (the management API says so), or raise."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{ports.management_url}/models/{model}", timeout=5)
            if answer.status_code == 200:
                workers = answer.json()[0].get("workers", [])
                if workers and all(worker["status"] == "READY" for worker in workers):
                    return
                last = f"workers {[worker['status'] for worker in workers]}"
            else:
                last = f"HTTP {answer.status_code}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise TimeoutError(f"TorchServe model {model} not ready after {timeout:.0f}s ({last})")


def start(
    model_store: Path, run_dir: Path, ports: Ports | None = None, model: str = MODEL_NAME, timeout: float = 180.0
) -> Ports:
    """TorchServe started, and waited for until every worker of the model is READY."""
    ports = launch(model_store, run_dir, ports, model)
    try:
        wait_ready(ports, model, timeout)
    except TimeoutError:
        stop(run_dir)
        raise
    return ports


def launch(model_store: Path, run_dir: Path, ports: Ports | None = None, model: str = MODEL_NAME) -> Ports:
    """TorchServe started in the background; its workers load the model after this returns."""
    ports = ports or Ports()
    run_dir = run_dir.resolve()
    env = torchserve_env(run_dir)
    command = [
        str(Path(sys.executable).parent / "torchserve"),
        "--start",
        "--ncs",
        "--ts-config",
        str(write_config(run_dir, ports)),
        "--log-config",
        str(LOG_CONFIG),
        "--model-store",
        str(model_store.resolve()),
        "--models",
        f"{model}={model}.mar",
    ]
    # TorchServe detaches; its output goes to a file so no pipe keeps the caller waiting.
    with (run_dir / "logs" / "torchserve.out").open("ab") as out:
        subprocess.run(command, env=env, cwd=run_dir, stdout=out, stderr=subprocess.STDOUT, check=True)
    return ports


def stop(run_dir: Path, timeout: float = 60.0) -> None:
    run_dir = run_dir.resolve()
    pid_file = run_dir / "tmp" / ".model_server.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().strip() or 0)
    env = torchserve_env(run_dir)
    with (run_dir / "logs" / "torchserve.out").open("ab") as out:
        subprocess.run(
            [str(Path(sys.executable).parent / "torchserve"), "--stop"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    deadline = time.monotonic() + timeout
    while pid and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    pid_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def served_version(ports: Ports, model: str = MODEL_NAME) -> str:
    """The version the .mar was archived with (the model's, from training), as TorchServe serves it."""
    answer = httpx.get(f"{ports.management_url}/models/{model}", timeout=10)
    answer.raise_for_status()
    return answer.json()[0]["modelVersion"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="refund-serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version(parser)
    commands = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    start_parser = add_command(commands, "start", f"start TorchServe with {MODEL_NAME}.mar and wait until it answers")
    start_parser.add_argument(
        "--model-store",
        type=Path,
        default=Path("var/model-store"),
        help=f"folder with {MODEL_NAME}.mar (default: var/model-store)",
    )
    start_parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for the workers (default: 180)"
    )
    stop_parser = add_command(commands, "stop", "stop the TorchServe started with the same --run-dir")
    for sub in (start_parser, stop_parser):
        sub.add_argument(
            "--run-dir", type=Path, default=Path("var/serve"), help="pid file, temp files and logs (default: var/serve)"
        )
    args = parser.parse_args(argv)  # --help and --version answer on any install
    require_extra("refund-serve", "serve", ("torch", "torchvision", "ts"))
    if args.command == "stop":
        stop(args.run_dir)
        print("TorchServe stopped")
        return 0
    mar = args.model_store / f"{MODEL_NAME}.mar"
    if not mar.is_file():
        print(f"refund-serve: no {mar}: archive a model first (make archive, or refund-train archive)", file=sys.stderr)
        return 1
    ports = start(args.model_store, args.run_dir, timeout=args.timeout)
    print(
        f"TorchServe ready: {MODEL_NAME} version {served_version(ports)} from {mar}; "
        f"POST {ports.inference_url}/predictions/{MODEL_NAME}; logs in {args.run_dir / 'logs'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
