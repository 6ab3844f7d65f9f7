"""A whole night in a real Kubernetes cluster, with the faults a cluster has (`make k8s-e2e`).

Needs the cluster given by KUBECONFIG, a Docker engine, helm and kubectl on PATH, and IMAGE_LOAD: the
command that makes local images available to the cluster, the image names appended (`lab load`,
`kind load docker-image`, `minikube image load`, or a script that pushes to the cluster's registry).
S3 (SeaweedFS) and PostgreSQL run outside the cluster on K8S_NODE_IP (default: the node's
InternalIP), as a cloud's managed services would. The tests run in order, on one release in a
namespace of their own, which is deleted at the end.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shlex
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from unittest import mock

import httpx
import obstore
import pytest
import sqlalchemy
import yaml
from batch_job.night.client import Prediction, TorchServeClient
from batch_job.night.listing import shard_of
from batch_job.review.auth import hash_line
from prometheus_client.parser import text_string_to_metric_families

from common.registry import Registry
from tests.k8s.cluster import (
    CommandFailed,
    can_i,
    diagnose,
    helm,
    job_state,
    kubectl,
    kubectl_json,
    report,
    require_cluster,
    run,
    scratch_namespace,
    wait_for,
)
from tests.ports import free_port
from tests.servers import postgres_server, s3_server
from training import archive, registry, train
from training.__main__ import main as training_main

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "refund-sorter"
SAMPLE = Path(os.environ.get("SAMPLE", ROOT.parent / "shared" / "datasets" / "returns-photos-sample"))
RELEASE = "refunds"
SERVING = f"{RELEASE}-refund-sorter-torchserve"
CRONJOB = f"{RELEASE}-refund-sorter-batch"
REVIEW = f"{RELEASE}-refund-sorter-review"
BUCKET = "refund-e2e"
REGISTRY_PREFIX = "registry"
REGISTRY_URL = f"s3://{BUCKET}/{REGISTRY_PREFIX}"
RETRAIN = f"{RELEASE}-refund-sorter-retrain"
RETRAIN_TIMEOUT_S = 900
# The retraining Job's training: the tiny catalogue of tests/conftest.py, two epochs.
FETCH = {"x-review-fetch": "1"}
RETRAIN_TINY = "--epochs 2 --batch-size 16 --workers 0"
NIGHT_TIMEOUT_S = 420
# Slow enough that a fault lands mid-night, with claims that expire soon after a killed batch pod.
BATCH_ENV = {"REFUND_CONCURRENCY": "4", "REFUND_LEASE_SECONDS": "30"}
DONE = ("ok", "needs_review")
# night-3, one request at a time, must outlast a rollout of both TorchServe pods (the fresh-clone CI runs of
# 6 Dec 2026 had the rollout done at 320-384 of 1000 photos; a quiet CI answered 600 at concurrency 4 before it).
PROMOTION_COPIES = 4


@pytest.fixture(scope="module")
def cluster() -> str:
    """The node's address; fails (never skips) where no cluster answers."""
    if not os.environ.get("IMAGE_LOAD"):
        pytest.fail("IMAGE_LOAD is not set: the command that loads local images into the cluster")
    require_cluster()
    if not (SAMPLE / "images").is_dir():
        pytest.fail(f"no returned-item photos in {SAMPLE}/images (set SAMPLE)")
    if address := os.environ.get("K8S_NODE_IP"):
        return address
    node = kubectl_json("get", "nodes")["items"][0]
    return next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")


@pytest.fixture(scope="module")
def models(services, trained_model, prepared, tmp_path_factory) -> dict[str, str]:
    """Two model versions (a, b) published to the registry in the S3 store, a in production: the serving pods
    fetch it at start."""
    second = tmp_path_factory.mktemp("model-b")
    time.sleep(1)  # a model's version is its UTC training time to the second: b must not share a's
    train.main(["--prepared", str(prepared), "--out", str(second), "--epochs", "1", "--workers", "0", "--seed", "1"])
    models = Registry(services[1].store(prefix=REGISTRY_PREFIX))
    versions = {}
    for name, model in (("a", trained_model), ("b", second)):
        mar = archive.archive(
            model,
            tmp_path_factory.mktemp("mar"),
            "refund-classifier",
            archive.HANDLERS / "model-config.yaml",
            tmp_path_factory.mktemp("build"),
        )
        versions[name] = registry.publish(models, model, mar)
    assert versions["a"] != versions["b"], f"models a and b share the version {versions}"
    assert registry.promote(models, versions["a"], prepared).promoted
    report(f"published models a={versions['a']} (production) and b={versions['b']} to {REGISTRY_PREFIX}/")
    return versions


