"""The chart's monitoring parts, rendered offline: the review page's metrics port and its NetworkPolicy rule, the
ServiceMonitors, PodMonitor, Ingress and dashboard ConfigMap, and every alert of the shipped PrometheusRule
under `promtool test rules` on synthetic series."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from tests.k8s.test_k8s_check import check, render, rendered, tools  # noqa: F401  (fixtures and render helper)

REVIEW = "r-refund-sorter-review"
SERVING = "r-refund-sorter-torchserve"
PROMETHEUS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
PROXY = {"podSelector": {"matchLabels": {"app": "oauth2-proxy"}}}
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Ingress"}


def test_the_review_page_and_its_metrics_admit_different_peers(check, tmp_path):  # noqa: F811
    both = tmp_path / "both.yaml"
    both.write_text(
        yaml.safe_dump({"review": {"enabled": True, "from": [PROXY]}, "networkPolicy": {"metricsFrom": [PROMETHEUS]}})
    )
    docs = rendered(check, "-f", str(both))
    rules = docs[f"NetworkPolicy/{REVIEW}"]["spec"]["ingress"]
    assert [(rule["from"], rule["ports"]) for rule in rules] == [
        ([PROXY], [{"port": 8090}]),
        ([PROMETHEUS], [{"port": 8091}]),
    ]
    (container,) = docs[f"Deployment/{REVIEW}"]["spec"]["template"]["spec"]["containers"]
    assert {port["name"]: port["containerPort"] for port in container["ports"]} == {"http": 8090, "metrics": 8091}
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert (env["REFUND_REVIEW_PORT"], env["REFUND_REVIEW_METRICS_PORT"]) == ("8090", "8091")
    service_ports = docs[f"Service/{REVIEW}"]["spec"]["ports"]
    assert {(port["name"], port["port"], port["targetPort"]) for port in service_ports} == {
        ("http", 8090, "http"),
        ("metrics", 8091, "metrics"),
    }
    # Scrapers alone: the page's port admits nobody.
    scrapers = tmp_path / "scrapers.yaml"
    scrapers.write_text(yaml.safe_dump({"review": {"enabled": True}, "networkPolicy": {"metricsFrom": [PROMETHEUS]}}))
    policy = rendered(check, "-f", str(scrapers))[f"NetworkPolicy/{REVIEW}"]
    assert policy["spec"]["ingress"] == [{"from": [PROMETHEUS], "ports": [{"port": 8091}]}]


def test_monitoring_parts_are_off_by_default(check):  # noqa: F811
    docs = rendered(check, "review.enabled=true")
    assert not [name for name in docs if name.split("/")[0] in MONITORING_KINDS]
    assert not [name for name, doc in docs.items() if doc["kind"] == "ConfigMap" and "grafana_dashboard" in str(doc)]


def test_service_monitors_scrape_the_metrics_ports_and_the_pod_monitor_replaces_torchserves(check):  # noqa: F811
    docs = rendered(
        check,
        "review.enabled=true",
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.serviceMonitor.labels.release=kps",
    )
    for name, component in ((SERVING, "serving"), (REVIEW, "review")):
        monitor = docs[f"ServiceMonitor/{name}"]
        assert monitor["metadata"]["labels"]["release"] == "kps"
        assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
        assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component
        # The selector finds the Service whose port is named metrics.
        service = docs[f"Service/{name}"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert "metrics" in [port["name"] for port in service["spec"]["ports"]]
    pods = rendered(
        check, "review.enabled=true", "monitoring.serviceMonitor.enabled=true", "monitoring.podMonitor.enabled=true"
    )
    assert f"ServiceMonitor/{SERVING}" not in pods and f"ServiceMonitor/{REVIEW}" in pods
    endpoint = pods[f"PodMonitor/{SERVING}"]["spec"]["podMetricsEndpoints"][0]
    assert endpoint["portNumber"] == 8082
    assert endpoint["relabelings"] == [{"targetLabel": "job", "replacement": SERVING}]  # the alerts' job
    pod_labels = pods[f"Deployment/{SERVING}"]["spec"]["template"]["metadata"]["labels"]
    assert pods[f"PodMonitor/{SERVING}"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_the_ingress_routes_a_host_to_the_pages_port(check):  # noqa: F811
    docs = rendered(
        check,
        "review.enabled=true",
        "review.ingress.enabled=true",
        "review.ingress.host=review.example.com",
        "review.ingress.className=nginx",
        "review.ingress.tlsSecretName=review-tls",
        "review.ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/proxy-body-size=1m",
    )
    ingress = docs[f"Ingress/{REVIEW}"]
    assert ingress["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/proxy-body-size": "1m"}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "review-tls", "hosts": ["review.example.com"]}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "review.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    assert path["backend"]["service"] == {"name": REVIEW, "port": {"name": "http"}}
    bare = rendered(check, "review.enabled=true", "review.ingress.enabled=true")[f"Ingress/{REVIEW}"]
    assert "tls" not in bare["spec"] and "ingressClassName" not in bare["spec"]
    assert "host" not in bare["spec"]["rules"][0]
    assert f"Ingress/{REVIEW}" not in rendered(check, "review.ingress.enabled=true")  # no page, no Ingress


def test_the_ingress_offers_no_path_but_the_root(check):  # noqa: F811
    """The page's links, form actions and redirects are absolute, so it works at / only: no value moves it."""
    out = render(check, "review.enabled=true", "review.ingress.enabled=true", "review.ingress.path=/review")
    assert out.returncode != 0 and "additional properties 'path' not allowed" in out.stderr, out.stderr


