"""refund-batch fetch-model: a registry version's .mar into TorchServe's model store, at the serving pod's start.

The chart's init container runs it (this image has the registry code and no torch), so one serve image
serves every model and a promotion needs no image build. The version it resolved is logged, and every
answer of the model carries it too (the .mar's model.json).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from common.objectstore import open_store
from common.registry import Registry, RegistryError

log = logging.getLogger("refund-batch")


def add_command(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", help="a version, `production` (the registry's production model) or `latest`")
    parser.add_argument(
        "--registry",
        default=os.environ.get("REFUND_REGISTRY", "var/registry"),
        help="folder or s3://bucket/prefix, refund-train registry's (env REFUND_REGISTRY, default var/registry)",
    )
    parser.add_argument("--out", type=Path, required=True, help="TorchServe's --model-store folder")


def fetch_model(args: argparse.Namespace) -> int:
    registry = Registry(open_store(args.registry))
    try:
        version = registry.resolve(args.version)
        mar = registry.fetch_mar(version, args.out)
    except RegistryError as error:
        log.error("no model to serve", extra={"asked": args.version, "registry": args.registry, "reason": str(error)})
        return 2
    where = {"asked": args.version, "registry": args.registry, "mar": str(mar)}
    log.info("serving model", extra={"version": version, **where})
    return 0