@pytest.fixture(scope="module")
def images(cluster) -> str:
    """The serve (no model), batch and train images, built with `make` and loaded; returns their tag.

    E2E_IMAGE_TAG=<tag> reuses the images of an earlier run that are still in the cluster (its tag is
    printed), to repeat the nights without building and loading again.
    """
    if tag := os.environ.get("E2E_IMAGE_TAG"):
        report(f"reusing the images tagged {tag} already in the cluster")
        yield tag
        return
    tag = "e2e-" + secrets.token_hex(3)
    for target in ("serve-image", "batch-image", "train-image"):
        report(f"building: make {target}")
        make(target, f"IMAGE_TAG={tag}")
    names = [f"refund-sorter-{image}:{tag}" for image in ("serve", "batch", "train")]
    started = time.monotonic()
    run(*shlex.split(os.environ["IMAGE_LOAD"]), *names, timeout=1200)
    report(f"loaded {len(names)} images into the cluster in {time.monotonic() - started:.0f} s (E2E_IMAGE_TAG={tag})")
    yield tag
    run("docker", "image", "rm", *names, check=False)  # repeated runs must not fill the disk


def make(*args: str) -> None:
    started = time.monotonic()
    out = run("make", "--no-print-directory", "-C", str(ROOT), *args, timeout=1800)
    report(f"make {' '.join(args)}: {time.monotonic() - started:.0f} s; {out.strip().splitlines()[-1]}")


@pytest.fixture(scope="module")
def services(cluster):
    """PostgreSQL and S3 outside the cluster, on the node's address, with passwords only pods are given."""
    with (
        postgres_server(host=cluster, clients=("0.0.0.0/0",)) as database_url,
        s3_server(BUCKET, host=cluster) as s3,
    ):
        yield database_url, s3


@pytest.fixture(scope="module")
def namespace(cluster):
    with scratch_namespace("refund-e2e-") as name:
        yield name


@pytest.fixture(scope="module")
def values(services, images, models, tmp_path_factory) -> Path:
    s3 = services[1]
    path = tmp_path_factory.mktemp("values") / "values.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "image": {"tag": images, "pullPolicy": "IfNotPresent"},
                "registry": {"url": REGISTRY_URL},
                "batch": {
                    "store": {
                        "url": f"s3://{BUCKET}",
                        "endpoint": s3.endpoint,
                        "allowHttp": True,
                        "region": "us-east-1",
                    },
                    "backoffLimit": 4,
                    "env": BATCH_ENV,
                },
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def release(namespace, services, values):
    """The chart installed with --wait: the small-cluster profile and the Secrets it expects to exist."""
    database_url, s3 = services
    create_secret(namespace, "refund-sorter-database", url=database_url)
    create_secret(
        namespace, "refund-sorter-store", AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key
    )
    started = time.monotonic()
    try:
        helm(
            "install",
            RELEASE,
            str(CHART),
            "-n",
            namespace,
            "-f",
            str(CHART / "values-small.yaml"),
            "-f",
            str(values),
            "--wait",
            "--timeout",
            "6m",
        )
    except CommandFailed:
        print(diagnose(namespace))
        raise
    rolled_out(namespace)
    report(f"helm install --wait, both TorchServe pods Ready: {time.monotonic() - started:.0f} s")
    yield RELEASE
    helm("uninstall", RELEASE, "-n", namespace, "--wait", check=False)


@pytest.fixture(scope="module")
def ledger(services):
    engine = sqlalchemy.create_engine(services[0])
    yield engine
    engine.dispose()


def create_secret(namespace: str, name: str, **literals: str) -> None:
    """A Secret the chart expects to exist (the existing-secret pattern: it never creates credentials)."""
    kubectl(
        "-n", namespace, "create", "secret", "generic", name, *(f"--from-literal={k}={v}" for k, v in literals.items())
    )


def rolled_out(namespace: str, deployment: str = SERVING) -> None:
    """Every pod of the Deployment's current template Ready (helm's --wait can return before that)."""
    kubectl("-n", namespace, "rollout", "status", f"deployment/{deployment}", "--timeout=6m", timeout=400)


def upgrade(namespace: str, *settings: str, strings: tuple[str, ...] = ()) -> None:
    """helm upgrade with `settings` (--set) and `strings` (--set-string: values the schema wants as strings)."""
    started = time.monotonic()
    helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        namespace,
        "--reuse-values",
        *(a for s in settings for a in ("--set", s)),
        *(a for s in strings for a in ("--set-string", s)),
        "--wait",
        "--timeout",
        "6m",
    )
    rolled_out(namespace)
    report(f"helm upgrade {' '.join((*settings, *strings))}, rolled out: {time.monotonic() - started:.0f} s")


