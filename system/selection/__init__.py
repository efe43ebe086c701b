"""Which pairs to label: the design state V⁻¹, greedy strategies by name, and sharded scoring.

Importing this package registers the built-in strategies (random, activedpo, adpo, adpo_plus, apo, ensemble).
"""

from system.selection import strategies as _builtin_strategies  # noqa: F401  (registers built-ins)
from system.selection.design import DesignState
from system.selection.greedy import greedy_pick
from system.selection.logistic_fit import fit_linear_dpo
from system.selection.registry import Picks, PoolInputs, Strategy, get_strategy, register_strategy, strategy_names
from system.selection.select import check_budget, pick_validated, select_round, selection_record, validate_pool
from system.selection.shards import (
    LocalPool,
    Proposal,
    Shard,
    ShardedPool,
    merge_argmax,
    merge_ranked,
    rank_rows,
    score_shard,
    shard_argmax,
    update_shard_scores,
)

__all__ = [
    "DesignState",
    "LocalPool",
    "Picks",
    "PoolInputs",
    "Proposal",
    "Shard",
    "ShardedPool",
    "Strategy",
    "check_budget",
    "fit_linear_dpo",
    "get_strategy",
    "greedy_pick",
    "merge_argmax",
    "merge_ranked",
    "pick_validated",
    "rank_rows",
    "register_strategy",
    "score_shard",
    "select_round",
    "selection_record",
    "shard_argmax",
    "strategy_names",
    "update_shard_scores",
    "validate_pool",
]
