"""TorchServe inference client: image bytes in, an Outcome out.

Connection errors and 5xx are retried with exponential backoff; when the server stays
away the object's outcome is PENDING, so the next run picks it up instead of losing it.
A 4xx is the model's verdict on that one image and fails it with the reason.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import httpx

from batch_job.ledger import FAILED, NEEDS_REVIEW, OK, PENDING, Outcome

RETRYABLE_STATUS = {500, 502, 503, 504, 507}


class ServingUnavailable(RuntimeError):
    """TorchServe did not answer even after retries."""


@dataclass(frozen=True)
class ServedModel:
    """What TorchServe's handler says about the model it serves (`describe: True`)."""

    name: str
    version: str
    classes: list[str]
    review_threshold: float | None
    class_prior: dict[str, float]


class TorchServeClient:
    def __init__(self, base_url: str, model_name: str, concurrency: int, timeout: float, retries: int) -> None:
        self.url = f"{base_url.rstrip('/')}/predictions/{model_name}"
        self.retries = retries
        self.review_threshold = 0.5  # set from the model by `describe` or from settings
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    def close(self) -> None:
        self.http.close()

    def _post(self, content: bytes, headers: dict[str, str]) -> tuple[httpx.Response | None, str]:
        """The first non-retryable answer, or None and the last problem after all retries."""
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2))
            try:
                answer = self.http.post(self.url, content=content, headers=headers)
            except httpx.TransportError as exc:
                problem = f"TorchServe unreachable: {exc!r}"
                continue
            if answer.status_code not in RETRYABLE_STATUS:
                return answer, ""
            problem = f"TorchServe answered {answer.status_code}: {_reason(answer)}"
        return None, f"{problem} (after {self.retries + 1} tries)"

    def describe(self) -> ServedModel:
        answer, problem = self._post(b"", {"describe": "True"})
        if answer is None or answer.status_code != 200:
            raise ServingUnavailable(problem or f"describe failed ({answer.status_code}): {_reason(answer)}")
        body = answer.json()
        return ServedModel(
            name=body["model"]["name"],
            version=body["model"]["version"],
            classes=body["classes"],
            review_threshold=body.get("review_threshold"),
            class_prior=body.get("class_prior") or {},
        )

    def classify(self, image: bytes) -> Outcome:
        started = time.perf_counter()
        answer, problem = self._post(image, {"Content-Type": "application/octet-stream"})
        latency_ms = 1000 * (time.perf_counter() - started)
        if answer is None:
            return Outcome(PENDING, error=problem, attempt_failed="answered" in problem, latency_ms=latency_ms)
        if answer.status_code != 200:
            return Outcome(FAILED, error=f"rejected ({answer.status_code}): {_reason(answer)}", latency_ms=latency_ms)
        body = answer.json()
        probability = float(body["probability"])
        return Outcome(
            NEEDS_REVIEW if probability < self.review_threshold else OK,
            category=body["category"],
            probability=probability,
            top3=body["top_k"][:3],
            model_name=body["model"]["name"],
            latency_ms=latency_ms,
        )


def _reason(answer: httpx.Response) -> str:
    try:
        body = answer.json()
        return str(body.get("error") or body.get("message") or body)
    except ValueError:
        return answer.text[:300]
