"""Package a trained model as a TorchServe .mar: weights, labels, handler and what it imports.

    refund-train archive --model var/model --out var/model-store

The modules the handler imports (`handlers/presets.py`, `handlers/network.py`,
`common/classes.py`) go into the archive as packages, so the served preprocessing is the
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

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "handlers"
# What the handler imports, as paths from the project root (tests/test_serving.py checks it is all).
BUNDLED_MODULES = (
    "handlers/__init__.py",
    "handlers/presets.py",
    "handlers/network.py",
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


def archive(model_dir: Path, out: Path, name: str, config_file: Path, build_dir: Path) -> Path:
    meta = json.loads((model_dir / "model.json").read_text())
    staged = stage_handler_package(build_dir)
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
        ",".join(str(p) for p in (model_dir / "index_to_name.json", model_dir / "model.json", staged)),
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
        "--build-dir", type=Path, default=Path("var/build/mar"), help="staging folder (default: var/build/mar)"
    )
    args = parser.parse_args(argv)
    mar = archive(args.model, args.out, args.name, args.config_file, args.build_dir)
    print(f"archived {mar} ({mar.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
