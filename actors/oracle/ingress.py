"""The HTTP face of the oracle: FastAPI routes on a Ray Serve ingress deployment.

Writes and label reads need the run token; fetching and answering tasks an annotator's own token (the answer is
attributed to its holder); ``/healthz``, ``/metrics`` and the annotator page's static files need none (the page
asks for the token and sends it with every API call). No CORS
middleware is installed, so browsers refuse cross-origin calls. Labels are written to the label
store before they are returned; a request for pairs already labelled by this oracle returns the
stored verdicts without judging again, which makes retried submits idempotent end to end.

This module must not use ``from __future__ import annotations``: ``serve.ingress`` rewrites each route's
signature, and FastAPI ≥ 0.137 re-analyses the rewritten signature, where a postponed (string) annotation
such as ``"LabelRequest"`` no longer resolves and the JSON body silently becomes a required query parameter.
"""

import asyncio
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParameter
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from actors.oracle.metrics import OracleMetrics
from actors.oracle.security import (
    BodySizeLimit,
    Principal,
    SecurityHeaders,
    authenticate,
    require_admin,
    require_annotator,
    require_person_reviewer,
    require_reviewer,
)
from system.api import (
    MAX_STORED_INT,
    AnnotationStats,
    AnswerIn,
    AnswerOut,
    ConsumeIn,
    DecisionIn,
    ErrorOut,
    Guidelines,
    LabelOut,
    LabelRequest,
    LabelResponse,
    LabelsPage,
    NextTask,
    Progress,
    QueuedResponse,
    ReviewAnswer,
    ReviewNext,
    ReviewTask,
    RevisionIn,
    RewardRequest,
    RewardResponse,
    TaskOut,
    WhoAmI,
)
from system.config import OracleConfig
from system.errors import (
    AnswerClosedError,
    LabelStoreError,
    NoAnswerError,
    OracleError,
    PairTextConflictError,
    TaskAnsweredError,
)
from system.labels import AnnotationTask, HumanQueue, LabelRecord, LabelStore
from system.labels.aggregate import Choice, agreement
from system.labels.annotators import AnnotatorRegistry
from system.labels.gold import GoldPair
from system.labels.render import render_text
from system.labels.stats import annotation_stats
from system.oracles import UnknownPairError
from system.types import CandidatePair

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_PAGE = 10_000

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    for status, description in [
        (400, "malformed JSON body"), (401, "missing or wrong bearer token"),
        (403, "the token's role may not use this route (the run token labels and reads labels, an annotator's "
              "token fetches and answers tasks)"),
        (404, "unknown pair or task"),
        (409, "schema-valid but not possible here: duplicate pair ids, a pair id stored with other texts, another "
              "oracle, no reward function, a task answered already, an answer of a round whose labels training "
              "consumed or of a pair a reviewer decided"),
        (413, "request body too large, or more items than oracle.max_pairs_per_request"),
        (422, "invalid request: `detail` names the first bad field"),
    ]
}
"""Published for every route (replacing FastAPI's default 422 schema), so clients generated from the OpenAPI
document can parse every error this service sends."""

app = FastAPI(
    title="activealign oracle",
    version="1",
    description="Preference labels from machine oracles and human annotators, stored durably.",
    responses=ERROR_RESPONSES,
)
app.add_middleware(BodySizeLimit)
app.add_middleware(SecurityHeaders)
app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


@dataclass(frozen=True)
class Settings:
    token: str
    max_request_bytes: int
    max_pairs_per_request: int

    def check_count(self, field: str, count: int) -> None:
        """413 when a request carries more items than ``oracle.max_pairs_per_request``."""
        if count > self.max_pairs_per_request:
            raise HTTPException(413, f"body.{field}: {count} items; oracle.max_pairs_per_request="
                                     f"{self.max_pairs_per_request}")


def _printable(value: Any) -> Any:
    """``value`` made safe to send as JSON: lone surrogates escaped (``\\ud800``), NaN and ±inf as strings."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(item) for item in value]
    return value


@app.exception_handler(RequestValidationError)
async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 whose ``detail`` names the first bad field, e.g. ``body.pairs.0.response_1: Value error, empty``, with
    pydantic's ``errors`` (each bad ``input`` echoed as far as JSON can carry it). More items than the schema's
    ``maxItems`` (4,096) is such a 422: the published schema says so; the configurable, lower
    ``oracle.max_pairs_per_request`` answers 413."""
    errors = _printable(jsonable_encoder(exc.errors()))
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return JSONResponse({"detail": f"{where}: {first['msg']}", "errors": errors}, 422)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's error answer, except that a 405's ``Allow`` lists the methods of every route on the path (one
    path may have several routes, e.g. ``POST|PUT|DELETE /v1/tasks/{task_id}/answer``; Starlette names only the
    first route's)."""
    if exc.status_code == 405:
        allowed = {method for route in app.router.routes if route.matches(request.scope)[0] != Match.NONE
                   for method in getattr(route, "methods", None) or ()}
        exc = StarletteHTTPException(405, exc.detail, {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed))})
    return await http_exception_handler(request, exc)


