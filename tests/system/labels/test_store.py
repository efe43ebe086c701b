"""Label store on a real SQLite file and a real PostgreSQL server: idempotent writes, paging, schema revision,
durability across reopen, concurrent writers."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest
from sqlalchemy import text

from system.errors import LabelStoreError, PairTextConflictError, TaskAnsweredError
from system.labels import HumanQueue, LabelStore
from system.labels.schema import SCHEMA_REVISION
from system.types import CandidatePair, Label
from tests.system.labels.people import answer_for


def make_pairs(n: int, prefix: str = "p") -> list[CandidatePair]:
    return [
        CandidatePair(pair_id=f"{prefix}{i}", prompt_id=f"x{i}", prompt=f"prompt {i}", response_1=f"a{i}",
                      response_2=f"b{i}")
        for i in range(n)
    ]


def label(pair_id: str, preferred: int = 1, oracle: str = "reward_model", annotator: str = "") -> Label:
    return Label(pair_id=pair_id, preferred=preferred, prob_1=0.8 if preferred == 1 else 0.3,  # type: ignore[arg-type]
                 oracle=oracle, model_version="m1", annotator=annotator)


@pytest.fixture
def store(store_url: str) -> LabelStore:
    with LabelStore(store_url) as opened:
        yield opened


def duplicated_keys(store: LabelStore) -> list[tuple]:
    """(pair_id, oracle, annotator, count) of every key stored more than once, straight from the table."""
    with store.engine.connect() as connection:
        return list(connection.execute(text(
            "select pair_id, oracle, annotator, count(*) from labels group by 1, 2, 3 having count(*) > 1")))


def test_put_is_idempotent_on_pair_oracle_annotator(store: LabelStore) -> None:
    pairs = make_pairs(3)
    assert store.put([label(p.pair_id) for p in pairs], pairs, round=1) == 3
    # the retry (even with a different verdict) is ignored: first verdict wins
    assert store.put([label(p.pair_id, preferred=2) for p in pairs], pairs, round=1) == 0
    # another annotator or oracle is a new key
    assert store.put([label("p0", annotator="ann"), label("p0", oracle="replay")], pairs, round=1) == 2
    records = store.labels()
    assert len(records) == 5
    assert [r.preferred for r in records[:3]] == [1, 1, 1]
    assert duplicated_keys(store) == []


def test_a_pair_id_is_bound_to_the_texts_it_was_stored_with(store: LabelStore) -> None:
    """The same pair id with another prompt, or its responses swapped, is refused for labels and for the human
    queue alike, and nothing of the refused request is written; the same texts again are the idempotent retry."""
    (pair,) = make_pairs(1)
    store.put([label(pair.pair_id)], [pair], round=1)
    other_prompt = CandidatePair(pair.pair_id, pair.prompt_id, "another prompt", pair.response_1, pair.response_2)
    swapped = CandidatePair(pair.pair_id, pair.prompt_id, pair.prompt, pair.response_2, pair.response_1)
    fresh = make_pairs(1, prefix="q")[0]
    for changed in (other_prompt, swapped):
        with pytest.raises(PairTextConflictError, match=r"pair_id 'p0' is bound to other texts"):
            store.check_texts([fresh, changed])
        with pytest.raises(PairTextConflictError, match="'p0'"):
            store.put([label(fresh.pair_id), label(pair.pair_id, oracle="replay")], [fresh, changed], round=2)
        with pytest.raises(PairTextConflictError, match="'p0'"):
            HumanQueue(store).enqueue([fresh, changed], round=2)
    assert [(r.pair_id, r.response_1) for r in store.labels()] == [("p0", "a0")]  # the refused writes left nothing
    assert HumanQueue(store).progress() == (0, 0)
    store.check_texts([pair, fresh])
    assert store.put([label(pair.pair_id, oracle="replay")], [pair], round=2) == 1
    assert {r.text_digest for r in store.labels()} == {pair.text_digest}


def test_a_queued_pair_binds_its_id_for_labels_too(store: LabelStore) -> None:
    (pair,) = make_pairs(1)
    HumanQueue(store).enqueue([pair], round=1)
    changed = CandidatePair(pair.pair_id, pair.prompt_id, pair.prompt, pair.response_1, "other")
    with pytest.raises(PairTextConflictError):
        store.put([label(pair.pair_id)], [changed], round=1)


def test_labels_filters_and_pages_by_seq(store: LabelStore) -> None:
    first, second = make_pairs(4, "r1-"), make_pairs(2, "r2-")
    store.put([label(p.pair_id) for p in first], first, round=1)
    store.put([label(p.pair_id, 2) for p in second], second, round=2)
    assert [r.pair_id for r in store.labels(round=2)] == ["r2-0", "r2-1"]
    page = store.labels(limit=3)
    rest = store.labels(since=page[-1].seq)
    assert [r.pair_id for r in page + rest] == [p.pair_id for p in first + second]
    assert len(store.labels(max_round=1)) == 4
    assert store.counts_by_oracle() == {"reward_model": 6}


def test_preference_pairs_orient_chosen_by_label_and_aggregate_votes(store: LabelStore) -> None:
    pairs = make_pairs(2)
    store.put([label("p0", 1), label("p1", 2)], pairs, round=1)
    store.put([label("p1", 2, annotator="a"), label("p1", 1, annotator="b")], pairs, round=2)
    prefs = {p.pair_id: p for p in store.preference_pairs()}
    assert (prefs["p0"].chosen, prefs["p0"].rejected) == ("a0", "b0")
    assert (prefs["p1"].chosen, prefs["p1"].rejected) == ("b1", "a1")  # 2 votes for response 2, 1 for response 1
    assert prefs["p1"].score_chosen == pytest.approx(1 - (0.3 + 0.3 + 0.8) / 3)
    round_1 = store.preference_pairs(max_round=1)
    assert len(round_1) == 2 and {p.pair_id for p in round_1} == {"p0", "p1"}


def test_conversational_prompt_round_trips(store: LabelStore) -> None:
    conversation = [{"role": "user", "content": "hi"}]
    pair = CandidatePair(pair_id="c", prompt_id="c", prompt=conversation, response_1="x", response_2="y")
    store.put([label("c")], [pair], round=0)
    assert store.labels()[0].prompt == conversation


def test_labels_survive_reopen_and_schema_is_stamped(store_url: str) -> None:
    pairs = make_pairs(2)
    with LabelStore(store_url) as store:
        store.put([label(p.pair_id) for p in pairs], pairs, round=1)
    with LabelStore(store_url) as store:
        assert [r.pair_id for r in store.labels()] == ["p0", "p1"]
        with store.engine.connect() as connection:
            assert list(connection.execute(text("select version_num from alembic_version"))) == [(SCHEMA_REVISION,)]


def test_sqlite_store_is_created_in_wal_mode_with_its_directory(tmp_path: Path) -> None:
    LabelStore(f"sqlite:///{tmp_path / 'sub' / 'labels.db'}").close()
    assert sqlite3.connect(tmp_path / "sub" / "labels.db").execute("pragma journal_mode").fetchone() == ("wal",)


def test_unknown_schema_revision_is_refused(store_url: str) -> None:
    with LabelStore(store_url) as store, store.engine.begin() as connection:
        connection.execute(text("update alembic_version set version_num = '9999'"))
    with pytest.raises(LabelStoreError, match="9999"):
        LabelStore(store_url)


@pytest.mark.parametrize(("url", "match"), [("nonsense://", "nonsense"), ("not a url", "not a database URL")])
def test_bad_url_names_it(url: str, match: str) -> None:
    with pytest.raises(LabelStoreError, match=match):
        LabelStore(url)


def test_put_without_pair_text_names_the_pair(store: LabelStore) -> None:
    with pytest.raises(LabelStoreError, match="'zz'"):
        store.put([label("zz")], make_pairs(1), round=0)


def test_human_queue_enqueue_skip_answer(store: LabelStore) -> None:
    queue = HumanQueue(store)
    pairs = make_pairs(3)
    ids = queue.enqueue(pairs, round=4)
    assert queue.enqueue(pairs[:1], round=4) == ids[:1]  # idempotent
    assert queue.next_task().pair_id == "p0"
    assert queue.answer(ids[0], "skip", "ann") is None
    assert queue.next_task().pair_id == "p1"  # skipped task moved behind the others
    record = answer_for(queue, ids[1], "ann", 2, answer_ms=1234)
    assert (record.pair_id, record.preferred, record.prob_1, record.oracle, record.round) == ("p1", 2, 0.0, "human", 4)
    assert record.answer_ms == 1234
    for who, choice in (("ann", 1), ("bob", 1), ("bob", "skip")):  # a done task takes no further answer
        with pytest.raises(TaskAnsweredError, match=f"task_id {ids[1]}: pair 'p1' is answered already"):
            queue.answer(ids[1], choice, who)
    # ann's answer, and (one answer per pair by default) the pair's majority label
    assert [(r.pair_id, r.annotator, r.preferred) for r in store.labels()] == [("p1", "ann", 2), ("p1", "", 2)]
    assert queue.progress() == (1, 3)
    assert [t.pair_id for t in [queue.next_task()]] == ["p2"]
    with pytest.raises(LabelStoreError, match="task_id 99"):
        queue.answer(99, 1, "ann")


def test_racing_answers_to_one_task_store_exactly_one(store_url: str) -> None:
    """Eight people answering one task at once: one answer and its label stored, seven TaskAnsweredError."""
    with LabelStore(store_url) as store:
        (task_id,) = HumanQueue(store).enqueue(make_pairs(1, prefix="race"), round=0)

    def answer(who: str) -> str:
        with LabelStore(store_url) as own:
            try:
                HumanQueue(own).answer(task_id, 1, who)
            except TaskAnsweredError:
                return "refused"
            return "stored"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(answer, [f"person{i}" for i in range(8)]))
    assert sorted(outcomes) == ["refused"] * 7 + ["stored"]
    with LabelStore(store_url) as store:
        assert [bool(record.annotator) for record in store.labels()] == [True, False]  # one answer, its label


def write_in_batches(url: str, pair_count: int, seed: int) -> int:
    """Open the store at ``url`` and put one label for each of ``pair_count`` pairs, in a seeded order, 3 per
    transaction; returns how many of the writes were new."""
    pairs = make_pairs(pair_count)
    random.Random(seed).shuffle(pairs)
    with LabelStore(url) as store:
        return sum(store.put([label(p.pair_id) for p in pairs[i:i + 3]], pairs[i:i + 3], round=seed)
                   for i in range(0, pair_count, 3))


def page_while_written(url: str, total: int, timeout_s: float = 120.0) -> list[int]:
    """Page through the store by ``seq`` (as the oracle client pages ``/v1/labels``) while writers run, until all
    ``total`` rows are in and a last page comes back empty; returns the seq of every row seen, in order seen."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout_s
    with LabelStore(url) as store:
        while time.monotonic() < deadline:
            all_in = sum(store.counts_by_oracle().values()) == total  # before the page: it then sees every row
            page = store.labels(since=seen[-1] if seen else None)
            seen += [record.seq for record in page]
            if all_in and not page:
                break
    return seen


