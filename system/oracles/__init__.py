"""Pluggable oracles by ``oracle.kind``: reward model, programmatic function, replayed dataset.

The ``human`` kind has no machine backend: its labels come from the task queue in the label store
(:class:`system.labels.HumanQueue`), which the oracle service exposes to annotators.
"""

from __future__ import annotations

from system.config import OracleConfig
from system.errors import OracleError
from system.oracles.base import Oracle, RewardOracle, UnknownPairError, preference_probability
from system.oracles.programmatic import ProgrammaticOracle
from system.oracles.replay import ReplayOracle
from system.oracles.reward_model import build_reward_model

MACHINE_KINDS = ("reward_model", "programmatic", "replay")


def build_oracle(oracle_cfg: OracleConfig) -> Oracle:
    """The machine oracle named by ``oracle_cfg.kind``.

    Raises:
        OracleError: ``kind`` is ``human`` (no machine backend) or the backend cannot be built.
    """
    kind = oracle_cfg.kind
    if kind == "reward_model":
        return build_reward_model(
            oracle_cfg.model, oracle_cfg.task_description, oracle_cfg.temperature, oracle_cfg.sampling,
            oracle_cfg.seed,
        )
    if kind == "programmatic":
        assert oracle_cfg.callable is not None  # enforced by OracleConfig
        return ProgrammaticOracle(oracle_cfg.callable, oracle_cfg.temperature, oracle_cfg.sampling, oracle_cfg.seed)
    if kind == "replay":
        assert oracle_cfg.dataset is not None  # enforced by OracleConfig
        return ReplayOracle(oracle_cfg.dataset, oracle_cfg.temperature)
    raise OracleError(f"oracle.kind {kind!r}: no machine backend (human labels come from the task queue)")


__all__ = [
    "MACHINE_KINDS", "Oracle", "OracleError", "ProgrammaticOracle", "ReplayOracle", "RewardOracle", "UnknownPairError",
    "build_oracle", "preference_probability",
]