def put_photos(s3, night: str, count: int = 200, copies: int = 1) -> list[str]:
    """The returned-item photos into today's inbox partition, in a folder of this night's own
    (`copies` times each, under other names, for a night long enough to outlast a rollout)."""
    store = s3.store()
    day = dt.datetime.now(dt.UTC).date().isoformat()
    keys = []
    for copy in range(copies):
        for photo in sorted((SAMPLE / "images").glob("*.jpg"))[:count]:
            key = f"inbox/{day}/{night}/{copy}-{photo.name}"
            obstore.put(store, key, photo.read_bytes())
            keys.append(key)
    return keys


def start_night(namespace: str, night: str, **env: str) -> str:
    """The Job `kubectl create job --from=cronjob` makes; `env` sets batch variables for this night only."""
    job = kubectl_json("-n", namespace, "create", "job", f"--from=cronjob/{CRONJOB}", night, "--dry-run=client")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    kept = [variable for variable in container["env"] if variable["name"] not in env]
    container["env"] = kept + [{"name": name, "value": value} for name, value in env.items()]
    kubectl("-n", namespace, "create", "-f", "-", stdin=json.dumps(job))
    return night


def finish_night(namespace: str, job: str, failed_pods: int = 0) -> float:
    """Waits for the Job to complete; exactly `failed_pods` of its pods failed (a fault the test caused)."""
    started = time.monotonic()
    state = wait_for(f"job {job} to end", lambda: job_state(namespace, job), NIGHT_TIMEOUT_S, every=2)
    assert state == "Complete", (
        f"job {job} ended {state}:\n{kubectl('-n', namespace, 'logs', f'job/{job}', '--tail=60', check=False)}"
    )
    failed = kubectl_json("-n", namespace, "get", "job", job)["status"].get("failed", 0)
    assert failed == failed_pods, f"job {job}: {failed} failed pods, expected {failed_pods}"
    return time.monotonic() - started


def results(ledger, keys: list[str]) -> list[sqlalchemy.Row]:
    """This night's rows (object_key, status, model_version, attempts, run_id) with the shard of the run
    that holds each (NULL until claimed)."""
    with ledger.connect() as connection:
        return connection.execute(
            sqlalchemy.text(
                "SELECT r.object_key, r.status, r.model_version, r.attempts, r.run_id, runs.shard"
                " FROM results r LEFT JOIN runs ON runs.run_id = r.run_id WHERE r.object_key LIKE :night"
            ),
            {"night": keys[0].rsplit("/", 1)[0] + "/%"},
        ).all()


def decided(ledger, keys: list[str]) -> int:
    return sum(row.status in DONE for row in results(ledger, keys))


def assert_exactly_once(ledger, keys: list[str]) -> list[sqlalchemy.Row]:
    """One classified row per photo, each from TorchServe's first answer: a fault adds no attempt."""
    rows = results(ledger, keys)
    per_key = Counter(row.object_key for row in rows)
    assert set(per_key) == set(keys), f"missing: {sorted(set(keys) - set(per_key))[:5]}"
    assert max(per_key.values()) == 1, f"more than one result: {[k for k, n in per_key.items() if n > 1][:5]}"
    statuses = Counter(row.status for row in rows)
    assert set(statuses) <= set(DONE), f"not every photo classified: {statuses}"
    attempts = Counter(row.attempts for row in rows)
    assert set(attempts) == {1}, f"attempts per photo: {attempts}"
    return rows


def mid_night(namespace: str, job: str, ledger, keys: list[str]) -> None:
    """Returns once the night has recorded results and is still going: the moment for a fault."""
    wait_for(f"{job}'s first results", lambda: decided(ledger, keys) > 0, NIGHT_TIMEOUT_S, every=0.5)
    assert job_state(namespace, job) is None, f"{job} ended before the fault could be injected"
    assert decided(ledger, keys) < len(keys)


def pods(namespace: str, selector: str) -> list[dict]:
    return kubectl_json("-n", namespace, "get", "pods", "-l", selector)["items"]


def serving_pods(namespace: str) -> list[dict]:
    return pods(namespace, "app.kubernetes.io/component=serving")


def fetched_version(pod: dict) -> str:
    """The version the pod's init container fetched from the registry (its `serving model` log line)."""
    namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    for line in kubectl("-n", namespace, "logs", name, "-c", "fetch-model").splitlines():
        entry = json.loads(line)
        if entry["event"] == "serving model":
            return entry["version"]
    raise AssertionError(f"{name}'s fetch-model logged no `serving model` line")


def inference_requests(pod: dict) -> float:
    """The model's inference requests this TorchServe pod has counted (its Prometheus endpoint, on the pod's
    address; readiness and liveness call /ping, which no model counts, and the startup probe's describes end
    before the pod is Ready)."""
    text = httpx.get(f"http://{pod['status']['podIP']}:8082/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ts_inference_requests_total" and sample.labels.get("model_name") == "refund-classifier"
    )


