"""The human-annotation queue: pairs wait in ``tasks`` until a person answers 1, 2 or skip.

Enqueueing is idempotent per pair_id; a pair id already stored with other texts is refused
(:class:`~system.errors.PairTextConflictError`), so a re-queued id never hands out the old task for new texts.
The next task is the pending one skipped least often, then oldest, so a skip moves a task behind the others
without losing it. An answer is stored as a label row (``oracle="human"``, ``prob_1`` = 1 or 0, ``annotator``
the answering person, ``answer_ms`` the time they took); a person answers a task once, and a task takes k
answers (``oracle.human.annotations_per_pair``), after which it is closed and its majority label written
(:class:`HumanQueue`): further answers are refused (:class:`~system.errors.TaskAnsweredError`), never stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError

from system.errors import LabelStoreError, TaskAnsweredError
from system.labels.migrate import lock_store
from system.labels.schema import labels_table, tasks_table
from system.labels.store import (
    HUMAN,
    LabelRecord,
    LabelStore,
    check_bound_texts,
    decode_text,
    encode_text,
    insert_ignoring_duplicates,
)
from system.types import CandidatePair, Label, Text

HUMAN_ORACLE = HUMAN


@dataclass(frozen=True)
class AnnotationTask:
    """A pair waiting for (or answered by) a person."""

    task_id: int
    pair_id: str
    round: int
    prompt: Text
    response_1: str
    response_2: str
    status: str

    @property
    def pair(self) -> CandidatePair:
        return CandidatePair(
            pair_id=self.pair_id, prompt_id="", prompt=self.prompt, response_1=self.response_1,
            response_2=self.response_2,
        )

    def shown_to(self, annotator: str) -> tuple[str, str]:
        """The two responses in the order ``annotator`` sees them (see :func:`swapped_for`)."""
        if swapped_for(annotator, self.task_id):
            return self.response_2, self.response_1
        return self.response_1, self.response_2


def swapped_for(annotator: str, task_id: int) -> bool:
    """Whether ``annotator`` sees task ``task_id``'s responses swapped: one bit of SHA-256(task id, name), so each
    person's left/right order is random across tasks, differs between people, and needs no stored state. A
    person who favours the left (or first) side then spreads that bias evenly over the stored responses 1 and 2."""
    return bool(hashlib.sha256(f"{task_id}:{annotator}".encode("utf-8", "surrogatepass")).digest()[0] & 1)


def _task(row: Any) -> AnnotationTask:
    return AnnotationTask(
        task_id=row.task_id, pair_id=row.pair_id, round=row.round, prompt=decode_text(row.prompt),
        response_1=row.response_1, response_2=row.response_2, status=row.status,
    )


def majority_label(pair_id: str, votes: Sequence[int]) -> Label:
    """The label of a pair from its annotators' votes (1 or 2, an odd number of them): ``prob_1`` is the share of
    votes for response 1, ``preferred`` the majority; ``annotator`` is empty, which marks an aggregate."""
    prob_1 = sum(vote == 1 for vote in votes) / len(votes)
    return Label(pair_id=pair_id, preferred=1 if prob_1 > 0.5 else 2, prob_1=prob_1, oracle=HUMAN_ORACLE)


class HumanQueue:
    """Task queue stored beside the labels of ``store`` (same database).

    Each task takes ``annotations_per_pair`` (k, odd) answers from different annotators, who do not see each
    other's answers. The k-th answer closes the task and writes the pair's label: :func:`majority_label` of the
    answers, with an empty ``annotator`` — the one row the loop and the exports train on; each person's answer is
    kept beside it under their name.
    """

    def __init__(self, store: LabelStore, annotations_per_pair: int = 1) -> None:
        self.store = store
        self.annotations_per_pair = annotations_per_pair

    def enqueue(self, pairs: Sequence[CandidatePair], round: int) -> list[int]:
        """Add pairs (already queued pair_ids are kept as they are); returns their task ids in input order.

        Raises:
            PairTextConflictError: a pair id is stored (queued or labelled) with other texts; nothing is queued.
        """
        now = datetime.now(timezone.utc)
        rows = [
            {"pair_id": pair.pair_id, "round": round, "prompt": encode_text(pair.prompt),
             "response_1": pair.response_1, "response_2": pair.response_2, "text_digest": pair.text_digest,
             "status": "pending", "created_at": now}
            for pair in pairs
        ]
        if not rows:
            return []
        try:
            with self.store.engine.begin() as connection:
                lock_store(connection)
                check_bound_texts(connection, pairs)
                connection.execute(insert_ignoring_duplicates(self.store.engine, tasks_table), rows)
                found = connection.execute(
                    select(tasks_table.c.pair_id, tasks_table.c.task_id)
                    .where(tasks_table.c.pair_id.in_([pair.pair_id for pair in pairs]))
                )
                ids: dict[str, int] = {row.pair_id: row.task_id for row in found}
        except SQLAlchemyError as exc:
            raise LabelStoreError(f"label store {self.store.url}: enqueue failed ({exc.__class__.__name__})") from exc
        return [int(ids[pair.pair_id]) for pair in pairs]

    def next_task(self, annotator: str = "") -> AnnotationTask | None:
        """The next pending task for ``annotator``: never one they answered; pairs closest to their k answers first
        (finish pairs before starting new ones), then the least skipped, then the oldest. None when nothing is left
        for them."""
        human = (labels_table.c.pair_id == tasks_table.c.pair_id) & (labels_table.c.oracle == HUMAN_ORACLE)
        answers = (select(func.count()).select_from(labels_table)
                   .where(human & (labels_table.c.annotator != "")).scalar_subquery())
        theirs = select(labels_table.c.seq).where(human & (labels_table.c.annotator == annotator)).exists()
        query = (
            select(tasks_table).where((tasks_table.c.status == "pending") & ~theirs)
            .order_by(answers.desc(), tasks_table.c.skips, tasks_table.c.task_id).limit(1)
        )
        with self.store.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _task(row)

    def task(self, task_id: int) -> AnnotationTask | None:
        with self.store.engine.connect() as connection:
            row = connection.execute(select(tasks_table).where(tasks_table.c.task_id == task_id)).first()
        return None if row is None else _task(row)

    def progress(self) -> tuple[int, int]:
        """(tasks with all their answers, all tasks)."""
        query = select(tasks_table.c.status, func.count()).group_by(tasks_table.c.status)
        with self.store.engine.connect() as connection:
            counts: dict[str, int] = {status: count for status, count in connection.execute(query)}
        return int(counts.get("done", 0)), int(sum(counts.values()))

    def answer(
        self, task_id: int, choice: Literal[1, 2, "skip"], annotator: str, answer_ms: int | None = None,
        guidelines_digest: str = "",
    ) -> LabelRecord | None:
        """Record ``annotator``'s answer; returns their stored answer (None for a skip).

        ``guidelines_digest`` names the guidelines they were shown. ``choice`` names a response as shown to
        ``annotator`` (:meth:`AnnotationTask.shown_to`): 1 is the one shown
        first. It is stored de-randomised, as the pair's response 1 or 2.

        The answer, and with the k-th answer the pair's majority label and the task's ``done``, are written in one
        transaction under the store's write lock, so racing answers never store more than k.

        Raises:
            LabelStoreError: no task ``task_id``.
            TaskAnsweredError: the task has its k answers, or ``annotator`` answered it already.
        """
        task = self.task(task_id)
        if task is None:
            raise LabelStoreError(f"task_id {task_id}: no such task")
        try:
            with self.store.engine.begin() as connection:
                lock_store(connection)
                status = connection.execute(
                    select(tasks_table.c.status).where(tasks_table.c.task_id == task_id)).scalar_one()
                votes: dict[str, int] = {row.annotator: row.preferred for row in connection.execute(
                    select(labels_table.c.annotator, labels_table.c.preferred).where(
                        (labels_table.c.pair_id == task.pair_id) & (labels_table.c.oracle == HUMAN_ORACLE)
                        & (labels_table.c.annotator != "")))}
                if status == "done":
                    raise TaskAnsweredError(task_id, task.pair_id)
                if annotator in votes:
                    raise TaskAnsweredError(task_id, task.pair_id, by=annotator)
                if choice == "skip":
                    connection.execute(update(tasks_table).where(tasks_table.c.task_id == task_id)
                                       .values(skips=tasks_table.c.skips + 1))
                    return None
                preferred: Literal[1, 2] = (2 if choice == 1 else 1) if swapped_for(annotator, task_id) else choice
                answer = Label(pair_id=task.pair_id, preferred=preferred, prob_1=1.0 if preferred == 1 else 0.0,
                               oracle=HUMAN_ORACLE, annotator=annotator)
                self.store.insert(connection, [answer], [task.pair], round=task.round, answer_ms=answer_ms,
                                  guidelines_digest=guidelines_digest)
                votes[annotator] = preferred
                if len(votes) >= self.annotations_per_pair:
                    aggregate = majority_label(task.pair_id, list(votes.values()))
                    self.store.insert(connection, [aggregate], [task.pair], round=task.round)
                    connection.execute(update(tasks_table).where(tasks_table.c.task_id == task_id)
                                       .values(status="done"))
        except SQLAlchemyError as exc:
            raise LabelStoreError(f"label store {self.store.url}: answer failed ({exc.__class__.__name__})") from exc
        return self.store.find([(task.pair_id, HUMAN_ORACLE, annotator)])[0]
