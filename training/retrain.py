"""The weekly retraining, one command for the CronJob (or a person):

    refund-train retrain --exported /export --train-args "--epochs 1 --max-per-class 20"

1. --exported (the output of `refund-batch export-labels`, written by the job's init container): if it
   holds a labelled row, it goes to datasets/reviewed/<UTC time>/ of the store first, the record of
   what this week trains on.
2. datasets/catalogue/ (`refund-train catalogue upload`) and the newest datasets/reviewed/*/ into --work
   (each export holds every decision exported so far).
3. prepare (the catalogue, the reviewed export as --extra), train, archive, publish, promote: the
   gate decides on the test split and on the reviewed returns; a refused candidate stays published.
4. on promotion, with --roll-deployment: the serving Deployment's pod template gets the annotation
   refund-sorter/model-version=<version>, so its pods roll and fetch the new production model.

Each step logs one line with its duration; the last line says what happened:
    model <version> trained on <N> reviewed returns (<M> catalogue images): promoted|refused: <why>

Exit 0: promoted or refused (a refusal is a normal week); 2: a step failed, with a line saying why
(no catalogue in the store, the gate cannot compare, ...); 1: an unexpected error, with its traceback;
3: promoted, but the Deployment could not be rolled (production is the new version; the pods serve
the old one until they restart).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import obstore
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from obstore.exceptions import AlreadyExistsError
from obstore.store import ObjectStore

from common import kubeapi
from common.objectstore import download_prefix, open_store
from common.registry import MAR_NAME, Registry, RegistryError
from common.styles import read_styles
from training import archive, prepare, registry, train
from training.catalogue import CATALOGUE, REVIEWED, DatasetError, upload_dataset
from training.progress import log

CARD = "model_card.md"
ANNOTATION = "refund-sorter/model-version"  # on the serving pods' template: a new value rolls them
REQUEST_TIMEOUT_S = 30.0


class RetrainError(Exception):
    """A step that cannot go on; the message says why."""


class RollError(Exception):
    """The serving Deployment could not be patched; the message says why."""


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """One line when the step ends, with its duration, whether it succeeded or not."""
    started = time.monotonic()
    try:
        yield
    except BaseException:
        log(f"retrain: {name} failed after {time.monotonic() - started:.1f}s")
        raise
    log(f"retrain: {name} done in {time.monotonic() - started:.1f}s")


def labelled_rows(exported: Path) -> int:
    if not (exported / "styles.csv").is_file():
        raise RetrainError(f"{exported} has no styles.csv: did refund-batch export-labels run?")
    return len(read_styles(exported / "styles.csv", "articleType")[0])


def upload_export(store: ObjectStore, exported: Path) -> str | None:
    """The export under datasets/reviewed/<UTC time>/ (never over an earlier one); its prefix, or None when
    it holds no labelled row."""
    rows = labelled_rows(exported)
    if not rows:
        log(f"retrain: {exported} holds no reviewed returns; nothing to upload")
        return None
    prefix = f"{REVIEWED}{datetime.now(UTC):%Y%m%dT%H%M%SZ}/"
    try:
        upload_dataset(store, exported, prefix, create=True)
    except AlreadyExistsError:
        raise RetrainError(f"{prefix} exists already: another export was uploaded this second; run again") from None
    log(f"retrain: {rows} reviewed returns of {exported} uploaded to {prefix}")
    return prefix


def reviewed_exports(store: ObjectStore) -> list[str]:
    """The prefixes of datasets/reviewed/*/, oldest first (their names are UTC times)."""
    listing = obstore.list_with_delimiter(store, REVIEWED.rstrip("/"))
    return sorted(f"{folder.rstrip('/')}/" for folder in listing["common_prefixes"])


def download_datasets(store: ObjectStore, work: Path) -> tuple[Path, Path | None]:
    """The catalogue and the newest complete reviewed export into work/; their folders.

    Each export holds every decision ever exported (export-labels takes the stamped rows too), under ids that
    never change (r<result id>): the newest is all of them, and an older one beside it would put the same
    photo into training twice, possibly into two splits. The older folders stay in the store as the record of
    what each week trained on."""
    catalogue = work / "catalogue"
    download_prefix(store, CATALOGUE, catalogue)
    if not (catalogue / "styles.csv").is_file():
        raise RetrainError(
            f"the store has no catalogue ({CATALOGUE}styles.csv is missing): upload it once with "
            "`refund-train catalogue upload --data DIR`"
        )
    for prefix in reversed(reviewed_exports(store)):
        folder = work / "reviewed" / PurePosixPath(prefix).name
        download_prefix(store, prefix, folder)
        if (folder / "styles.csv").is_file():
            log(f"retrain: the reviewed returns of {prefix}, the newest export")
            return catalogue, folder
        log(f"retrain: {prefix} has no styles.csv (an upload cut short); left out")  # its rows are unknown
    return catalogue, None


def prepare_data(catalogue: Path, reviewed: Path | None, out: Path, prepare_args: list[str]) -> dict:
    """prepare's dataset.json: what it kept of the catalogue and of the reviewed export."""
    extras = ["--extra", str(reviewed)] if reviewed else []
    prepare.main([*prepare_args, "--data", str(catalogue), *extras, "--out", str(out)])
    return json.loads((out / "dataset.json").read_text())


def train_model(prepared: Path, out: Path, train_args: list[str]) -> str:
    """train's version of the model it wrote to out."""
    train.main([*train_args, "--prepared", str(prepared), "--out", str(out)])
    return json.loads((out / "model.json").read_text())["version"]


def archive_model(model: Path, prepared: Path, out: Path, build: Path) -> Path:
    archive.main(["--model", str(model), "--out", str(out), "--prepared", str(prepared), "--build-dir", str(build)])
    return out / MAR_NAME


def roll(api: client.AppsV1Api, namespace: str, deployment: str, version: str) -> None:
    """A new pod template annotation: the Deployment replaces its pods, which fetch the new production."""
    body = {"spec": {"template": {"metadata": {"annotations": {ANNOTATION: version}}}}}
    where = f"deployment {deployment} in namespace {namespace}"
    try:
        api.patch_namespaced_deployment(deployment, namespace, body, _request_timeout=REQUEST_TIMEOUT_S)
    except ApiException as error:
        if error.status in (401, 403):
            raise RollError(
                f"not allowed to patch {where} (HTTP {error.status}): the job's service account needs "
                f"patch on deployments, resourceNames [{deployment}], in that namespace"
            ) from error
        raise RollError(f"could not patch {where}: HTTP {error.status} {error.reason}") from error
    except urllib3.exceptions.HTTPError as error:
        raise RollError(f"could not patch {where}: Kubernetes API unreachable ({error})") from error


def outcome(version: str, dataset: dict, decision: registry.Decision) -> dict:
    """What the run trained on and what the gate decided: the version's retrain.json, which the review page's
    nights view shows."""
    return {
        "version": version,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "reviewed_returns": sum(extra["images"] for extra in dataset["extras"]),
        "catalogue_images": sum(dataset["class_counts"].values()),
        "promoted": decision.promoted,
        "reason": decision.reason,
    }


def outcome_line(entry: dict) -> str:
    verdict = "promoted" if entry["promoted"] else "refused"
    return (
        f"model {entry['version']} trained on {entry['reviewed_returns']} reviewed returns "
        f"({entry['catalogue_images']} catalogue images): {verdict}: {entry['reason']}"
    )


def retrain(args: argparse.Namespace, work: Path) -> registry.Decision:
    store = open_store(args.registry)
    models = Registry(store)
    if args.exported is not None:
        with step("upload of the reviewed returns"):
            upload_export(store, args.exported)
    with step("download of the datasets"):
        catalogue, reviewed = download_datasets(store, work)
    with step("prepare"):
        dataset = prepare_data(catalogue, reviewed, work / "prepared", shlex.split(args.prepare_args))
    with step("train"):
        version = train_model(work / "prepared", work / "model", shlex.split(args.train_args))
    with step("archive"):
        mar = archive_model(work / "model", work / "prepared", work / "model-store", work / "mar-build")
    # The model card goes up after the gate, with its decision: a version's files are created once, never rewritten.
    card = work / "model" / CARD
    card_text = card.read_text()
    card.unlink()
    with step("publish"):
        registry.publish(models, work / "model", mar)
    with step("promote"):
        decision = registry.promote(models, version, work / "prepared", args.metric, args.min_gain)
    entry = outcome(version, dataset, decision)
    models.create(version, CARD, (card_text + gate_section(entry)).encode())
    models.record_retraining(entry)
    log(outcome_line(entry))
    return decision


def gate_section(entry: dict) -> str:
    verdict = "Promoted" if entry["promoted"] else "Refused"
    return (
        f"\n## Promotion gate\n\n{verdict} by the weekly retraining at {entry['at']}, trained on "
        f"{entry['reviewed_returns']} reviewed returns and {entry['catalogue_images']} catalogue images: "
        f"{entry['reason']}\n"
    )


def parse_args(argv: list[str] | None, prog: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    registry.add_registry_argument(parser)
    parser.add_argument(
        "--exported",
        type=Path,
        help="output of refund-batch export-labels (styles.csv + images/), uploaded first (default: none)",
    )
    parser.add_argument(
        "--work", type=Path, help="folder for the datasets, the prepared split and the model (default: a temp dir)"
    )
    parser.add_argument(
        "--prepare-args",
        default=os.environ.get("REFUND_PREPARE_ARGS", ""),
        help="more refund-train prepare flags, one shell-quoted string (env REFUND_PREPARE_ARGS, default: none)",
    )
    parser.add_argument(
        "--train-args",
        default=os.environ.get("REFUND_TRAIN_ARGS", ""),
        help="refund-train train flags, e.g. the production recipe --train-args='--epochs 18 --patience 5' or a quick "
        "one '--epochs 1 --max-per-class 20' (env REFUND_TRAIN_ARGS, default: none, train's defaults)",
    )
    parser.add_argument("--metric", choices=registry.GATE_METRICS, default="macro_f1", help="(default: macro_f1)")
    parser.add_argument("--min-gain", type=float, default=0.0, help="required improvement (default: any)")
    parser.add_argument(
        "--roll-deployment",
        default=os.environ.get("REFUND_ROLL_DEPLOYMENT") or None,
        help=f"on promotion, set {ANNOTATION} on this Deployment's pod template (env REFUND_ROLL_DEPLOYMENT, "
        "default: none, no roll)",
    )
    parser.add_argument(
        "--roll-namespace",
        default=os.environ.get("REFUND_ROLL_NAMESPACE") or None,
        help="its namespace (env REFUND_ROLL_NAMESPACE, default: the job's own)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        with contextlib.ExitStack() as stack:
            work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="retrain-")))
            decision = retrain(args, work)
    except (RetrainError, DatasetError, RegistryError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    if decision.promoted and args.roll_deployment:
        try:
            with step("roll"):
                namespace = args.roll_namespace or kubeapi.own_namespace()
                roll(kubeapi.load_api(), namespace, args.roll_deployment, decision.candidate)
        except (RollError, kubeapi.NoKubernetesApi) as error:
            print(
                f"error: {decision.candidate} is in production, but the pods were not rolled: {error}",
                file=sys.stderr,
                flush=True,
            )
            return 3
        log(f"rolled deployment {args.roll_deployment} in namespace {namespace} to {decision.candidate}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
