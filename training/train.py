"""Train a ResNet classifier on the prepared split and save what the .mar needs.

    refund-train train --prepared var/data --out var/model --epochs 3 --max-per-class 100

Writes to --out: model.pt (weights), index_to_name.json, model.json (architecture,
preprocessing, calibration temperature, version), metrics.json (test split),
history.json, args.json, confusion_matrix.png and training_curve.png.

Laid out as torchvision's references/classification/train.py: `load_data`, `train_one_epoch`,
`evaluate` and `main`, which runs the epochs (with resume from an atomically written checkpoint
and early stopping), then calibrates, tests and writes the outputs.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms import v2

from handlers.network import ARCHITECTURES, build_model, read_weights
from handlers.presets import ClassificationPresetEval, PresetConfig
from training.calibrate import add_arguments as add_calibration_arguments
from training.calibrate import calibrate
from training.catalog import PreparedSource
from training.dataset import EncodedImages, load_split, split_class_counts
from training.evaluate import predict_logits, record_photos
from training.metrics import (
    classification_report,
    plot_confusion_matrix,
    plot_training_curve,
)
from training.model_card import write_model_card
from training.presets import AUTO_AUGMENT, ClassificationPresetTrain
from training.progress import BatchProgress, log
from training.returns import record_returns


def save_atomically(state: dict, path: Path) -> None:
    """A kill mid-write must leave the previous file, never a truncated one."""
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def create_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD; the one-cycle schedule then sets the learning rate and cycles AdamW's beta1 or
    SGD's momentum between 0.85 and 0.95, so the momentum given here only switches Nesterov on."""
    if args.opt == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay, nesterov=True
        )
    return torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--prepared", type=Path, default=Path("var/data"), help="output of refund-train prepare (default: var/data)"
    )
    parser.add_argument("--out", type=Path, default=Path("var/model"), help="where the model goes (default: var/model)")
    parser.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default="resnet18",
        help="ResNet depth, or resnet18 with its stem's max-pool removed (default: resnet18)",
    )
    parser.add_argument(
        "--weights", type=Path, help="start from these weights (a state dict); the head is re-initialised"
    )
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training split (default: 10)")
    parser.add_argument("--max-per-class", type=int, help="cap training images per class, for a quick run")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    parser.add_argument(
        "--lr", type=float, default=2e-3, help="peak learning rate of the one-cycle schedule (default: 2e-3)"
    )
    parser.add_argument(
        "--opt",
        choices=["adamw", "sgd"],
        default="adamw",
        help="AdamW, or SGD with Nesterov momentum as in torchvision's classification references (default: adamw)",
    )
    parser.add_argument(
        "--weight-decay", type=float, default=0.05, help="(default: 0.05, for AdamW; SGD wants about 5e-4)"
    )
    parser.add_argument("--label-smoothing", type=float, default=0.1, help="(default: 0.1)")
    parser.add_argument(
        "--eval-photos",
        type=Path,
        help="also score the model on these labelled photos (styles.csv + images/) and put that in the card",
    )
    parser.add_argument(
        "--no-augment", action="store_true", help="train on the eval preset alone (no crops, flips, jitter)"
    )
    parser.add_argument(
        "--auto-augment",
        choices=sorted(AUTO_AUGMENT),
        help="add torchvision's TrivialAugmentWide (ta_wide) or RandAugment (ra) to the augmentation (default: none)",
    )
    parser.add_argument(
        "--random-erase", type=float, default=0.0, help="probability of erasing a random patch (default: 0)"
    )
    parser.add_argument("--mixup-alpha", type=float, default=0.0, help="MixUp's Beta(alpha, alpha); 0: off (default)")
    parser.add_argument("--cutmix-alpha", type=float, default=0.0, help="CutMix's Beta(alpha, alpha); 0: off (default)")
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=0.0,
        help="keep an exponential moving average of the weights with this per-step decay (e.g. 0.999) and ship it "
        "where it scores better on validation; 0: off (default)",
    )
    parser.add_argument(
        "--height", type=int, default=80, help="model input height in pixels (default: 80, the catalogue's)"
    )
    parser.add_argument("--width", type=int, default=60, help="model input width in pixels (default: 60)")
    parser.add_argument(
        "--workers", type=int, default=1, help="data-loading processes (default: 1; the model needs the cores)"
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="train under bf16 autocast (1.6x the fp32 step on CPUs with AMX; emulated, 15x slower, without "
        "AVX-512 BF16); weights, evaluation and export stay fp32",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: 0 = all cores)")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt if it exists")
    parser.add_argument(
        "--patience", type=int, default=0, help="stop after this many epochs without a better val macro-F1 (0: never)"
    )
    parser.add_argument(
        "--log-every",
        type=int,
        default=50,
        help="without a terminal: a progress line (images/s, ETA) every this many batches (default: 50; 0: none)",
    )
    add_calibration_arguments(parser)
    return parser.parse_args(argv)


