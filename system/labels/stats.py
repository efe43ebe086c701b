"""The annotation statistics the service reports (``GET /v1/annotation/stats``): agreement, pace and gold accuracy
per annotator, and how the pairs came out (preference, tie, both bad; adjudicated) — over all rounds and round by
round."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable

from sqlalchemy import case, func, select

from system.api import AnnotationStats, AnnotatorStats
from system.labels.agreement import (
    agreement_with_others,
    cohen_kappa,
    fleiss_kappa,
    kappa_with_others,
    krippendorff_alpha_nominal,
)
from system.labels.queue import HUMAN_ORACLE
from system.labels.schema import gold_answers_table, tasks_table
from system.labels.store import LabelRecord, LabelStore

GoldResults = dict[str, tuple[int, int]]
"""``{annotator: (gold pairs answered, answered as the gold answer)}``."""


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def gold_results(store: LabelStore) -> GoldResults:
    """Each annotator's gold answers and how many match the gold answer (gold pairs have no round)."""
    correct = func.sum(case((gold_answers_table.c.choice == tasks_table.c.gold, 1), else_=0))
    query = (select(gold_answers_table.c.annotator, func.count(), correct)
             .join(tasks_table, tasks_table.c.task_id == gold_answers_table.c.task_id)
             .group_by(gold_answers_table.c.annotator))
    with store.engine.connect() as connection:
        return {name: (int(total), int(hits or 0)) for name, total, hits in connection.execute(query)}


def annotation_stats(store: LabelStore, round: int | None = None) -> AnnotationStats:
    """The people's answers in ``store``: one round's, or all rounds' (with gold accuracy, which has no round) and
    each round's beside them."""
    records = list(store.labels(round=round, oracle=HUMAN_ORACLE))
    if round is not None:
        return stats_of(records, round)
    by_round: defaultdict[int, list[LabelRecord]] = defaultdict(list)
    for record in records:
        by_round[record.round].append(record)
    return stats_of(records, None, rounds=[stats_of(by_round[r], r) for r in sorted(by_round)],
                    gold=gold_results(store))


def stats_of(records: Iterable[LabelRecord], round: int | None, rounds: list[AnnotationStats] | None = None,
             gold: GoldResults | None = None) -> AnnotationStats:
    """α, Fleiss' κ and mean pairwise Cohen's κ over the pairs with ≥ 2 answers among ``records`` (answers 1, 2, tie
    and both_bad as nominal categories); per annotator: answers, agreement and κ with the others' majority, median
    answer time and (from ``gold``) gold accuracy; and the pairs per aggregate outcome (the records with no
    annotator are the aggregates), adjudicated ones counted."""
    answers: dict[str, dict[str, str]] = defaultdict(dict)
    times: dict[str, list[int]] = defaultdict(list)
    outcomes: Counter[str] = Counter()
    adjudicated = 0
    for record in records:
        if not record.annotator:
            outcomes[record.decision] += 1
            adjudicated += bool(record.adjudicated_by)
            continue
        answers[record.pair_id][record.annotator] = record.decision
        if record.answer_ms is not None:
            times[record.annotator].append(record.answer_ms)
    gold = gold or {}
    shared = {pair_id: votes for pair_id, votes in answers.items() if len(votes) >= 2}
    by_person: dict[str, dict[str, str]] = defaultdict(dict)
    for pair_id, votes in answers.items():
        for name, vote in votes.items():
            by_person[name][pair_id] = vote
    kappas = [k for a, b in itertools.combinations(sorted(by_person), 2)
              if not math.isnan(k := cohen_kappa(by_person[a], by_person[b]))]
    agreement, kappa = agreement_with_others(shared), kappa_with_others(shared)

    def person(name: str) -> AnnotatorStats:
        gold_answers, gold_hits = gold.get(name, (0, 0))
        return AnnotatorStats(name=name, answers=len(by_person[name]), agreement_with_others=agreement.get(name),
                              kappa_with_others=_finite(kappa.get(name, math.nan)),
                              median_answer_ms=statistics.median(times[name]) if times[name] else None,
                              gold_answers=gold_answers,
                              gold_accuracy=gold_hits / gold_answers if gold_answers else None)

    return AnnotationStats(
        round=round, pairs=len(shared), answers=sum(len(votes) for votes in answers.values()),
        krippendorff_alpha=_finite(krippendorff_alpha_nominal(shared)), fleiss_kappa=_finite(fleiss_kappa(shared)),
        mean_cohen_kappa=statistics.fmean(kappas) if kappas else None,
        annotators=[person(name) for name in sorted(set(by_person) | set(gold))],
        rounds=rounds or [], outcomes=dict(sorted(outcomes.items())), adjudicated=adjudicated,
    )


def agreement_metrics(stats: AnnotationStats) -> dict[str, float]:
    """One round's agreement as the loop's metrics (MLflow, ``round_*/metrics.json``): ``annotation/alpha``,
    ``annotation/fleiss_kappa``, ``annotation/cohen_kappa_mean``, ``annotation/pairs`` (pairs with two or more
    answers), ``annotation/answers`` and ``annotation/kappa_with_others/NAME`` per annotator; an undefined value is
    left out, and a round nobody answered gives no metrics (a machine oracle's)."""
    if not stats.answers:
        return {}
    values: dict[str, float | None] = {
        "annotation/alpha": stats.krippendorff_alpha, "annotation/fleiss_kappa": stats.fleiss_kappa,
        "annotation/cohen_kappa_mean": stats.mean_cohen_kappa, "annotation/pairs": float(stats.pairs),
        "annotation/answers": float(stats.answers),
        **{f"annotation/kappa_with_others/{person.name}": person.kappa_with_others for person in stats.annotators},
    }
    return {key: value for key, value in values.items() if value is not None}
