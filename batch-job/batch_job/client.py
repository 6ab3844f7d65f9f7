"""TorchServe inference client: image bytes in, an Outcome out.

Connection errors and 5xx are retried with exponential backoff; when the server stays
away the object's outcome is PENDING, so the next run picks it up instead of losing it.
A 4xx is the model's verdict on that one image and fails it with the reason.
"""

from __future__ import annotations

import random
import time

import httpx

from batch_job.ledger import FAILED, NEEDS_REVIEW, OK, PENDING, Outcome

RETRYABLE_STATUS = {500, 502, 503, 504, 507}


class TorchServeClient:
    def __init__(
        self, base_url: str, model_name: str, concurrency: int, timeout: float, retries: int, review_threshold: float
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/predictions/{model_name}"
        self.retries = retries
        self.review_threshold = review_threshold
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    def close(self) -> None:
        self.http.close()

    def classify(self, image: bytes) -> Outcome:
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2))
            try:
                answer = self.http.post(self.url, content=image, headers={"Content-Type": "application/octet-stream"})
            except httpx.TransportError as exc:
                problem = f"TorchServe unreachable: {exc!r}"
                continue
            if answer.status_code in RETRYABLE_STATUS:
                problem = f"TorchServe answered {answer.status_code}: {_reason(answer)}"
                continue
            if answer.status_code != 200:
                return Outcome(FAILED, error=f"rejected ({answer.status_code}): {_reason(answer)}")
            return self._prediction(answer.json())
        return Outcome(PENDING, error=f"{problem} (after {self.retries + 1} tries)")

    def _prediction(self, body: dict) -> Outcome:
        probability = float(body["probability"])
        return Outcome(
            NEEDS_REVIEW if probability < self.review_threshold else OK,
            category=body["category"],
            probability=probability,
            top3=body["top_k"][:3],
            model_name=body["model"]["name"],
            model_version=body["model"]["version"],
        )


def _reason(answer: httpx.Response) -> str:
    try:
        body = answer.json()
        return str(body.get("error") or body.get("message") or body)
    except ValueError:
        return answer.text[:300]
