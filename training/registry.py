"""The model registry: every trained model under models/<version>/ in the object store, and a
promotion gate that lets a model into production only if it beats the one there.

    refund-train registry publish --model var/model --mar var/model-store/refund-classifier.mar
    refund-train registry promote latest --prepared var/data  # exit 1: refused, with why
    refund-train registry rollback                            # back to the previous production
    refund-train registry kserve-config <version>            # KServe's config for a version published without it
    refund-train registry list                                # with the gate's decision on each

The registry lives in a local folder by default (REFUND_REGISTRY=var/registry) or any
S3-compatible store (REFUND_REGISTRY=s3://bucket/prefix, AWS_* variables as for the batch job):

The layout, and the reading side the serving pods use too, is common/registry.py.

Two promotions (or a promotion and a rollback) at once cannot lose one: production.json is written
only if it is still the one read (obstore's conditional puts; a lock file on a local folder, whose
store has no conditional update), else the later one fails with exit 2 and writes nothing. A
version's files are created, never overwritten, so two uploads of one version cannot mix.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from common.classes import load_classes
from common.objectstore import open_store, read_object
from common.registry import (
    KSERVE_CONFIG_KEY,
    MAR_KEY,
    MAR_NAME,
    MODEL_FILES,
    REQUIRED_FILES,
    Registry,
    RegistryError,
)
from training import evaluate
from training.kserve_config import kserve_config, mar_model
from training.returns import score_returns

GATE_METRICS = ("macro_f1", "accuracy")
DECISION = "decision.json"  # the gate's decision on a version, next to its model card


def publish(registry: Registry, model_dir: Path, mar: Path) -> str:
    """Uploads the model's files and its .mar under models/<version>/; a version is never overwritten."""
    missing = [str(path) for path in [*(model_dir / name for name in REQUIRED_FILES), mar] if not path.is_file()]
    if missing:
        raise RegistryError(f"cannot publish {model_dir}: missing {', '.join(missing)}")
    version = json.loads((model_dir / "model.json").read_text())["version"]
    archived = mar_model(mar)[0].get("modelVersion")
    if archived != version:
        # The .mar is what the pods serve: under another version's name it would serve other weights.
        raise RegistryError(
            f"{mar} holds version {archived}, {model_dir} is {version}: archive it first (refund-train archive)"
        )
    if registry.is_published(version):
        raise RegistryError(f"version {version} is already published; versions are immutable")
    config = kserve_config(mar, MAR_NAME).encode()
    for name in MODEL_FILES:
        if (model_dir / name).is_file():
            registry.create(version, name, (model_dir / name).read_bytes())
    registry.create(version, KSERVE_CONFIG_KEY, config)
    # The .mar last: a version counts as published (is_published) only once it is complete.
    registry.create(version, MAR_KEY, mar.read_bytes())
    return version


def add_kserve_config(registry: Registry, version: str) -> str:
    """KServe's config for a version published before `publish` wrote one; returns its key."""
    key = registry.key(version, KSERVE_CONFIG_KEY)
    if registry.exists(key):
        raise RegistryError(f"{key} already exists; versions are immutable")
    with tempfile.TemporaryDirectory() as workdir:
        registry.create(
            version, KSERVE_CONFIG_KEY, kserve_config(registry.fetch_mar(version, Path(workdir)), MAR_NAME).encode()
        )
    return key


@dataclass(frozen=True)
class Decision:
    candidate: str
    production: str | None
    promoted: bool
    reason: str
    candidate_scores: dict[str, float]
    production_scores: dict[str, float] | None


def _scores(registry: Registry, version: str, prepared: Path, workdir: Path, is_candidate: bool) -> dict[str, float]:
    model_dir = registry.download(version, workdir / version)
    try:
        items = evaluate.split_items(model_dir, prepared, "test")
    except ValueError as error:  # other classes: the models cannot be compared on this split
        raise RegistryError(str(error)) from None
    if is_candidate:
        _check_same_test_split(model_dir, prepared, items)
    report = evaluate.evaluate(model_dir, items)
    scores = {name: report[name] for name in GATE_METRICS}
    returns = score_returns(model_dir, prepared)  # prepared with --extra reviewed returns
    if returns is not None:
        scores["returns_accuracy"], scores["returns_images"] = returns["accuracy"], returns["images"]
    return scores


def _check_same_test_split(model_dir: Path, prepared: Path, items: list[tuple[bytes, int]]) -> None:
    """The candidate's metrics.json says how many test images of each class it was scored on; a split
    with other counts is not the one it held out (its "test" photos may be ones it trained on)."""
    classes = load_classes(model_dir / "index_to_name.json")
    held_out = {name: figures["support"] for name, figures in read_metrics(model_dir)["per_class"].items()}
    counts = Counter(classes[label] for _, label in items)
    differing = [f"{name} {counts[name]} vs {held_out[name]}" for name in held_out if counts[name] != held_out[name]]
    if differing:
        raise RegistryError(
            f"the test split of {prepared} is not the one the candidate was evaluated on (test images per "
            f"class here vs in its metrics.json: {', '.join(differing)}); gate on the split it was trained with"
        )


def read_metrics(model_dir: Path) -> dict:
    return json.loads((model_dir / "metrics.json").read_text())


