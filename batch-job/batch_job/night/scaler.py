"""Scale-to-zero: TorchServe's Deployment sits at 0 replicas between nights (no GPU paid for idle
pods); the job scales it up, waits until the replicas are ready, runs, and scales it back to 0.

The RBAC this needs, in the Deployment's namespace (apiGroup "apps"):
    deployments/status  get    - readiness, and a clear error when the Deployment is missing
    deployments/scale   patch  - 0 -> N and back
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from batch_job.night.client import ServingUnavailable
from common import kubeapi

log = logging.getLogger(__name__)

POLL_S = 2.0  # pods take tens of seconds to become ready: polling faster only loads the API server
REQUEST_TIMEOUT_S = 30.0  # per API call: a hung connection must not hang the night past scale_timeout

T = TypeVar("T")


class ScaleError(ServingUnavailable):
    """Scaling failed or the replicas did not become ready; the message says which and why."""


class DeploymentNotFound(ScaleError):
    pass


class ApiUnavailable(ScaleError):
    """The API server did not answer, or answered 429/5xx: worth asking again (a restart, a blip)."""


class ScaleSettings(Protocol):
    """The fields of batch_job.settings.Settings this module reads."""

    scale_deployment: str
    scale_namespace: str
    scale_replicas: int
    scale_timeout: float


def load_api() -> client.AppsV1Api:
    try:
        return kubeapi.load_api()
    except kubeapi.NoKubernetesApi as error:
        raise ScaleError(str(error)) from error


def own_namespace() -> str:
    try:
        return kubeapi.own_namespace()
    except kubeapi.NoKubernetesApi as error:
        raise ScaleError(str(error)) from None


def _call(what: str, namespace: str, deployment: str, request: Callable[..., T], **kwargs: Any) -> T:
    """One API call, its failures turned into ScaleErrors that say what to fix."""
    where = f"deployment {deployment} in namespace {namespace}"
    try:
        return request(deployment, namespace, _request_timeout=REQUEST_TIMEOUT_S, **kwargs)
    except ApiException as error:
        if error.status == 404:
            raise DeploymentNotFound(f"deployment {deployment} not found in namespace {namespace}") from None
        if error.status in (401, 403):
            raise ScaleError(
                f"not allowed to {what} {where} (HTTP {error.status}): the job's service account needs "
                "get on deployments/status and patch on deployments/scale in that namespace"
            ) from error
        kind = ApiUnavailable if error.status == 429 or (error.status or 0) >= 500 else ScaleError
        raise kind(f"could not {what} {where}: HTTP {error.status} {error.reason}") from error
    except urllib3.exceptions.HTTPError as error:
        raise ApiUnavailable(f"could not {what} {where}: Kubernetes API unreachable ({error})") from error


def _ready(apps_api: client.AppsV1Api, namespace: str, deployment: str) -> tuple[int, int]:
    """(spec.replicas, status.readyReplicas); Kubernetes leaves zero counts out of the status."""
    found = _call("read", namespace, deployment, apps_api.read_namespaced_deployment_status)
    return found.spec.replicas or 0, (found.status.ready_replicas if found.status else None) or 0


def _set_replicas(apps_api: client.AppsV1Api, namespace: str, deployment: str, replicas: int) -> None:
    body = {"spec": {"replicas": replicas}}
    _call("scale", namespace, deployment, apps_api.patch_namespaced_deployment_scale, body=body)


def scale_up(
    apps_api: client.AppsV1Api,
    namespace: str,
    deployment: str,
    replicas: int,
    timeout_s: float,
    poll_s: float = POLL_S,
) -> None:
    """Scale to at least `replicas` and wait until that many are ready; ScaleError after timeout_s."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    deadline = time.monotonic() + timeout_s
    wanted, ready = _ready(apps_api, namespace, deployment)  # a missing Deployment fails here, before any change
    # Never scale down what an HPA or a person has already scaled further up.
    if wanted < replicas:
        log.info(
            "scaling deployment %s in namespace %s from %d to %d replicas", deployment, namespace, wanted, replicas
        )
        _set_replicas(apps_api, namespace, deployment, replicas)
    last_error: ApiUnavailable | None = None
    while ready < replicas:
        left = deadline - time.monotonic()
        if left <= 0:
            cause = f"; last error: {last_error}" if last_error else ""
            raise ScaleError(
                f"deployment {deployment} in namespace {namespace}: {ready}/{replicas} replicas ready after "
                f"{timeout_s:g}s (pods pending, image pull, readiness probe?){cause}"
            )
        time.sleep(min(poll_s, left))
        try:
            ready = _ready(apps_api, namespace, deployment)[1]
        except ApiUnavailable as error:  # the API server restarting is no reason to give up before the deadline
            last_error = error
    log.info("deployment %s in namespace %s: %d replicas ready", deployment, namespace, ready)


def scale_down(apps_api: client.AppsV1Api, namespace: str, deployment: str) -> None:
    """Back to 0 replicas; does not wait for the pods to terminate."""
    log.info("scaling deployment %s in namespace %s to 0 replicas", deployment, namespace)
    _set_replicas(apps_api, namespace, deployment, 0)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Kubernetes stops a pod (Job deadline, eviction, node drain) with SIGTERM, whose default action
    ends Python without running `finally`: turn it into SystemExit so the scale-down still happens."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield  # signals can only be handled in the main thread; and an existing handler is the job's own
        return

    def raise_exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class ScaledServing:
    """What the caller learns after the body: a failed scale-down after a good run is no failed run
    (its results are committed and must be published), but TorchServe is left running."""

    scale_down_error: str | None = None


@contextlib.contextmanager
def serving_scaled(
    settings: ScaleSettings, apps_api: client.AppsV1Api | None = None, poll_s: float = POLL_S
) -> Iterator[ScaledServing]:
    """Scale TorchServe up for the body and back to 0 after it, whether the body succeeded or not."""
    api = apps_api or load_api()
    namespace = settings.scale_namespace or own_namespace()
    deployment = settings.scale_deployment
    scaled = ScaledServing()
    with _sigterm_raises():
        try:
            scale_up(api, namespace, deployment, settings.scale_replicas, settings.scale_timeout, poll_s)
            yield scaled
        except DeploymentNotFound:
            raise  # nothing was scaled: nothing to scale back
        except BaseException as error:
            # Scale down, but never let a failed scale-down hide why the run failed.
            try:
                scale_down(api, namespace, deployment)
            except ScaleError as down_error:
                log.error("%s", down_error)
                error.add_note(f"scaling back down failed too: {down_error}")
            raise
        else:
            try:
                scale_down(api, namespace, deployment)
            except ScaleError as down_error:
                log.error("%s", down_error)
                scaled.scale_down_error = str(down_error)
