"""``activealign select``: offline selection from a fixed pool of candidate pairs (the ADPO paper's
offline setting).

Pool rows carry a numeric ``phi`` or text (featurised with the configured model according to the
strategy's feature kind); a ``label`` column is revealed only for selected pairs, batch by batch.
"""

from __future__ import annotations

import logging
from pathlib import Path

from system.config import Config
from system.data import file_format, write_rows
from system.selection import DesignState, get_strategy
from system.selection.offline import load_pool, select_offline

logger = logging.getLogger(__name__)


def main(
    config: Config, pool: Path, out: Path, strategy: str | None, budget: int | None, batch_size: int | None
) -> int:
    """Select ``budget`` pairs of ``pool`` with ``strategy`` and write them, in pick order, to ``out``."""
    rule = get_strategy(strategy or config.selection.strategy)
    file_format(out)  # an unwritable output type fails before the pool is featurised
    candidates = load_pool(pool)
    phi = candidates.numeric_features()
    if phi is None:
        from system.features import FEATURES_BY_KIND  # the model stack is loaded only for text pools
        from system.models.loading import load_policy

        model, tokenizer = load_policy(config.model, config.lora, is_trainable=False, seed=config.train.seed)
        phi = FEATURES_BY_KIND[rule.feature_kind](model, tokenizer, candidates.candidate_pairs(), config).double()
    state = DesignState(phi.shape[1], config.selection.reg, refactor_every=config.selection.refactor_every)
    rows = select_offline(
        candidates,
        phi,
        rule,
        budget=budget if budget is not None else config.selection.budget,
        batch_size=batch_size if batch_size is not None else config.selection.reveal_batch_size,
        state=state,
        seed=config.selection.seed,
        plugin_l2=config.selection.plugin_l2,
    )
    write_rows(out, rows)
    logger.info("selected %d of %d pairs with %s → %s (log det V = %.3f)", len(rows), len(candidates.rows),
                rule.name, out, state.logdet())
    return 0
