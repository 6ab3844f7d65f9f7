"""The review app's settings: flags whose defaults come from REFUND_REVIEW_* environment
variables (the Helm chart sets env, a person types flags). Store, database and routing are
the nightly job's own settings (batch_job.settings), so both always agree on them."""

from __future__ import annotations

import argparse
import json
import secrets
from dataclasses import dataclass, fields
from pathlib import Path

from batch_job.photos.located import THUMBNAILS_PREFIX
from batch_job.settings import add_env_arguments, folder_prefix

ENV_PREFIX = "REFUND_REVIEW_"
HELP = {
    "host": "address to listen on; keep loopback unless a proxy or the cluster network is in front",
    "port": "port to listen on",
    "metrics_port": "port of /metrics for Prometheus, on its own so a NetworkPolicy can admit scrapers to it alone",
    "users_file": "reviewers: `name:argon2-hash` lines (refund-batch review-passwd NAME), e.g. a mounted Secret",
    "secret_file": "file holding the key that signs session cookies (a Secret); empty: a random key per start",
    "user_header": "trust this header as the reviewer's name (set only behind an auth proxy, e.g. X-Forwarded-User)",
    "proxy_secret": "with --user-header: the auth proxy must send this in X-Review-Proxy-Secret (e.g. from a Secret)",
    "login_limit_per_name": "wrong passwords allowed per reviewer name before logins answer 429 (limits' notation)",
    "login_limit_per_address": "wrong passwords allowed per client address before logins answer 429",
    "forwarded_allow_ips": (
        "proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For gives the client address; "
        "empty: trust none, the address is the connection's peer"
    ),
    "classes": "the model's index_to_name.json; empty: the classes of every model a night was served by",
    "page_size": "items per queue page",
    "secure_cookies": "send the session cookie over HTTPS only (1 behind TLS, as in the chart)",
    "thumbnails_prefix": "where thumbnails are kept in the store",
    "registry": (
        "the model registry (folder or s3://bucket/prefix): the nights page shows its latest retrainings; "
        "empty: not shown"
    ),
}


@dataclass(frozen=True)
class ReviewSettings:
    host: str = "127.0.0.1"
    port: int = 8090
    metrics_port: int = 8091
    users_file: str = ""
    secret_file: str = ""
    user_header: str = ""
    proxy_secret: str = ""
    login_limit_per_name: str = "5/minute"
    login_limit_per_address: str = "20/minute"
    forwarded_allow_ips: str = ""
    classes: str = ""
    page_size: int = 50
    secure_cookies: int = 0
    thumbnails_prefix: str = THUMBNAILS_PREFIX
    registry: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "thumbnails_prefix", folder_prefix(self.thumbnails_prefix))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_env_arguments(parser, cls, ENV_PREFIX, HELP)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ReviewSettings:
        return cls(**{field.name: getattr(args, field.name) for field in fields(cls)})

    def session_key(self) -> str:
        if not self.secret_file:
            return secrets.token_urlsafe(32)  # sessions end with the process; fine on one laptop
        return Path(self.secret_file).read_text().strip()

    def class_names(self) -> list[str] | None:
        """The model's classes from index_to_name.json (or a JSON list); None when not configured."""
        if not self.classes:
            return None
        names = json.loads(Path(self.classes).read_text())
        return [names[str(index)] for index in range(len(names))] if isinstance(names, dict) else list(names)
