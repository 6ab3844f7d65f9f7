"""The review page: the returns desk decides the doubtful items of the nightly runs."""
