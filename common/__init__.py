"""What more than one component uses: object-store access, styles.csv, a model's class names.

Depends on none of handlers, training or batch_job; they may depend on it (tests/test_architecture.py).
"""
