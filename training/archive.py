"""Package a trained model as a TorchServe .mar: weights, labels, handler and what it imports.

    refund-train archive --model var/model --out var/model-store [--prepared var/data | --pytorch]

First it exports the network for ONNX Runtime (training/export.py: fp32 and static int8, checked
on the prepared split the model was trained on); the .mar carries the runtime model model.json
names next to model.pt, and the handler runs it (PyTorch where it is absent or `--pytorch`).

The modules the handler imports (`handlers/presets.py`, `handlers/network.py`,
`handlers/runtime.py`, `common/classes.py`) go into the archive as packages, so the served preprocessing is the
code that evaluated the model, and the .mar runs without this project installed. Nothing
else goes in: training's augmentation (`training/presets.py`) is not what serving runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from training.export import export

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "handlers"
# What the handler imports, as paths from the project root (tests/test_serving.py checks it is all).
BUNDLED_MODULES = (
    "handlers/__init__.py",
    "handlers/presets.py",
    "handlers/network.py",
    "handlers/runtime.py",
    "common/__init__.py",
    "common/classes.py",
)


def stage_handler_package(build_dir: Path) -> Path:
    """A folder whose content (the `handlers` and `common` packages) is unpacked at the .mar's root."""
    if build_dir.exists():
        shutil.rmtree(build_dir)
    for module in BUNDLED_MODULES:
        (build_dir / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / module, build_dir / module)
    return build_dir


def archive(
    model_dir: Path, out: Path, name: str, config_file: Path, build_dir: Path, prepared: Path | None = None
) -> Path:
    """The .mar of model_dir; with `prepared` the runtime model is exported (and checked on it) first."""
    if prepared is not None:
        export(model_dir, prepared)
    meta = json.loads((model_dir / "model.json").read_text())
    if prepared is None:
        meta.pop("runtime", None)  # an earlier export's entry would name a file this .mar does not carry
    runtime = [model_dir / meta["runtime"]["file"]] if "runtime" in meta else []
    staged = stage_handler_package(build_dir)
    (staged / "model.json").write_text(json.dumps(meta, indent=1))  # the .mar's, at its root
    out.mkdir(parents=True, exist_ok=True)
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    command = [
        str(archiver),
        "--model-name",
        name,
        "--version",
        meta["version"],
        "--serialized-file",
        str(model_dir / "model.pt"),
        "--handler",
        str(HANDLERS / "refund_classifier.py"),
        "--extra-files",
        ",".join(str(p) for p in (model_dir / "index_to_name.json", *runtime, staged)),
        "--config-file",
        str(config_file),
        "--export-path",
        str(out),
        "--force",
    ]
    subprocess.run(command, check=True)
    return out / f"{name}.mar"


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, default=Path("var/model"), help="output of refund-train train (default: var/model)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("var/model-store"), help="where the .mar goes (default: var/model-store)"
    )
    parser.add_argument(
        "--name", default="refund-classifier", help="model name in TorchServe (default: refund-classifier)"
    )
    parser.add_argument(
        "--config-file",
        type=Path,
        default=HANDLERS / "model-config.yaml",
        help="batching and worker settings (default: handlers/model-config.yaml)",
    )
    parser.add_argument(
        "--prepared",
        type=Path,
        help="the prepared split the int8 model is calibrated and checked on (default: the one it was trained on)",
    )
    parser.add_argument(
        "--pytorch", action="store_true", help="no runtime export: the handler runs the PyTorch model as trained"
    )
    parser.add_argument(
        "--build-dir", type=Path, default=Path("var/build/mar"), help="staging folder (default: var/build/mar)"
    )
    args = parser.parse_args(argv)
    prepared = (
        None if args.pytorch else args.prepared or Path(json.loads((args.model / "args.json").read_text())["prepared"])
    )
    mar = archive(args.model, args.out, args.name, args.config_file, args.build_dir, prepared)
    runtime = json.loads((args.model / "model.json").read_text()).get("runtime")
    runs = f"{runtime['engine']} {runtime['precision']} ({runtime['file']})" if runtime and prepared else "PyTorch fp32"
    print(f"archived {mar} ({mar.stat().st_size / 1e6:.1f} MB), runs {runs}")


if __name__ == "__main__":
    main()
