"""The chart's monitoring objects before a real API server (`make k8s-e2e`): with the Prometheus Operator's CRDs
installed (tests/k8s/crds, pinned), the server validates the rendered PrometheusRule, ServiceMonitors and
PodMonitor and refuses broken ones; the review page's Service, metrics NetworkPolicy and Ingress are applied
and read back. Nothing here needs an image: the chart is rendered with helm template and only these objects
are sent, in a namespace of their own, deleted at the end. Of the CRDs, only those the cluster lacks are
created, and only those are deleted at the end: a cluster's own (e.g. kube-prometheus-stack's) are never touched."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.k8s.cluster import helm, kubectl, kubectl_json, require_cluster, scratch_namespace

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "refund-sorter"
CRDS = Path(__file__).resolve().parent / "crds"
RELEASE = "mon"
REVIEW = f"{RELEASE}-refund-sorter-review"
PROMETHEUS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
INGRESS_CONTROLLER = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}}
VALUES = {
    "review": {
        "enabled": True,
        "from": [INGRESS_CONTROLLER],
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "review.refunds.test",
            "tlsSecretName": "review-tls",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "1m"},
        },
    },
    "networkPolicy": {"metricsFrom": [PROMETHEUS]},
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    },
}


@pytest.fixture(scope="module")
def namespace() -> str:
    """A namespace of this module's own; fails (never skips) where no cluster answers."""
    require_cluster()
    with scratch_namespace("refund-monitoring-") as name:
        yield name


@pytest.fixture(scope="module")
def crds() -> Iterator[None]:
    """The Prometheus Operator's CRDs the cluster lacks, created (never applied: `create` fails on one that exists
    and, unlike a client-side apply, stores no last-applied annotation, too large for these), deleted at the end.
    The cluster's own CRDs are used as they are: replacing them could break the Prometheus that owns them."""
    files = {yaml.safe_load(path.read_text())["metadata"]["name"]: path for path in sorted(CRDS.glob("*.yaml"))}
    listed = kubectl("get", "crd", *files, "--ignore-not-found", "-o", "name").split()
    present = {line.split("/", 1)[1] for line in listed}
    created: list[str] = []
    try:
        for name in sorted(files.keys() - present):
            kubectl("create", "-f", str(files[name]))
            created.append(name)
        kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{name}" for name in files))
        yield
    finally:
        if created:
            kubectl("delete", "--timeout=120s", *(f"crd/{name}" for name in created))


@pytest.fixture(scope="module")
def objects(namespace, tmp_path_factory) -> dict[str, dict]:
    values = tmp_path_factory.mktemp("monitoring") / "values.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    rendered = helm("template", RELEASE, str(CHART), "-n", namespace, "-f", str(values))
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in docs}


def server_dry_run(namespace: str, *docs: dict) -> subprocess.CompletedProcess:
    manifest = yaml.safe_dump_all(docs)
    command = ["kubectl", "-n", namespace, "apply", "--dry-run=server", "-f", "-"]
    return subprocess.run(command, input=manifest, capture_output=True, text=True, timeout=60)


def test_the_api_server_accepts_the_rendered_monitoring_objects(namespace, crds, objects):
    monitoring = [doc for doc in objects.values() if doc["apiVersion"].startswith("monitoring.coreos.com/")]
    kinds = sorted(doc["kind"] for doc in monitoring)
    assert kinds == ["PrometheusRule", "ServiceMonitor", "ServiceMonitor"]
    accepted = server_dry_run(namespace, *monitoring)
    assert accepted.returncode == 0, accepted.stderr
    for doc in monitoring:
        assert f"{doc['kind'].lower()}.monitoring.coreos.com/{doc['metadata']['name']}" in accepted.stdout


def test_the_api_server_accepts_the_pod_monitor(namespace, crds):
    values = ["--set", "monitoring.podMonitor.enabled=true", "--show-only", "templates/monitoring.yaml"]
    (pod_monitor,) = [
        doc for doc in yaml.safe_load_all(helm("template", RELEASE, str(CHART), "-n", namespace, *values)) if doc
    ]
    assert pod_monitor["kind"] == "PodMonitor"
    accepted = server_dry_run(namespace, pod_monitor)
    assert accepted.returncode == 0, accepted.stderr


def test_the_api_server_refuses_broken_monitoring_objects(namespace, crds, objects):
    """The CRDs' schemas are what validate: the same objects with one field wrong are refused."""
    rule = copy.deepcopy(objects[f"PrometheusRule/{RELEASE}-refund-sorter"])
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    monitor = copy.deepcopy(objects[f"ServiceMonitor/{REVIEW}"])
    monitor["spec"]["endpoints"][0]["interval"] = "every night"
    for broken, complaint in ((rule, "expr"), (monitor, "interval")):
        refused = server_dry_run(namespace, broken)
        assert refused.returncode != 0 and complaint in refused.stderr, refused.stdout + refused.stderr


def test_the_ingress_and_the_metrics_rule_are_applied_as_rendered(namespace, objects):
    """No Ingress controller and no NetworkPolicy enforcement in the lab: the objects are applied and read back."""
    sent = [objects[f"{kind}/{REVIEW}"] for kind in ("Service", "NetworkPolicy", "Ingress")]
    kubectl("-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump_all(sent))
    ingress = kubectl_json("-n", namespace, "get", "ingress", REVIEW)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "1m"
    assert ingress["spec"]["tls"] == [{"hosts": ["review.refunds.test"], "secretName": "review-tls"}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "review.refunds.test"
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    assert backend == {"name": REVIEW, "port": {"name": "http"}}
    # The backend is the page's port of the Service the cluster holds, never its metrics port.
    service = kubectl_json("-n", namespace, "get", "service", backend["name"])
    ports = {port["name"]: port["port"] for port in service["spec"]["ports"]}
    assert ports == {"http": 8090, "metrics": 8091}
    policy = kubectl_json("-n", namespace, "get", "networkpolicy", REVIEW)
    admitted = [(rule["from"], [port["port"] for port in rule["ports"]]) for rule in policy["spec"]["ingress"]]
    assert admitted == [([INGRESS_CONTROLLER], [8090]), ([PROMETHEUS], [8091])]


def test_the_dashboard_configmap_is_stored_with_the_sidecars_label(namespace, objects):
    name = f"{RELEASE}-refund-sorter-dashboard"
    kubectl("-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump(objects[f"ConfigMap/{name}"]))
    stored = kubectl_json("-n", namespace, "get", "configmaps", "-l", "grafana_dashboard=1")["items"]
    assert [item["metadata"]["name"] for item in stored] == [name]
    assert json.loads(stored[0]["data"]["refund-sorter.json"])["uid"] == "refund-sorter"
