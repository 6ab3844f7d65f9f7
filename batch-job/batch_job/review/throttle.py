"""Login throttling: wrong passwords are counted per client address and per reviewer name in a moving
window (the `limits` library, in this process's memory); once either is spent, logins answer 429 with
Retry-After before any password is checked, so guessing costs the server nothing."""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("refund-review")


def parsed(limit: str, flag: str) -> RateLimitItem:
    try:
        return parse(limit)
    except ValueError as exc:
        raise ValueError(f"{flag} {limit!r}: {exc} (expected e.g. 5/minute)") from None


class LoginThrottle:
    def __init__(self, per_name: str, per_address: str, registry: CollectorRegistry) -> None:
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.limits = {
            "address": parsed(per_address, "--login-limit-per-address"),
            "name": parsed(per_name, "--login-limit-per-name"),
        }
        self.throttled = Counter(
            "refund_review_logins_throttled",
            "Logins refused with 429 after too many wrong passwords, by what was spent (address or name)",
            ["by"],
            registry=registry,
        )
        for by in self.limits:  # exposed at 0 from the start, so rate() and alerts see the first refusal
            self.throttled.labels(by)

    def retry_after(self, name: str, address: str) -> int | None:
        """Seconds until a login from `address` as `name` is allowed again; None: allowed now."""
        for by, key in (("address", address), ("name", name)):
            limit = self.limits[by]
            if not self.limiter.test(limit, by, key):
                reset, _ = self.limiter.get_window_stats(limit, by, key)
                self.throttled.labels(by).inc()
                seconds = max(1, math.ceil(reset - time.time()))
                log.warning("login throttled", extra={"reviewer": name, "address": address, "by": by, "retry": seconds})
                return seconds
        return None

    def failed(self, name: str, address: str) -> None:
        for by, key in (("address", address), ("name", name)):
            self.limiter.hit(self.limits[by], by, key)
