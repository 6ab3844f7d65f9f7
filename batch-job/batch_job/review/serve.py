"""Builds the review app from the two settings sources and serves it with uvicorn, and /metrics on a port of
its own (prometheus_client's server, in a thread of the same process)."""

from __future__ import annotations

from pathlib import Path

import uvicorn
from prometheus_client import start_http_server
from starlette.applications import Starlette

from batch_job.ledger.results import Ledger
from batch_job.photos.located import Photos
from batch_job.review.app import ReviewApp, create_app
from batch_job.review.auth import Reviewers
from batch_job.review.settings import ReviewSettings
from batch_job.settings import Settings
from common.objectstore import open_store


def build(settings: Settings, review: ReviewSettings) -> Starlette:
    if not review.users_file and not review.user_header:
        raise ValueError("no way to log in: set --users-file (REFUND_REVIEW_USERS_FILE) or --user-header")
    if review.user_header and not review.proxy_secret:
        raise ValueError("--user-header needs --proxy-secret (REFUND_REVIEW_PROXY_SECRET), sent by the auth proxy")
    reviewers = Reviewers(Path(review.users_file) if review.users_file else None)
    store = open_store(settings.store)
    photos = Photos(store, settings.inbox_prefix, settings.route, review.thumbnails_prefix, settings.max_image_bytes)
    engine = Ledger(settings.database_url, settings.upgrades_schema).engine
    app = ReviewApp(engine, photos, reviewers, review, settings.runs_prefix)
    return create_app(app, review.session_key(), bool(review.secure_cookies))


def server_options(review: ReviewSettings) -> dict:
    """uvicorn's settings for the page (the tests serve it with these too). X-Forwarded-For is believed only
    from --forwarded-allow-ips: the client address it gives is what login throttling counts."""
    return {
        "host": review.host,
        "port": review.port,
        "forwarded_allow_ips": review.forwarded_allow_ips,
        "log_config": None,
        "access_log": False,
    }


def serve(app: Starlette, review: ReviewSettings) -> None:
    start_http_server(review.metrics_port, review.host, registry=app.state.metrics)
    uvicorn.run(app, **server_options(review))
