"""refund-train: prepare the catalogue, train refund-classifier, evaluate it, archive it as a .mar
and publish or promote it in the model registry.

`refund-train COMMAND --help` lists a command's flags.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from common.cli import add_command, add_version, require_extra

# Each command is the `main(argv, prog)` of one module of this package.
COMMANDS = {
    "prepare": ("training.prepare", "filter classes, drop missing or corrupt images, write the split"),
    "train": ("training.train", "train the ResNet on the prepared split; writes the model folder"),
    "evaluate": ("training.evaluate", "score a model on a split or on labelled photos"),
    "calibrate": ("training.calibrate", "refit the temperature and the sorting thresholds of a trained model"),
    "returns": ("training.returns", "score a model on the reviewed returns and record it in the model card"),
    "archive": ("training.archive", "package a model folder as refund-classifier.mar"),
    "registry": ("training.registry", "publish, promote, roll back and list models in the registry"),
    "catalogue": ("training.catalogue", "upload the catalogue data to the registry's store, for retrain"),
    "retrain": ("training.retrain", "the weekly job: reviewed returns + catalogue -> train -> publish -> promote"),
}
# What the train extra brings that these commands import (the rest is in the base install).
TRAIN_MODULES = (
    "torch",
    "torchvision",
    "model_archiver",
    "matplotlib",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "openvino",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="refund-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version(parser)
    commands = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        # The module parses the rest itself (its --help included), so `python -m training.NAME` stays the same.
        add_command(commands, name, summary, add_help=False)
    args, rest = parser.parse_known_args(argv)  # --help and --version answer on any install
    require_extra("refund-train", "train", TRAIN_MODULES)
    module = importlib.import_module(COMMANDS[args.command][0])
    result = module.main(rest, prog=f"refund-train {args.command}")
    # registry, catalogue and retrain return an exit code; train and evaluate, figures
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