def test_the_dashboard_configmap_carries_the_sidecars_label_and_the_json(check):  # noqa: F811
    docs = rendered(
        check, "monitoring.dashboard.enabled=true", "monitoring.dashboard.annotations.grafana_folder=Returns"
    )
    configmap = docs["ConfigMap/r-refund-sorter-dashboard"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Returns"}
    shipped = json.loads((check.CHART / "dashboards" / "refund-sorter.json").read_text())
    assert json.loads(configmap["data"]["refund-sorter.json"]) == shipped
    assert shipped["panels"] and all(panel["targets"] for panel in shipped["panels"])


RULES_ON = ("review.enabled=true", "monitoring.prometheusRule.enabled=true")
KSERVE = ("serving.mode=kserve", "serving.kserve.storageUri=s3://models/refund-classifier", "batch.enabled=false")


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (("monitoring.prometheusRule.enabled=true",), "needs review.enabled"),
        # No monitor at all: RefundNightMissing's absent() would fire for ever, RefundTorchServeDown every night.
        (RULES_ON, "needs monitoring.serviceMonitor.enabled"),
        (("monitoring.podMonitor.enabled=true", *RULES_ON), "needs monitoring.serviceMonitor.enabled"),
        # kserve mode: no TorchServe Service, so no ServiceMonitor of it; only the PodMonitor gives its job.
        (
            (*KSERVE, "monitoring.serviceMonitor.enabled=true", *RULES_ON),
            "needs monitoring.podMonitor.enabled",
        ),
    ],
)
def test_the_rules_refuse_to_render_without_the_monitors_their_jobs_come_from(check, values, complaint):  # noqa: F811
    helm, _ = check.layer_binaries()
    sets = [arg for value in values for arg in ("--set", value)]
    out = subprocess.run(
        [str(helm), "template", "r", str(check.CHART), *sets], capture_output=True, text=True, check=False
    )
    assert out.returncode != 0 and complaint in out.stderr, out.stderr


