"""What training and the nightly job both use. Depends on neither; both depend on it."""
