"""The durable label store: every oracle verdict with the pair it judges, keyed for idempotent writes.

A label is written once per (pair_id, oracle, annotator): a retried submit hits the unique key and
``INSERT … ON CONFLICT DO NOTHING`` leaves the first row in place, so the store never duplicates and
the first verdict wins. A pair id is bound to the texts it was first stored with (their
:func:`~system.types.pair_text_digest`, kept in every row of labels and tasks): writing or asking for it with
other texts raises :class:`~system.errors.PairTextConflictError`, so a stored verdict is never returned for
texts it did not judge. Reads page by ``seq``, the store's monotonically increasing row number; writers
take the store's write lock (:func:`~system.labels.migrate.lock_store`), so rows become visible in
``seq`` order on PostgreSQL too.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from system.errors import LabelStoreError, PairTextConflictError
from system.labels.aggregate import TiePolicy, preference_rows
from system.labels.migrate import create_store_engine, lock_store, upgrade_schema
from system.labels.schema import labels_table, tasks_table
from system.types import CandidatePair, Label, PreferencePair, Text

HUMAN = "human"
"""The oracle name of people's answers and of the majority label the human queue writes."""


def encode_text(text: Text) -> str:
    """Prompts are stored as JSON so a conversation (list of messages) survives the round trip."""
    return json.dumps(text, ensure_ascii=False)


def decode_text(stored: str) -> Text:
    """Inverse of :func:`encode_text`."""
    value: Text = json.loads(stored)
    return value