def serving_now(namespace: str, seconds: float = 2) -> dict:
    """The serving pod whose request counter rose most over `seconds`: one the night's connections reach."""
    running = serving_pods(namespace)
    before = {pod["metadata"]["name"]: inference_requests(pod) for pod in running}
    time.sleep(seconds)
    rises = {pod["metadata"]["name"]: inference_requests(pod) - before[pod["metadata"]["name"]] for pod in running}
    report(f"inference requests in {seconds} s per serving pod: {rises}")
    busiest = max(running, key=lambda pod: rises[pod["metadata"]["name"]])
    assert rises[busiest["metadata"]["name"]] > 0, "no TorchServe pod is answering the night"
    return busiest


# ------------------------------------------------------------------------------------------- tests


def test_install_passes_probes_with_the_hardened_security_context(namespace, release):
    running = serving_pods(namespace)
    assert len(running) == 2
    for pod in running:
        assert all(c["ready"] and c["restartCount"] == 0 for c in pod["status"]["containerStatuses"])
        context = pod["spec"]["containers"][0]["securityContext"]
        assert context["readOnlyRootFilesystem"] and context["runAsNonRoot"] and not context["allowPrivilegeEscalation"]
        assert context["capabilities"]["drop"] == ["ALL"]
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(pod["spec"]["containers"][0])
        assert pod["spec"]["initContainers"][0]["securityContext"]["readOnlyRootFilesystem"]
    # The test pod exits 0 only when a photo comes back classified; it is deleted once it succeeded.
    out = helm("test", RELEASE, "-n", namespace, timeout=300)
    assert re.search(r"Phase:\s+Succeeded", out), out


