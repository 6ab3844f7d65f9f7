"""What a night counted, for its summary and its log."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date

from batch_job.ledger.schema import DEAD, FAILED, PENDING
from batch_job.night.client import ServedModel
from batch_job.photos.inbox import ListingError


@dataclass
class RunStats:
    run_id: str
    shard: str
    model: ServedModel
    review_threshold: float | None  # the operator's, for every article type; None: the model's rule
    route_levels: str = "article"
    listed: int = 0
    registered: int = 0
    claimed: int = 0
    statuses: Counter = field(default_factory=Counter)
    answered_by: Counter = field(default_factory=Counter)  # model version -> results it answered
    lost_leases: int = 0  # results another run took over before this one committed them
    routing_failures: dict[str, str] = field(default_factory=dict)
    newest_partition: date | None = None
    future_partitions: list[str] = field(default_factory=list)
    malformed_partitions: list[str] = field(default_factory=list)
    listing_errors: list[ListingError] = field(default_factory=list)
    listing_seconds: float = 0.0  # waiting for the store's listing
    registration_seconds: float = 0.0  # registering what it listed
    seconds: float = 0.0

    @property
    def failure_rate(self) -> float:
        bad = self.statuses[FAILED] + self.statuses[DEAD] + self.statuses[PENDING]
        return bad / self.claimed if self.claimed else 0.0
