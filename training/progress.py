"""Training output people can follow, on a terminal and in a log file alike.

On a terminal, tqdm's bar. Elsewhere (CI, `make demo > log`, a Kubernetes Job) a bar is one
endless line of carriage returns, and Python holds block-buffered output back until it has
kilobytes: there, a plain line every N batches with images/s and the epoch's ETA, each line
written out as soon as it is printed.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def log(message: str) -> None:
    """One line, written at once (stdout to a file or pipe would otherwise wait in a buffer)."""
    print(message, flush=True)


class BatchProgress:
    """Progress through one epoch's batches: a bar on a terminal, a line every `every` batches elsewhere."""

    def __init__(self, batches: int, description: str, every: int) -> None:
        self.batches, self.description, self.every = batches, description, every
        self.bar = tqdm(total=batches, desc=description, unit="batch", leave=False) if sys.stdout.isatty() else None
        self.done, self.images, self.started = 0, 0, time.monotonic()

    def update(self, images: int, loss: float) -> None:
        self.done += 1
        self.images += images
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(loss=f"{loss:.3f}")
        elif self.every and self.done % self.every == 0:
            elapsed = time.monotonic() - self.started
            remaining = elapsed / self.done * (self.batches - self.done)
            log(
                f"{self.description} batch {self.done}/{self.batches}: loss {loss:.3f}, "
                f"{self.images / elapsed:.0f} img/s, ETA {remaining:.0f}s"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
