"""One photo of the night: read it, have TorchServe classify it, and conclude where it goes (the verdict the
ledger records)."""

from __future__ import annotations

import logging
from dataclasses import replace

from obstore.store import ObjectStore

from batch_job.ledger.results import Verdict, too_large
from batch_job.ledger.schema import FAILED, NEEDS_REVIEW, OK, PENDING, Result
from batch_job.night.client import (
    Answer,
    ImageRejected,
    Prediction,
    ServingFailed,
    ServingUnreachable,
    TorchServeClient,
)
from batch_job.photos.layout import Layout, UnsafeName
from batch_job.photos.objects import ObjectTooLarge, read_image
from batch_job.settings import Settings
from common.sorting import SortingRule

log = logging.getLogger("refund-batch")


def review_threshold(setting: str) -> float | None:
    """The probability every article type needs, where the operator sets one; None ("auto"): the model's rule."""
    return None if setting == "auto" else float(setting)


def verdict_of(
    answer: Answer, rule: SortingRule, route_levels: str = "article", article_threshold: float | None = None
) -> Verdict:
    """The ledger's record of TorchServe's answer; whose fault a failure was follows from its type. An answer
    is OK where the rule sorts it (at some level down to `route_levels`), else it needs review, and a reviewer
    is offered first the upper-level group the model is surest of."""
    match answer:
        case Prediction():
            decided = rule.decide(answer.probabilities, route_levels, article_threshold)
            return Verdict(
                OK if decided else NEEDS_REVIEW,
                category=answer.category,
                probability=answer.probability,
                top3=answer.top3,
                sort_level=decided.level if decided else None,
                sort_path=decided.path if decided else None,
                offered=None if decided else offered(rule, answer),
                model_name=answer.model_name,
                model_version=answer.model_version,
                counts_as_attempt=True,
                latency_ms=answer.latency_ms,
            )
        case ImageRejected():
            return Verdict(FAILED, error=answer.reason, counts_as_attempt=True, latency_ms=answer.latency_ms)
        case ServingFailed():
            return Verdict(PENDING, error=answer.reason, counts_as_attempt=True, latency_ms=answer.latency_ms)
        case ServingUnreachable():
            return Verdict(PENDING, error=answer.reason, latency_ms=answer.latency_ms)


def offered(rule: SortingRule, answer: Prediction) -> dict | None:
    """The upper-level group the model is surest of and which of its top 3 lie under it (the review page
    offers those first); None where the model ships no class tree."""
    group = rule.likeliest_group(answer.probabilities)
    if group is None:
        return None
    under = [guess["category"] for guess in answer.top3 if rule.group(guess["category"], group.level) == group.path]
    return {"level": group.level, "path": list(group.path), "probability": group.probability, "categories": under}


def destination(settings: Settings, key: str, verdict: Verdict) -> str | None:
    """Where routing sends a classified image (photos.layout): the folder of its category path when sorted,
    review/ when a person decides; None: it stays. UnsafeName: a category cannot name a folder."""
    if settings.route == "none" or verdict.status not in (OK, NEEDS_REVIEW):
        return None
    layout = Layout(settings.inbox_prefix)
    if verdict.status == NEEDS_REVIEW:
        return layout.review_key(key)
    return layout.sorted_key(key, verdict.sort_path or (verdict.category,))  # rows of old: the article type


def process(
    store: ObjectStore, client: TorchServeClient, settings: Settings, rule: SortingRule, row: Result
) -> Verdict:
    """Never raises for the photo's sake: whatever happens to it is its verdict."""
    if row.size > settings.max_image_bytes:
        # Registered before the limit was lowered, or by code that did not check it: still never read.
        return Verdict(FAILED, error=too_large(row.size, settings.max_image_bytes))
    try:
        image = read_image(store, row.object_key, settings.max_image_bytes)
    except FileNotFoundError:
        return Verdict(FAILED, error="object disappeared between listing and reading")
    except ObjectTooLarge as exc:
        return Verdict(FAILED, error=str(exc))
    except Exception as exc:  # a store hiccup must not fail the night, nor count against the image
        return Verdict(PENDING, error=f"could not read from store: {exc!r}")
    verdict = verdict_of(
        client.classify(image), rule, settings.route_levels, review_threshold(settings.review_threshold)
    )
    try:
        return replace(verdict, route_to=destination(settings, row.object_key, verdict))
    except UnsafeName as exc:  # a class the model names with a slash, say: a reviewer sorts its photos
        log.warning("class cannot name a folder: to review", extra={"key": row.object_key, "error": str(exc)})
        verdict = replace(verdict, status=NEEDS_REVIEW, sort_level=None, sort_path=None, error=f"not sorted: {exc}")
        return replace(verdict, route_to=destination(settings, row.object_key, verdict))
