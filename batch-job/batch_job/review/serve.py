"""Builds the review app from the two settings sources and serves it with uvicorn."""

from __future__ import annotations

from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from batch_job.ledger import Ledger
from batch_job.review.app import ReviewApp, create_app
from batch_job.review.auth import Reviewers
from batch_job.review.photos import Photos
from batch_job.review.settings import ReviewSettings
from batch_job.settings import Settings
from common.objectstore import open_store


def build(settings: Settings, review: ReviewSettings) -> Starlette:
    if not review.users_file and not review.user_header:
        raise ValueError("no way to log in: set --users-file (REFUND_REVIEW_USERS_FILE) or --user-header")
    reviewers = Reviewers(Path(review.users_file) if review.users_file else None)
    photos = Photos(open_store(settings.store), settings.inbox_prefix, settings.route, review.thumbnails_prefix)
    app = ReviewApp(
        Ledger(settings.database_url).engine,
        photos,
        reviewers,
        review.class_names(),
        review.page_size,
        review.user_header,
    )
    return create_app(app, review.session_key(), bool(review.secure_cookies))


def serve(settings: Settings, review: ReviewSettings) -> None:
    uvicorn.run(build(settings, review), host=review.host, port=review.port, log_config=None, access_log=False)
