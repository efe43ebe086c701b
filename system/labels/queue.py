"""The human-annotation queue: pairs wait in ``tasks`` until k people answer, then take one aggregate label.

Enqueueing is idempotent per pair_id; a pair id already stored with other texts is refused
(:class:`~system.errors.PairTextConflictError`), so a re-queued id never hands out the old task for new texts.
The next task for a person is never one they answered: pairs closest to their k answers first, then the least
skipped, then the oldest, so a skip moves a task behind the others without losing it; every ``1/gold_rate``-th
task is a gold pair when gold pairs are loaded (:meth:`HumanQueue.enqueue_gold`). Handing a task out reserves one
of its k places for that person for ``reservation_s`` seconds (their answer, skip or next task ends it): a task
with k answers and live reservations of others is not handed out, so people asking at once get different pairs
instead of all answering the last place of one, and the same person asking again (a reload) gets the same pair.

An answer is ``1``, ``2`` (the response shown first or second), ``tie``, ``both_bad`` or ``skip``, with an optional
strength and rationale. It is stored de-randomised as a label row (``oracle="human"``, ``annotator`` the person,
``choice`` about the pair's own response order). When a task has its k answers (``oracle.human.annotations_per_pair``)
it is closed: if its answers agree less than ``oracle.human.adjudicate_below`` (the share of the most common answer)
it waits for a reviewer (status ``review``), else its aggregate (:mod:`system.labels.aggregate`) is written as the
pair's label, the row with an empty ``annotator`` that the loop waits for. A reviewer's decision is final.

A person may change (:meth:`HumanQueue.revise`) or take back (:meth:`HumanQueue.withdraw`) their answers until the
round's labels are consumed by training — the loop's client takes them with :meth:`HumanQueue.consume`, which
marks the round in ``rounds`` — or a reviewer decided the pair; every change re-settles the task (a withdrawn
answer reopens it). Every write runs in one transaction under the store's write lock, so racing answers never
store more than k.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from sqlalchemy import Connection, and_, delete, func, insert, literal, select, update
from sqlalchemy.exc import SQLAlchemyError

from system.errors import AnswerClosedError, LabelStoreError, NoAnswerError, TaskAnsweredError
from system.labels.aggregate import CHOICE_PROB_1, Aggregate, Aggregation, Choice, aggregate, agreement
from system.labels.migrate import lock_store
from system.labels.schema import (
    adjudications_table,
    gold_answers_table,
    labels_table,
    reservations_table,
    rounds_table,
    tasks_table,
)
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
ShownChoice = Literal[1, 2, "tie", "both_bad", "skip"]
"""An answer as the person gave it: 1 and 2 name the responses in the order shown to them."""


@dataclass(frozen=True)
class AnnotationTask:
    """A pair waiting for (or answered by) people; ``gold`` is a gold pair's known answer ("" otherwise)."""

    task_id: int
    pair_id: str
    round: int
    prompt: Text
    response_1: str
    response_2: str
    status: str
    gold: str = ""

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


@dataclass(frozen=True)
class Answer:
    """One person's answer to a task, about the pair's own response order."""

    annotator: str
    choice: Choice
    strength: str = ""
    rationale: str = ""


def swapped_for(annotator: str, task_id: int) -> bool:
    """Whether ``annotator`` sees task ``task_id``'s responses swapped: one bit of SHA-256(task id, name), so each
    person's left/right order is random across tasks, differs between people, and needs no stored state. A
    person who favours the left (or first) side then spreads that bias evenly over the stored responses 1 and 2."""
    return bool(hashlib.sha256(f"{task_id}:{annotator}".encode("utf-8", "surrogatepass")).digest()[0] & 1)


def stored_choice(choice: ShownChoice, annotator: str, task_id: int) -> Choice:
    """``choice`` as ``annotator`` gave it (1 = the response shown first) about the pair's own order."""
    if choice in ("tie", "both_bad"):
        return choice  # type: ignore[return-value]
    if swapped_for(annotator, task_id):
        return "2" if choice == 1 else "1"
    return "1" if choice == 1 else "2"


