"""Package a trained model as a TorchServe .mar: weights, labels, handler and its preprocessing.

    python -m training.archive --model var/model --export-path var/model-store

The handler's helper modules (`handlers/presets.py`, `handlers/network.py`) go into the
archive as the `handlers` package, so the served preprocessing is the code that
evaluated the model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HANDLERS = Path(__file__).resolve().parent.parent / "handlers"
BUNDLED_MODULES = ("__init__.py", "presets.py", "network.py")


def stage_handler_package(build_dir: Path) -> Path:
    """A folder whose content (a `handlers/` package) is unpacked at the .mar's root."""
    if build_dir.exists():
        shutil.rmtree(build_dir)
    package = build_dir / "handlers"
    package.mkdir(parents=True)
    for name in BUNDLED_MODULES:
        shutil.copy2(HANDLERS / name, package / name)
    return build_dir


def archive(model_dir: Path, export_path: Path, name: str, config_file: Path, build_dir: Path) -> Path:
    meta = json.loads((model_dir / "model.json").read_text())
    staged = stage_handler_package(build_dir)
    export_path.mkdir(parents=True, exist_ok=True)
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
        str(export_path),
        "--force",
    ]
    subprocess.run(command, check=True)
    return export_path / f"{name}.mar"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", type=Path, default=Path("var/model"), help="output of training.train (default: var/model)"
    )
    parser.add_argument(
        "--export-path",
        type=Path,
        default=Path("var/model-store"),
        help="where the .mar goes (default: var/model-store)",
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
    mar = archive(args.model, args.export_path, args.name, args.config_file, args.build_dir)
    print(f"archived {mar} ({mar.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
