"""Scale-to-zero against an in-memory Kubernetes API (kmock) over real HTTP: the official client,
unmocked, talks to it as to a cluster. The tests play the Deployment controller where needed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import kmock as kmock_lib
import pytest
from batch_job.__main__ import main
from batch_job.ledger.results import Ledger
from batch_job.ledger.schema import NEEDS_REVIEW, OK
from batch_job.night.scaler import DeploymentNotFound, ScaleError, load_api, scale_down, scale_up, serving_scaled
from kubernetes import client

from tests.images import encode, product_image

DEPLOYMENTS = kmock_lib.resource("apps/v1/deployments")
NAMESPACE, NAME = "refund", "torchserve"
POLL_S = 0.05


@dataclass(frozen=True)
class Scale:
    """The scale_* fields of the job's Settings."""

    scale_deployment: str = NAME
    scale_namespace: str = NAMESPACE
    scale_replicas: int = 2
    scale_timeout: float = 5.0


def torchserve(replicas: int, ready: int) -> dict:
    labels = {"app": "torchserve"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "torchserve", "image": "refund-sorter/torchserve:test"}]},
            },
        },
        # Kubernetes leaves zero counts out of the status.
        "status": {"replicas": replicas, "readyReplicas": ready} if ready else {},
    }


def cluster(kmock: kmock_lib.KubernetesEmulator, replicas: int = 0, ready: int = 0) -> client.AppsV1Api:
    """TorchServe's Deployment in the fake API, and a real client pointed at it."""
    kmock.objects[DEPLOYMENTS, NAMESPACE, NAME] = torchserve(replicas, ready)

    # The emulator applies PATCH .../scale to the Deployment itself; a real API server answers with an
    # autoscaling/v1 Scale, and so must this one for the client to parse the answer.
    def scale_of(request: kmock_lib.Request) -> dict:
        deployment = kmock.objects[DEPLOYMENTS, request.namespace, request.name]
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": request.name, "namespace": request.namespace},
            "spec": {"replicas": deployment["spec"]["replicas"]},
            "status": {"replicas": deployment["status"].get("replicas", 0)},
        }

    kmock[DEPLOYMENTS, kmock.subresource("scale")] << scale_of
    return client.AppsV1Api(client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/"))))


@contextlib.asynccontextmanager
async def pods_become_ready(kmock: kmock_lib.KubernetesEmulator, after_s: float) -> AsyncIterator[None]:
    """Plays the Deployment controller and the kubelet: after_s after spec.replicas changes, the status
    reports that many replicas ready."""

    async def control() -> None:
        while True:
            deployment = kmock.objects[DEPLOYMENTS, NAMESPACE, NAME]
            wanted = deployment["spec"]["replicas"]
            if deployment["status"].get("readyReplicas", 0) != wanted:
                await asyncio.sleep(after_s)
                deployment.patch({"status": {"replicas": wanted or None, "readyReplicas": wanted or None}})
            await asyncio.sleep(0.01)

    task = asyncio.create_task(control())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def scaled_to(kmock: kmock_lib.KubernetesEmulator) -> list[int]:
    """The replicas of every PATCH on the scale subresource, in order."""
    return [request.data["spec"]["replicas"] for request in kmock["patch", kmock.subresource("scale")]]


@pytest.mark.asyncio
async def test_scale_up_waits_until_the_replicas_are_ready(kmock: kmock_lib.KubernetesEmulator) -> None:
    api = cluster(kmock)
    async with pods_become_ready(kmock, after_s=0.3):
        started = time.monotonic()
        await asyncio.to_thread(scale_up, api, NAMESPACE, NAME, 2, 5.0, POLL_S)
        waited = time.monotonic() - started

    assert scaled_to(kmock) == [2]
    assert kmock.objects[DEPLOYMENTS, NAMESPACE, NAME]["status"]["readyReplicas"] == 2
    assert waited >= 0.3  # it waited for the pods, not only for the PATCH
    assert len(kmock["get", kmock.subresource("status")]) >= 3  # the first look, then polls


@pytest.mark.asyncio
async def test_scale_up_times_out_with_a_clear_error(kmock: kmock_lib.KubernetesEmulator) -> None:
    api = cluster(kmock)  # and no pod ever becomes ready
    started = time.monotonic()
    with pytest.raises(ScaleError, match=r"^deployment torchserve in namespace refund: 0/2 replicas ready after 0.3s"):
        await asyncio.to_thread(scale_up, api, NAMESPACE, NAME, 2, 0.3, POLL_S)
    assert time.monotonic() - started < 3.0  # bounded by the timeout, plus one poll and slack for a busy CI
    assert scaled_to(kmock) == [2]


@pytest.mark.asyncio
async def test_a_missing_deployment_is_a_clear_error(kmock: kmock_lib.KubernetesEmulator) -> None:
    api = cluster(kmock)
    with pytest.raises(DeploymentNotFound, match=r"^deployment torchserv not found in namespace refund$"):
        await asyncio.to_thread(scale_up, api, NAMESPACE, "torchserv", 2, 5.0, POLL_S)
    with pytest.raises(DeploymentNotFound, match=r"^deployment torchserve not found in namespace default$"):
        await asyncio.to_thread(lambda: serving_scaled(Scale(scale_namespace="default"), api).__enter__())
    assert scaled_to(kmock) == []  # nothing was touched


@pytest.mark.asyncio
async def test_scale_up_rides_out_an_api_server_restart(kmock: kmock_lib.KubernetesEmulator) -> None:
    api = cluster(kmock)
    restarting = kmock_lib.KubernetesError(status=503, reason="ServiceUnavailable", message="restarting")
    reads = itertools.count()

    def restart(request: kmock_lib.Request) -> Exception:
        if next(reads) in (1, 2):  # the first look gets through, the next two polls do not
            return restarting
        raise NotImplementedError  # not this reaction's: the emulator answers

    kmock["get", kmock.subresource("status")] << restart
    async with pods_become_ready(kmock, after_s=0.3):
        await asyncio.to_thread(scale_up, api, NAMESPACE, NAME, 2, 5.0, POLL_S)
    assert next(reads) > 3 and scaled_to(kmock) == [2]


@pytest.mark.asyncio
async def test_scale_up_leaves_more_replicas_alone(kmock: kmock_lib.KubernetesEmulator) -> None:
    api = cluster(kmock, replicas=3, ready=3)  # an HPA or a person scaled it further up already
    await asyncio.to_thread(scale_up, api, NAMESPACE, NAME, 2, 5.0, POLL_S)
    assert scaled_to(kmock) == []


@pytest.mark.asyncio
@pytest.mark.parametrize("body_fails", [False, True], ids=["run-succeeds", "run-fails"])
async def test_serving_scaled_always_scales_back_down(kmock: kmock_lib.KubernetesEmulator, body_fails: bool) -> None:
    api = cluster(kmock)
    ready_during_run = []

    def night() -> None:
        with serving_scaled(Scale(), api, poll_s=POLL_S):
            ready_during_run.append(kmock.objects[DEPLOYMENTS, NAMESPACE, NAME]["status"]["readyReplicas"])
            if body_fails:
                raise RuntimeError("TorchServe answered 503 all night")

    async with pods_become_ready(kmock, after_s=0.1):
        if body_fails:
            with pytest.raises(RuntimeError, match="503"):
                await asyncio.to_thread(night)
        else:
            await asyncio.to_thread(night)

    assert ready_during_run == [2]
    assert scaled_to(kmock) == [2, 0]
    assert kmock.objects[DEPLOYMENTS, NAMESPACE, NAME]["spec"]["replicas"] == 0


@pytest.mark.asyncio
async def test_serving_scaled_scales_back_down_when_never_ready(kmock: kmock_lib.KubernetesEmulator) -> None:
    """Pods that come up after the job gave up must not keep a GPU busy until the next night."""
    api = cluster(kmock)
    with pytest.raises(ScaleError, match="0/2 replicas ready"):
        await asyncio.to_thread(lambda: serving_scaled(Scale(scale_timeout=0.2), api, POLL_S).__enter__())
    assert scaled_to(kmock) == [2, 0]


@pytest.mark.asyncio
async def test_forbidden_says_which_rbac_is_missing(kmock: kmock_lib.KubernetesEmulator) -> None:
    api = cluster(kmock)
    forbidden = kmock_lib.KubernetesError(status=403, reason="Forbidden", message="cannot patch deployments/scale")
    kmock["patch", kmock.subresource("scale")].override << forbidden
    with pytest.raises(ScaleError, match=r"not allowed to scale .* patch on deployments/scale"):
        await asyncio.to_thread(scale_down, api, NAMESPACE, NAME)


@pytest.mark.asyncio
async def test_sigterm_still_scales_back_down(kmock: kmock_lib.KubernetesEmulator) -> None:
    """Kubernetes ends a pod with SIGTERM (Job deadline, eviction): a real process, really signalled."""
    cluster(kmock, replicas=2, ready=2)
    job = (
        "import sys, time\n"
        "from kubernetes import client\n"
        "from batch_job.night.scaler import serving_scaled\n"
        "from tests.test_scaler import Scale\n"
        "api = client.AppsV1Api(client.ApiClient(client.Configuration(host=sys.argv[1])))\n"
        "with serving_scaled(Scale(), api, poll_s=0.05):\n"
        "    print('running', flush=True)\n"
        "    time.sleep(60)\n"
    )
    root = Path(__file__).resolve().parent.parent
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", job, str(kmock.url).rstrip("/"), cwd=root, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"running\n"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 128 + signal.SIGTERM
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert scaled_to(kmock) == [0]  # it was already up (no scale-up), and it went back down


def use_kubeconfig(kmock: kmock_lib.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a pod (no KUBERNETES_SERVICE_HOST), load_api falls back to $KUBECONFIG: point it at kmock."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        f"clusters: [{{name: test, cluster: {{server: '{str(kmock.url).rstrip('/')}'}}}}]\n"
        "users: [{name: test, user: {token: test-token}}]\n"
        "contexts: [{name: test, context: {cluster: test, user: test}}]\n"
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_failed_scale_down_after_a_good_night_still_records_and_publishes_it(
    kmock: kmock_lib.KubernetesEmulator, torchserve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole `refund-batch run` in scale-to-zero mode; only the final PATCH to 0 is refused."""
    cluster(kmock, replicas=1, ready=1)  # already up: the night needs no scale-up
    forbidden = kmock_lib.KubernetesError(status=403, reason="Forbidden", message="cannot patch deployments/scale")
    kmock["patch", kmock.subresource("scale")].override << forbidden
    use_kubeconfig(kmock, tmp_path, monkeypatch)
    store = tmp_path / "store"
    (store / "inbox" / "2026-11-23").mkdir(parents=True)
    (store / "inbox" / "2026-11-23" / "1.jpg").write_bytes(encode(product_image("Discs", 1)))
    database_url = f"sqlite:///{tmp_path / 'results.db'}"
    arguments = ["run", "--store", str(store), "--database-url", database_url]
    arguments += ["--torchserve-url", torchserve.inference_url, "--scale-deployment", NAME]
    arguments += ["--scale-namespace", NAMESPACE, "--scale-replicas", "1"]

    assert await asyncio.to_thread(main, arguments) == 3  # not 2 ("nothing was claimed")

    (row,) = Ledger(database_url).results()
    assert row.status in (OK, NEEDS_REVIEW)
    (summary_file,) = store.glob("runs/*/summary.json")
    assert "not allowed to scale" in json.loads(summary_file.read_text())["scale_down_error"]
    assert len(Ledger(database_url).recent_runs(1, before="9")) == 1  # the run was finished


@pytest.mark.asyncio
async def test_load_api_reads_the_kubeconfig(
    kmock: kmock_lib.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a pod (no KUBERNETES_SERVICE_HOST), load_api falls back to $KUBECONFIG."""
    cluster(kmock, replicas=1, ready=1)
    use_kubeconfig(kmock, tmp_path, monkeypatch)
    api = load_api()
    await asyncio.to_thread(scale_up, api, NAMESPACE, NAME, 1, 5.0, POLL_S)
    assert kmock["get", kmock.subresource("status")][0].headers["Authorization"] == "Bearer test-token"
