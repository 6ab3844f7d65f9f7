"""kubectl and helm for the cluster tests: run, wait, and say why when something is wrong."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


class CommandFailed(AssertionError):
    pass


def run(*args: str, stdin: str | None = None, check: bool = True, timeout: float = 600) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode:
        raise CommandFailed(f"{shlex.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def kubectl(*args: str, **options: Any) -> str:
    return run("kubectl", *args, **options)


def kubectl_json(*args: str) -> dict:
    return json.loads(kubectl(*args, "-o", "json"))


def helm(*args: str, **options: Any) -> str:
    return run("helm", *args, **options)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    """probe() until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def job_state(namespace: str, job: str) -> str | None:
    """'Complete' or 'Failed' once the Job has ended, else None."""
    status = kubectl_json("-n", namespace, "get", "job", job).get("status", {})
    for condition in status.get("conditions", []):
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return condition["type"]
    return None


def diagnose(namespace: str) -> str:
    """Events, and describe and logs of every pod that is not Ready or Succeeded: what CI should print."""
    parts = [kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp", check=False)]
    for pod in kubectl_json("-n", namespace, "get", "pods").get("items", []):
        status = pod.get("status", {})
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        if ready or status.get("phase") == "Succeeded":
            continue
        name = pod["metadata"]["name"]
        parts.append(kubectl("-n", namespace, "describe", "pod", name, check=False))
        parts.append(kubectl("-n", namespace, "logs", name, "--all-containers", "--tail=80", check=False))
        parts.append(kubectl("-n", namespace, "logs", name, "--all-containers", "--previous", "--tail=40", check=False))
    return "\n".join(parts)


def report(message: str) -> None:
    """A progress line, flushed: `make k8s-e2e` runs pytest with -s, so CI shows it as it happens."""
    print(f"[k8s-e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


def can_i(account: str, namespace: str, *args: str) -> bool:
    """`kubectl auth can-i` as `account`: True on "yes", False on "no", and a failure on anything else
    (an error, a mistyped flag, a warning such as an unknown resource type), which must never read as a "no"."""
    command = ("kubectl", "auth", "can-i", "--as", account, "-n", namespace, *args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    answer = (done.returncode, done.stdout.strip(), done.stderr.strip())
    if answer not in ((0, "yes", ""), (1, "no", "")):
        raise CommandFailed(f"{shlex.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.returncode == 0


def require_cluster() -> None:
    """Fails (never skips) where KUBECONFIG is unset or its cluster does not answer."""
    if not os.environ.get("KUBECONFIG"):
        pytest.fail("KUBECONFIG is not set: start a cluster (make cluster-up, kind, k3d, minikube) and point it there")
    try:
        kubectl("get", "--raw", "/readyz", timeout=20)
    except (CommandFailed, subprocess.TimeoutExpired) as error:
        pytest.fail(f"the cluster of KUBECONFIG={os.environ['KUBECONFIG']} does not answer: {error}")


@contextlib.contextmanager
def scratch_namespace(prefix: str) -> Iterator[str]:
    """A namespace of its own for a test module, deleted (without waiting) afterwards."""
    name = prefix + secrets.token_hex(3)
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)