def test_the_commands_the_release_notes_print_get_a_prediction(namespace, release, classes, tmp_path):
    """What `helm install` printed, run as a user runs it: rollout status, port-forward, then curl a real
    photo (saved as the photo.jpg the command names). Only the local port is a free one instead of 8080."""
    notes = helm("get", "notes", RELEASE, "-n", namespace)
    commands = [shlex.split(line) for line in notes.splitlines() if line.lstrip().startswith(("kubectl ", "curl "))]
    (rollout,) = [command for command in commands if "rollout" in command and f"deployment/{SERVING}" in command]
    (forward,) = [command for command in commands if "port-forward" in command and f"service/{SERVING}" in command]
    (curl,) = [command for command in commands if command[0] == "curl" and "/predictions/" in command[-1]]
    port = str(free_port())
    forward = [re.sub(r"^8080:", f"{port}:", arg) for arg in forward]
    curl = [arg.replace("127.0.0.1:8080/", f"127.0.0.1:{port}/") for arg in curl]
    assert f"{port}:8080" in forward and any(f"127.0.0.1:{port}/" in arg for arg in curl), notes
    run(*rollout, timeout=400)
    photo = sorted((SAMPLE / "images").glob("*.jpg"))[0]
    (tmp_path / "photo.jpg").write_bytes(photo.read_bytes())
    with subprocess.Popen(forward, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as forwarding:
        try:
            started = forwarding.stdout.readline()
            assert started.startswith(f"Forwarding from 127.0.0.1:{port}"), started
            answer = subprocess.run(curl, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
        finally:
            forwarding.terminate()
    report(f"notes: {shlex.join(curl)} -> {' '.join(answer.stdout.split())[:160]}")
    assert answer.returncode == 0, answer.stderr
    prediction = json.loads(answer.stdout)
    assert "category" in prediction and prediction["model"]["name"] == "refund-classifier", prediction
    assert prediction["category"] in classes and prediction["category"] == prediction["top_k"][0]["category"]


def test_a_night_classifies_every_photo_once_and_publishes_its_report(namespace, release, services, ledger):
    keys = put_photos(services[1], "night-1", count=60)
    seconds = finish_night(namespace, start_night(namespace, "night-1"))
    assert_exactly_once(ledger, keys)
    store = services[1].store()
    reports = [m["path"] for page in obstore.list(store, prefix="runs/") for m in page]
    assert any(path.endswith("report.html") for path in reports), reports
    report(f"night-1: {len(keys)} photos in {seconds:.0f} s")


def test_a_torchserve_pod_force_deleted_mid_night_loses_nothing(namespace, release, services, ledger):
    keys = put_photos(services[1], "night-2")
    job = start_night(namespace, "night-2")
    mid_night(namespace, job, ledger, keys)
    victim = serving_now(namespace)["metadata"]["name"]
    kubectl("-n", namespace, "delete", "pod", victim, "--grace-period=0", "--force")
    done = decided(ledger, keys)
    assert job_state(namespace, job) is None and done < len(keys), "the night ended before the delete: make it longer"
    report(f"night-2: deleted {victim}, which was answering the night, at {done}/{len(keys)}")
    finish_night(namespace, job)
    assert_exactly_once(ledger, keys)


def test_a_model_pinned_during_a_night_rolls_the_pods_and_keeps_inference_up(
    namespace, release, services, models, ledger
):
    keys = put_photos(services[1], "night-3", copies=PROMOTION_COPIES)
    job = start_night(namespace, "night-3", REFUND_CONCURRENCY="1")  # one photo at a time: longer than the rollout
    mid_night(namespace, job, ledger, keys)
    # The rollout replaces one pod at a time (maxSurge 0): the other keeps answering.
    strategy = kubectl_json("-n", namespace, "get", "deployment", SERVING)["spec"]["strategy"]["rollingUpdate"]
    assert (strategy["maxSurge"], strategy["maxUnavailable"]) == (0, 1), strategy
    upgrade(namespace, f"serving.model.version={models['b']}")  # no image build: the pods fetch b at start
    done = decided(ledger, keys)
    assert job_state(namespace, job) is None and done < len(keys), "the night ended before the rollout: make it longer"
    report(f"night-3: the rollout was done at {done}/{len(keys)}")
    finish_night(namespace, job)
    rows = assert_exactly_once(ledger, keys)
    versions = Counter(row.model_version for row in rows)
    report(f"night-3: model versions that answered: {versions}")
    assert set(versions) == {models["a"], models["b"]}, f"each row records the version that answered: {versions}"
    for pod in serving_pods(namespace):
        assert pod["metadata"]["annotations"]["refund-sorter/model-version"] == models["b"]
        assert fetched_version(pod) == models["b"]


def test_a_batch_pod_deleted_mid_night_is_finished_by_the_jobs_retry(namespace, release, services, ledger):
    keys = put_photos(services[1], "night-4")
    job = start_night(namespace, "night-4")
    mid_night(namespace, job, ledger, keys)
    (victim,) = pods(namespace, f"job-name={job}")
    kubectl("-n", namespace, "delete", "pod", victim["metadata"]["name"], "--grace-period=0", "--force")
    report(f"night-4: deleted the batch pod at {decided(ledger, keys)}/{len(keys)}")
    finish_night(namespace, job, failed_pods=1)
    assert_exactly_once(ledger, keys)


def test_two_indexed_pods_share_one_night(namespace, release, services, ledger):
    upgrade(namespace, "batch.parallelism=2")
    keys = put_photos(services[1], "night-5")
    job = start_night(namespace, "night-5")
    finish_night(namespace, job)
    status = kubectl_json("-n", namespace, "get", "job", job)["status"]
    assert status["succeeded"] == 2 and status.get("completedIndexes") == "0,1", status
    rows = assert_exactly_once(ledger, keys)
    runs = {row.run_id: row.shard for row in rows}
    assert sorted(runs.values()) == ["0/2", "1/2"], f"one run per shard committed this night's rows: {runs}"
    elsewhere = [row.object_key for row in rows if row.shard != f"{shard_of(row.object_key, 2)}/2"]
    assert not elsewhere, f"photos committed by the other shard's run: {elsewhere[:5]}"
    report(f"night-5: photos per shard {Counter(row.shard for row in rows)}")


def test_scale_to_zero_with_a_service_account_that_can_do_nothing_else(namespace, release, services, ledger):
    upgrade(namespace, "batch.parallelism=1", "batch.scaleToZero.enabled=true", "batch.scaleToZero.replicas=2")
    account = f"system:serviceaccount:{namespace}:{CRONJOB}"

    def can(*args: str) -> bool:
        return can_i(account, namespace, *args)

    assert can("patch", f"deployments/{SERVING}", "--subresource=scale")
    assert can("get", f"deployments/{SERVING}", "--subresource=status")
    assert not can("patch", f"deployments/{SERVING}")
    assert not can("delete", f"deployments/{SERVING}")
    assert not can("patch", "deployments/another", "--subresource=scale")
    assert not can("get", "secrets")
    assert not can("list", "pods")
    assert not can("create", "jobs")

    # A first night takes over the running TorchServe and leaves it at 0.
    keys = put_photos(services[1], "night-6", count=40)
    finish_night(namespace, start_night(namespace, "night-6"))
    assert_exactly_once(ledger, keys)
    assert deployment_replicas(namespace) == 0

    # From 0: the job scales up, waits for readiness, runs, scales back; a `helm upgrade` mid-night
    # must leave the running replicas alone.
    keys = put_photos(services[1], "night-7", copies=2)
    job = start_night(namespace, "night-7")
    mid_night(namespace, job, ledger, keys)
    assert deployment_replicas(namespace) == 2
    upgrade(namespace, "batch.successfulJobsHistoryLimit=4")  # an upgrade that leaves the Deployment's template
    assert job_state(namespace, job) is None, "the night ended during the upgrade: nothing was tested"
    assert deployment_replicas(namespace) == 2
    finish_night(namespace, job)
    assert_exactly_once(ledger, keys)
    wait_for("TorchServe back at 0 replicas", lambda: deployment_replicas(namespace) == 0, 60)


def deployment_replicas(namespace: str) -> int:
    return kubectl_json("-n", namespace, "get", "deployment", SERVING)["spec"]["replicas"]


def suspend(namespace: str, job: str, suspended: bool) -> None:
    """Suspending a Job deletes its pods as Kubernetes stops any pod (SIGTERM, SIGKILL after the grace period)
    and starts no replacement until it is resumed: the moment between is there to look at."""
    patch = json.dumps({"spec": {"suspend": suspended}})
    kubectl("-n", namespace, "patch", "job", job, "--type=merge", "-p", patch)


def test_a_batch_pod_stopped_mid_night_records_its_answers_releases_its_claims_and_scales_down(
    namespace, release, services, ledger
):
    upgrade(namespace, "batch.parallelism=1", "batch.scaleToZero.enabled=true", "batch.scaleToZero.replicas=2")
    keys = put_photos(services[1], "night-8")
    # The default 15-minute lease: only a release lets the resumed night take what the stopped pod held.
    job = start_night(namespace, "night-8", REFUND_LEASE_SECONDS="900")
    mid_night(namespace, job, ledger, keys)
    suspend(namespace, job, True)
    report(f"night-8: SIGTERM to the batch pod at {decided(ledger, keys)}/{len(keys)}")
    wait_for("the stopped batch pod to go", lambda: not pods(namespace, f"job-name={job}"), 200)
    rows = results(ledger, keys)
    recorded = [row for row in rows if row.status in DONE]
    left = [row for row in rows if row.status == "pending"]
    report(f"night-8: stopped with {len(recorded)} recorded, {len(left)} left")
    assert recorded and left and len(recorded) + len(left) == len(keys), Counter(row.status for row in rows)
    assert all(row.attempts == 0 for row in left), "a photo never answered is charged no attempt"
    with ledger.connect() as connection:
        leased = connection.execute(
            sqlalchemy.text("SELECT count(*) FROM results WHERE object_key LIKE :night AND lease_until IS NOT NULL"),
            {"night": keys[0].rsplit("/", 1)[0] + "/%"},
        ).scalar_one()
    assert leased == 0, "the stopped pod released its claims"
    assert deployment_replicas(namespace) == 0, "the stopped pod scaled TorchServe back down"

    suspend(namespace, job, False)
    state = wait_for(f"job {job} to end", lambda: job_state(namespace, job), NIGHT_TIMEOUT_S, every=2)
    assert state == "Complete", kubectl("-n", namespace, "logs", f"job/{job}", "--tail=60", check=False)
    assert_exactly_once(ledger, keys)
    wait_for("TorchServe back at 0 replicas", lambda: deployment_replicas(namespace) == 0, 60)


def test_a_night_that_fails_its_photos_is_not_retried(namespace, release, services, ledger):
    """Exit 1 (too many failures) fails the Job at once: a retry would charge each failing photo another
    attempt within seconds (here the retry would find nothing left and pass, hiding the failed night)."""
    store = services[1].store()
    day = dt.datetime.now(dt.UTC).date().isoformat()
    keys = [f"inbox/{day}/night-9/{number}.jpg" for number in range(5)]
    for key in keys:
        obstore.put(store, key, b"\xff\xd8\xff\xe0 truncated upload")
    job = start_night(namespace, "night-9")
    state = wait_for(f"job {job} to end", lambda: job_state(namespace, job), NIGHT_TIMEOUT_S, every=2)
    status = kubectl_json("-n", namespace, "get", "job", job)["status"]
    assert state == "Failed" and status.get("failed") == 1 and not status.get("succeeded"), status
    (failed,) = [condition for condition in status["conditions"] if condition["type"] == "Failed"]
    assert failed["reason"] == "PodFailurePolicy", failed
    rows = results(ledger, keys)
    assert len(rows) == len(keys) and all(row.attempts == 1 for row in rows), rows


@pytest.fixture(scope="module")
def review_page(namespace, release) -> tuple[str, str]:
    """review.enabled, with a reviewer `desk` whose password only this test knows: (the page's URL, password)."""
    password = secrets.token_urlsafe(12)
    secret = {"users": hash_line("desk", password), "session-key": secrets.token_urlsafe(32)}
    create_secret(namespace, "refund-sorter-review", **secret)
    # Plain HTTP inside the cluster here; behind TLS keep secureCookies on.
    upgrade(namespace, "review.enabled=true", "review.secureCookies=false")
    rolled_out(namespace, REVIEW)
    address = kubectl_json("-n", namespace, "get", "service", REVIEW)["spec"]["clusterIP"]
    return f"http://{address}:8090", password


@contextlib.contextmanager
def logged_in(review_page: tuple[str, str]) -> Iterator[tuple[httpx.Client, str]]:
    """A session on the page (the lab routes Service addresses from this machine), and its CSRF token."""
    url, password = review_page
    with httpx.Client(base_url=url, timeout=30) as page:
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.get("/login").text).group(1)
        login = page.post("/login", data={"csrf": csrf, "username": "desk", "password": password})
        assert login.status_code == 303 and login.headers["location"] == "/"
        # A login starts a new session, with a CSRF token of its own: the one the queue's forms carry.
        yield page, re.search(r'name="csrf" value="([^"]+)"', page.get("/").text).group(1)


def test_the_review_page_runs_in_the_cluster_behind_its_login(namespace, review_page, ledger):
    """review.enabled: the page's Deployment with the chart's hardening and probes, reached at its Service
    from this machine, showing the nights' doubtful items after a login."""
    (pod,) = pods(namespace, "app.kubernetes.io/component=review")
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
    with httpx.Client(base_url=review_page[0], timeout=30) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/").headers["location"] == "/login"  # no anonymous access
    with logged_in(review_page) as (page, _):
        queue = page.get("/")
    assert queue.status_code == 200
    with ledger.connect() as connection:
        waiting = connection.execute(sqlalchemy.text("SELECT object_key FROM results WHERE status = 'needs_review'"))
        names = {key.rsplit("/", 1)[1] for (key,) in waiting}
    shown = set(re.findall(r"[0-9]+-[0-9]+\.jpg", queue.text))
    assert names and shown and shown <= names, f"the queue page shows {sorted(shown)[:5]}, not the doubtful photos"


class Prober:
    """Predictions of one photo sent to TorchServe's Service over and over from a thread, through the nightly
    job's own client: every answer's kind and model version, to show a rollout fails no request. The client
    keeps its connection alive and sends again on a dropped one (a pod that stops closes its idle connections,
    and a request sent as it does meets a closed socket); a request that fails after that counts as failed."""

    def __init__(self, namespace: str) -> None:
        address = kubectl_json("-n", namespace, "get", "service", SERVING)["spec"]["clusterIP"]
        self.client = TorchServeClient(f"http://{address}:8080", "refund-classifier", 1, timeout=30, retries=2)
        self.photo = sorted((SAMPLE / "images").glob("*.jpg"))[0].read_bytes()
        self.answers: Counter[tuple[str, str]] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.probe, daemon=True)

    def probe(self) -> None:
        while not self.stop.wait(0.2):
            answer = self.client.classify(self.photo)
            what = answer.model_version if isinstance(answer, Prediction) else answer.reason[:120]
            self.answers[type(answer).__name__, what] += 1

    def __enter__(self) -> Prober:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.client.close()


