"""Offline evaluation (ADPO paper, §6): the policy's preference logits on held-out labelled pairs vs the true ones.

The DPO policy implies a Bradley–Terry logit for a pair, ``ℓ̂ = β·[(log πθ(y1|x) − log πref(y1|x)) −
(log πθ(y2|x) − log πref(y2|x))]`` — the implicit-reward margin the feature workers compute under the
adapter they hold; the pool's scores give the true logit ``ℓ* = s(x,y1) − s(x,y2)``. Here the held-out
pairs become candidate pairs (y1 = chosen) for the workers, and their margins become the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

from system.evaluation.metrics import logit_error_metrics
from system.types import CandidatePair, PreferencePair


def _has_scores(pair: PreferencePair) -> bool:
    return pair.score_chosen is not None and pair.score_rejected is not None


def scored_pairs(held_out: Sequence[PreferencePair]) -> list[CandidatePair]:
    """The held-out pairs with both scores, as candidate pairs oriented chosen (y1) − rejected (y2), so a positive
    margin agrees with the stored label."""
    return [CandidatePair(pair.pair_id or f"held-out-{index}", pair.pair_id or f"held-out-{index}", pair.prompt,
                          str(pair.chosen), str(pair.rejected))
            for index, pair in enumerate(held_out) if _has_scores(pair)]


def logit_error_report(margins: Sequence[float], held_out: Sequence[PreferencePair]) -> dict[str, float]:
    """``eval/max_logit_error``, ``eval/mean_logit_error``, ``eval/error_rate`` of the policy's ``margins`` [N], one
    per pair of :func:`scored_pairs` (``held_out``), in that order."""
    truth = [float(p.score_chosen) - float(p.score_rejected)  # type: ignore[arg-type]
             for p in held_out if _has_scores(p)]
    metrics = logit_error_metrics(margins, truth)
    return {f"eval/{key}": value for key, value in metrics.items()}
