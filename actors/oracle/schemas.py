"""Request and response bodies of the oracle HTTP API (validated by FastAPI; shown in /docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PAIR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$"
MAX_PAIRS_PER_REQUEST = 4096


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageIn(Body):
    role: str = Field(min_length=1)
    content: str


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("empty")
    return value


def _prompt_not_blank(value: str | list[MessageIn]) -> str | list[MessageIn]:
    if isinstance(value, str):
        return _not_blank(value)
    if not value:
        raise ValueError("empty conversation")
    return value


class PairIn(Body):
    """One pair to judge: responses must be non-blank; ``pair_id`` is 1–128 URL-safe characters."""

    pair_id: str = Field(pattern=PAIR_ID_PATTERN)
    prompt: str | list[MessageIn]
    response_1: str
    response_2: str
    prompt_id: str = ""

    _responses = field_validator("response_1", "response_2")(_not_blank)
    _prompt = field_validator("prompt")(_prompt_not_blank)

    def prompt_value(self) -> Any:
        return self.prompt if isinstance(self.prompt, str) else [message.model_dump() for message in self.prompt]


class LabelRequest(Body):
    """``pairs`` to label in ``round``; ``oracle``, when given, must name the oracle this service runs."""

    pairs: list[PairIn] = Field(min_length=1, max_length=MAX_PAIRS_PER_REQUEST)
    round: int = Field(0, ge=0)
    oracle: str | None = None

    @model_validator(mode="after")
    def _unique_ids(self) -> LabelRequest:
        seen: set[str] = set()
        for pair in self.pairs:
            if pair.pair_id in seen:
                raise ValueError(f"duplicate pair_id {pair.pair_id!r}")
            seen.add(pair.pair_id)
        return self


class LabelOut(Body):
    """A stored label (``seq`` is the store's row number, the paging cursor of ``GET /v1/labels``)."""

    seq: int
    pair_id: str
    round: int
    prompt: Any
    response_1: str
    response_2: str
    preferred: Literal[1, 2]
    prob_1: float
    oracle: str
    model_version: str
    annotator: str
    created_at: str


class LabelResponse(Body):
    labels: list[LabelOut]


class QueuedResponse(Body):
    """Human oracle: the pairs were queued for annotators (HTTP 202)."""

    task_ids: list[int]
    pair_ids: list[str]


class LabelsPage(Body):
    labels: list[LabelOut]
    next_since: int | None


class RewardItem(Body):
    prompt: str | list[MessageIn]
    response: str

    _response = field_validator("response")(_not_blank)

    def prompt_value(self) -> Any:
        return self.prompt if isinstance(self.prompt, str) else [message.model_dump() for message in self.prompt]


class RewardRequest(Body):
    items: list[RewardItem] = Field(min_length=1, max_length=MAX_PAIRS_PER_REQUEST)


class RewardResponse(Body):
    rewards: list[float]
    model_version: str


class Progress(Body):
    done: int
    total: int


class TaskOut(Body):
    task_id: int
    pair_id: str
    round: int
    prompt: Any
    response_1: str
    response_2: str


class NextTask(Body):
    task: TaskOut | None
    progress: Progress


class AnswerIn(Body):
    choice: Literal[1, 2, "skip"]
    annotator: str = Field("annotator", min_length=1, max_length=128)


class AnswerOut(Body):
    label: LabelOut | None
    progress: Progress
