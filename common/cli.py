"""What every console script shares: `--version`, and a one-line exit where its extra is not installed.

refund-batch runs on the base install; refund-train and refund-serve need the `train` and `serve` extras.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys

DISTRIBUTION = "refund-sorter"


def version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        # The batch image runs the source from PYTHONPATH, without the distribution's metadata.
        return "unknown (not installed as a distribution)"


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")


def require_extra(command: str, extra: str, modules: tuple[str, ...]) -> None:
    """Exit 2 with one line naming the extra to install when one of its modules is missing."""
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        print(
            f"{command}: {', '.join(missing)} not installed; it needs the {extra} extra: "
            f"pip install '{DISTRIBUTION}[{extra}]'",
            file=sys.stderr,
        )
        raise SystemExit(2)


def add_command(commands: argparse._SubParsersAction, name: str, summary: str, **options) -> argparse.ArgumentParser:
    """A subcommand whose line in the command list and whose own --help both say what it does."""
    return commands.add_parser(name, help=summary, description=summary, **options)
