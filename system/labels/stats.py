"""The annotation statistics the service reports (``GET /v1/annotation/stats``): agreement, pace and gold accuracy
per annotator, and how the pairs came out (preference, tie, both bad; adjudicated)."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter, defaultdict

from sqlalchemy import case, func, select

from system.api import AnnotationStats, AnnotatorStats
from system.labels.agreement import agreement_with_others, cohen_kappa, krippendorff_alpha_nominal
from system.labels.queue import HUMAN_ORACLE
from system.labels.schema import gold_answers_table, tasks_table
from system.labels.store import LabelStore


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def gold_results(store: LabelStore) -> dict[str, tuple[int, int]]:
    """``{annotator: (gold pairs answered, answered as the gold answer)}`` (gold pairs have no round)."""
    correct = func.sum(case((gold_answers_table.c.choice == tasks_table.c.gold, 1), else_=0))
    query = (select(gold_answers_table.c.annotator, func.count(), correct)
             .join(tasks_table, tasks_table.c.task_id == gold_answers_table.c.task_id)
             .group_by(gold_answers_table.c.annotator))
    with store.engine.connect() as connection:
        return {name: (int(total), int(hits or 0)) for name, total, hits in connection.execute(query)}


def annotation_stats(store: LabelStore, round: int | None = None) -> AnnotationStats:
    """α over pairs with ≥ 2 answers, mean pairwise κ (answers 1, 2, tie and both_bad as nominal categories), and
    per annotator: answers, agreement with the others' majority, median answer time and gold accuracy; pairs per
    aggregate outcome — from the people's answers in ``store`` (one round, or all)."""
    answers: dict[str, dict[str, str]] = defaultdict(dict)
    times: dict[str, list[int]] = defaultdict(list)
    outcomes: Counter[str] = Counter()
    adjudicated = 0
    for record in store.labels(round=round, oracle=HUMAN_ORACLE):
        if not record.annotator:
            outcomes[record.decision] += 1
            adjudicated += bool(record.adjudicated_by)
            continue
        answers[record.pair_id][record.annotator] = record.decision
        if record.answer_ms is not None:
            times[record.annotator].append(record.answer_ms)
    gold = gold_results(store)
    shared = {pair_id: votes for pair_id, votes in answers.items() if len(votes) >= 2}
    by_person: dict[str, dict[str, str]] = defaultdict(dict)
    for pair_id, votes in answers.items():
        for name, vote in votes.items():
            by_person[name][pair_id] = vote
    kappas = [k for a, b in itertools.combinations(sorted(by_person), 2)
              if not math.isnan(k := cohen_kappa(by_person[a], by_person[b]))]
    agreement = agreement_with_others(shared)
    return AnnotationStats(
        round=round, pairs=len(shared), answers=sum(len(votes) for votes in answers.values()),
        krippendorff_alpha=_finite(krippendorff_alpha_nominal(shared)),
        mean_cohen_kappa=statistics.fmean(kappas) if kappas else None,
        annotators=[AnnotatorStats(name=name, answers=len(by_person[name]), agreement_with_others=agreement.get(name),
                                   median_answer_ms=statistics.median(times[name]) if times[name] else None,
                                   gold_answers=gold.get(name, (0, 0))[0],
                                   gold_accuracy=gold[name][1] / gold[name][0] if gold.get(name, (0, 0))[0] else None)
                    for name in sorted(set(by_person) | set(gold))],
        outcomes=dict(sorted(outcomes.items())), adjudicated=adjudicated,
    )
