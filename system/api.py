"""Request and response bodies of the oracle HTTP API, shared by the service and its client.

The service (``actors/oracle/ingress.py``) validates requests and publishes these models in its OpenAPI
schema (``/docs``); the client (:mod:`system.oracle_client`) builds its requests from them and parses
the answers with them, so both sides agree on one definition. Pure pydantic: no web framework imported.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from system.types import CandidatePair, Label

PAIR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$"
MAX_PAIRS_PER_REQUEST = 4096
MAX_STORED_INT = 2**31 - 1
"""Largest round, task id or ``seq`` the label store holds (its integer columns are 32-bit on PostgreSQL)."""


def _integral(value: Any) -> Any:
    """JSON Schema's ``integer`` takes any whole number, ``77.0`` included (never a boolean or a string)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]


def _encodable(value: str) -> str:
    """Text must be valid Unicode: a lone surrogate (``"\\ud800"`` in JSON) has no UTF-8 form to store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate code point)") from None
    return value


Str = Annotated[str, AfterValidator(_encodable)]
"""Request text: any string that is valid Unicode."""


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestBody(Body):
    """What clients send: strict types (``"round": false`` or ``"1"`` is refused, as the published schema says)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorOut(BaseModel):
    """Every error answer: ``detail`` is one line naming the field or the problem
    (e.g. ``body.pairs.0.response_1: Value error, empty``); a 422 also lists pydantic's ``errors``."""

    detail: str
    errors: list[dict[str, Any]] | None = None


class MessageIn(RequestBody):
    role: Str = Field(min_length=1)
    content: Str


NonBlank = Annotated[str, Field(pattern=r"\S", description="text with at least one non-whitespace character"),
                     AfterValidator(_encodable)]
"""Non-blank text, as a JSON-Schema ``pattern`` (unanchored search, as pydantic applies it), so the published
schema refuses exactly what the service refuses."""
Conversation = Annotated[list[MessageIn], Field(min_length=1)]


class PairIn(RequestBody):
    """One pair to judge: responses must be non-blank; ``pair_id`` is 1–128 URL-safe characters."""

    pair_id: str = Field(pattern=PAIR_ID_PATTERN)
    prompt: NonBlank | Conversation
    response_1: NonBlank
    response_2: NonBlank
    prompt_id: Str = ""

    def prompt_value(self) -> Any:
        return self.prompt if isinstance(self.prompt, str) else [message.model_dump() for message in self.prompt]

    @classmethod
    def from_pair(cls, pair: CandidatePair) -> PairIn:
        return cls.model_validate({"pair_id": pair.pair_id, "prompt_id": pair.prompt_id, "prompt": pair.prompt,
                                   "response_1": pair.response_1, "response_2": pair.response_2})

    def to_pair(self) -> CandidatePair:
        return CandidatePair(pair_id=self.pair_id, prompt_id=self.prompt_id, prompt=self.prompt_value(),
                             response_1=self.response_1, response_2=self.response_2)


class LabelRequest(RequestBody):
    """``pairs`` to label in ``round``; ``oracle``, when given, must name the oracle this service runs."""

    pairs: list[PairIn] = Field(min_length=1, max_length=MAX_PAIRS_PER_REQUEST)
    round: Integer = Field(0, ge=0, le=MAX_STORED_INT)
    oracle: Str | None = None

    def duplicate_ids(self) -> list[str]:
        """Pair ids given more than once (JSON Schema cannot say "unique by pair_id": the service answers 409)."""
        counts = Counter(pair.pair_id for pair in self.pairs)
        return [pair_id for pair_id, count in counts.items() if count > 1]


class LabelOut(Body):
    """A stored label (``seq`` is the store's row number, the paging cursor of ``GET /v1/labels``);
    ``text_digest`` is the SHA-256 of the texts it judged (:func:`~system.types.pair_text_digest`)."""

    seq: int
    pair_id: str
    round: int
    prompt: Any
    response_1: str
    response_2: str
    text_digest: str
    preferred: Literal[1, 2]
    prob_1: float
    oracle: str
    model_version: str
    annotator: str
    created_at: str
    answer_ms: int | None = None
    guidelines_digest: str = ""
    choice: str = Field("", description="1, 2, tie or both_bad (a person's answer or a pair's aggregate; for a "
                                        "machine verdict the preferred response)")
    strength: str = ""
    rationale: str = ""
    adjudicated_by: str = Field("", description="the reviewer whose final decision this aggregate is")

    def to_label(self) -> Label:
        return Label(pair_id=self.pair_id, preferred=self.preferred, prob_1=self.prob_1, oracle=self.oracle,
                     model_version=self.model_version, annotator=self.annotator,
                     choice=self.choice if self.choice in ("tie", "both_bad") else "")


class LabelResponse(Body):
    labels: list[LabelOut]


class QueuedResponse(Body):
    """Human oracle: the pairs were queued for annotators (HTTP 202)."""

    task_ids: list[int]
    pair_ids: list[str]


class LabelsPage(Body):
    labels: list[LabelOut]
    next_since: int | None


class RewardItem(RequestBody):
    prompt: Str | list[MessageIn]
    response: NonBlank

    def prompt_value(self) -> Any:
        return self.prompt if isinstance(self.prompt, str) else [message.model_dump() for message in self.prompt]


class RewardRequest(RequestBody):
    items: list[RewardItem] = Field(min_length=1, max_length=MAX_PAIRS_PER_REQUEST)


class RewardResponse(Body):
    rewards: list[float]
    model_version: str


class Progress(Body):
    """Tasks with their label (``done``) of all tasks (gold pairs left out); ``review``: waiting for a reviewer."""

    done: int
    total: int
    review: int = 0


