"""The annotation statistics the service reports (``GET /v1/annotation/stats``): agreement and pace per annotator,
over all rounds and round by round."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable

from system.api import AnnotationStats, AnnotatorStats
from system.labels.agreement import (
    agreement_with_others,
    cohen_kappa,
    fleiss_kappa,
    kappa_with_others,
    krippendorff_alpha_nominal,
)
from system.labels.queue import HUMAN_ORACLE
from system.labels.store import LabelRecord, LabelStore


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def annotation_stats(store: LabelStore, round: int | None = None) -> AnnotationStats:
    """Agreement of the people's answers in ``store``: one round's, or all rounds' with each round's beside them."""
    records = [record for record in store.labels(round=round, oracle=HUMAN_ORACLE) if record.annotator]
    if round is not None:
        return stats_of(records, round)
    by_round: defaultdict[int, list[LabelRecord]] = defaultdict(list)
    for record in records:
        by_round[record.round].append(record)
    return stats_of(records, None, rounds=[stats_of(by_round[r], r) for r in sorted(by_round)])


def stats_of(records: Iterable[LabelRecord], round: int | None,
             rounds: list[AnnotationStats] | None = None) -> AnnotationStats:
    """α, Fleiss' κ and mean pairwise Cohen's κ over the pairs with ≥ 2 answers among ``records`` (people's
    answers), and per annotator: answers, agreement and κ with the others' majority, median answer time."""
    answers: dict[str, dict[str, int]] = defaultdict(dict)
    times: dict[str, list[int]] = defaultdict(list)
    for record in records:
        answers[record.pair_id][record.annotator] = record.preferred
        if record.answer_ms is not None:
            times[record.annotator].append(record.answer_ms)
    shared = {pair_id: votes for pair_id, votes in answers.items() if len(votes) >= 2}
    by_person: dict[str, dict[str, int]] = defaultdict(dict)
    for pair_id, votes in answers.items():
        for name, vote in votes.items():
            by_person[name][pair_id] = vote
    kappas = [k for a, b in itertools.combinations(sorted(by_person), 2)
              if not math.isnan(k := cohen_kappa(by_person[a], by_person[b]))]
    agreement, kappa = agreement_with_others(shared), kappa_with_others(shared)
    return AnnotationStats(
        round=round, pairs=len(shared), answers=sum(len(votes) for votes in answers.values()),
        krippendorff_alpha=_finite(krippendorff_alpha_nominal(shared)), fleiss_kappa=_finite(fleiss_kappa(shared)),
        mean_cohen_kappa=statistics.fmean(kappas) if kappas else None,
        annotators=[AnnotatorStats(name=name, answers=len(by_person[name]), agreement_with_others=agreement.get(name),
                                   kappa_with_others=_finite(kappa.get(name, math.nan)),
                                   median_answer_ms=statistics.median(times[name]) if times[name] else None)
                    for name in sorted(by_person)],
        rounds=rounds or [],
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
