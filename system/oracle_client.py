"""HTTP client of the oracle service, used by the active-loop driver and by evaluation.

Requests and answers are the pydantic models of :mod:`system.api`, the same ones the service validates and
publishes. Requests go out in chunks of ``batch_size`` pairs. Connection failures, timeouts, 429 and 5xx
answers (and the plain-text 404 of a Serve proxy whose app is still deploying) are retried with
exponential backoff, at most ``retry_max_attempts`` tries within ``retry_deadline_s``; the service's label
store is keyed by (pair_id, oracle, annotator), so a chunk retried after the service died mid-request is
stored once and answered with the stored verdicts: the pair id is the idempotency key. Other 4xx answers raise
:class:`OracleError` with the service's one-line detail — a 409 for a pair id the store holds with other texts
among them. Every label received is checked against the digest of the texts it was asked for
(:func:`~system.types.pair_text_digest`): a verdict on other texts is an error, never a label. For the human
oracle the pairs are queued (HTTP 202) and the client polls ``GET /v1/labels`` until every pair has a label or
``human_timeout_s`` passes, then takes the round's labels with ``POST /v1/rounds/{round}/consume``: the labels
training uses are the aggregates as they stand at that moment, and from then on the round's answers are final.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential
from tqdm import tqdm

from system.api import (
    AnnotationStats,
    ConsumeIn,
    LabelOut,
    LabelRequest,
    LabelResponse,
    LabelsPage,
    PairIn,
    RewardRequest,
    RewardResponse,
)
from system.config import OracleConfig
from system.errors import OracleError
from system.types import CandidatePair, Label, Text

logger = logging.getLogger(__name__)
LabelProgress = Callable[[int, int, int], None]
"""Called with (round, pairs labelled so far, pairs waited for) while the client waits for people's labels."""
RETRY_STATUSES = {408, 429, 500, 502, 503, 504}


def _is_retryable_response(response: httpx.Response) -> bool:
    """Overload/restart statuses, and a plain-text 404: Serve's proxy answers so while the app is still deploying."""
    if response.status_code in RETRY_STATUSES:
        return True
    return response.status_code == 404 and not response.headers.get("content-type", "").startswith("application/json")