@pytest.mark.parametrize(("pool", "workers"), [
    (ThreadPoolExecutor, 6),
    (lambda workers: ProcessPoolExecutor(workers, mp_context=get_context("spawn")), 3),  # each imports the store
], ids=["threads", "processes"])
def test_concurrent_writers_store_every_label_exactly_once(store_url: str, pool: Callable[[int], Executor],
                                                           workers: int) -> None:
    """Writers racing on one fresh store (schema creation included) over the same keys in different orders, and
    a reader paging by ``seq`` meanwhile: every key is stored once, the writers' "new" counts add up to the
    number of keys, and the reader saw every row once, in ``seq`` order (no row committed behind its cursor)."""
    pair_count = 120
    with pool(workers) as executor, ThreadPoolExecutor(1) as reader:
        pages = reader.submit(page_while_written, store_url, pair_count)
        new_counts = list(executor.map(write_in_batches, [store_url] * workers, [pair_count] * workers,
                                       range(workers)))
        seen = pages.result()
    assert sum(new_counts) == pair_count
    with LabelStore(store_url) as store:
        records = store.labels()
        assert duplicated_keys(store) == []
    assert sorted(r.pair_id for r in records) == sorted(p.pair_id for p in make_pairs(pair_count))
    assert seen == [r.seq for r in records]
