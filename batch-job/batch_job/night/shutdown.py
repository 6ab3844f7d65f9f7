"""SIGTERM for the nightly job. Kubernetes stops a pod with it (the Job's activeDeadlineSeconds, a node drain,
a deleted pod) and sends SIGKILL terminationGracePeriodSeconds later."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger("refund-batch")


class Stopped(SystemExit):
    """The night was stopped by SIGTERM; its exit code, 143 (128 + SIGTERM), says so to Kubernetes and cron."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


class Shutdown:
    """While the night classifies (`draining`), SIGTERM only sets `requested`: the loop then stops claiming,
    cancels the queued requests, records the answers in hand and releases the rest. Anywhere else the night
    holds nothing uncommitted, so SIGTERM raises Stopped at once and `finally` blocks (the scale-down) run."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._draining = False

    @contextlib.contextmanager
    def draining(self) -> Iterator[None]:
        self._draining = True
        try:
            yield
        finally:
            self._draining = False

    def on_sigterm(self, signum: int, frame: object) -> None:
        log.warning("SIGTERM: stopping the night", extra={"draining": self._draining})
        self.requested.set()
        if not self._draining:
            raise Stopped


@contextlib.contextmanager
def handling_sigterm() -> Iterator[Shutdown]:
    """Installs the Shutdown's handler for the body (the main thread only can; elsewhere it is never signalled).
    batch_job.night.scaler leaves an installed handler in place."""
    shutdown = Shutdown()
    if threading.current_thread() is not threading.main_thread():
        yield shutdown
        return
    previous = signal.signal(signal.SIGTERM, shutdown.on_sigterm)
    try:
        yield shutdown
    finally:
        signal.signal(signal.SIGTERM, previous)
