"""The nightly job (`refund-batch run`): list, claim, classify on TorchServe, record, route, summarise, publish.
It never imports the review page."""