@dataclass
class Splits:
    """The prepared split as loaders, the classes by index and the training split's class counts
    (uncapped: --max-per-class changes what the model trains on, not the catalogue's mix)."""

    classes: list[str]
    train_class_counts: list[int]
    train: DataLoader
    val: DataLoader
    test: DataLoader


def load_data(args: argparse.Namespace, dataset_info: dict, preset: PresetConfig, generator: torch.Generator) -> Splits:
    """The prepared split's images in memory, as loaders: augmented training batches (unless --no-augment),
    evaluation-preset validation and test batches."""
    classes = dataset_info["classes"]
    source = PreparedSource(dataset_info)
    train_items = load_split(args.prepared, "train", classes, source, args.max_per_class)
    val_items = load_split(args.prepared, "val", classes, source, None)
    test_items = load_split(args.prepared, "test", classes, source, None)
    log(f"{len(classes)} classes; train {len(train_items)}, val {len(val_items)}, test {len(test_items)} images")
    options = {"batch_size": args.batch_size, "num_workers": args.workers, "persistent_workers": args.workers > 0}
    train_preset = (
        ClassificationPresetEval(preset)
        if args.no_augment
        else ClassificationPresetTrain(preset, auto_augment=args.auto_augment, random_erase=args.random_erase)
    )
    train_loader = DataLoader(
        EncodedImages(train_items, train_preset),
        shuffle=True,
        drop_last=len(train_items) > args.batch_size,
        generator=generator,
        collate_fn=mixing_collate(len(classes), args.mixup_alpha, args.cutmix_alpha),
        **options,
    )
    evaluation = ClassificationPresetEval(preset)
    val_loader = DataLoader(EncodedImages(val_items, evaluation), **options)
    test_loader = DataLoader(EncodedImages(test_items, evaluation), **options)
    train_class_counts = split_class_counts(args.prepared, "train", classes)
    return Splits(classes, train_class_counts, train_loader, val_loader, test_loader)


