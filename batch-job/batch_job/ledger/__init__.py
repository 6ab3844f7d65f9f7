"""The ledger: the results store's tables, the reads and writes the night, the review page and the commands
share, and the schema's migrations. It imports no other part of batch_job."""
