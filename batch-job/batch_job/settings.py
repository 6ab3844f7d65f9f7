"""The batch job's one configuration source: command-line flags whose defaults come from
REFUND_* environment variables (so a CronJob sets env, a person types flags)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, fields

from common.sorting import LEVELS

ENV_PREFIX = "REFUND_"
# Kubernetes sets these itself; they apply where the REFUND_ variable is not set.
ENV_FALLBACKS = {"shard_index": "JOB_COMPLETION_INDEX"}

HELP = {
    "store": "object store: a local folder, or s3://bucket/prefix (credentials from AWS_* env)",
    "inbox_prefix": "where new photos arrive inside the store (date partitions inbox/YYYY-MM-DD/)",
    "runs_prefix": "where each run's manifest, summary and HTML report go inside the store",
    "database_url": "results ledger, an SQLAlchemy URL (postgresql+psycopg://... in production)",
    "torchserve_url": "TorchServe inference API",
    "model_name": "model to call: POST /predictions/<model_name>",
    "concurrency": "requests in flight; keep >= TorchServe workers x batchSize to fill its batches",
    "review_threshold": "'auto' (the thresholds chosen on validation, shipped with the model: per class, per level) "
    "or a probability an article type needs, for every class (the upper levels keep the model's)",
    "route_levels": "the shallowest level an item may be sorted to when its article type is in doubt: article "
    "(sorted/<articleType>/ only), sub (also sorted/<master>/<sub>/) or master (also sorted/<master>/)",
    "retries": "retries of a request on connection errors and 502/503/504, with exponential backoff",
    "request_timeout": "seconds to wait for one prediction",
    "max_attempts": "runs in which TorchServe may fail on an image before it is dead-lettered",
    "lease_seconds": "how long a claim on an image holds before another run may take it over",
    "max_image_bytes": "objects bigger than this fail with a reason instead of being read (TorchServe refuses >16 MiB)",
    "route": "none, copy or move each image to sorted/<category path>/ or review/ in the store",
    "max_failure_rate": "exit 1 when failed + dead + left-pending images exceed this share of the run",
    "drift_threshold": "warn when the category mix's PSI against training or recent runs exceeds this",
    "shard_index": "this process's shard (Indexed Job: JOB_COMPLETION_INDEX)",
    "shard_count": "number of shards: each takes the keys whose stable hash mod shard_count is its index",
    "scale_deployment": "scale-to-zero mode: the TorchServe Deployment to scale up before and down after the run",
    "scale_namespace": "its namespace (default: the pod's own)",
    "scale_replicas": "replicas to scale up to",
    "scale_timeout": "seconds to wait for the scaled-up replicas to be ready",
    "migrate": "upgrade the results store's schema at start; without it only an SQLite file is, and a server "
    "database must be at this version's revision (`refund-batch migrate`, the Helm chart's hook)",
}


@dataclass(frozen=True)
class Settings:
    store: str = "var/store"
    inbox_prefix: str = "inbox/"
    runs_prefix: str = "runs/"
    database_url: str = "sqlite:///var/results.db"
    torchserve_url: str = "http://127.0.0.1:8080"
    model_name: str = "refund-classifier"
    concurrency: int = 32
    review_threshold: str = "auto"
    # Off until it holds on returns: on returns-like photos the subcategory level sorted at 0.91 precision
    # (docs/performance.md), short of the desk's 98 %.
    route_levels: str = "article"
    retries: int = 4
    request_timeout: float = 60.0
    max_attempts: int = 3
    lease_seconds: int = 900
    max_image_bytes: int = 16 * 1024 * 1024
    route: str = "none"
    max_failure_rate: float = 0.05
    drift_threshold: float = 0.25
    shard_index: int = 0
    shard_count: int = 1
    scale_deployment: str = ""
    scale_namespace: str = ""
    scale_replicas: int = 1
    scale_timeout: float = 600.0
    migrate: bool = False

    def __post_init__(self) -> None:
        for name in ("inbox_prefix", "runs_prefix"):
            object.__setattr__(self, name, folder_prefix(getattr(self, name)))

    @property
    def upgrades_schema(self) -> bool:
        """Whether an app upgrades the results store at start: when asked, or an SQLite file, which the app owns
        (make demo, a laptop). A server database is upgraded once per release by `refund-batch migrate`, so the
        apps need no DDL rights and a new review page never migrates the schema under an older night."""
        return self.migrate or self.database_url.startswith("sqlite")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
        """Flags for the named fields (all when None): each subcommand takes the settings it reads, no others."""
        choices = {"route": ("none", "copy", "move"), "route_levels": LEVELS}
        add_env_arguments(parser, cls, ENV_PREFIX, HELP, ENV_FALLBACKS, choices, names)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """The fields the command took from its flags; the others keep their defaults, which it does not read."""
        return cls(**{field.name: getattr(args, field.name) for field in fields(cls) if hasattr(args, field.name)})


# The settings each subcommand reads; `run` reads them all.
PHOTOS = ("store", "inbox_prefix")  # where the desk's photos arrive
RESULTS = ("database_url",)  # the results ledger
ROUTED = (*PHOTOS, *RESULTS, "route")  # a processed photo, wherever the night moved it


def folder_prefix(text: str) -> str:
    """A folder in the store as keys start with it: `inbox`, `/inbox` and `inbox//` are all `inbox/`; empty is
    the store's top. Code that cuts a key by its prefix relies on this one spelling."""
    folder = text.strip("/")
    return f"{folder}/" if folder else ""


def add_env_arguments(
    parser: argparse.ArgumentParser,
    settings: type,
    prefix: str,
    helps: dict[str, str],
    fallbacks: dict[str, str] | None = None,
    choices: dict[str, tuple[str, ...]] | None = None,
    names: tuple[str, ...] | None = None,
) -> None:
    """A flag per field of the `settings` dataclass (those in `names`, if given), its default from the
    environment variable prefix + NAME (else the one `fallbacks` names, else the field's default)."""
    for field in fields(settings):
        if names is not None and field.name not in names:
            continue
        env = prefix + field.name.upper()
        fallback = (fallbacks or {}).get(field.name, "")
        variable = env if env in os.environ else fallback if fallback in os.environ else None
        switch = isinstance(field.default, bool)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=_converter(type(field.default), (choices or {}).get(field.name)),
            nargs="?" if switch else None,  # a switch: `--migrate` alone means yes
            const=True if switch else None,
            # Left as text: argparse converts it only when the flag is absent, so a bad value is its usage error.
            default=EnvDefault.read(variable) if variable else field.default,
            choices=(choices or {}).get(field.name),
            help=f"{helps[field.name]} (env {env}, default: {field.default!r})",
        )


class EnvDefault(str):
    """A flag's default as read from an environment variable, which an error about it names."""

    variable: str

    @classmethod
    def read(cls, variable: str) -> EnvDefault:
        text = cls(os.environ[variable])
        text.variable = variable
        return text


def _switch(text: str) -> bool:
    """A yes/no setting as environment variables spell it."""
    answers = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
    if text.strip().lower() not in answers:
        raise ValueError(text)
    return answers[text.strip().lower()]


def _converter(kind: type, choices: tuple[str, ...] | None) -> Callable[[str], object]:
    """The flag's type, checking choices too: argparse checks them for typed flags, never for defaults."""

    def convert(text: str) -> object:
        origin = f" (from env {text.variable})" if isinstance(text, EnvDefault) else ""
        try:
            value = _switch(text) if kind is bool else kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}{origin}") from None
        if choices and value not in choices:
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(choices)}){origin}")
        return value

    return convert