class RetryableStatus(Exception):
    """A response worth retrying (overload, restart)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.status_code = response.status_code


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, (httpx.TransportError, RetryableStatus))


def bound_label(row: LabelOut, digests: dict[str, str]) -> Label:
    """``row`` as a label, once its texts are the ones asked about (``digests``: ``{pair_id: text digest}``).

    Raises:
        OracleError: the service answered with a verdict on other texts for that pair id.
    """
    if row.text_digest != digests[row.pair_id]:
        raise OracleError(
            f"oracle: the label of pair_id {row.pair_id!r} judged other texts (digest {row.text_digest[:12]}…, "
            f"asked about {digests[row.pair_id][:12]}…): refusing it"
        )
    return row.to_label()


class OracleClient:
    """Talks to ``base_url`` with a bearer token (default: ``$ACTIVEALIGN_API_TOKEN``).

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        token: bearer token; None reads the environment variable ``token_env``.
        timeout: seconds per HTTP request.
        batch_size: pairs (or reward items) per request.
        retry_deadline_s: give up retrying a request after this many seconds.
        retry_max_attempts: give up after this many tries of one request.
        human_timeout_s: how long :meth:`label` waits for annotators.
        poll_interval_s: seconds between polls for human labels.
        progress: show a tqdm bar while waiting for humans.
        on_progress: called while waiting for humans with (round, pairs labelled, pairs waited for), first with 0
            labelled and then whenever the count grows (e.g. to export it to MLflow and the Ray dashboard).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 60.0,
        batch_size: int = 64,
        retry_deadline_s: float = 120.0,
        retry_max_attempts: int = 30,
        human_timeout_s: float = 3600.0,
        poll_interval_s: float = 2.0,
        token_env: str = "ACTIVEALIGN_API_TOKEN",
        progress: bool = True,
        on_progress: LabelProgress | None = None,
    ) -> None:
        token = token if token is not None else os.environ.get(token_env, "")
        if not token:
            raise OracleError(f"oracle client: no token given and ${token_env} is empty")
        self.base_url = base_url.rstrip("/")
        self.batch_size = batch_size
        self.retry_deadline_s = retry_deadline_s
        self.retry_max_attempts = retry_max_attempts
        self.human_timeout_s = human_timeout_s
        self.poll_interval_s = poll_interval_s
        self.progress = progress
        self.on_progress = on_progress
        self.http = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers={"Authorization": f"Bearer {token}"}
        )

    @classmethod
    def from_config(cls, oracle_cfg: OracleConfig, base_url: str | None = None, **kwargs: Any) -> OracleClient:
        """A client for the service described by ``oracle_cfg`` (token from ``$<oracle.token_env>``)."""
        url = base_url or f"http://{oracle_cfg.host}:{oracle_cfg.port}"
        kwargs.setdefault("timeout", oracle_cfg.request_timeout_s)
        kwargs.setdefault("human_timeout_s", oracle_cfg.human_timeout_s)
        kwargs.setdefault("batch_size", oracle_cfg.max_batch_size)
        kwargs.setdefault("retry_deadline_s", oracle_cfg.retry_deadline_s)
        kwargs.setdefault("retry_max_attempts", oracle_cfg.retry_max_attempts)
        return cls(url, token_env=oracle_cfg.token_env, **kwargs)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> OracleClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, method: str, path: str, passed_statuses: set[int] | None = None,
                **kwargs: Any) -> httpx.Response:
        """One API call with retries; returns a 2xx response (or one of ``passed_statuses``) or raises
        OracleError."""
        retrying = Retrying(
            retry=retry_if_exception(_retryable), wait=wait_exponential(multiplier=0.2, max=5.0),
            stop=stop_after_delay(self.retry_deadline_s) | stop_after_attempt(self.retry_max_attempts), reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    response = self.http.request(method, path, **kwargs)
                    if _is_retryable_response(response):
                        raise RetryableStatus(response)
        except (httpx.TransportError, RetryableStatus) as exc:
            raise OracleError(f"oracle {self.base_url}{path}: unavailable after retries ({exc!r})") from None
        if response.is_error and response.status_code not in (passed_statuses or set()):
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise OracleError(f"oracle {path}: HTTP {response.status_code}: {detail}")
        return response

    def healthz(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/healthz").json()
        return result

    def label(self, pairs: Sequence[CandidatePair], round: int, allow_partial: bool = False) -> list[Label]:
        """Labels for ``pairs`` in input order (human oracle: waits for annotators).

        Raises:
            OracleError: a request failed for good, or humans left pairs unlabelled past the deadline
                (unless ``allow_partial``, which returns the labelled ones).
        """
        digests = {pair.pair_id: pair.text_digest for pair in pairs}
        found: dict[str, Label] = {}
        queued: list[str] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            ids = [pair.pair_id for pair in chunk]
            body = LabelRequest(pairs=[PairIn.from_pair(pair) for pair in chunk], round=round)
            response = self.request("POST", "/v1/label", json=body.model_dump(mode="json", exclude_none=True))
            if response.status_code == 202:
                queued += ids
            else:
                found.update((row.pair_id, bound_label(row, digests))
                             for row in LabelResponse.model_validate_json(response.content).labels)
        taken: dict[str, Label] | None = None
        while queued and taken is None:  # None: an answer changed after the poll saw the pair labelled; wait again
            ready = self.wait_for_labels({pair_id: digests[pair_id] for pair_id in queued}, round, allow_partial)
            taken = self.consume(round, {pair_id: digests[pair_id] for pair_id in ready}, allow_partial)
        found.update(taken or {})
        return [found[pair.pair_id] for pair in pairs if pair.pair_id in found]

    def consume(self, round: int, digests: dict[str, str], allow_missing: bool = False) -> dict[str, Label] | None:
        """Take round ``round``'s labels of the pair ids of ``digests`` for training (``POST
        /v1/rounds/{round}/consume``): their aggregates now, after which the round's answers cannot change. None
        (nothing taken) when one of them has no label any more (a person took an answer back) and not
        ``allow_missing``."""
        body = ConsumeIn(pair_ids=list(digests), allow_missing=allow_missing)
        response = self.request("POST", f"/v1/rounds/{round}/consume", json=body.model_dump(mode="json"),
                                passed_statuses={409})
        if response.status_code == 409:
            logger.info("oracle: round %d: %s; waiting again", round, response.json().get("detail"))
            return None
        rows = LabelResponse.model_validate_json(response.content).labels
        return {row.pair_id: bound_label(row, digests) for row in rows if row.pair_id in digests}

    def wait_for_labels(self, digests: dict[str, str], round: int, allow_partial: bool = False) -> dict[str, Label]:
        """Poll ``GET /v1/labels`` for ``round`` until every pair id of ``digests`` (``{pair_id: text digest}``)
        has a label — the pair's majority label, written once its k annotators answered (a person's own answer,
        which carries their name, is not yet the pair's label) — or the deadline passes."""
        wanted = set(digests)
        found: dict[str, Label] = {}
        since: int | None = None
        deadline = time.monotonic() + self.human_timeout_s
        reported = -1
        with tqdm(total=len(wanted), desc=f"human labels (round {round})", disable=not self.progress) as bar:
            while True:
                params: dict[str, Any] = {"round": round, "limit": 1000}
                if since is not None:
                    params["since"] = since
                page = LabelsPage.model_validate_json(self.request("GET", "/v1/labels", params=params).content)
                for row in page.labels:
                    if row.pair_id in wanted and row.pair_id not in found and not row.annotator:
                        found[row.pair_id] = bound_label(row, digests)
                        bar.update(1)
                since = page.next_since
                if self.on_progress is not None and len(found) != reported:
                    reported = len(found)
                    self.on_progress(round, reported, len(wanted))
                if len(found) == len(wanted):
                    return found
                if page.labels:
                    continue  # more pages may be waiting
                if time.monotonic() >= deadline:
                    break
                time.sleep(self.poll_interval_s)
        missing = len(wanted) - len(found)
        if not allow_partial:
            raise OracleError(f"oracle: {missing} of {len(wanted)} pairs unlabelled after {self.human_timeout_s:.0f}s")
        logger.warning("oracle: %d of %d pairs unlabelled at the deadline; continuing", missing, len(wanted))
        return found

    def rewards(self, prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        """R(x, y) per (prompt, response) from the machine oracle (``POST /v1/reward``)."""
        if len(prompts) != len(responses):
            raise OracleError(f"oracle rewards: {len(prompts)} prompts but {len(responses)} responses")
        rewards: list[float] = []
        for start in range(0, len(prompts), self.batch_size):
            body = RewardRequest.model_validate({"items": [
                {"prompt": prompt, "response": response}
                for prompt, response in zip(prompts[start:start + self.batch_size],
                                            responses[start:start + self.batch_size], strict=True)]})
            answer = self.request("POST", "/v1/reward", json=body.model_dump(mode="json"))
            rewards += RewardResponse.model_validate_json(answer.content).rewards
        return rewards

    def agreement(self, round: int) -> AnnotationStats:
        """The annotators' agreement on ``round``'s pairs (``GET /v1/annotation/stats?round=R``; the run token may
        read it)."""
        response = self.request("GET", "/v1/annotation/stats", params={"round": round})
        return AnnotationStats.model_validate_json(response.content)
