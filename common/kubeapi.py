"""The Kubernetes API for the jobs that change a Deployment: the nightly job's scale-to-zero
(batch_job/night/scaler.py) and the weekly retraining's rollout of a promoted model (training/retrain.py)."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client, config

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class NoKubernetesApi(Exception):
    """Neither a pod's service account nor a usable kubeconfig; the message says why."""


def load_api() -> client.AppsV1Api:
    """In a pod: its service account's token; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            # The client reads $KUBECONFIG once, at import; read it now (None: ~/.kube/config).
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
        except (config.ConfigException, OSError) as error:
            raise NoKubernetesApi(f"no Kubernetes API: not in a pod, and no usable kubeconfig ({error})") from error
    return client.AppsV1Api(client.ApiClient(configuration))


def own_namespace() -> str:
    """The namespace of the pod this runs in (the service account's mount says it)."""
    try:
        return NAMESPACE_FILE.read_text().strip()
    except OSError:
        raise NoKubernetesApi(f"no namespace given and not running in a pod ({NAMESPACE_FILE} missing)") from None
