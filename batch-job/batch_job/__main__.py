"""refund-batch: the nightly job that classifies new photos of returned items.

python -m batch_job run                 # classify what is new in the inbox
python -m batch_job report [--labels styles.csv --classes index_to_name.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from batch_job import job
from batch_job.ledger import Ledger
from batch_job.report import accuracy_report, category_summary, load_classes, read_labels
from batch_job.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="refund-batch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="classify new images and record the results")
    report_parser = commands.add_parser("report", help="summarise the results store")
    report_parser.add_argument("--labels", type=Path, help="a styles.csv whose ids name the images: prints accuracy")
    report_parser.add_argument("--label-column", default="articleType", help="(default: articleType)")
    report_parser.add_argument(
        "--classes", type=Path, help="the model's index_to_name.json, to count labels it never learnt"
    )
    for sub in (run_parser, report_parser):
        Settings.add_arguments(sub)
    args = parser.parse_args(argv)
    settings = Settings.from_args(args)

    if args.command == "run":
        started = time.monotonic()
        stats = job.run(settings)
        rows = Ledger(settings.database_url).results(stats.run_id)
        print(category_summary(rows))
        print(
            f"run {stats.run_id}: listed {stats.listed}, new {stats.new}, "
            f"{dict(sorted(stats.statuses.items()))} in {time.monotonic() - started:.1f}s"
        )
        if stats.left_pending:
            print(
                f"{stats.left_pending} images stay pending for the next run (TorchServe or store unavailable)",
                file=sys.stderr,
            )
            return 1
        return 0

    rows = Ledger(settings.database_url).results()
    print(category_summary(rows))
    if args.labels:
        classes = load_classes(args.classes) if args.classes else None
        figures = accuracy_report(rows, read_labels(args.labels, args.label_column), classes)
        if figures["accuracy"] is None:
            print("no classified image has a label")
        else:
            print(
                f"accuracy on {figures['in_taxonomy']} labelled images of known categories: {figures['accuracy']:.3f} "
                f"({figures['outside_taxonomy']} more carry labels the model never learnt; "
                f"all labelled: {figures['accuracy_all_labelled']:.3f})"
            )
            if figures["auto_sorted"]:
                print(
                    f"auto-sorted {figures['auto_sorted']} of them at precision {figures['auto_sorted_precision']:.3f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
