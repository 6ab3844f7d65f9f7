"""The one-shot commands of refund-batch beside the night and the page: ingest, report, export-labels, and the
review page's subcommands."""