def _task(row: Any) -> AnnotationTask:
    return AnnotationTask(
        task_id=row.task_id, pair_id=row.pair_id, round=row.round, prompt=decode_text(row.prompt),
        response_1=row.response_1, response_2=row.response_2, status=row.status, gold=row.gold,
    )


def _label(pair_id: str, choice: Choice, prob_1: float, annotator: str = "") -> Label:
    """A stored row for ``choice``: ``preferred`` 1 or 2, ``choice`` kept where it is not a preference."""
    return Label(pair_id=pair_id, preferred=2 if choice == "2" else 1, prob_1=prob_1, oracle=HUMAN_ORACLE,
                 annotator=annotator, choice="" if choice in ("1", "2") else choice)


HUMAN_ROWS = labels_table.c.oracle == HUMAN_ORACLE
ANSWER_ROWS = HUMAN_ROWS & (labels_table.c.annotator != "")


class HumanQueue:
    """Task queue stored beside the labels of ``store`` (same database).

    Args:
        store: the label store.
        annotations_per_pair: k, the answers a pair takes from different people (odd).
        aggregation: ``majority`` or ``dawid_skene`` (:mod:`system.labels.aggregate`).
        adjudicate_below: a closed task whose answers agree less than this (share of the most common answer)
            waits for a reviewer; 0 sends none.
        gold_rate: the share of a person's tasks that are gold pairs (when gold pairs are queued).
        reservation_s: how long a handed-out task holds one of its k places for its person.
    """

    def __init__(self, store: LabelStore, annotations_per_pair: int = 1, aggregation: Aggregation = "majority",
                 adjudicate_below: float = 0.0, gold_rate: float = 0.0, reservation_s: float = 300.0) -> None:
        self.store = store
        self.annotations_per_pair = annotations_per_pair
        self.aggregation: Aggregation = aggregation
        self.adjudicate_below = adjudicate_below
        self.gold_rate = gold_rate
        self.reservation_s = reservation_s

    @contextmanager
    def _write(self, what: str) -> Iterator[Connection]:
        """A transaction under the store's write lock; its SQLAlchemy errors become :class:`LabelStoreError`
        naming the store and ``what`` was being done."""
        try:
            with self.store.engine.begin() as connection:
                lock_store(connection)
                yield connection
        except SQLAlchemyError as exc:
            raise LabelStoreError(f"label store {self.store.url}: {what} failed ({exc.__class__.__name__})") from exc

    def enqueue(self, pairs: Sequence[CandidatePair], round: int, gold: Sequence[str] | None = None) -> list[int]:
        """Add pairs (already queued pair_ids are kept as they are); returns their task ids in input order.
        ``gold`` gives each pair's known answer (gold pairs, see :meth:`enqueue_gold`).

        Raises:
            PairTextConflictError: a pair id is stored (queued or labelled) with other texts; nothing is queued.
        """
        now = datetime.now(timezone.utc)
        rows = [
            {"pair_id": pair.pair_id, "round": round, "prompt": encode_text(pair.prompt),
             "response_1": pair.response_1, "response_2": pair.response_2, "text_digest": pair.text_digest,
             "status": "pending", "created_at": now, "gold": gold[i] if gold else ""}
            for i, pair in enumerate(pairs)
        ]
        if not rows:
            return []
        with self._write("enqueue") as connection:
            check_bound_texts(connection, pairs)
            connection.execute(insert_ignoring_duplicates(self.store.engine, tasks_table), rows)
            found = connection.execute(
                select(tasks_table.c.pair_id, tasks_table.c.task_id)
                .where(tasks_table.c.pair_id.in_([pair.pair_id for pair in pairs]))
            )
            ids: dict[str, int] = {row.pair_id: row.task_id for row in found}
        return [int(ids[pair.pair_id]) for pair in pairs]

    def enqueue_gold(self, items: Sequence[tuple[CandidatePair, Choice]]) -> list[int]:
        """Queue gold pairs with their known answers (round 0). They are answered like any task but the answers go
        to ``gold_answers``, never to ``labels``: they reach no training and no export, and measure accuracy."""
        return self.enqueue([pair for pair, _ in items], round=0, gold=[choice for _, choice in items])

    def next_task(self, annotator: str = "") -> AnnotationTask | None:
        """The next task for ``annotator``, reserved for them (see the module docstring): never one they answered,
        nor one of a consumed round, nor one whose k places are taken by answers and others' live reservations;
        the task they hold a live reservation on first; a gold pair when their share of gold answers is below
        ``gold_rate``; else pairs closest to their k answers (answers + reservations) first — finish pairs before
        starting new ones — then the least skipped, then the oldest. None when nothing is left."""
        now = datetime.now(timezone.utc)
        human = (labels_table.c.pair_id == tasks_table.c.pair_id) & HUMAN_ROWS
        answers = select(func.count()).select_from(labels_table).where(
            human & (labels_table.c.annotator != "")).scalar_subquery()
        live = (reservations_table.c.task_id == tasks_table.c.task_id) & (reservations_table.c.expires_at > now)
        held = select(func.count()).select_from(reservations_table).where(
            live & (reservations_table.c.annotator != annotator)).scalar_subquery()
        mine = select(reservations_table.c.task_id).where(
            live & (reservations_table.c.annotator == annotator)).exists()
        theirs = select(labels_table.c.seq).where(human & (labels_table.c.annotator == annotator)).exists()
        consumed = select(rounds_table.c.round).where(rounds_table.c.round == tasks_table.c.round).exists()
        query = (
            select(tasks_table).where((tasks_table.c.status == "pending") & (tasks_table.c.gold == "") & ~theirs
                                      & ~consumed & (answers + held < literal(self.annotations_per_pair)))
            .order_by(mine.desc(), (answers + held).desc(), tasks_table.c.skips, tasks_table.c.task_id).limit(1)
        )
        with self._write("next task") as connection:
            row = connection.execute(query).first()
            if row is not None and self._gold_due(connection, annotator):
                gold = self._next_gold(connection, annotator)
                row = gold if gold is not None else row
            connection.execute(delete(reservations_table).where(
                (reservations_table.c.annotator == annotator) | (reservations_table.c.expires_at <= now)))
            if row is not None and not row.gold and annotator:
                connection.execute(insert(reservations_table).values(
                    task_id=row.task_id, annotator=annotator, expires_at=now + timedelta(seconds=self.reservation_s)))
        return None if row is None else _task(row)

    @staticmethod
    def _release(connection: Connection, task_id: int, annotator: str) -> None:
        """End ``annotator``'s reservation of a task (they answered or skipped it)."""
        connection.execute(delete(reservations_table).where(
            (reservations_table.c.task_id == task_id) & (reservations_table.c.annotator == annotator)))

    def _gold_due(self, connection: Connection, annotator: str) -> bool:
        """Whether ``annotator``'s next task should be gold: g + 1 ≤ rate·(n + 1) for g gold answers of n in all, so
        every ``1/rate``-th task is gold (deterministic, nothing random to store)."""
        if self.gold_rate <= 0.0:
            return False
        golds = connection.execute(select(func.count()).select_from(gold_answers_table)
                                   .where(gold_answers_table.c.annotator == annotator)).scalar_one()
        answered = connection.execute(select(func.count()).select_from(labels_table)
                                      .where(ANSWER_ROWS & (labels_table.c.annotator == annotator))).scalar_one()
        return golds + 1 <= self.gold_rate * (golds + answered + 1) + 1e-9

    @staticmethod
    def _next_gold(connection: Connection, annotator: str) -> Any:
        theirs = select(gold_answers_table.c.task_id).where(
            (gold_answers_table.c.task_id == tasks_table.c.task_id)
            & (gold_answers_table.c.annotator == annotator)).exists()
        return connection.execute(select(tasks_table).where((tasks_table.c.gold != "") & ~theirs)
                                  .order_by(tasks_table.c.skips, tasks_table.c.task_id).limit(1)).first()

    def task(self, task_id: int) -> AnnotationTask | None:
        with self.store.engine.connect() as connection:
            row = connection.execute(select(tasks_table).where(tasks_table.c.task_id == task_id)).first()
        return None if row is None else _task(row)

    def progress(self) -> tuple[int, int]:
        """(tasks with their label, all tasks), gold pairs left out."""
        query = (select(tasks_table.c.status, func.count()).where(tasks_table.c.gold == "")
                 .group_by(tasks_table.c.status))
        with self.store.engine.connect() as connection:
            counts: dict[str, int] = {status: count for status, count in connection.execute(query)}
        return int(counts.get("done", 0)), int(sum(counts.values()))

    def waiting_for_review(self) -> int:
        """How many closed tasks wait for a reviewer's decision."""
        with self.store.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(tasks_table)
                                          .where(tasks_table.c.status == "review")).scalar_one())

    def _checked_task(self, task_id: int) -> AnnotationTask:
        task = self.task(task_id)
        if task is None:
            raise LabelStoreError(f"task_id {task_id}: no such task")
        return task

    def answer(
        self, task_id: int, choice: ShownChoice, annotator: str, answer_ms: int | None = None,
        guidelines_digest: str = "", strength: str = "", rationale: str = "",
    ) -> LabelRecord | None:
        """Record ``annotator``'s first answer to a task; returns it as stored (None for a skip or a gold pair).

        ``choice`` names a response as shown to ``annotator`` (:meth:`AnnotationTask.shown_to`; 1 is the one shown
        first), or ``tie``/``both_bad``/``skip``; it is stored de-randomised. ``guidelines_digest`` names the
        guidelines they were shown; ``strength`` (``slightly``/``clearly``) and ``rationale`` are optional.

        Raises:
            LabelStoreError: no task ``task_id``.
            TaskAnsweredError: the task has its k answers, or ``annotator`` answered it already.
            AnswerClosedError: the task's round was consumed by training.
        """
        task = self._checked_task(task_id)
        with self._write("answer") as connection:
            self._check_open(connection, task)
            if task.gold:
                self._answer_gold(connection, task, choice, annotator, answer_ms)
                return None
            status = connection.execute(
                select(tasks_table.c.status).where(tasks_table.c.task_id == task_id)).scalar_one()
            if status != "pending":
                raise TaskAnsweredError(task_id, task.pair_id)
            if annotator in self._answers(connection, task.pair_id):
                raise TaskAnsweredError(task_id, task.pair_id, by=annotator)
            self._release(connection, task_id, annotator)
            if choice == "skip":
                connection.execute(update(tasks_table).where(tasks_table.c.task_id == task_id)
                                   .values(skips=tasks_table.c.skips + 1))
                return None
            stored = stored_choice(choice, annotator, task_id)
            self.store.insert(connection, [_label(task.pair_id, stored, CHOICE_PROB_1.get(stored, 0.5), annotator)],
                              [task.pair], round=task.round, answer_ms=answer_ms,
                              guidelines_digest=guidelines_digest, strength=strength, rationale=rationale)
            self._settle(connection, task)
        return self.store.find([(task.pair_id, HUMAN_ORACLE, annotator)])[0]

    def _answer_gold(self, connection: Connection, task: AnnotationTask, choice: ShownChoice, annotator: str,
                     answer_ms: int | None) -> None:
        theirs = (gold_answers_table.c.task_id == task.task_id) & (gold_answers_table.c.annotator == annotator)
        if connection.execute(select(gold_answers_table.c.choice).where(theirs)).first() is not None:
            raise TaskAnsweredError(task.task_id, task.pair_id, by=annotator)
        if choice == "skip":
            connection.execute(update(tasks_table).where(tasks_table.c.task_id == task.task_id)
                               .values(skips=tasks_table.c.skips + 1))
            return
        connection.execute(insert(gold_answers_table).values(
            task_id=task.task_id, annotator=annotator, choice=stored_choice(choice, annotator, task.task_id),
            answer_ms=answer_ms, created_at=datetime.now(timezone.utc)))

    def revise(
        self, task_id: int, choice: ShownChoice, annotator: str, answer_ms: int | None = None,
        guidelines_digest: str = "", strength: str = "", rationale: str = "",
    ) -> LabelRecord | None:
        """Replace ``annotator``'s answer to a task (same arguments as :meth:`answer`; ``skip`` is refused: take an
        answer back with :meth:`withdraw`); the task is settled again. Returns the stored answer (None for gold).

        Raises:
            NoAnswerError: ``annotator`` has no answer to this task.
            AnswerClosedError: the round was consumed by training, or a reviewer decided the pair.
        """
        if choice == "skip":
            raise AnswerClosedError(f"task_id {task_id}: a skip changes no answer (withdraw it instead)")
        task = self._checked_task(task_id)
        stored = stored_choice(choice, annotator, task_id)
        with self._write("revise") as connection:
            self._check_open(connection, task)
            if task.gold:
                theirs = (gold_answers_table.c.task_id == task_id) & (gold_answers_table.c.annotator == annotator)
                if not connection.execute(update(gold_answers_table).where(theirs).values(
                        choice=stored, answer_ms=answer_ms)).rowcount:
                    raise NoAnswerError(task_id, annotator)
                return None
            self._check_undecided(connection, task)
            theirs = (labels_table.c.pair_id == task.pair_id) & HUMAN_ROWS & (labels_table.c.annotator == annotator)
            changed = connection.execute(update(labels_table).where(theirs).values(
                choice=stored, preferred=2 if stored == "2" else 1, prob_1=CHOICE_PROB_1.get(stored, 0.5),
                strength=strength, rationale=rationale, answer_ms=answer_ms, guidelines_digest=guidelines_digest,
                created_at=datetime.now(timezone.utc)))
            if not changed.rowcount:
                raise NoAnswerError(task_id, annotator)
            self._settle(connection, task)
        return self.store.find([(task.pair_id, HUMAN_ORACLE, annotator)])[0]

    def withdraw(self, task_id: int, annotator: str) -> AnnotationTask:
        """Take back ``annotator``'s answer (undo): the task is theirs to answer again and, short of k answers now,
        open again (its aggregate, if written, is removed). Returns the task.

        Raises:
            NoAnswerError: ``annotator`` has no answer to this task.
            AnswerClosedError: the round was consumed by training, or a reviewer decided the pair.
        """
        task = self._checked_task(task_id)
        with self._write("withdraw") as connection:
            self._check_open(connection, task)
            if task.gold:
                theirs = (gold_answers_table.c.task_id == task_id) & (gold_answers_table.c.annotator == annotator)
                if not connection.execute(delete(gold_answers_table).where(theirs)).rowcount:
                    raise NoAnswerError(task_id, annotator)
                return task
            self._check_undecided(connection, task)
            theirs = (labels_table.c.pair_id == task.pair_id) & HUMAN_ROWS & (labels_table.c.annotator == annotator)
            if not connection.execute(delete(labels_table).where(theirs)).rowcount:
                raise NoAnswerError(task_id, annotator)
            self._settle(connection, task)
        return task

    @staticmethod
    def _check_open(connection: Connection, task: AnnotationTask) -> None:
        """Refuse any change to a task of a round whose labels training consumed (gold pairs have no round)."""
        if task.gold:
            return
        consumed = connection.execute(select(rounds_table.c.consumed_at)
                                      .where(rounds_table.c.round == task.round)).scalar_one_or_none()
        if consumed is not None:
            raise AnswerClosedError(f"task_id {task.task_id}: round {task.round}'s labels were consumed by training "
                                    f"at {_iso(consumed)}; its answers are final")

    @staticmethod
    def _check_undecided(connection: Connection, task: AnnotationTask) -> None:
        reviewer = connection.execute(select(adjudications_table.c.reviewer)
                                      .where(adjudications_table.c.pair_id == task.pair_id)).scalar_one_or_none()
        if reviewer is not None:
            raise AnswerClosedError(f"task_id {task.task_id}: pair {task.pair_id!r} was decided by reviewer "
                                    f"{reviewer!r}; the decision is final")

    @staticmethod
    def _answers(connection: Connection, pair_id: str) -> dict[str, Choice]:
        """``{annotator: choice}`` of a pair's answers, in answer order."""
        rows = connection.execute(select(labels_table.c.annotator, labels_table.c.choice)
                                  .where((labels_table.c.pair_id == pair_id) & ANSWER_ROWS)
                                  .order_by(labels_table.c.seq))
        return {row.annotator: row.choice for row in rows}

    @staticmethod
    def _all_answers(connection: Connection) -> dict[str, dict[str, str]]:
        """``{pair_id: {annotator: choice}}`` of every answer in the store (what Dawid–Skene is fitted to)."""
        answers: dict[str, dict[str, str]] = defaultdict(dict)
        for row in connection.execute(select(labels_table.c.pair_id, labels_table.c.annotator, labels_table.c.choice)
                                      .where(ANSWER_ROWS)):
            answers[row.pair_id][row.annotator] = row.choice
        return answers

    @staticmethod
    def _decisions(connection: Connection, pair_ids: Sequence[str]) -> dict[str, tuple[Choice, str]]:
        rows = connection.execute(select(adjudications_table).where(adjudications_table.c.pair_id.in_(pair_ids)))
        return {row.pair_id: (row.choice, row.reviewer) for row in rows}

    def _aggregates(self, connection: Connection, pair_ids: Sequence[str]) -> dict[str, Aggregate]:
        """The configured aggregation of ``pair_ids`` (Dawid–Skene fitted to every answer in the store)."""
        if self.aggregation == "dawid_skene":
            answers = self._all_answers(connection)
        else:
            answers = {pair_id: self._answers(connection, pair_id) for pair_id in pair_ids}  # type: ignore[misc]
        return aggregate(answers, pair_ids, self.aggregation, self._decisions(connection, pair_ids))

    def _settle(self, connection: Connection, task: AnnotationTask) -> None:
        """Bring a task's status and aggregate in line with its answers: fewer than k → pending, no aggregate;
        k answers agreeing less than ``adjudicate_below`` and no decision → review, no aggregate; else done with
        its aggregate written (replacing an earlier one, so it gets a new ``seq`` that pollers see)."""
        answers = self._answers(connection, task.pair_id)
        self._delete_aggregate(connection, task.pair_id)
        if len(answers) < self.annotations_per_pair:
            status = "pending"
        elif (agreement(list(answers.values())) < self.adjudicate_below
              and not self._decisions(connection, [task.pair_id])):
            status = "review"
        else:
            status = "done"
            self._write_aggregate(connection, task, self._aggregates(connection, [task.pair_id])[task.pair_id])
        connection.execute(update(tasks_table).where(tasks_table.c.task_id == task.task_id).values(status=status))

    @staticmethod
    def _delete_aggregate(connection: Connection, pair_id: str) -> None:
        connection.execute(delete(labels_table).where(
            (labels_table.c.pair_id == pair_id) & HUMAN_ROWS & (labels_table.c.annotator == "")))

    def _write_aggregate(self, connection: Connection, task: AnnotationTask, result: Aggregate) -> None:
        self.store.insert(connection, [_label(task.pair_id, result.choice, result.prob_1)], [task.pair],
                          round=task.round, adjudicated_by=result.adjudicated_by)

    def review_next(self) -> tuple[AnnotationTask, list[LabelRecord]] | None:
        """The oldest task waiting for a reviewer (of a round not consumed), with its answers."""
        consumed = select(rounds_table.c.round).where(rounds_table.c.round == tasks_table.c.round).exists()
        with self.store.engine.connect() as connection:
            row = connection.execute(select(tasks_table).where((tasks_table.c.status == "review") & ~consumed)
                                     .order_by(tasks_table.c.task_id).limit(1)).first()
        if row is None:
            return None
        task = _task(row)
        answers = [record for record in self.store.labels(oracle=HUMAN_ORACLE)
                   if record.pair_id == task.pair_id and record.annotator]
        return task, answers

    def adjudicate(self, task_id: int, choice: Choice, reviewer: str, rationale: str = "") -> LabelRecord:
        """A reviewer's final decision on a task waiting for review: recorded in ``adjudications`` and written as
        the pair's label (``adjudicated_by`` = ``reviewer``); the task is done. Returns the label.

        Raises:
            AnswerClosedError: the task is not waiting for review, or its round was consumed.
        """
        task = self._checked_task(task_id)
        with self._write("adjudicate") as connection:
            self._check_open(connection, task)
            status = connection.execute(
                select(tasks_table.c.status).where(tasks_table.c.task_id == task_id)).scalar_one()
            if status != "review":
                raise AnswerClosedError(f"task_id {task_id}: pair {task.pair_id!r} is not waiting for review "
                                        f"(status {status})")
            connection.execute(insert(adjudications_table).values(
                pair_id=task.pair_id, reviewer=reviewer, choice=choice, rationale=rationale,
                decided_at=datetime.now(timezone.utc)))
            self._settle(connection, task)
        return self.store.find([(task.pair_id, HUMAN_ORACLE, "")])[0]

    def consume(self, round: int, pair_ids: Sequence[str], allow_missing: bool = False) -> list[LabelRecord]:
        """Training takes round ``round``'s labels: the round is marked consumed (its answers become final, its
        unanswered tasks are handed out no more) and the aggregates of ``pair_ids`` returned as they now stand.
        The first call re-aggregates the round's closed pairs (Dawid–Skene then sees every answer given so far);
        a repeated call returns the same labels.

        Raises:
            AnswerClosedError: one of ``pair_ids`` has no label (say, an answer was just taken back) and not
                ``allow_missing``; nothing is marked.
        """
        with self._write("consume") as connection:
            marked = connection.execute(select(rounds_table.c.round).where(rounds_table.c.round == round)).first()
            if marked is None and not allow_missing:
                labelled = {row.pair_id for row in connection.execute(
                    select(labels_table.c.pair_id).where(HUMAN_ROWS & (labels_table.c.annotator == "")
                                                         & labels_table.c.pair_id.in_(pair_ids)))}
                if missing := [pair_id for pair_id in pair_ids if pair_id not in labelled]:
                    raise AnswerClosedError(f"round {round}: pair {missing[0]!r} has no label now ({len(missing)} "
                                            "of the pairs asked for): consume once they are labelled")
            if marked is None:
                connection.execute(insert(rounds_table).values(round=round, consumed_at=datetime.now(timezone.utc)))
                if self.aggregation == "dawid_skene":
                    self._reaggregate(connection, round)
        return self.store.find([(pair_id, HUMAN_ORACLE, "") for pair_id in pair_ids])

    def _reaggregate(self, connection: Connection, round: int) -> None:
        rows = connection.execute(select(tasks_table).where(and_(tasks_table.c.round == round,
                                                                 tasks_table.c.status == "done",
                                                                 tasks_table.c.gold == ""))).all()
        tasks = [_task(row) for row in rows]
        results = self._aggregates(connection, [task.pair_id for task in tasks])
        for task in tasks:
            self._delete_aggregate(connection, task.pair_id)
            self._write_aggregate(connection, task, results[task.pair_id])

    def consumed_at(self, round: int) -> datetime | None:
        """When round ``round``'s labels were consumed by training (None: not yet)."""
        with self.store.engine.connect() as connection:
            value = connection.execute(select(rounds_table.c.consumed_at)
                                       .where(rounds_table.c.round == round)).scalar_one_or_none()
        return None if value is None else _aware(value)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _iso(value: datetime) -> str:
    return _aware(value).isoformat(timespec="seconds")