def promote(
    registry: Registry, candidate: str, prepared: Path, metric: str = "macro_f1", min_gain: float = 0.0
) -> Decision:
    """Puts candidate into production if it beats production on `metric` by more than min_gain,
    both scored now, in-process, on the test split of `prepared`, and (when `prepared` holds reviewed
    returns, training.prepare --extra) is no less accurate on those. Records the decision either way."""
    state, read_at = registry.read_state()
    current = state["version"]
    with tempfile.TemporaryDirectory() as workdir:
        ours = _scores(registry, candidate, prepared, Path(workdir), is_candidate=True)
        theirs = (
            _scores(registry, current, prepared, Path(workdir), is_candidate=False)
            if current and current != candidate
            else None
        )
    if current == candidate:
        promoted, reason = False, f"{candidate} is already in production"
    elif theirs is None:
        promoted, reason = True, f"no model in production yet; {candidate} has {metric} {ours[metric]:.4f}"
    else:
        gain = ours[metric] - theirs[metric]
        promoted = gain > min_gain
        verdict = "beats" if promoted else "does not beat"
        reason = (
            f"{candidate} {verdict} production {current} on the test split of {prepared}: "
            f"{metric} {ours[metric]:.4f} vs {theirs[metric]:.4f} (gain {gain:+.4f}, required > {min_gain:+.4f})"
        )
        if promoted and ours.get("returns_accuracy", 1.0) < theirs.get("returns_accuracy", 0.0):
            promoted = False
            reason += (
                f"; refused: worse on {ours['returns_images']:.0f} reviewed returns, accuracy "
                f"{ours['returns_accuracy']:.4f} vs {theirs['returns_accuracy']:.4f}"
            )
    decision = Decision(candidate, current, promoted, reason, ours, theirs)
    if promoted:
        state["previous"] = [*state["previous"], current] if current else state["previous"]
        state["version"] = candidate
    entry = {"at": datetime.now(UTC).isoformat(), "action": "promote", **asdict(decision)}
    state["history"].append(entry)
    registry.save_state(state, read_at)
    if current != candidate:
        record_decision(registry, entry)
    return decision


def record_decision(registry: Registry, entry: dict) -> bool:
    """decision.json in the candidate's folder, where people look at the model: the gate's first decision
    on it, created once like the version's other files (later ones are in production.json's history).
    False where the version has one already."""
    if registry.exists(registry.key(entry["candidate"], DECISION)):
        return False
    registry.create(entry["candidate"], DECISION, json.dumps(entry, indent=1).encode())
    return True


def read_decision(registry: Registry, version: str) -> dict | None:
    key = registry.key(version, DECISION)
    return json.loads(read_object(registry.store, key)) if registry.exists(key) else None


def rollback(registry: Registry) -> tuple[str, str]:
    """Production goes back to the model it replaced; returns (from, to)."""
    state, read_at = registry.read_state()
    if not state["previous"]:
        raise RegistryError("nothing to roll back to: production has not replaced an earlier model")
    current, state["version"] = state["version"], state["previous"].pop()
    entry = {"at": datetime.now(UTC).isoformat(), "action": "rollback", "from": current, "to": state["version"]}
    state["history"].append(entry)
    registry.save_state(state, read_at)
    return current, state["version"]


def add_registry_argument(parser: argparse.ArgumentParser) -> None:
    """--registry, the store of the models (models/) and of the training data (datasets/, training.catalogue)."""
    parser.add_argument(
        "--registry",
        default=os.environ.get("REFUND_REGISTRY", "var/registry"),
        help="folder or s3://bucket/prefix (env REFUND_REGISTRY, default var/registry)",
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_registry_argument(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    publish_cmd = commands.add_parser("publish", help="upload a trained model and its .mar as a new version")
    publish_cmd.add_argument(
        "--model", type=Path, default=Path("var/model"), help="output of refund-train train (default: var/model)"
    )
    publish_cmd.add_argument(
        "--mar",
        type=Path,
        default=Path("var/model-store") / MAR_NAME,
        help=f"its .mar, from refund-train archive (default: var/model-store/{MAR_NAME})",
    )
    promote_cmd = commands.add_parser("promote", help="promote a version if it beats production (exit 1 if not)")
    promote_cmd.add_argument("version", nargs="?", default="latest", help="a version or `latest` (default)")
    promote_cmd.add_argument("--prepared", type=Path, default=Path("var/data"), help="whose test split decides")
    promote_cmd.add_argument("--metric", choices=GATE_METRICS, default="macro_f1")
    promote_cmd.add_argument("--min-gain", type=float, default=0.0, help="required improvement (default: any)")
    commands.add_parser("rollback", help="put the previous production model back")
    kserve_cmd = commands.add_parser(
        "kserve-config", help="add KServe's config/config.properties to a version published without one"
    )
    kserve_cmd.add_argument("version", help="a version, `production` or `latest`")
    commands.add_parser(
        "list",
        help="published versions, their test metrics, the gate's decision on each (promoted, refused or not "
        "gated) and which is in production",
    )
    args = parser.parse_args(argv)

    registry = Registry(open_store(args.registry))
    try:
        if args.command == "publish":
            print(f"published {publish(registry, args.model, args.mar)} to {args.registry}")
        elif args.command == "promote":
            decision = promote(registry, registry.resolve(args.version), args.prepared, args.metric, args.min_gain)
            print(("promoted: " if decision.promoted else "refused: ") + decision.reason)
            return 0 if decision.promoted else 1
        elif args.command == "rollback":
            old, new = rollback(registry)
            print(f"rolled back: production is {new} again (was {old})")
        elif args.command == "kserve-config":
            print(f"wrote {add_kserve_config(registry, registry.resolve(args.version))}")
        else:
            production = registry.state()["version"]
            for version in registry.versions():
                metrics = json.loads(read_object(registry.store, registry.key(version, "metrics.json")))
                decision = read_decision(registry, version)
                gate = "not gated" if decision is None else "promoted" if decision["promoted"] else "refused"
                marker = "  <- production" if version == production else ""
                print(
                    f"{version}  accuracy {metrics['accuracy']:.3f}  macro-F1 {metrics['macro_f1']:.3f}  {gate}{marker}"
                )
    except RegistryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
