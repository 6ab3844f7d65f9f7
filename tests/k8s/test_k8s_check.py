"""k8s/check.py: green on the shipped chart and manifests, red on broken values, and its validators
reject what a cluster would reject (removed APIs, unknown kinds and fields, bad InferenceServices)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "k8s" / "check.py"
BROKEN_VALUES = ROOT / "tests" / "k8s" / "broken-values.yaml"


@pytest.fixture(scope="module")
def tools() -> None:
    """What `make k8s-check` installs; installed here if missing, skipped only if that fails."""
    installed = (ROOT / "tools" / "checkov" / "bin" / "checkov").exists() and (
        ROOT / "tools" / "kserve" / "kserve" / "models"
    ).is_dir()
    if installed and importlib.util.find_spec("kubernetes_validate"):
        return
    make = subprocess.run(
        ["make", "-f", "k8s/check.mk", "k8s-tools", f"PY={sys.executable}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if make.returncode:
        pytest.skip(f"cannot install the k8s check's tools (make -f k8s/check.mk k8s-tools): {make.stderr[-500:]}")
    importlib.invalidate_caches()


@pytest.fixture(scope="module")
def check(tools):
    spec = importlib.util.spec_from_file_location("k8s_check", CHECK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHECK), *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=300
    )


def test_check_passes_on_the_shipped_chart_and_manifests(tools):
    result = run_check()
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.split("=== k8s check summary")[1]
    for step in ("helm lint --strict", "helm template", "kubectl kustomize", "validate (strict)", "checkov"):
        assert f"ok   {step}" in summary
    assert "FAIL" not in result.stdout
    assert "PASSED" in summary


def test_check_fails_on_broken_values_and_says_why(tools):
    result = run_check("--values", str(BROKEN_VALUES), "--skip-checkov")
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("  failed: ")]
    assert failed, result.stdout
    # Only the broken file fails; the shipped values still pass.
    assert all(str(BROKEN_VALUES) in line for line in failed), failed
    assert "FAIL helm lint --strict" in result.stdout
    for mistake in ("replicaCount", "/serving/workers", "/batch/schedule"):
        assert mistake in result.stdout, f"{mistake} not named in:\n{result.stdout}"
    assert "FAILED" in result.stdout


def test_check_fails_on_a_missing_values_file(tools):
    result = run_check("--values", "no-such-values.yaml", "--skip-checkov")
    assert result.returncode == 1
    assert "no such values file" in result.stdout


@pytest.fixture(scope="module")
def versions(check):
    return check.kubernetes_versions()


def test_validation_covers_the_versions_after_the_clusters_1_28(versions):
    """The chart admits 1.28 (the lab cluster's version, where the API server itself checks it: make k8s-e2e);
    every newer version's schema is checked offline, up to the minor version of the pinned kubernetes-validate."""
    pin = re.search(r"^KUBERNETES_VALIDATE_VERSION := 1\.(\d+)\.", (ROOT / "k8s" / "check.mk").read_text(), re.M)
    assert versions == [f"1.{minor}" for minor in range(29, int(pin.group(1)) + 1)]


def test_a_removed_api_fails(check, versions):
    pdb = {
        "apiVersion": "policy/v1beta1",  # removed in Kubernetes 1.25
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "serving"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "serving"}}},
    }
    assert ["unknown kind or removed API" in problem for problem in check.validate_document(pdb, versions)] == [True]


def test_an_unknown_kind_fails(check, versions):
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert check.validate_document(widget, versions)


def test_an_unknown_field_fails_in_strict_mode(check, versions):
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}, "dta": {}}
    problems = check.validate_document(config, versions)
    assert len(problems) == 1 and "'dta' was unexpected" in problems[0]


def test_the_inference_service_is_checked_against_kserve_models(check, versions):
    good = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "refund-sorter"},
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "model": {
                    "modelFormat": {"name": "pytorch"},
                    "storageUri": "s3://bucket/serving",
                    "resources": {"limits": {"cpu": "2", "memory": "3Gi"}},
                },
            }
        },
    }
    assert check.validate_document(good, versions) == []
    bad = {**good, "spec": {"predictor": {"minReplicas": "1", "model": {"storageUrl": "s3://bucket", "resources": {}}}}}
    problems = check.validate_document(bad, versions)
    assert any("minReplicas: expected int" in problem for problem in problems), problems
    assert any("storageUrl: no such field in V1beta1ModelSpec" in problem for problem in problems), problems
    typed = {**good, "spec": {"predictor": {"model": {"resources": {"limits": {"cpu": 2}}}}}}
    assert any("limits.cpu" in problem for problem in check.validate_document(typed, versions))


