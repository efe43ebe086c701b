"""From people's answers to the label a pair is trained on: the one aggregation step of the human oracle.

An answer (de-randomised, about the pair's stored order) is one of :data:`CHOICES`: ``"1"`` or ``"2"`` (that
response is better), ``"tie"`` (equally good) or ``"both_bad"`` (neither is acceptable); a skip is no answer.
As a probability that response 1 wins, ``"1"`` is 1, ``"2"`` is 0 and ``"tie"`` is ½ (:data:`CHOICE_PROB_1`).

Two aggregations (``oracle.human.aggregation``):

- ``majority``: the pair is ``both_bad`` when more than half its answers say so; otherwise
  ``prob_1`` = the mean of the other answers' probabilities, and the pair is a preference for response 1
  (``prob_1`` > ½) or 2 (< ½), or a tie (= ½).
- ``dawid_skene``: Dawid & Skene (1979), "Maximum likelihood estimation of observer error-rates using the EM
  algorithm". Each annotator j has a confusion matrix π_j[c, l] = P(j answers l | true class c); with class
  priors p_c, EM alternates

      E: T_u[c] ∝ p_c · Π_{j answered u} π_j[c, a_uj]
      M: p_c = mean_u T_u[c],   π_j[c, l] ∝ α + Σ_{u: a_uj = l} T_u[c]

  (α a small Dirichlet pseudo-count that keeps unseen cells off zero), starting from the majority's soft
  counts, until the posteriors move less than ``tol``. A pair's class is the posterior's argmax, ``prob_1`` =
  (T[1] + ½ T[tie]) / (1 − T[both_bad]). It weighs reliable annotators more; an annotator's accuracy is
  Σ_c p_c π_j[c, c].

A reviewer's decision (adjudication) is final: it replaces the aggregation for that pair.

Whatever produced it, an aggregate becomes training rows with :func:`preference_rows`, the one function the
loop's trainer and ``activealign export`` both use: a preference is one TRL row (chosen = the winner, score =
P(chosen ≻ rejected)); ``both_bad`` gives none (counted instead); a tie gives none under
``oracle.human.tie_policy: drop``, and under ``half`` two rows, one per orientation, each scored ½ (the
mirrored one without a pair id, which a TRL file holds once). For
DPO's per-pair loss ℓ(Δ) = −log σ(βΔ) the two rows sum to −log σ(βΔ) − log σ(−βΔ), twice the soft-label
(P = ½) loss, minimised at Δ = 0: the policy is taught the two responses are equally good.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from system.types import CandidatePair, PreferencePair, Text

Choice = Literal["1", "2", "tie", "both_bad"]
CHOICES: tuple[Choice, ...] = ("1", "2", "tie", "both_bad")
CHOICE_PROB_1: dict[str, float] = {"1": 1.0, "2": 0.0, "tie": 0.5}
Aggregation = Literal["majority", "dawid_skene"]
TiePolicy = Literal["half", "drop"]


@dataclass(frozen=True)
class Aggregate:
    """A pair's aggregated label: ``choice`` is ``"1"``/``"2"`` (a preference, ``prob_1`` = P(y1 ≻ y2)),
    ``"tie"`` (``prob_1`` = ½) or ``"both_bad"``; ``agreement`` the share of answers equal to the most common one;
    ``adjudicated_by`` the reviewer whose decision it is ("" when aggregated from the answers)."""

    choice: Choice
    prob_1: float
    agreement: float
    answers: int
    adjudicated_by: str = ""

    @property
    def preferred(self) -> Literal[1, 2]:
        """The response the label favours (1 for a tie or both-bad pair, whose rows say so in ``choice``)."""
        return 2 if self.choice == "2" else 1


def agreement(answers: Sequence[str]) -> float:
    """The share of ``answers`` equal to the most common one (1.0 for a single answer)."""
    return Counter(answers).most_common(1)[0][1] / len(answers)


def choice_of(prob_1: float) -> Choice:
    """A preference's choice from its probability: ``"1"`` above ½, ``"2"`` below, ``"tie"`` at ½."""
    return "1" if prob_1 > 0.5 else "2" if prob_1 < 0.5 else "tie"


def majority(answers: Sequence[str]) -> Aggregate:
    """The majority aggregate of one pair's answers (see the module docstring)."""
    if sum(answer == "both_bad" for answer in answers) * 2 > len(answers):
        return Aggregate(choice="both_bad", prob_1=0.5, agreement=agreement(answers), answers=len(answers))
    rated = [CHOICE_PROB_1[answer] for answer in answers if answer != "both_bad"]
    prob_1 = sum(rated) / len(rated)
    return Aggregate(choice=choice_of(prob_1), prob_1=prob_1, agreement=agreement(answers), answers=len(answers))


def decided(choice: Choice, reviewer: str, answers: Sequence[str]) -> Aggregate:
    """The aggregate a reviewer's decision makes: final, ``prob_1`` that of the decision itself."""
    return Aggregate(choice=choice, prob_1=CHOICE_PROB_1.get(choice, 0.5), agreement=agreement(answers) if answers
                     else 1.0, answers=len(answers), adjudicated_by=reviewer)


@dataclass(frozen=True)
class DawidSkene:
    """A fitted Dawid–Skene model: ``classes`` (the answer categories seen), ``priors`` p_c, ``confusion``
    {annotator: π_j as rows c → {l: P(l | c)}} and ``posteriors`` {unit: {c: T_u[c]}}."""

    classes: tuple[str, ...]
    priors: dict[str, float]
    confusion: dict[str, dict[str, dict[str, float]]]
    posteriors: dict[str, dict[str, float]]
    iterations: int

    def accuracy(self, annotator: str) -> float:
        """Σ_c p_c π_j[c, c]: how often ``annotator`` answers the true class."""
        return sum(self.priors[c] * self.confusion[annotator][c][c] for c in self.classes)


