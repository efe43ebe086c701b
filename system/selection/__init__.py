"""Which pairs to label: the design state V⁻¹, greedy strategies by name, and sharded scoring.

Importing this package registers the built-in strategies (random, activedpo, adpo, adpo_plus, apo, aplp).
"""

from system.selection import strategies as _builtin_strategies  # noqa: F401  (registers built-ins)
from system.selection.design import DesignState
from system.selection.greedy import greedy_select
from system.selection.plugin import fit_linear_dpo, plugin_weights
from system.selection.registry import Picks, PoolInputs, Strategy, get_strategy, register_strategy, strategy_names
from system.selection.select import run_strategy, select_batch, select_pairs, validate_pool
from system.selection.shards import merge_argmax, score_shard, shard_argmax, update_shard_scores

__all__ = [
    "DesignState",
    "Picks",
    "PoolInputs",
    "Strategy",
    "fit_linear_dpo",
    "get_strategy",
    "greedy_select",
    "merge_argmax",
    "plugin_weights",
    "register_strategy",
    "run_strategy",
    "score_shard",
    "select_batch",
    "select_pairs",
    "shard_argmax",
    "strategy_names",
    "update_shard_scores",
    "validate_pool",
]