class TaskOut(Body):
    """A task as shown to the asking annotator: ``response_1`` is whichever response they see first (the order is
    random per person and task); an answer's ``choice`` refers to this order. The ``*_html`` fields are the same
    texts rendered from Markdown as safe HTML (:mod:`system.labels.render`: no raw HTML, images or links)."""

    task_id: int
    pair_id: str
    round: int
    prompt: Any
    response_1: str
    response_2: str
    prompt_html: str
    response_1_html: str
    response_2_html: str


class Guidelines(Body):
    """The annotation guidelines as safe HTML, and the SHA-256 of their file (stored with every answer); both empty
    when ``oracle.human.guidelines_path`` is unset."""

    digest: str
    html: str


class NextTask(Body):
    task: TaskOut | None
    progress: Progress


MAX_RATIONALE_CHARS = 2000
Rationale = Annotated[str, Field(max_length=MAX_RATIONALE_CHARS), AfterValidator(_encodable)]


class Verdict(RequestBody):
    """What a person says about a pair: ``choice`` 1 or 2 (the response shown first or second), ``tie`` (equally
    good) or ``both_bad`` (neither acceptable); ``strength`` (how much better: only with 1 or 2) and ``rationale``
    (at most :data:`MAX_RATIONALE_CHARS` characters) are optional."""

    choice: Annotated[Literal[1, 2, "tie", "both_bad"], BeforeValidator(_integral)]
    strength: Literal["slightly", "clearly"] | None = None
    rationale: Rationale | None = None

    @model_validator(mode="after")
    def _strength_needs_a_winner(self) -> Verdict:
        if self.strength is not None and self.choice not in (1, 2):
            raise ValueError(f"strength: only an answer of 1 or 2 has a strength (got choice {self.choice!r})")
        return self


class AnswerIn(Verdict):
    """An annotator's answer (:class:`Verdict`), or ``skip``. Who answers is the bearer token's annotator: a body
    cannot name anyone. ``answer_ms``: how long the task was shown before the answer (the page measures it)."""

    choice: Annotated[Literal[1, 2, "tie", "both_bad", "skip"], BeforeValidator(_integral)]  # type: ignore[assignment]
    answer_ms: Integer | None = Field(None, ge=0, le=MAX_STORED_INT)

    @model_validator(mode="after")
    def _skip_is_bare(self) -> AnswerIn:
        if self.choice == "skip" and (self.strength is not None or self.rationale is not None):
            raise ValueError("skip: a skip carries no strength or rationale")
        return self


class RevisionIn(Verdict):
    """A changed answer (``PUT /v1/tasks/{id}/answer``); ``answer_ms`` as in :class:`AnswerIn`."""

    answer_ms: Integer | None = Field(None, ge=0, le=MAX_STORED_INT)


class DecisionIn(RequestBody):
    """A reviewer's final decision on a pair, about the pair's own response order (``response_1`` is 1)."""

    choice: Annotated[Literal[1, 2, "tie", "both_bad"], BeforeValidator(_integral)]
    rationale: Rationale | None = None


class ReviewAnswer(Body):
    """One person's answer, as a reviewer sees it (about the pair's own order)."""

    annotator: str
    choice: str
    strength: str
    rationale: str


class ReviewTask(Body):
    """A pair whose answers disagreed, in its own order, with every answer and their ``agreement`` (the share of
    the most common answer)."""

    task_id: int
    pair_id: str
    round: int
    prompt_html: str
    response_1_html: str
    response_2_html: str
    answers: list[ReviewAnswer]
    agreement: float


class ReviewNext(Body):
    task: ReviewTask | None
    waiting: int


class ConsumeIn(RequestBody):
    """The pairs whose labels training takes from a round (``POST /v1/rounds/{round}/consume``)."""

    pair_ids: list[Annotated[str, Field(pattern=PAIR_ID_PATTERN)]] = Field(max_length=MAX_PAIRS_PER_REQUEST)
    allow_missing: bool = Field(False, description="take the round even when some of pair_ids have no label (a "
                                                   "deadline passed); else such a call is a 409 and takes nothing")


class AnnotatorStats(Body):
    """One annotator's answers; against the majority of the others' answers on the same pairs (over the pairs where
    the others have a strict majority; null when there is none): the share equal to it and Cohen's κ with it (null
    also when both used one and the same choice only); and their median answer time."""

    name: str
    answers: int
    agreement_with_others: float | None
    kappa_with_others: float | None
    median_answer_ms: float | None
    gold_answers: int = 0
    gold_accuracy: float | None = None


class AnnotationStats(Body):
    """Agreement over ``pairs`` pairs with two or more answers: Krippendorff's α (nominal), Fleiss' κ, and the mean
    pairwise Cohen's κ of the annotators who shared at least one pair (each null when undefined); ``rounds``: the
    same for each round that has answers, in round order (empty when this is one round's)."""

    round: int | None
    pairs: int
    answers: int
    krippendorff_alpha: float | None
    fleiss_kappa: float | None
    mean_cohen_kappa: float | None
    annotators: list[AnnotatorStats]
    rounds: list[AnnotationStats]
    outcomes: dict[str, int] = Field(default_factory=dict, description="pairs per aggregate choice (1, 2, tie, "
                                     "both_bad): both-bad pairs train on nothing and are counted here")
    adjudicated: int = 0


class WhoAmI(Body):
    """The holder of a token: ``role`` ``admin`` (the run token, ``name`` empty), ``annotator`` or ``reviewer``."""

    name: str
    role: str


class AnswerOut(Body):
    label: LabelOut | None
    progress: Progress