def test_config_properties_drift_is_caught(check):
    config = check.expected_pod_config()
    assert config["inference_address"].startswith("http://0.0.0.0:")
    assert config["management_address"].startswith("http://127.0.0.1:")
    text = "\n".join(f"{key}={value}" for key, value in {**config, "max_request_size": "1"}.items())
    drifted = check.Rendering(
        "test", [{"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"config.properties": text}}], ""
    )
    report = check.Report()
    check.check_config([drifted], report)
    assert [row[2] for row in report.rows] == [False]
    assert "max_request_size" in report.rows[0][3]


def test_chart_and_kustomize_drift_is_caught(check):
    chart = {
        "kind": "CronJob",
        "metadata": {"name": "b", "labels": {"helm.sh/chart": "x"}},
        "spec": {"schedule": "0 2 * * *"},
    }
    kustomize = {"kind": "CronJob", "metadata": {"name": "b"}, "spec": {"schedule": "0 3 * * *"}}
    found = check.differences(check.normalized(chart), check.normalized(kustomize))
    assert found == [".spec.schedule: '0 2 * * *' in the chart, '0 3 * * *' in kustomize"]
    # Tags and digests are the overlays' to set; the configMapGenerator's hash suffix is kustomize's.
    assert check.normalized({"image": "refund-sorter-serve@sha256:" + "0" * 64}) == {"image": "refund-sorter-serve"}
    assert check.normalized({"image": "refund-sorter-serve:0.1.0"}) == {"image": "refund-sorter-serve"}
    assert check.normalized({"name": "refund-sorter-torchserve-mm4h626g82"}) == {"name": "refund-sorter-torchserve"}


def render(check, *settings: str) -> subprocess.CompletedProcess:
    """helm template of the chart with --set settings (values files: "-f", path)."""
    helm, _ = check.layer_binaries()
    options = [option for setting in settings for option in (("--set", setting) if "=" in setting else (setting,))]
    return subprocess.run(
        [str(helm), "template", "r", str(check.CHART), *options], capture_output=True, text=True, check=False
    )


def rendered(check, *settings: str) -> dict[str, dict]:
    out = render(check, *settings)
    assert out.returncode == 0, out.stderr
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in check.documents(out.stdout)}


def test_batch_parallelism_renders_an_indexed_job_and_refuses_scale_to_zero(check, tmp_path):
    sharded = render(check, "batch.parallelism=3")
    assert sharded.returncode == 0, sharded.stderr
    (cronjob,) = [doc for doc in check.documents(sharded.stdout) if doc["kind"] == "CronJob"]
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert (job["completionMode"], job["completions"], job["parallelism"]) == ("Indexed", 3, 3)
    env = {item["name"]: item.get("value") for item in job["template"]["spec"]["containers"][0]["env"]}
    assert env["REFUND_SHARD_COUNT"] == "3"
    single = render(check)
    (cronjob,) = [doc for doc in check.documents(single.stdout) if doc["kind"] == "CronJob"]
    assert "completionMode" not in cronjob["spec"]["jobTemplate"]["spec"]
    refused = render(check, "batch.parallelism=3", "batch.scaleToZero.enabled=true")
    assert refused.returncode != 0 and "set batch.parallelism=1" in refused.stderr


def test_the_model_comes_from_the_registry_pinned_or_production_or_from_the_image(check):
    deployment = rendered(check)["Deployment/r-refund-sorter-torchserve"]["spec"]["template"]
    (fetch,) = deployment["spec"]["initContainers"]
    assert fetch["image"] == "refund-sorter-batch:0.1.0"  # the registry code, no torch
    assert fetch["args"] == ["fetch-model", "production", "--out", "/opt/refund-sorter/model-store"]
    assert {"name": "REFUND_REGISTRY", "value": "s3://refund-sorter/registry"} in fetch["env"]
    annotations = deployment["metadata"]["annotations"]
    assert (annotations["refund-sorter/model-pin"], annotations["refund-sorter/model-version"]) == ("production",) * 2
    mounts = {mount["name"]: mount for mount in deployment["spec"]["containers"][0]["volumeMounts"]}
    assert (
        mounts["model-store"]["readOnly"]
        and mounts["model-store"]["mountPath"] == fetch["volumeMounts"][0]["mountPath"]
    )

    pinned = rendered(check, "serving.model.version=20261206T101500Z")["Deployment/r-refund-sorter-torchserve"]
    template = pinned["spec"]["template"]
    assert template["spec"]["initContainers"][0]["args"][1] == "20261206T101500Z"
    assert template["metadata"]["annotations"]["refund-sorter/model-version"] == "20261206T101500Z"

    docs = rendered(check, "serving.model.source=image", "image.tag=1.2", "image.serveTag=model-7")
    template = docs["Deployment/r-refund-sorter-torchserve"]["spec"]["template"]
    assert (
        "initContainers" not in template["spec"]
        and "refund-sorter/model-pin" not in template["metadata"]["annotations"]
    )
    images = {container["image"] for doc in docs.values() for container in _containers(doc)}
    assert images == {"refund-sorter-serve:model-7", "refund-sorter-batch:1.2"}


def test_the_retraining_job_rolls_only_a_deployment_that_serves_production(check):
    assert "CronJob/r-refund-sorter-retrain" not in rendered(check)  # off by default
    docs = rendered(check, "retrain.enabled=true", "retrain.trainArgs=--epochs 1")
    pod = docs["CronJob/r-refund-sorter-retrain"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (export,) = pod["initContainers"]
    (job,) = pod["containers"]
    assert export["image"] == "refund-sorter-batch:0.1.0" and export["args"] == [
        "export-labels",
        "--out",
        "/work/export",
    ]
    assert job["image"] == "refund-sorter-train:0.1.0" and job["args"][0] == "retrain"
    env = {item["name"]: item.get("value") for item in job["env"]}
    assert env["REFUND_TRAIN_ARGS"] == "--epochs 1" and env["REFUND_ROLL_DEPLOYMENT"] == "r-refund-sorter-torchserve"
    assert pod["automountServiceAccountToken"] is True and pod["serviceAccountName"] == "r-refund-sorter-retrain"
    assert docs["Role/r-refund-sorter-retrain"]["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": ["r-refund-sorter-torchserve"],
            "verbs": ["patch"],
        }
    ]
    for elsewhere in ("serving.model.version=20261206T101500Z", "serving.model.source=image"):
        docs = rendered(check, "retrain.enabled=true", elsewhere)
        pod = docs["CronJob/r-refund-sorter-retrain"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        env = {item["name"] for item in pod["containers"][0]["env"]}
        assert "REFUND_ROLL_DEPLOYMENT" not in env and pod["automountServiceAccountToken"] is False, elsewhere
        assert pod["serviceAccountName"] == "r-refund-sorter-retrain" and "Role/r-refund-sorter-retrain" not in docs


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    pod = (
        spec.get("template", {}).get("spec")
        or spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
        or spec
    )
    return pod.get("containers", [])


def test_the_small_cluster_profile_fits_a_full_node(check):
    docs = rendered(check, "-f", str(check.CHART / "values-small.yaml"))
    deployment = docs["Deployment/r-refund-sorter-torchserve"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert deployment["spec"]["replicas"] == 2 and "HorizontalPodAutoscaler/r-refund-sorter-torchserve" not in docs
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["cpu"] == "600m"
    assert {"name": "TS_DEFAULT_WORKERS_PER_MODEL", "value": "1"} in container["env"]
    # Beside two 600m TorchServe pods and the night, a 2-core node has half a core left for the retraining job.
    docs = rendered(check, "-f", str(check.CHART / "values-small.yaml"), "retrain.enabled=true")
    pod = docs["CronJob/r-refund-sorter-retrain"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["requests"]["cpu"] == "500m"


def test_batch_env_may_not_repeat_a_variable_the_chart_sets(check):
    refused = render(check, "batch.env.REFUND_TORCHSERVE_URL=http://elsewhere:8080")
    assert refused.returncode != 0 and "batch.env.REFUND_TORCHSERVE_URL: the chart sets this variable" in refused.stderr
    assert render(check, "batch.env.REFUND_ROUTE=copy").returncode == 0


def test_batch_service_account_name_is_used_and_bound_with_scale_to_zero(check):
    # Always named: an upgrade that dropped the field would get the removed scale-to-zero account back from the
    # deprecated serviceAccount field (seen in the lab cluster: no night could create its pod).
    pod = rendered(check)["CronJob/r-refund-sorter-batch"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "default" and pod["automountServiceAccountToken"] is False
    docs = rendered(check, "batch.serviceAccountName=irsa-reader")
    pod = docs["CronJob/r-refund-sorter-batch"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "irsa-reader" and pod["automountServiceAccountToken"] is False
    assert not [name for name in docs if name.startswith(("ServiceAccount/", "RoleBinding/"))]
    docs = rendered(check, "batch.serviceAccountName=irsa-reader", "batch.scaleToZero.enabled=true")
    assert "ServiceAccount/r-refund-sorter-batch" not in docs  # theirs, not the chart's
    binding = docs["RoleBinding/r-refund-sorter-batch"]
    assert binding["subjects"][0]["name"] == "irsa-reader"


def test_kserve_mode_keeps_the_disruption_budget_and_network_policy(check):
    docs = rendered(check, "-f", str(check.CHART / "ci" / "kserve-values.yaml"))
    selector = {"serving.kserve.io/inferenceservice": "r-refund-sorter"}
    assert docs["PodDisruptionBudget/r-refund-sorter-torchserve"]["spec"]["selector"]["matchLabels"] == selector
    policy = docs["NetworkPolicy/r-refund-sorter-torchserve"]["spec"]
    assert policy["podSelector"]["matchLabels"] == selector
    assert policy["ingress"][0]["ports"] == [{"port": 8080}]
    model = docs["InferenceService/r-refund-sorter"]["spec"]["predictor"]["model"]
    assert model["startupProbe"]["httpGet"]["path"] == "/v1/models/refund-classifier"


def notes(check, tmp_path: Path, *settings: str) -> tuple[list[str], dict[str, dict]]:
    """The commands NOTES.txt prints (its lines indented four spaces) and the objects of the same rendering.

    `helm install --dry-run` needs a cluster, and `helm template` leaves NOTES.txt out: a copy of the chart renders
    the very file with `tpl` into a ConfigMap, through the same engine, values and named templates."""
    chart = tmp_path / "chart"
    shutil.copytree(check.CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "NOTES.txt")
    probe = '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "notes-probe"}, "data": {"notes": %s}}'
    (chart / "templates" / "notes-probe.yaml").write_text(probe % '{{ tpl (.Files.Get "NOTES.txt") . | toJson }}')
    helm, _ = check.layer_binaries()
    options = [option for setting in settings for option in (("--set", setting) if "=" in setting else (setting,))]
    out = subprocess.run(
        [str(helm), "template", "r", str(chart), "-n", "refunds", *options], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    docs = {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in check.documents(out.stdout)}
    text = docs.pop("ConfigMap/notes-probe")["data"]["notes"]
    return [line[4:] for line in text.splitlines() if line.startswith("    ")], docs


# deployment/NAME, service/NAME (with the port a port-forward names), cronjob/NAME, inferenceservice/NAME
NAMED_OBJECT = r"\b(deployment|service|cronjob|inferenceservice)/([a-z0-9-]+)(?: \d+:(\d+))?"
KINDS = {"deployment": "Deployment", "service": "Service", "cronjob": "CronJob", "inferenceservice": "InferenceService"}


def test_notes_print_commands_for_what_the_chart_creates(check, tmp_path):
    """Each printed command is one whole line and names objects and ports this rendering creates; the curl sends the
    photo as an image (without a Content-Type, curl sends a form, which TorchServe does not hand on as the image)."""
    value_sets = {"default": [], "all-on": ["-f", str(check.CHART / "ci" / "all-on-values.yaml")]}
    value_sets["review"] = ["review.enabled=true"]
    value_sets["kserve"] = ["-f", str(check.CHART / "ci" / "kserve-values.yaml")]
    printed = {}
    for name, values in value_sets.items():
        commands, docs = notes(check, tmp_path / name, *values)
        printed[name] = commands
        assert all(command.split()[0] in {"kubectl", "curl", "helm", "refund-batch", "printf"} for command in commands)
        assert not [command for command in commands if command.endswith("\\")], "a command goes on on the next line"
        for command in commands:
            assert not command.startswith("kubectl") or command.startswith("kubectl -n refunds "), command
            for kind, object_name, port in re.findall(NAMED_OBJECT, command):
                if object_name.endswith("-predictor"):
                    continue  # KServe makes the predictor's Service: not in the rendering
                assert f"{KINDS[kind]}/{object_name}" in docs, f"{command}: no such object in {sorted(docs)}"
                if port:
                    ports = [entry["port"] for entry in docs[f"Service/{object_name}"]["spec"]["ports"]]
                    assert int(port) in ports, command
    predict = "curl -H 'Content-Type: image/jpeg' --data-binary @photo.jpg http://127.0.0.1:8080/predictions/refund-classifier"
    assert predict in printed["default"] and predict in printed["all-on"]
    assert "kubectl -n refunds port-forward service/r-refund-sorter-review 8090:8090" in printed["review"]
    assert any("Content-Type: application/json" in command and ":predict" in command for command in printed["kserve"])


def test_review_header_mode_passes_the_proxy_secret_from_the_secret_and_requires_it(check):
    docs = rendered(check, "review.enabled=true", "review.userHeader=X-Forwarded-User", "review.proxySecretKey=proxy")
    (container,) = docs["Deployment/r-refund-sorter-review"]["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["REFUND_REVIEW_USER_HEADER"]["value"] == "X-Forwarded-User"
    assert env["REFUND_REVIEW_PROXY_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "refund-sorter-review",
        "key": "proxy",
    }
    refused = render(check, "review.enabled=true", "review.userHeader=X-Forwarded-User")
    assert refused.returncode != 0 and "review.proxySecretKey is required" in refused.stderr
    assert "REFUND_REVIEW_PROXY_SECRET" not in render(check, "review.enabled=true").stdout


def test_a_night_that_failed_its_photos_is_not_retried_and_sigterm_has_time_to_finish(check):
    """Exit 1 (too many failures) and 3 (TorchServe left running) fail the Job at once: a retry within seconds
    would charge every failing photo another attempt in the same night. Exit 2 (TorchServe unreachable) and
    crashes retry up to backoffLimit; disruptions (drain, preemption) retry without counting."""
    docs = rendered(check)
    job = docs["CronJob/r-refund-sorter-batch"]["spec"]["jobTemplate"]["spec"]
    rules = job["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "batch", "operator": "In", "values": [1, 3]},
    }
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert len(rules) == 2 and job["template"]["spec"]["restartPolicy"] == "Never"  # what the policy requires
    assert job["template"]["spec"]["terminationGracePeriodSeconds"] == 120
    pod = rendered(check, "batch.terminationGracePeriodSeconds=300")["CronJob/r-refund-sorter-batch"]
    assert pod["spec"]["jobTemplate"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 300


def test_the_schema_is_migrated_by_a_hook_before_install_and_upgrade(check):
    """One Job, `refund-batch migrate`, before the release's objects (install) or their change (upgrade): the
    CronJob's pods and the review page only check the schema and need no DDL rights."""
    docs = rendered(check, "review.enabled=true")
    hook = docs["Job/r-refund-sorter-migrate"]
    annotations = hook["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    pod = hook["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"] and container["image"].startswith("refund-sorter-batch:")
    url = {"secretKeyRef": {"name": "refund-sorter-database", "key": "url"}}
    assert container["env"] == [{"name": "REFUND_DATABASE_URL", "valueFrom": url}]
    assert container["securityContext"]["readOnlyRootFilesystem"] and pod["automountServiceAccountToken"] is False
    for app in (docs["CronJob/r-refund-sorter-batch"], docs["Deployment/r-refund-sorter-review"]):
        assert "REFUND_MIGRATE" not in json.dumps(app)  # they check, never migrate
    # A database user allowed DDL for the hook alone, from another key of the same Secret.
    (container,) = rendered(check, "batch.database.migrationUrlKey=owner-url")["Job/r-refund-sorter-migrate"]["spec"][
        "template"
    ]["spec"]["containers"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "refund-sorter-database", "key": "owner-url"}
    assert "Job/r-refund-sorter-migrate" not in rendered(check, "batch.enabled=false")


def test_the_helm_test_pod_runs_the_smoke_test_on_a_photo(check):
    """tests/test_serving.py runs files/smoke.py against a real TorchServe; the pod must run that very file."""
    smoke = (check.CHART / "files" / "smoke.py").read_text()
    (container,) = rendered(check)["Pod/r-refund-sorter-test-predict"]["spec"]["containers"]
    assert container["command"] == ["python", "-c"]
    url = "http://r-refund-sorter-torchserve:8080/predictions/refund-classifier"
    assert container["args"] == [smoke, url, "predict"]
    kserve = rendered(check, "-f", str(check.CHART / "ci" / "kserve-values.yaml"))
    (container,) = kserve["Pod/r-refund-sorter-test-predict"]["spec"]["containers"]
    url = "http://r-refund-sorter-predictor.default.svc/v1/models/refund-classifier"
    assert container["args"][1:] == [url, "ready"]
