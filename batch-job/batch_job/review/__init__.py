"""The review page: the returns desk decides the doubtful items of the nightly runs. It never imports the night:
what both need is in batch_job.ledger and batch_job.photos."""
