"""The review subcommands of refund-batch: review (the page), review-passwd, export-labels."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from batch_job.export import export_labels
from batch_job.ledger import Ledger
from batch_job.review.auth import hash_line
from batch_job.review.photos import Photos
from batch_job.review.settings import ReviewSettings
from batch_job.settings import Settings
from common.objectstore import open_store

COMMANDS = ("review", "review-passwd", "export-labels")


def add_commands(commands) -> list[argparse.ArgumentParser]:
    """Adds the subcommands; returns them, for the nightly job's settings (store, database) to be added."""
    review = commands.add_parser("review", help="serve the review page for the doubtful items")
    ReviewSettings.add_arguments(review)
    passwd = commands.add_parser("review-passwd", help="print a users-file line for a reviewer (password on stdin)")
    passwd.add_argument("name", help="the reviewer's login name")
    export = commands.add_parser("export-labels", help="write reviewed items as styles.csv + images/ for training")
    export.add_argument("--out", type=Path, required=True, help="folder to write")
    return [review, passwd, export]


def run(command: str, settings: Settings, args: argparse.Namespace) -> int:
    if command == "review-passwd":
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        print(hash_line(args.name, password))
        return 0
    if command == "review":
        from batch_job.review.serve import serve  # uvicorn only where the page is served

        serve(settings, ReviewSettings.from_args(args))
        return 0
    thumbnails = ReviewSettings.thumbnails_prefix  # unused by the export, which reads the photos themselves
    photos = Photos(open_store(settings.store), settings.inbox_prefix, settings.route, thumbnails)
    report = export_labels(Ledger(settings.database_url).engine, photos, args.out)
    for key, reason in report.missing.items():
        print(f"left out {key}: {reason}", file=sys.stderr)
    print(f"{report.written} reviewed photos written to {args.out} ({len(report.missing)} missing)")
    return 0
