"""The batch job's one configuration source: command-line flags whose defaults come from
REFUND_* environment variables (so a CronJob sets env, a person types flags)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields

ENV_PREFIX = "REFUND_"

HELP = {
    "store": "object store: a local folder, or s3://bucket/prefix (credentials from AWS_* env)",
    "inbox_prefix": "where new photos arrive inside the store",
    "database_url": "results ledger, an SQLAlchemy URL (postgresql+psycopg://... in production)",
    "torchserve_url": "TorchServe inference API",
    "model_name": "model to call: POST /predictions/<model_name>",
    "concurrency": "requests in flight; keep >= TorchServe workers x batchSize to fill its batches",
    "review_threshold": "predictions less probable than this get status needs_review",
    "retries": "retries of a request on connection errors and 5xx, with exponential backoff",
    "request_timeout": "seconds to wait for one prediction",
}


@dataclass(frozen=True)
class Settings:
    store: str = "var/store"
    inbox_prefix: str = "inbox/"
    database_url: str = "sqlite:///var/results.db"
    torchserve_url: str = "http://127.0.0.1:8080"
    model_name: str = "refund-classifier"
    concurrency: int = 32
    review_threshold: float = 0.5
    retries: int = 4
    request_timeout: float = 60.0

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for field in fields(cls):
            env = ENV_PREFIX + field.name.upper()
            kind = type(field.default)
            parser.add_argument(
                "--" + field.name.replace("_", "-"),
                type=kind,
                default=kind(os.environ.get(env, field.default)),
                help=f"{HELP[field.name]} (env {env}, default: {field.default})",
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        return cls(**{field.name: getattr(args, field.name) for field in fields(cls)})
