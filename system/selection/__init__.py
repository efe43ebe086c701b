"""Which pairs to label: the design state V⁻¹, greedy strategies by name, and sharded scoring.

Importing this package registers the built-in strategies (random, activedpo, adpo, adpo_plus, apo, ensemble).
"""

from system.selection import strategies as _builtin_strategies  # noqa: F401  (registers built-ins)
from system.selection.design import DesignState
from system.selection.greedy import greedy_pick, greedy_select
from system.selection.plugin import fit_linear_dpo, plugin_weights
from system.selection.registry import Picks, PoolInputs, Strategy, get_strategy, register_strategy, strategy_names
from system.selection.select import (
    check_budget,
    run_strategy,
    select_batch,
    select_pairs,
    select_round,
    selection_record,
    validate_pool,
)
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
    "greedy_select",
    "merge_argmax",
    "merge_ranked",
    "plugin_weights",
    "rank_rows",
    "register_strategy",
    "run_strategy",
    "score_shard",
    "select_batch",
    "select_pairs",
    "select_round",
    "selection_record",
    "shard_argmax",
    "strategy_names",
    "update_shard_scores",
    "validate_pool",
]