def dawid_skene(answers: Mapping[str, Mapping[str, str]], pseudo_count: float = 0.01, tol: float = 1e-6,
                max_iterations: int = 200) -> DawidSkene:
    """Fit Dawid–Skene by EM to ``{unit: {annotator: answer}}`` (see the module docstring). O(iterations · answers ·
    classes); units without answers are ignored."""
    units = {unit: dict(votes) for unit, votes in answers.items() if votes}
    classes = tuple(sorted({answer for votes in units.values() for answer in votes.values()},
                           key=lambda c: CHOICES.index(c) if c in CHOICES else len(CHOICES)))
    people = sorted({name for votes in units.values() for name in votes})
    posteriors = {unit: _normalised({c: float(sum(a == c for a in votes.values())) for c in classes})
                  for unit, votes in units.items()}
    priors: dict[str, float] = {}
    confusion: dict[str, dict[str, dict[str, float]]] = {}
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        priors = {c: sum(t[c] for t in posteriors.values()) / len(posteriors) for c in classes}
        counts = {j: {c: {label: pseudo_count for label in classes} for c in classes} for j in people}
        for unit, votes in units.items():
            for j, label in votes.items():
                for c in classes:
                    counts[j][c][label] += posteriors[unit][c]
        confusion = {j: {c: _normalised(row) for c, row in rows.items()} for j, rows in counts.items()}
        updated = {}
        for unit, votes in units.items():
            log_t = {c: math.log(max(priors[c], 1e-300))
                     + sum(math.log(confusion[j][c][label]) for j, label in votes.items()) for c in classes}
            top = max(log_t.values())
            updated[unit] = _normalised({c: math.exp(value - top) for c, value in log_t.items()})
        change = max(abs(updated[u][c] - posteriors[u][c]) for u in units for c in classes) if units else 0.0
        posteriors = updated
        if change < tol:
            break
    return DawidSkene(classes=classes, priors=priors, confusion=confusion, posteriors=posteriors,
                      iterations=iterations)


def _normalised(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {key: value / total for key, value in weights.items()}


def from_posterior(posterior: Mapping[str, float], answers: Sequence[str]) -> Aggregate:
    """A pair's aggregate from its Dawid–Skene posterior over the classes."""
    best = max(posterior, key=lambda c: posterior[c])
    rated = 1.0 - posterior.get("both_bad", 0.0)
    if best == "both_bad" or rated <= 0.0:
        return Aggregate(choice="both_bad", prob_1=0.5, agreement=agreement(answers), answers=len(answers))
    prob_1 = (posterior.get("1", 0.0) + 0.5 * posterior.get("tie", 0.0)) / rated
    choice: Choice = "tie" if best == "tie" else choice_of(prob_1)
    return Aggregate(choice=choice, prob_1=0.5 if choice == "tie" else prob_1, agreement=agreement(answers),
                     answers=len(answers))


def aggregate(answers: Mapping[str, Mapping[str, str]], wanted: Sequence[str], method: Aggregation,
              decisions: Mapping[str, tuple[Choice, str]] | None = None) -> dict[str, Aggregate]:
    """Aggregates of the units ``wanted`` from every unit's answers ``{unit: {annotator: answer}}``.

    ``decisions`` ``{unit: (choice, reviewer)}`` are final. Dawid–Skene is fitted to all of ``answers`` (every
    unit informs the annotators' confusion matrices), majority looks at each wanted unit alone.
    """
    decisions = decisions or {}
    model = dawid_skene(answers) if method == "dawid_skene" else None
    result: dict[str, Aggregate] = {}
    for unit in wanted:
        votes = list(answers.get(unit, {}).values())
        if unit in decisions:
            choice, reviewer = decisions[unit]
            result[unit] = decided(choice, reviewer, votes)
        elif votes:
            result[unit] = majority(votes) if model is None else from_posterior(model.posteriors[unit], votes)
    return result


def preference_rows(pair_id: str, prompt: Text, response_1: str, response_2: str, choice: str, prob_1: float,
                    tie_policy: TiePolicy) -> list[PreferencePair]:
    """The TRL rows a pair's aggregate label trains as (see the module docstring): one for a preference, none for
    ``both_bad``, and for a tie none (``drop``) or both orientations scored ½ (``half``). A conversational prompt
    gets its responses as single assistant messages (TRL's conversational form)."""
    if choice == "both_bad" or (choice == "tie" and tie_policy == "drop"):
        return []
    if choice == "tie":
        return [_row(pair_id, prompt, response_1, response_2, 0.5), _row(None, prompt, response_2, response_1, 0.5)]
    if choice == "2":
        return [_row(pair_id, prompt, response_2, response_1, 1.0 - prob_1)]
    return [_row(pair_id, prompt, response_1, response_2, prob_1)]


def pair_rows(pair: CandidatePair, choice: str, prob_1: float, tie_policy: TiePolicy) -> list[PreferencePair]:
    """:func:`preference_rows` of a candidate pair."""
    return preference_rows(pair.pair_id, pair.prompt, pair.response_1, pair.response_2, choice, prob_1, tie_policy)


def _row(pair_id: str | None, prompt: Text, chosen: str, rejected: str, prob_chosen: float) -> PreferencePair:
    if not isinstance(prompt, str):
        return PreferencePair(prompt=prompt, chosen=[{"role": "assistant", "content": chosen}],
                              rejected=[{"role": "assistant", "content": rejected}], score_chosen=prob_chosen,
                              score_rejected=1.0 - prob_chosen, pair_id=pair_id)
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, score_chosen=prob_chosen,
                          score_rejected=1.0 - prob_chosen, pair_id=pair_id)