def label_out(record: LabelRecord) -> LabelOut:
    return LabelOut.model_validate(record.to_json())


@contextmanager
def answer_errors() -> Iterator[None]:
    """The queue's refusals as HTTP errors: 409 for an answer that cannot be given or changed any more, 404 for an
    unknown task or an answer never given."""
    try:
        yield
    except (TaskAnsweredError, AnswerClosedError) as exc:
        raise HTTPException(409, f"task_id: {exc}") from None
    except (NoAnswerError, LabelStoreError) as exc:
        raise HTTPException(404, f"task_id: {exc}") from None


@serve.deployment(name="OracleIngress")
@serve.ingress(app)
class OracleIngress:
    """Routes of the oracle API. One replica: it is the single writer of the (SQLite) label store."""

    def __init__(self, oracle_cfg: OracleConfig, store_url: str, token: str, judge: DeploymentHandle | None,
                 guidelines: Guidelines, gold: list[GoldPair]) -> None:
        app.state.settings = Settings(token=token, max_request_bytes=oracle_cfg.max_request_bytes,
                                      max_pairs_per_request=oracle_cfg.max_pairs_per_request)
        self.kind = oracle_cfg.kind
        self.max_batch_size = oracle_cfg.max_batch_size
        self.store = LabelStore(store_url)
        human = oracle_cfg.human
        self.queue = HumanQueue(self.store, human.annotations_per_pair, human.aggregation, human.adjudicate_below,
                                human.gold_rate, human.reservation_s)
        self.queue.enqueue_gold(gold)
        app.state.annotators = AnnotatorRegistry(self.store)
        self.guidelines = guidelines
        self.judge = judge
        self.metrics = OracleMetrics()

    def _timed(self, endpoint: str, started: float, status: int) -> None:
        self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - started)
        self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()

    @app.get("/healthz")
    def healthz(self) -> dict[str, str]:
        return {"status": "ok", "oracle": self.kind}

    @app.get("/metrics", response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    def metrics(self) -> Response:
        done, total = self.queue.progress()
        body = self.metrics.render(self.store.counts_by_oracle(), total - done)
        return Response(body, media_type="text/plain; version=0.0.4")

    @app.post(
        "/v1/label", response_model=LabelResponse | QueuedResponse, dependencies=[Depends(require_admin)],
        responses={202: {"model": QueuedResponse}, 404: {"description": "unknown pair_id (replay oracle)"}},
    )
    async def label(self, body: LabelRequest, response: Response) -> LabelResponse | QueuedResponse:
        """Label pairs (machine oracles) or queue them for annotators (human oracle, HTTP 202)."""
        started = time.perf_counter()
        if body.oracle is not None and body.oracle != self.kind:
            raise HTTPException(409, f"body.oracle: unknown oracle {body.oracle!r} (this service runs {self.kind!r})")
        app.state.settings.check_count("pairs", len(body.pairs))
        if duplicates := body.duplicate_ids():
            raise HTTPException(409, f"body.pairs: duplicate pair_id {duplicates[0]!r}")
        pairs = [pair.to_pair() for pair in body.pairs]
        try:
            if self.judge is None:
                task_ids = await asyncio.to_thread(self.queue.enqueue, pairs, body.round)
                response.status_code = 202
                self._timed("label", started, 202)
                return QueuedResponse(task_ids=task_ids, pair_ids=[pair.pair_id for pair in pairs])
            records = await self._judge_and_store(pairs, body.round)
        except PairTextConflictError as exc:
            self._timed("label", started, 409)
            raise HTTPException(409, f"body.pairs: {exc}") from None
        self._timed("label", started, 200)
        return LabelResponse(labels=[label_out(record) for record in records])

    async def _judge_and_store(self, pairs: list[CandidatePair], round: int) -> list[LabelRecord]:
        """Stored verdicts for pairs judged before (same texts: a pair id stored with others is refused before
        anything is judged), the judge's for the rest, written to the store first."""
        assert self.judge is not None
        await asyncio.to_thread(self.store.check_texts, pairs)
        keys = [(pair.pair_id, self.kind, "") for pair in pairs]
        stored = {record.pair_id: record for record in await asyncio.to_thread(self.store.find, keys)}
        todo = [pair for pair in pairs if pair.pair_id not in stored]
        judged = await asyncio.gather(*(self.judge.judge.remote(pair) for pair in todo))
        unknown = [pair.pair_id for pair, (verdict, _) in zip(todo, judged, strict=True)
                   if isinstance(verdict, UnknownPairError)]
        if unknown:
            raise HTTPException(404, str(UnknownPairError(unknown)))
        for _, batch_size in judged:
            self.metrics.batch_size.labels(method="judge").observe(batch_size)
        new_labels = [verdict for verdict, _ in judged]
        await asyncio.to_thread(self.store.put, new_labels, todo, round)  # type: ignore[arg-type]
        found = {record.pair_id: record for record in await asyncio.to_thread(self.store.find, keys)}
        return [found[pair.pair_id] for pair in pairs]

    @app.post("/v1/reward", response_model=RewardResponse, dependencies=[Depends(require_admin)])
    async def reward(self, body: RewardRequest) -> RewardResponse:
        """R(x, y) of each item under the machine oracle (for evaluation)."""
        started = time.perf_counter()
        app.state.settings.check_count("items", len(body.items))
        if self.judge is None:
            raise HTTPException(409, "oracle.kind 'human' has no reward function")
        items = [(item.prompt_value(), item.response) for item in body.items]
        size = self.max_batch_size
        results = await asyncio.gather(*(self.judge.reward.remote(items[start:start + size])
                                         for start in range(0, len(items), size)))
        rewards: list[float] = []
        for values, batch_size in results:
            if isinstance(values, OracleError):
                raise HTTPException(409, str(values))
            for _ in values:
                self.metrics.batch_size.labels(method="reward").observe(batch_size)
            rewards.extend(values)
        version = await self.judge.model_version.remote()
        self._timed("reward", started, 200)
        return RewardResponse(rewards=rewards, model_version=version)

    @app.get("/v1/labels", response_model=LabelsPage, dependencies=[Depends(require_admin)])
    def labels(
        self,
        since: int | None = Query(None, ge=0, le=MAX_STORED_INT,
                                  description="Only labels with seq > since (the previous next_since)."),
        round: int | None = Query(None, ge=0, le=MAX_STORED_INT),
        limit: int = Query(1000, ge=1, le=MAX_PAGE),
    ) -> LabelsPage:
        """Stored labels in insertion order, a page at a time."""
        records = self.store.labels(round=round, since=since, limit=limit)
        next_since = records[-1].seq if records else since
        return LabelsPage(labels=[label_out(record) for record in records], next_since=next_since)

    def _progress(self) -> Progress:
        done, total = self.queue.progress()
        return Progress(done=done, total=total, review=self.queue.waiting_for_review())

    @staticmethod
    def _task_out(task: AnnotationTask, name: str) -> TaskOut:
        """``task`` in the order ``name`` sees it: their answer's 1 means the first shown."""
        first, second = task.shown_to(name)
        return TaskOut(task_id=task.task_id, pair_id=task.pair_id, round=task.round, prompt=task.prompt,
                       response_1=first, response_2=second, prompt_html=render_text(task.prompt),
                       response_1_html=render_text(first), response_2_html=render_text(second))

    @app.get("/v1/whoami", response_model=WhoAmI)
    def whoami(self, principal: Principal = Depends(authenticate)) -> WhoAmI:
        """Who the token belongs to (the page shows it): ``admin`` for the run token, else the annotator."""
        return WhoAmI(name=principal.name, role=principal.role)

    @app.get("/v1/tasks/next", response_model=NextTask)
    def next_task(self, principal: Principal = Depends(require_annotator)) -> NextTask:
        """The token holder's next pair (``task`` is null when nothing is left for them): never one they answered."""
        task = self.queue.next_task(principal.name)
        task_out = None if task is None else self._task_out(task, principal.name)
        return NextTask(task=task_out, progress=self._progress())

    @app.post("/v1/tasks/{task_id}/answer", response_model=AnswerOut)
    def answer(self, body: AnswerIn, task_id: int = PathParameter(ge=0, le=MAX_STORED_INT),
               principal: Principal = Depends(require_annotator)) -> AnswerOut:
        """Record the token's annotator's answer: 1 or 2 (the response shown first or second), "tie", "both_bad"
        or "skip", with an optional strength and rationale; a task answered already is a 409."""
        with answer_errors():
            record = self.queue.answer(task_id, body.choice, principal.name, body.answer_ms, self.guidelines.digest,
                                       body.strength or "", body.rationale or "")
        return AnswerOut(label=None if record is None else label_out(record), progress=self._progress())

    @app.put("/v1/tasks/{task_id}/answer", response_model=AnswerOut)
    def revise(self, body: RevisionIn, task_id: int = PathParameter(ge=0, le=MAX_STORED_INT),
               principal: Principal = Depends(require_annotator)) -> AnswerOut:
        """Change the token's annotator's answer to a task; 409 once the round's labels were consumed by training
        (``POST /v1/rounds/{round}/consume``) or a reviewer decided the pair, 404 when they never answered it."""
        with answer_errors():
            record = self.queue.revise(task_id, body.choice, principal.name, body.answer_ms, self.guidelines.digest,
                                       body.strength or "", body.rationale or "")
        return AnswerOut(label=None if record is None else label_out(record), progress=self._progress())

    @app.delete("/v1/tasks/{task_id}/answer", response_model=NextTask)
    def withdraw(self, task_id: int = PathParameter(ge=0, le=MAX_STORED_INT),
                 principal: Principal = Depends(require_annotator)) -> NextTask:
        """Take back (undo) the token's annotator's answer; returns the task, theirs to answer again. 409 and 404
        as for a change."""
        with answer_errors():
            task = self.queue.withdraw(task_id, principal.name)
        return NextTask(task=self._task_out(task, principal.name), progress=self._progress())

    @app.get("/v1/review/next", response_model=ReviewNext)
    def review_next(self, principal: Principal = Depends(require_person_reviewer)) -> ReviewNext:
        """The oldest pair whose answers agree less than ``oracle.human.adjudicate_below``, with every answer (in
        the pair's own order); ``task`` is null when none waits."""
        found = self.queue.review_next()
        review = None
        if found is not None:
            task, answers = found
            review = ReviewTask(
                task_id=task.task_id, pair_id=task.pair_id, round=task.round, prompt_html=render_text(task.prompt),
                response_1_html=render_text(task.response_1), response_2_html=render_text(task.response_2),
                answers=[ReviewAnswer(annotator=r.annotator, choice=r.decision, strength=r.strength,
                                      rationale=r.rationale) for r in answers],
                agreement=agreement([r.decision for r in answers]),
            )
        return ReviewNext(task=review, waiting=self.queue.waiting_for_review())

    @app.post("/v1/review/{task_id}/decision", response_model=LabelOut)
    def decide(self, body: DecisionIn, task_id: int = PathParameter(ge=0, le=MAX_STORED_INT),
               principal: Principal = Depends(require_person_reviewer)) -> LabelOut:
        """A reviewer's final decision on a pair waiting for review: it becomes the pair's label, recorded with the
        reviewer's name (``adjudicated_by``); 409 when the pair is not waiting for review."""
        with answer_errors():
            record = self.queue.adjudicate(task_id, cast(Choice, str(body.choice)), principal.name,
                                           body.rationale or "")
        return label_out(record)

    @app.post("/v1/rounds/{round}/consume", response_model=LabelResponse, dependencies=[Depends(require_admin)])
    def consume(self, body: ConsumeIn, round: int = PathParameter(ge=0, le=MAX_STORED_INT)) -> LabelResponse:
        """Training takes the round's labels: the aggregates of ``pair_ids`` as they stand now. From here on the
        round's answers are final (changes get 409) and its unanswered tasks are no longer handed out. 409 (and
        nothing taken) when one of ``pair_ids`` has no label, unless ``allow_missing``."""
        try:
            records = self.queue.consume(round, body.pair_ids, body.allow_missing)
        except AnswerClosedError as exc:
            raise HTTPException(409, f"body.pair_ids: {exc}") from None
        return LabelResponse(labels=[label_out(record) for record in records])

    @app.get("/v1/guidelines", response_model=Guidelines, dependencies=[Depends(authenticate)])
    def guidelines(self) -> Guidelines:
        """The annotation guidelines (``oracle.human.guidelines_path``) as safe HTML, with their digest."""
        return self.guidelines

    @app.get("/v1/annotation/stats", response_model=AnnotationStats, dependencies=[Depends(require_reviewer)])
    def annotation_stats(self, round: int | None = Query(None, ge=0, le=MAX_STORED_INT)) -> AnnotationStats:
        """Agreement of the annotators (all rounds with each round's beside them, or one round): Krippendorff's α,
        Fleiss' κ and the mean pairwise Cohen's κ over every pair with two or more answers, and each annotator's
        answers, agreement and Cohen's κ with the others' majority, and median answer time."""
        return annotation_stats(self.store, round)

    @app.get("/annotate/stats", include_in_schema=False)
    def stats_page(self) -> FileResponse:
        """The agreement page for reviewers (static; its data come from ``GET /v1/annotation/stats``, which needs a
        reviewer's token or the run token)."""
        return FileResponse(STATIC_DIR / "stats.html")

    @app.get("/", include_in_schema=False)
    @app.get("/annotate", include_in_schema=False)
    def annotate(self) -> FileResponse:
        """The annotator page (static HTML/JS/CSS from this package; no external resources)."""
        return FileResponse(STATIC_DIR / "annotate.html")

