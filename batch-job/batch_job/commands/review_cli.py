"""The review subcommands of refund-batch: review (the page), review-passwd, export-labels."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from batch_job.commands.export import export_labels
from batch_job.ledger.results import Ledger
from batch_job.photos.located import Photos
from batch_job.review.auth import hash_line
from batch_job.review.settings import ReviewSettings
from batch_job.settings import ROUTED, Settings
from common.cli import add_command
from common.objectstore import open_store

COMMANDS = ("review", "review-passwd", "export-labels")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds the subcommands, each with the nightly job's settings it reads (where the photos and results are)."""
    export = add_command(commands, "export-labels", "write reviewed items as styles.csv + images/ for training")
    Settings.add_arguments(export, (*ROUTED, "max_image_bytes", "migrate"))
    export.add_argument("--out", type=Path, required=True, help="folder to write")
    review = add_command(commands, "review", "serve the review page for the doubtful items")
    # The nights' reports, the photos.
    Settings.add_arguments(review, (*ROUTED, "runs_prefix", "max_image_bytes", "migrate"))
    ReviewSettings.add_arguments(review)
    passwd = add_command(commands, "review-passwd", "print a users-file line for a reviewer (password on stdin)")
    passwd.add_argument("name", help="the reviewer's login name")


def print_hash_line(name: str) -> int:
    """The users-file line for `name`; exit 2 with one line for an empty password, a bad name or a mistyped
    confirmation (a terminal asks twice; a pipe gives the password once)."""
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("review-passwd: the two passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        print(hash_line(name, password))
    except ValueError as exc:
        print(f"review-passwd: {exc}", file=sys.stderr)
        return 2
    return 0


def run(command: str, settings: Settings, args: argparse.Namespace) -> int:
    if command == "review-passwd":
        return print_hash_line(args.name)
    if command == "review":
        from batch_job.review.serve import build, serve  # uvicorn only where the page is served

        review = ReviewSettings.from_args(args)
        try:
            app = build(settings, review)
        except (ValueError, OSError) as exc:  # settings that cannot work: one line, as argparse says a bad flag
            print(f"refund-batch review: error: {exc}", file=sys.stderr)
            return 2
        serve(app, review)
        return 0
    photos = Photos(
        open_store(settings.store), settings.inbox_prefix, settings.route, max_bytes=settings.max_image_bytes
    )
    report = export_labels(Ledger(settings.database_url, settings.upgrades_schema).engine, photos, args.out)
    for key, reason in report.missing.items():
        print(f"left out {key}: {reason}", file=sys.stderr)
    print(f"{report.written} reviewed photos written to {args.out} ({len(report.missing)} missing)")
    return 0
