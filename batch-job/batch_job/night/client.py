"""TorchServe inference client: image bytes in, a typed answer out.

Whose fault a failure is follows from the HTTP exchange, and is a type:
- `Prediction`: a 200 with every field a prediction needs, and the model version that answered.
- `ImageRejected`: a 4xx (the handler's per-image verdict: undecodable, too large, too many pixels).
  Final: sending the image again cannot change the answer.
- `ServingFailed`: TorchServe took the image and failed on it: a 500 or 507 (the handler crashed or ran
  out of memory on it), no answer within the read timeout (it hangs on it), 502/503/504 after retries, or
  a 200 that is no prediction. It may be the image's fault: it counts as one of the image's attempts.
- `ServingUnreachable`: no HTTP answer at all after retries. Never the image's fault.
Only what cannot be the image's doing is retried, with exponential backoff and jitter (tenacity):
connection errors and 502/503/504 (a gateway, or TorchServe busy or restarting). Sending again an image
that crashes or hangs its worker would only crash or hang it again, and charge it no attempt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from tenacity import (
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)

from common.sorting import SortingRule, rule_of

RETRYABLE_STATUS = frozenset({502, 503, 504})
MAX_BACKOFF_S = 8.0
DEFAULT_REVIEW_THRESHOLD = 0.5  # a handler that names no threshold (an old model.json without one)


class ServingUnavailable(RuntimeError):
    """TorchServe did not answer even after retries."""


@dataclass(frozen=True)
class ServedModel:
    """What TorchServe's handler says about the model it serves (`describe: True`): `rule` decides where an
    answered item goes (common.sorting; one threshold for models trained before rules were shipped)."""

    name: str
    version: str
    classes: list[str]
    rule: SortingRule
    class_prior: dict[str, float]


@dataclass(frozen=True)
class Prediction:
    category: str
    probability: float
    top3: list[dict]
    model_name: str
    model_version: str
    latency_ms: float
    probabilities: dict[str, float]  # every class's: the upper levels sum them


@dataclass(frozen=True)
class ImageRejected:
    status: int
    reason: str
    latency_ms: float


@dataclass(frozen=True)
class ServingFailed:
    reason: str
    latency_ms: float


@dataclass(frozen=True)
class ServingUnreachable:
    reason: str
    latency_ms: float


Answer = Prediction | ImageRejected | ServingFailed | ServingUnreachable


class TorchServeClient:
    def __init__(self, base_url: str, model_name: str, concurrency: int, timeout: float, retries: int) -> None:
        self.url = f"{base_url.rstrip('/')}/predictions/{model_name}"
        self.retries = retries
        self.read_timeout = timeout
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    def close(self) -> None:
        self.http.close()

    def _post(self, content: bytes, headers: dict[str, str]) -> httpx.Response:
        """The first answer that is not a retryable 5xx, else the last one; raises httpx.TransportError
        when the server never answered (httpx.ReadTimeout at once: it took the request and stayed silent)."""
        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential_jitter(multiplier=0.5, max=MAX_BACKOFF_S),
            retry=retry_if_exception(_connection_error)
            | retry_if_result(lambda answer: answer.status_code in RETRYABLE_STATUS),
            retry_error_callback=_last_answer_or_raise,
        )
        return retrying(self.http.post, self.url, content=content, headers=headers)

    def describe(self) -> ServedModel:
        try:
            answer = self._post(b"", {"describe": "True"})
        except httpx.TransportError as exc:
            raise ServingUnavailable(f"TorchServe unreachable after {self.retries + 1} tries: {exc!r}") from exc
        if answer.status_code != 200:
            raise ServingUnavailable(f"describe failed ({answer.status_code}): {_reason(answer)}")
        try:
            body = answer.json()
            threshold = body.get("review_threshold")
            return ServedModel(
                name=body["model"]["name"],
                version=body["model"]["version"],
                classes=body["classes"],
                rule=rule_of(
                    {**body, "review_threshold": DEFAULT_REVIEW_THRESHOLD if threshold is None else threshold}
                ),
                class_prior=body.get("class_prior") or {},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ServingUnavailable(f"describe answered something that is no model description: {exc!r}") from exc

    def classify(self, image: bytes) -> Answer:
        started = time.perf_counter()
        try:
            answer = self._post(image, {"Content-Type": "application/octet-stream"})
        except httpx.ReadTimeout as exc:
            reason = f"TorchServe took the image and gave no answer within {self.read_timeout:g} s: {exc!r}"
            return ServingFailed(reason, _since(started))
        except httpx.TransportError as exc:
            reason = f"TorchServe unreachable after {self.retries + 1} tries: {exc!r}"
            return ServingUnreachable(reason, _since(started))
        latency_ms = _since(started)
        if answer.status_code in RETRYABLE_STATUS:
            reason = f"TorchServe answered {answer.status_code} {self.retries + 1} times: {_reason(answer)}"
            return ServingFailed(reason, latency_ms)
        if 400 <= answer.status_code < 500:
            return ImageRejected(answer.status_code, f"rejected ({answer.status_code}): {_reason(answer)}", latency_ms)
        if answer.status_code != 200:
            return ServingFailed(f"TorchServe answered {answer.status_code}: {_reason(answer)}", latency_ms)
        try:
            body = answer.json()
            return Prediction(
                category=str(body["category"]),
                probability=float(body["probability"]),
                top3=list(body["top_k"][:3]),
                model_name=str(body["model"]["name"]),
                model_version=str(body["model"]["version"]),
                latency_ms=latency_ms,
                probabilities={str(name): float(p) for name, p in body["probabilities"].items()},
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            return ServingFailed(
                f"TorchServe answered 200 with no prediction ({exc!r}): {answer.text[:200]}", latency_ms
            )


def _connection_error(error: BaseException) -> bool:
    """No answer, and not because the server sat on the image: refused, dropped, reset, or a stall while
    connecting or sending."""
    return isinstance(error, httpx.TransportError) and not isinstance(error, httpx.ReadTimeout)


def _last_answer_or_raise(state) -> httpx.Response:
    """After the last try: its 5xx answer, or its connection error."""
    outcome = state.outcome
    if outcome.failed:
        raise outcome.exception()
    return outcome.result()


def _since(started: float) -> float:
    return 1000 * (time.perf_counter() - started)


def _reason(answer: httpx.Response) -> str:
    """TorchServe's message, or what the status means where the body says nothing (its frontend's 413)."""
    try:
        body = answer.json()
        reason = str(body.get("error") or body.get("message") or "") if isinstance(body, dict) else str(body)
    except ValueError:
        reason = answer.text[:300].strip()
    return reason or answer.reason_phrase or f"HTTP {answer.status_code}"