def retrain(namespace: str, name: str) -> str:
    """A retraining Job made from the CronJob (as its schedule would), waited for; returns its log."""
    kubectl("-n", namespace, "create", "job", f"--from=cronjob/{RETRAIN}", name)
    state = wait_for(f"job {name} to end", lambda: job_state(namespace, name), RETRAIN_TIMEOUT_S, every=5)
    log = kubectl("-n", namespace, "logs", f"job/{name}", "-c", "retrain", "--tail=400", check=False)
    assert state == "Complete", f"job {name} ended {state}:\n{log[-4000:]}"
    report(f"{name}: {next((line for line in log.splitlines() if 'trained on' in line), log[-300:])}")
    return log


def production(services) -> str:
    return Registry(services[1].store(prefix=REGISTRY_PREFIX)).state()["version"]


def serving_versions(namespace: str) -> dict[str, tuple[str, str]]:
    """Each serving pod: its annotation's model version and the version its init container fetched."""
    return {
        pod["metadata"]["name"]: (pod["metadata"]["annotations"]["refund-sorter/model-version"], fetched_version(pod))
        for pod in serving_pods(namespace)
    }


def test_the_weekly_retraining_learns_from_the_desks_decisions_and_rolls_the_pods(
    namespace, release, services, models, ledger, review_page, kaggle_dataset, classes
):
    """The loop with nobody driving it: a night, the desk's decisions on the review page, the retraining Job
    (tiny settings), its promotion, the TorchServe pods rolling to the new version with no failed request, and
    the next night answered by it. Then a refused candidate moves nothing, and a pinned version stays."""
    s3 = services[1]
    with mock.patch.dict(os.environ, s3.env()):  # the catalogue goes to the store once, as the docs say
        assert training_main(["catalogue", "upload", "--data", str(kaggle_dataset), "--registry", REGISTRY_URL]) == 0
    upgrade(
        namespace,
        "serving.model.version=production",
        "batch.scaleToZero.enabled=false",
        "retrain.enabled=true",
        f"retrain.trainArgs={RETRAIN_TINY}",
        "retrain.prepareArgs=--min-images 10 --val-fraction 0.2 --test-fraction 0.2",
        strings=("retrain.minGain=-1",),  # any candidate passes the gate: this is the promotion
    )
    # Unpinned: the pods fetch production (a); the annotation says `production` until a promotion names a version.
    assert set(serving_versions(namespace).values()) == {("production", models["a"])}

    keys = put_photos(s3, "night-10", count=30)
    finish_night(namespace, start_night(namespace, "night-10"))
    with ledger.connect() as connection:
        waiting = connection.execute(
            sqlalchemy.text("SELECT id FROM results WHERE status = 'needs_review' AND object_key LIKE :night"),
            {"night": keys[0].rsplit("/", 1)[0] + "/%"},
        ).scalars()
        doubtful = sorted(waiting)[:6]
    assert len(doubtful) == 6, "the tiny model leaves photos of products it never saw in doubt"
    with logged_in(review_page) as (page, csrf):
        for number, item in enumerate(doubtful):
            final = classes[number % len(classes)]
            # As review.js asks: the answer is the card's fragment with its status, not a redirect.
            decision = page.post(f"/decide/{item}", data={"final": final, "csrf": csrf}, headers=FETCH)
            assert decision.status_code == 200 and 'data-done="1"' in decision.text, decision.text[:300]

    with Prober(namespace) as prober:
        log = retrain(namespace, "retrain-1")
        rolled_out(namespace)
    promoted = production(services)
    report(f"retrain-1: production {models['a']} -> {promoted}; answers during the roll {dict(prober.answers)}")
    assert promoted not in (models["a"], models["b"])
    assert f"model {promoted} trained on 6 reviewed returns" in log and "promoted" in log, log[-3000:]
    assert {kind for kind, _ in prober.answers} == {"Prediction"}, f"failed requests during the roll: {prober.answers}"
    assert {version for _, version in prober.answers} >= {models["a"], promoted}, "the probe saw the roll"
    assert set(serving_versions(namespace).values()) == {(promoted, promoted)}
    exports = {
        PurePosixPath(m["path"]).parts[2]
        for page in obstore.list(s3.store(prefix=REGISTRY_PREFIX), "datasets/reviewed")
        for m in page
    }
    assert len(exports) == 1, f"the desk's decisions are kept in the registry's store: {exports}"

    keys = put_photos(s3, "night-11", count=10)
    finish_night(namespace, start_night(namespace, "night-11"))
    assert {row.model_version for row in results(ledger, keys)} == {promoted}

    # A candidate the gate refuses: production, the pods and their template stay.
    pods_before = serving_versions(namespace)
    upgrade(namespace, strings=("retrain.minGain=1",))
    log = retrain(namespace, "retrain-2")
    assert "refused" in log and production(services) == promoted, log[-3000:]
    assert serving_versions(namespace) == pods_before

    # A pinned version: a promotion moves production in the registry, not the pods.
    upgrade(namespace, f"serving.model.version={promoted}", strings=("retrain.minGain=-1",))
    pinned = serving_versions(namespace)
    assert set(pinned.values()) == {(promoted, promoted)}
    job = kubectl_json("-n", namespace, "get", "cronjob", RETRAIN)["spec"]["jobTemplate"]["spec"]
    assert not job["template"]["spec"]["automountServiceAccountToken"], "a job that rolls nothing gets no API token"
    log = retrain(namespace, "retrain-3")
    assert production(services) not in (promoted, models["a"], models["b"]), log[-3000:]
    assert serving_versions(namespace) == pinned


def test_the_prod_overlay_is_accepted_by_the_api_server(namespace):
    """kubectl apply --dry-run=server of k8s/overlays/prod, moved into this test's namespace."""
    documents = [d for d in yaml.safe_load_all(kubectl("kustomize", str(ROOT / "k8s" / "overlays" / "prod"))) if d]
    objects = [d for d in documents if d["kind"] != "Namespace"]
    for document in objects:
        document["metadata"]["namespace"] = namespace
    out = kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(objects))
    assert len(re.findall(r"\(server dry run\)", out)) == len(objects), out


def test_uninstall_leaves_nothing_of_the_release(namespace, release):
    helm("uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "3m")
    kinds = "all,configmaps,secrets,serviceaccounts,roles,rolebindings,poddisruptionbudgets,networkpolicies,hpa"

    def nothing_left() -> bool:
        left = kubectl("-n", namespace, "get", kinds, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name")
        return not left.strip()

    with contextlib.suppress(AssertionError):
        wait_for("the release's objects to go", nothing_left, 120, every=2)
    left = kubectl("-n", namespace, "get", kinds, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name")
    assert not left.strip(), f"left behind by helm uninstall:\n{left}"