class MixBatches:
    """Collates a batch, then mixes it with MixUp or CutMix (one, at random), as torchvision's references do.
    A class rather than a closure: the loader's worker processes receive it pickled."""

    def __init__(self, mix: v2.Transform) -> None:
        self.mix = mix

    def __call__(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mix(*default_collate(batch))


def mixing_collate(num_classes: int, mixup_alpha: float, cutmix_alpha: float) -> MixBatches | None:
    """None (plain batches) unless MixUp or CutMix is asked for; targets then become class probabilities,
    which CrossEntropyLoss takes as they are."""
    mixes = [v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha else []
    mixes += [v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha else []
    return MixBatches(v2.RandomChoice(mixes)) if mixes else None


def create_model(arch: str, num_classes: int, weights: Path | None) -> torch.nn.Module:
    """The network, from `weights` if given (all but the head, whose classes are ours), channels-last."""
    model = build_model(arch, num_classes)
    if weights:
        model.load_state_dict({k: v for k, v in read_weights(weights).items() if not k.startswith("fc.")}, strict=False)
    return model.to(memory_format=torch.channels_last)


def create_ema(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of the weights (and BatchNorm statistics), updated every step."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True) if decay else None


def autocast(bf16: bool) -> AbstractContextManager:
    """The forward pass's precision: bf16 autocast on the CPU, or fp32 as the weights are."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()


def train_one_epoch(
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    loader: DataLoader,
    description: str,
    log_every: int,
    ema: AveragedModel | None = None,
    bf16: bool = False,
) -> float:
    """One pass over the training batches; the mean training loss."""
    model.train()
    total, count = 0.0, 0
    progress = BatchProgress(len(loader), description, log_every)
    for images, targets in loader:
        images = images.contiguous(memory_format=torch.channels_last)
        with autocast(bf16):
            loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        total += loss.item() * len(targets)
        count += len(targets)
        progress.update(len(targets), total / count)
    progress.close()
    return total / max(1, count)


def evaluate(model: torch.nn.Module, loader: DataLoader, classes: list[str]) -> dict:
    logits, targets = predict_logits(model, loader)
    return classification_report(targets.numpy(), logits.argmax(1).numpy(), classes)


def validate(model: torch.nn.Module, ema: AveragedModel | None, data: Splits) -> tuple[dict, torch.nn.Module]:
    """The epoch's validation figures and the weights they belong to: the raw model's, or the EMA's where
    that scores a better macro-F1 (both are recorded)."""
    val = evaluate(model, data.val, data.classes)
    entry = {"val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"], "weights": "raw"}
    if ema is None:
        return entry, model
    averaged = evaluate(ema.module, data.val, data.classes)
    entry |= {"ema_val_accuracy": averaged["accuracy"], "ema_val_macro_f1": averaged["macro_f1"]}
    if averaged["macro_f1"] <= val["macro_f1"]:
        return entry, model
    entry |= {"val_accuracy": averaged["accuracy"], "val_macro_f1": averaged["macro_f1"], "weights": "ema"}
    return entry, ema.module


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    generator: torch.Generator,
    history: list[dict],
    ema: AveragedModel | None,
) -> None:
    """Everything a killed run needs to go on exactly where it was: weights, optimizer, schedule, RNGs, EMA."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": history[-1]["epoch"]}
    state |= {"ema": ema.state_dict()} if ema is not None else {}
    state |= {"scheduler": scheduler.state_dict(), "history": history}
    state |= {"torch_rng": torch.get_rng_state(), "loader_rng": generator.get_state()}
    save_atomically(state, path)


def resume(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    generator: torch.Generator,
    ema: AveragedModel | None,
) -> list[dict]:
    """Restores save_checkpoint's state; the epochs done so far."""
    # Our own file: optimizer and RNG states are not plain tensors, so weights_only is off.
    state = torch.load(path, weights_only=False)
    model.load_state_dict(state["model"])
    if ema is not None and "ema" in state:  # a run resumed with --ema-decay starts its average here
        ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    generator.set_state(state["loader_rng"])
    log(f"resumed from {path} after epoch {state['epoch']}")
    return state["history"]


def calibrate_and_test(model: torch.nn.Module, data: Splits, preset: PresetConfig, args: argparse.Namespace) -> dict:
    """Test-split metrics, with the calibration temperature and the sorting rule (training.calibrate)."""
    test_logits, test_targets = predict_logits(model, data.test)
    metrics = classification_report(test_targets.numpy(), test_logits.argmax(1).numpy(), data.classes)
    rule, figures = calibrate(model, args.prepared, data.classes, preset, (test_logits, test_targets), args)
    return metrics | figures | {"rule": rule.to_dict()}


def write_outputs(
    args: argparse.Namespace, data: Splits, dataset_info: dict, preset: PresetConfig, metrics: dict, history: list[dict]
) -> str:
    """What the .mar and the registry need next to model.pt, the plots and the model card; the version."""
    counts = np.array(data.train_class_counts)
    version = datetime.now(UTC).strftime("%Y%m%d.%H%M%S")
    model_info = {
        "arch": args.arch,
        "preset": preset.to_dict(),
        "temperature": metrics["calibration"]["temperature"],
        "review_threshold": metrics["auto_sort"]["threshold"],
        "sorting": metrics.pop("rule"),
        "class_prior": dict(zip(data.classes, (counts / counts.sum()).tolist(), strict=True)),
        "version": version,
    }
    index_to_name = {str(i): name for i, name in enumerate(data.classes)}
    (args.out / "index_to_name.json").write_text(json.dumps(index_to_name, indent=1))
    (args.out / "model.json").write_text(json.dumps(model_info, indent=1))
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (args.out / "history.json").write_text(json.dumps(history, indent=1))
    (args.out / "args.json").write_text(
        json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, indent=1)
    )
    plot_confusion_matrix(np.array(metrics["confusion_matrix"]), data.classes, args.out / "confusion_matrix.png")
    plot_training_curve(history, args.out / "training_curve.png")
    write_model_card(args.out / "model_card.md", dataset_info, metrics, model_info, history, vars(args))
    return version


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    args = parse_args(argv, prog)
    generator = seed_everything(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset_info = json.loads((args.prepared / "dataset.json").read_text())
    preset = PresetConfig(height=args.height, width=args.width)
    data = load_data(args, dataset_info, preset, generator)

    model = create_model(args.arch, len(data.classes), args.weights)
    optimizer = create_optimizer(model, args)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * len(data.train)
    )
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = args.out / "checkpoint.pt"
    history, started = [], time.monotonic()
    ema = create_ema(model, args.ema_decay)
    if args.resume and checkpoint_path.exists():
        history = resume(checkpoint_path, model, optimizer, scheduler, generator, ema)
    for epoch in range(len(history) + 1, args.epochs + 1):
        epoch_start = time.monotonic()
        description = f"epoch {epoch}/{args.epochs}"
        train_loss = train_one_epoch(
            model, criterion, optimizer, scheduler, data.train, description, args.log_every, ema, args.bf16
        )
        entry, weights = validate(model, ema, data)
        best_f1 = max((past["val_macro_f1"] for past in history), default=-1.0)
        entry |= {"epoch": epoch, "train_loss": train_loss, "seconds": time.monotonic() - epoch_start}
        history.append(entry)
        ema_note = f" (EMA {entry['ema_val_macro_f1']:.3f}, kept {entry['weights']})" if ema is not None else ""
        log(
            f"{description}: loss {train_loss:.3f}, val accuracy {entry['val_accuracy']:.3f}, "
            f"val macro-F1 {entry['val_macro_f1']:.3f}{ema_note}, {entry['seconds']:.0f}s"
        )
        if entry["val_macro_f1"] > best_f1:
            save_atomically(weights.state_dict(), args.out / "model.pt")
        save_checkpoint(checkpoint_path, model, optimizer, scheduler, generator, history, ema)
        best_epoch = max(history, key=lambda entry: entry["val_macro_f1"])["epoch"]
        if args.patience and epoch - best_epoch >= args.patience:
            log(f"early stop: validation macro-F1 has not improved for {args.patience} epochs")
            break

    model.load_state_dict(read_weights(args.out / "model.pt"))
    metrics = calibrate_and_test(model, data, preset, args)
    metrics["training_seconds"] = time.monotonic() - started
    version = write_outputs(args, data, dataset_info, preset, metrics, history)
    if args.eval_photos:
        photos = metrics["photos"] = record_photos(args.out, args.eval_photos, dataset_info["label_column"])
        log(f"{args.eval_photos}: accuracy {photos['accuracy']:.3f} on {photos['images']} photos")
    returns = record_returns(args.out, args.prepared)
    if returns:
        metrics["reviewed_returns"] = returns
        log(f"reviewed returns: accuracy {returns['accuracy']:.3f} on {returns['images']} photos")
    shipped = metrics["sorting"]["test"]["per_class"]
    log(
        f"test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
        f"ECE {metrics['calibration']['test_ece_before']:.3f} -> {metrics['calibration']['test_ece_after']:.3f} "
        f"(temperature {metrics['calibration']['temperature']:.2f}, fitted on {metrics['calibration']['source']}); "
        f"the shipped thresholds sort {shipped['sorted_share']:.0%} of test at precision "
        f"{shipped['sorted_precision'] or 0:.3f}; model {version} in {args.out} "
        f"after {metrics['training_seconds']:.0f}s"
    )
    return metrics


if __name__ == "__main__":
    main()