@pytest.mark.parametrize(
    "monitors",
    [
        ("monitoring.serviceMonitor.enabled=true",),
        ("monitoring.serviceMonitor.enabled=true", "monitoring.podMonitor.enabled=true"),
        (*KSERVE, "monitoring.serviceMonitor.enabled=true", "monitoring.podMonitor.enabled=true"),
    ],
)
def test_the_rules_render_with_a_monitor_for_each_job_they_read(check, monitors):  # noqa: F811
    docs = rendered(check, *monitors, *RULES_ON)
    # Each monitor's job is its name (a ServiceMonitor's Service, the PodMonitor's relabelling).
    scraped = {doc["metadata"]["name"] for doc in docs.values() if doc["kind"] in {"ServiceMonitor", "PodMonitor"}}
    groups = docs["PrometheusRule/r-refund-sorter"]["spec"]["groups"]
    read = {job for group in groups for rule in group["rules"] for job in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert read == scraped == {REVIEW, SERVING}


# promtool's clock starts at 1970-01-01 00:00 UTC; series are one sample a minute.
REVIEW_SERIES = f'job="{REVIEW}", namespace="default"'
SERVING_SERIES = f'job="{SERVING}", namespace="default"'


def alert(name: str, at: str, rule: dict, *expected: dict) -> dict:
    """An alert_rule_test: at `at`, `name` fires once per expected {labels, annotations} (none: silent). Static
    annotations are the shipped rule's."""
    return {
        "eval_time": at,
        "alertname": name,
        "exp_alerts": [
            {
                "exp_labels": {**rule[name]["labels"], **fired.get("labels", {})},
                "exp_annotations": {**rule[name]["annotations"], **fired.get("annotations", {})},
            }
            for fired in expected
        ],
    }


def promtool_tests(rule: dict) -> list[dict]:
    fired = {}
    return [
        {  # a night finished at 00:00; nothing since
            "interval": "1m",
            "input_series": [
                {
                    "series": f'refund_night_finished_timestamp_seconds{{{REVIEW_SERIES}, shard="0/1"}}',
                    "values": "0x1700",
                }
            ],
            "alert_rule_test": [
                alert("RefundNightMissing", "25h", rule),
                alert("RefundNightMissing", "26h10m", rule),  # past 26 h, still within `for`
                alert("RefundNightMissing", "26h20m", rule, fired),
            ],
        },
        {  # no night was ever recorded: the series is absent
            "interval": "1m",
            "input_series": [{"series": f"refund_review_queue_size{{{REVIEW_SERIES}}}", "values": "0x60"}],
            "alert_rule_test": [
                alert("RefundNightMissing", "10m", rule),
                alert("RefundNightMissing", "20m", rule, {"labels": {"job": REVIEW, "namespace": "default"}}),
            ],
        },
        {  # the failure rate against the night's own threshold: 2 % then 10 % against 5 %
            "interval": "1m",
            "input_series": [
                {
                    "series": f'refund_night_failure_rate{{{REVIEW_SERIES}, shard="0/1", pod="a"}}',
                    "values": "0.02x30 0.1x30",
                },
                {
                    "series": f'refund_night_max_failure_rate{{{REVIEW_SERIES}, shard="0/1", pod="a"}}',
                    "values": "0.05x60",
                },
            ],
            "alert_rule_test": [
                alert("RefundNightFailureRateHigh", "20m", rule),
                alert(
                    "RefundNightFailureRateHigh",
                    "40m",
                    rule,
                    {
                        "labels": {"shard": "0/1"},
                        "annotations": {"summary": "Last night's failure rate is 10% (shard 0/1)"},
                    },
                ),
            ],
        },
        {  # 5 dead-lettered for a day, 8 after the next night: fires for the 3 new ones until a day has passed
            "interval": "1h",
            "input_series": [{"series": f'refund_results{{{REVIEW_SERIES}, status="dead"}}', "values": "5x26 8x30"}],
            "alert_rule_test": [
                alert("RefundDeadLetteredGrowing", "26h", rule),
                alert(
                    "RefundDeadLetteredGrowing",
                    "28h",
                    rule,
                    {"annotations": {"summary": "3 more images dead-lettered in the last 24 hours"}},
                ),
                alert("RefundDeadLetteredGrowing", "52h", rule),
            ],
        },
        {  # the first dead-lettered images: the app exposes 0 (absent before it started), then 3: fires for them
            "interval": "1h",
            "input_series": [
                {"series": f'refund_results{{{REVIEW_SERIES}, status="dead"}}', "values": "_x2 0x23 3x30"}
            ],
            "alert_rule_test": [
                alert("RefundDeadLetteredGrowing", "25h", rule),
                alert(
                    "RefundDeadLetteredGrowing",
                    "27h",
                    rule,
                    {"annotations": {"summary": "3 more images dead-lettered in the last 24 hours"}},
                ),
                alert("RefundDeadLetteredGrowing", "52h", rule),
            ],
        },
        {  # the oldest item is 47 h old and ages a minute a minute: past 48 h at 1 h, firing 15 min later
            "interval": "1m",
            "input_series": [
                {"series": f"refund_review_oldest_waiting_seconds{{{REVIEW_SERIES}}}", "values": "169200+60x200"}
            ],
            "alert_rule_test": [
                alert("RefundReviewQueueStale", "70m", rule),
                alert("RefundReviewQueueStale", "80m", rule, fired),
            ],
        },
        {  # both TorchServe pods down from midnight: silent before the 02:00 UTC window, firing in it, silent after
            "interval": "1m",
            "input_series": [
                {"series": f'up{{{SERVING_SERIES}, pod="a"}}', "values": "0x500"},
                {"series": f'up{{{SERVING_SERIES}, pod="b"}}', "values": "0x500"},
            ],
            "alert_rule_test": [
                alert("RefundTorchServeDown", "1h50m", rule),
                alert("RefundTorchServeDown", "2h10m", rule, fired),
                alert("RefundTorchServeDown", "6h10m", rule),
            ],
        },
        {  # one pod up: TorchServe answers; no pods at all in the window: down
            "interval": "1m",
            "input_series": [
                {"series": f'up{{{SERVING_SERIES}, pod="a"}}', "values": "0x200"},
                {"series": f'up{{{SERVING_SERIES}, pod="b"}}', "values": "1x200"},
                {"series": 'up{job="other", namespace="default"}', "values": "1x200"},
            ],
            "alert_rule_test": [alert("RefundTorchServeDown", "2h30m", rule)],
        },
        {
            "interval": "1m",
            "input_series": [{"series": 'up{job="other", namespace="default"}', "values": "1x200"}],
            "alert_rule_test": [
                alert("RefundTorchServeDown", "2h30m", rule, {"labels": {"job": SERVING, "namespace": "default"}})
            ],
        },
    ]


def test_every_shipped_alert_fires_and_stays_silent_under_promtool(check, tmp_path):  # noqa: F811
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("no promtool: make sysdeps installs it (Debian package prometheus)")
    docs = rendered(check, "monitoring.serviceMonitor.enabled=true", *RULES_ON)
    groups = docs["PrometheusRule/r-refund-sorter"]["spec"]["groups"]
    rules = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    tests = promtool_tests(rules)
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert tested == set(rules), f"alerts without a promtool test: {set(rules) - tested}"
    spec = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(spec))
    checked = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_offline_check_validates_monitoring_objects_against_the_operators_crds(check):  # noqa: F811
    docs = rendered(check, "-f", str(check.CHART / "ci" / "all-on-values.yaml"))
    monitoring = [doc for doc in docs.values() if doc["apiVersion"] == "monitoring.coreos.com/v1"]
    assert sorted(doc["kind"] for doc in monitoring) == ["PodMonitor", "PrometheusRule", "ServiceMonitor"]
    for doc in monitoring:
        assert check.validate_document(doc, []) == [], doc["kind"]
    monitor = next(doc for doc in monitoring if doc["kind"] == "ServiceMonitor")
    misspelt = {**monitor, "spec": {**monitor["spec"], "endpoint": monitor["spec"]["endpoints"]}}
    assert any("endpoint" in problem for problem in check.validate_document(misspelt, []))
    rule = next(doc for doc in monitoring if doc["kind"] == "PrometheusRule")
    wrong_type = {**rule, "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up", "for": 5}]}]}}
    assert any("for" in problem for problem in check.validate_document(wrong_type, []))
