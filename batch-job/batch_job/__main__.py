"""refund-batch: the nightly job that sorts photos of returned items, and the review page for the doubtful ones.

Every setting is a flag whose default comes from a REFUND_* environment variable;
`refund-batch COMMAND --help` lists the ones that command takes.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import create_engine

from batch_job.commands import fetch_model, review_cli
from batch_job.commands.ingest import ingest
from batch_job.commands.report import accuracy_report, category_summary, read_labels
from batch_job.ledger import migrate
from batch_job.ledger.results import Ledger
from batch_job.logs import configure
from batch_job.night.client import ServingUnavailable
from batch_job.night.nightly import nightly
from batch_job.night.shutdown import Stopped, handling_sigterm
from batch_job.settings import PHOTOS, RESULTS, Settings
from common.classes import load_classes
from common.cli import add_command, add_version
from common.objectstore import open_store

log = logging.getLogger("refund-batch")


@contextlib.contextmanager
def single_instance(lock_file: Path | None):
    """Hold an exclusive lock for the run, so cron never starts a second copy; yields False if taken."""
    if lock_file is None:
        yield True
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def run_command(settings: Settings, lock_file: Path | None) -> int:
    with single_instance(lock_file) as acquired:
        if not acquired:
            log.warning("another run holds the lock; this one does nothing", extra={"lock_file": str(lock_file)})
            return 0
        try:
            with handling_sigterm() as shutdown:
                night = nightly(settings, shutdown)
        except ServingUnavailable as exc:
            log.error("TorchServe unavailable; nothing was claimed", extra={"reason": str(exc)})
            return 2
        except Stopped as stopped:
            log.error("stopped by SIGTERM before the night's end; the next run takes what is left")
            return stopped.code
    summary = night.summary
    print(category_summary(night.rows))
    print(
        f"run {night.stats.run_id}: listed {night.stats.listed}, new {night.stats.registered}, "
        f"processed {len(night.rows)} {dict(sorted(summary['statuses'].items()))} in {night.stats.seconds:.1f}s; "
        f"report in {night.folder}/report.html"
    )
    for warning in summary["drift"]["warnings"]:
        log.warning("drift", extra={"warning": warning})
    if summary["scale_down_error"]:
        log.error("TorchServe was left running", extra={"reason": summary["scale_down_error"]})
        return 3
    if summary["failure_rate"] > settings.max_failure_rate:
        log.error("too many failures", extra={"failure_rate": summary["failure_rate"]})
        return 1
    return 0


def report_command(settings: Settings, args: argparse.Namespace) -> int:
    rows = Ledger(settings.database_url, settings.upgrades_schema).results()
    print(category_summary(rows))
    if args.labels:
        classes = load_classes(args.classes) if args.classes else None
        figures = accuracy_report(rows, read_labels(args.labels, args.label_column), classes)
        if figures["accuracy"] is None:
            print("no classified image has a label")
            return 0
        print(
            f"accuracy on {figures['in_taxonomy']} labelled images of known categories: {figures['accuracy']:.3f} "
            f"({figures['outside_taxonomy']} more carry labels the model never learnt; "
            f"all labelled: {figures['accuracy_all_labelled']:.3f})"
        )
        if figures["auto_sorted"]:
            print(f"auto-sorted {figures['auto_sorted']} of them at precision {figures['auto_sorted_precision']:.3f}")
    return 0


def ingest_command(settings: Settings, args: argparse.Namespace) -> int:
    report = ingest(args.paths, open_store(settings.store), settings.inbox_prefix, args.date)
    for key in report.stored:
        print(f"stored {key}")
    for path, reason in report.refused.items():
        print(f"refused {path}: {reason}", file=sys.stderr)
    print(
        f"{len(report.stored)} photos stored, {len(report.already_there)} already there, {len(report.refused)} refused"
    )
    return 1 if report.refused else 0


def migrate_command(settings: Settings) -> int:
    """Upgrades before a deployment (the chart's hook), or says where a database is; the apps upgrade only an
    SQLite file, or with --migrate."""
    engine = create_engine(settings.database_url)
    before = migrate.upgrade(engine)
    with engine.connect() as connection:
        after = migrate.current_revision(connection)
    engine.dispose()
    print(f"results store at revision {after} (was {before or 'empty'})")
    return 0


RUN_EXIT_CODES = """exit codes: 0 done; 1 failed, dead-lettered and left-pending images exceed --max-failure-rate;
2 TorchServe could not be reached (nothing was claimed); 3 the night was recorded and published,
but scaling TorchServe back down failed (it is still running); 4 the results store's schema is behind this
version (run `refund-batch migrate`); 143 stopped by SIGTERM (the answers in hand
recorded, the other claims released, TorchServe scaled down; the night is not published)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refund-batch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version(parser)
    commands = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    run_parser = add_command(
        commands, "run", "classify new photos, record and publish the results (the nightly job)", epilog=RUN_EXIT_CODES
    )
    Settings.add_arguments(run_parser)
    run_parser.add_argument("--lock-file", type=Path, help="skip this run if another one holds this lock (cron)")
    ingest_parser = add_command(commands, "ingest", "put desk photos into the inbox's date partition")
    Settings.add_arguments(ingest_parser, PHOTOS)
    ingest_parser.add_argument("paths", type=Path, nargs="+", help="photos, or folders of photos")
    ingest_parser.add_argument(
        "--date", type=date.fromisoformat, default=datetime.now(UTC).date(), help="partition (default: today, UTC)"
    )
    report_parser = add_command(commands, "report", "summarise the results store (accuracy with --labels)")
    Settings.add_arguments(report_parser, (*RESULTS, "migrate"))
    report_parser.add_argument("--labels", type=Path, help="a styles.csv whose ids name the images: prints accuracy")
    report_parser.add_argument("--label-column", default="articleType", help="(default: articleType)")
    report_parser.add_argument("--classes", type=Path, help="the model's index_to_name.json, to count unknown labels")
    migrate_parser = add_command(commands, "migrate", "upgrade the results store's schema to the newest revision")
    Settings.add_arguments(migrate_parser, RESULTS)
    review_cli.add_commands(commands)
    fetch_model.add_command(
        add_command(commands, "fetch-model", "a registry version's .mar for TorchServe (serving pods' init)")
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_args(args)
    configure()
    try:
        return dispatch(args, settings)
    except migrate.SchemaBehind as exc:
        print(f"refund-batch {args.command}: error: {exc}", file=sys.stderr)
        return 4


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "run":
        return run_command(settings, args.lock_file)
    if args.command == "ingest":
        return ingest_command(settings, args)
    if args.command == "migrate":
        return migrate_command(settings)
    if args.command == "fetch-model":
        return fetch_model.fetch_model(args)
    if args.command in review_cli.COMMANDS:
        return review_cli.run(args.command, settings, args)
    return report_command(settings, args)


if __name__ == "__main__":
    sys.exit(main())