@dataclass(frozen=True)
class LabelRecord:
    """A stored label with the pair it judges; ``seq`` orders records by insertion (the paging cursor)."""

    seq: int
    pair_id: str
    round: int
    prompt: Text
    response_1: str
    response_2: str
    text_digest: str
    preferred: int
    prob_1: float
    oracle: str
    model_version: str
    annotator: str
    created_at: datetime
    answer_ms: int | None = None
    guidelines_digest: str = ""
    choice: str = ""
    strength: str = ""
    rationale: str = ""
    adjudicated_by: str = ""

    @property
    def label(self) -> Label:
        return Label(
            pair_id=self.pair_id,
            preferred=1 if self.preferred == 1 else 2,
            prob_1=self.prob_1,
            oracle=self.oracle,
            model_version=self.model_version,
            annotator=self.annotator,
            choice=self.choice if self.choice in ("tie", "both_bad") else "",
        )

    @property
    def decision(self) -> str:
        """``"1"``, ``"2"``, ``"tie"`` or ``"both_bad"``."""
        return self.choice or str(self.preferred)

    @property
    def is_answer(self) -> bool:
        """A person's own answer (not the pair's aggregate, nor a machine verdict)."""
        return self.oracle == HUMAN and bool(self.annotator)

    @property
    def pair(self) -> CandidatePair:
        return CandidatePair(
            pair_id=self.pair_id, prompt_id="", prompt=self.prompt, response_1=self.response_1,
            response_2=self.response_2,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``created_at`` as ISO-8601)."""
        row = {name: getattr(self, name) for name in self.__dataclass_fields__}
        row["created_at"] = self.created_at.isoformat()
        return row


def _record(row: Any) -> LabelRecord:
    created_at = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=timezone.utc)
    return LabelRecord(
        seq=row.seq, pair_id=row.pair_id, round=row.round, prompt=decode_text(row.prompt),
        response_1=row.response_1, response_2=row.response_2, text_digest=row.text_digest,
        preferred=row.preferred, prob_1=row.prob_1,
        oracle=row.oracle, model_version=row.model_version, annotator=row.annotator, created_at=created_at,
        answer_ms=row.answer_ms, guidelines_digest=row.guidelines_digest, choice=row.choice, strength=row.strength,
        rationale=row.rationale, adjudicated_by=row.adjudicated_by,
    )


ID_CHUNK = 500
"""Pair ids per ``IN (…)`` query (well below SQLite's bound-parameter limit)."""


def stored_digests(connection: Connection, pair_ids: Iterable[str]) -> dict[str, set[str]]:
    """``{pair_id: text digests stored for it}`` over labels and tasks (one digest each in a sound store)."""
    wanted = list(dict.fromkeys(pair_ids))
    found: dict[str, set[str]] = defaultdict(set)
    for start in range(0, len(wanted), ID_CHUNK):
        chunk = wanted[start:start + ID_CHUNK]
        for table in (labels_table, tasks_table):
            query = select(table.c.pair_id, table.c.text_digest).where(table.c.pair_id.in_(chunk)).distinct()
            for pair_id, digest in connection.execute(query):
                found[pair_id].add(digest)
    return found


def check_bound_texts(connection: Connection, pairs: Iterable[CandidatePair]) -> None:
    """Raise :class:`PairTextConflictError` for the first pair whose id is stored with other texts."""
    pairs = list(pairs)
    stored = stored_digests(connection, (pair.pair_id for pair in pairs))
    for pair in pairs:
        other = stored.get(pair.pair_id, set()) - {pair.text_digest}
        if other:
            raise PairTextConflictError(pair.pair_id, min(other), pair.text_digest)


def insert_ignoring_duplicates(engine: Engine, table: Any) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` for the engine's dialect (SQLite or PostgreSQL)."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    raise LabelStoreError(f"label store {engine.url.render_as_string()}: dialect {dialect!r} not supported")


class LabelStore:
    """Labels in SQLite (WAL, the default) or PostgreSQL, by SQLAlchemy URL.

    Opening a store creates or migrates its schema. All methods are safe to call from several
    threads and processes at once: writers take turns under the store's write lock.

    Args:
        url: e.g. ``sqlite:///runs/labels.db`` (relative paths resolve against the cwd) or
            ``postgresql+psycopg://user@host/db``.
    """

    def __init__(self, url: str = "sqlite:///runs/labels.db") -> None:
        self.engine = create_store_engine(url)
        self.url = self.engine.url.render_as_string()
        upgrade_schema(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check_texts(self, pairs: Sequence[CandidatePair]) -> None:
        """Refuse pairs whose ids the store holds with other texts (before judging them, say).

        Raises:
            PairTextConflictError: naming the first such pair.
        """
        try:
            with self.engine.connect() as connection:
                check_bound_texts(connection, pairs)
        except SQLAlchemyError as exc:
            raise LabelStoreError(f"label store {self.url}: read failed ({exc.__class__.__name__})") from exc

    def put(
        self,
        labels: Sequence[Label],
        pairs: Sequence[CandidatePair] | Mapping[str, CandidatePair],
        round: int,
    ) -> int:
        """Store ``labels`` (with the text of their pairs) for ``round``; already-stored keys are left alone.

        Returns:
            How many labels were new (the rest were duplicates of stored (pair_id, oracle, annotator) keys).

        Raises:
            PairTextConflictError: a pair id is stored with other texts (nothing is written).
            LabelStoreError: a label's pair is missing from ``pairs``, or the write failed.
        """
        try:
            with self.engine.begin() as connection:
                lock_store(connection)
                return self.insert(connection, labels, pairs, round)
        except SQLAlchemyError as exc:
            raise LabelStoreError(f"label store {self.url}: write failed ({exc.__class__.__name__})") from exc

    def insert(
        self,
        connection: Connection,
        labels: Sequence[Label],
        pairs: Sequence[CandidatePair] | Mapping[str, CandidatePair],
        round: int,
        answer_ms: int | None = None,
        guidelines_digest: str = "",
        strength: str = "",
        rationale: str = "",
        adjudicated_by: str = "",
    ) -> int:
        """:meth:`put` inside the caller's transaction, which holds the store's write lock
        (:func:`~system.labels.migrate.lock_store`); ``answer_ms`` is how long a person took to answer,
        ``guidelines_digest`` the guidelines they answered under, ``strength`` and ``rationale`` what they added,
        ``adjudicated_by`` the reviewer behind an aggregate."""
        by_id = pairs if isinstance(pairs, Mapping) else {pair.pair_id: pair for pair in pairs}
        now = datetime.now(timezone.utc)
        rows = []
        for label in labels:
            pair = by_id.get(label.pair_id)
            if pair is None:
                raise LabelStoreError(f"label for pair_id {label.pair_id!r}: pair text not given")
            if label.preferred not in (1, 2):
                raise LabelStoreError(f"label for pair_id {label.pair_id!r}: preferred must be 1 or 2")
            rows.append({
                "pair_id": label.pair_id, "round": round, "prompt": encode_text(pair.prompt),
                "response_1": pair.response_1, "response_2": pair.response_2, "text_digest": pair.text_digest,
                "preferred": label.preferred,
                "prob_1": float(label.prob_1), "oracle": label.oracle, "model_version": label.model_version,
                "annotator": label.annotator, "created_at": now, "answer_ms": answer_ms,
                "guidelines_digest": guidelines_digest, "choice": label.decision, "strength": strength,
                "rationale": rationale, "adjudicated_by": adjudicated_by,
            })
        if not rows:
            return 0
        check_bound_texts(connection, (by_id[label.pair_id] for label in labels))
        statement = insert_ignoring_duplicates(self.engine, labels_table)
        return len(connection.execute(statement.returning(labels_table.c.seq), rows).all())

    def labels(
        self,
        round: int | None = None,
        since: int | None = None,
        limit: int | None = None,
        max_round: int | None = None,
        oracle: str | None = None,
    ) -> list[LabelRecord]:
        """Stored labels in ``seq`` order.

        Args:
            round: only this round.
            since: only records with ``seq > since`` (pass the last ``seq`` seen to page on).
            limit: at most this many records.
            max_round: only rounds ``<= max_round``.
            oracle: only labels from this oracle kind.
        """
        query = select(labels_table).order_by(labels_table.c.seq)
        if round is not None:
            query = query.where(labels_table.c.round == round)
        if max_round is not None:
            query = query.where(labels_table.c.round <= max_round)
        if since is not None:
            query = query.where(labels_table.c.seq > since)
        if oracle is not None:
            query = query.where(labels_table.c.oracle == oracle)
        if limit is not None:
            query = query.limit(limit)
        return self._fetch(query)

    def find(self, keys: Iterable[tuple[str, str, str]]) -> list[LabelRecord]:
        """The stored records for (pair_id, oracle, annotator) keys, in ``seq`` order."""
        wanted = list(dict.fromkeys(keys))
        found: list[LabelRecord] = []
        for start in range(0, len(wanted), ID_CHUNK):
            chunk = wanted[start:start + ID_CHUNK]
            key = tuple_(labels_table.c.pair_id, labels_table.c.oracle, labels_table.c.annotator)
            found += self._fetch(select(labels_table).where(key.in_(chunk)))
        return sorted(found, key=lambda record: record.seq)

    def counts_by_oracle(self) -> dict[str, int]:
        """``{oracle: number of stored labels}``."""
        query = select(labels_table.c.oracle, func.count()).group_by(labels_table.c.oracle)
        with self.engine.connect() as connection:
            return {oracle: int(count) for oracle, count in connection.execute(query)}

    def preference_pairs(self, max_round: int | None = None, oracle: str | None = None,
                         tie_policy: TiePolicy = "half") -> list[PreferencePair]:
        """TRL preference pairs for training, per labelled pair_id (rounds ≤ ``max_round``), in first-label order.

        Once the human queue has written a pair's aggregate label (``oracle="human"``, no annotator), that label
        stands for the pair's human answers and becomes rows by :func:`~system.labels.aggregate.preference_rows`,
        as the loop's training labels do: none for a ``both_bad`` pair, none or two for a tie (``tie_policy``).
        Everything else — other oracles' verdicts, people's preferences without an aggregate (say, imported from
        Label Studio) — is pooled: several labels of one pair are aggregated by majority of ``preferred``; a tie
        goes to the mean of ``prob_1`` (≥ 0.5 → response 1). ``score_chosen`` is the mean P(chosen ≻ rejected)
        and ``score_rejected`` its complement.
        """
        by_pair: dict[str, list[LabelRecord]] = defaultdict(list)
        for record in self.labels(max_round=max_round, oracle=oracle):
            by_pair[record.pair_id].append(record)
        rows: list[PreferencePair] = []
        for records in by_pair.values():
            aggregates = [record for record in records if record.oracle == HUMAN and not record.annotator]
            if aggregates:
                first = aggregates[0]
                rows += preference_rows(first.pair_id, first.prompt, first.response_1, first.response_2,
                                        first.decision, first.prob_1, tie_policy)
            elif preferences := [record for record in records if record.decision in ("1", "2")]:
                rows.append(aggregate_preference(preferences))
        return rows

    def _fetch(self, query: Any) -> list[LabelRecord]:
        try:
            with self.engine.connect() as connection:
                return [_record(row) for row in connection.execute(query)]
        except SQLAlchemyError as exc:
            raise LabelStoreError(f"label store {self.url}: read failed ({exc.__class__.__name__})") from exc


def aggregate_preference(records: Sequence[LabelRecord]) -> PreferencePair:
    """One preference pair from every label of the same pair (majority vote, ties by mean ``prob_1``)."""
    first = records[0]
    votes_1 = sum(record.preferred == 1 for record in records)
    mean_prob_1 = sum(record.prob_1 for record in records) / len(records)
    one_wins = votes_1 * 2 > len(records) or (votes_1 * 2 == len(records) and mean_prob_1 >= 0.5)
    (row,) = preference_rows(first.pair_id, first.prompt, first.response_1, first.response_2,
                             "1" if one_wins else "2", mean_prob_1, "half")
    return row
