"""The active loop's parts in one process, no Ray: the same ``system/`` code the actors wrap.

:class:`~system.loop.ActiveLoop` runs unchanged over these parts; what differs from the Ray path
(:class:`jobs.loop_setup.RayParts`) is only where the code runs:

- generation: one :class:`~system.generation.HFEngine` (the fleet's HF engine; ``generate`` seeds its RNG
  with ``generation.seed + policy_version`` per call, as each fleet actor does);
- features and selection: :func:`~system.features.design_rows.strategy_rows` over the same contiguous shards the
  ``features.num_workers`` feature workers get (a pair's row is computed in the same padded batch as on
  its worker, so the rows are bit-identical), then :func:`~system.selection.select_round` — the
  selector actor's round — over a one-shard :class:`~system.selection.LocalPool`;
- labels and rewards: the machine oracle the Serve endpoint wraps (:func:`~system.oracles.build_oracle`);
- training: :func:`~system.training.train_preferences`, the epoch runner of the Ray Train workers, at
  world size 1 (DeepSpeed, when configured, in a one-process gloo group kept for the process's life).

Generation and features share one policy; a sync loads the adapter into it. This is the experiment
harness of ``benchmarks/strategies.py``: a seed × strategy × round sweep runs in minutes, and with the
same config it picks exactly the pairs the Ray path picks (``tests/jobs/test_active_loop.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from system.config import Config
from system.errors import StaleVersionError
from system.features.design_rows import strategy_rows
from system.features.embeddings import implicit_reward_margins
from system.fileio import atomic_output
from system.generation import HFEngine, SamplingParams, sampling_params
from system.loop import LoopParts, Ready
from system.models.loading import load_adapter_weights, load_policy, serve_adapter
from system.oracles import RewardOracle, build_oracle
from system.oracles.base import Oracle
from system.selection import LocalPool, get_strategy, select_round, selection_record
from system.selection.shards import blocked_rows, selection_device, shard_evenly
from system.training import train_preferences
from system.training.engine import join_single_process_group
from system.types import Candidate, CandidatePair, Label, PreferencePair, PromptRecord, SelectionResult, Text


class LocalPolicy:
    """The policy πθ (base + the synced LoRA adapter), serving generation and features in this process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.model: Any
        self.model, self.tokenizer = load_policy(config.model, config.lora, is_trainable=False)
        self.model.eval()
        self.engine: Any = HFEngine(self.model, self.tokenizer, config.model, config.generation.batch_size)
        self.version = 0

    def sync(self, adapter_dir: Path, version: int) -> None:
        """Serve ``version``: its LoRA weights loaded in place (full weights: the policy reloaded)."""
        self.model = serve_adapter(self.model, self.config.model, self.config.lora, adapter_dir)
        self.engine.model = self.model
        self.version = version

    def generate(
        self, prompts: Sequence[PromptRecord], n: int | None = None, policy_version: int = 0,
        params: SamplingParams | None = None,
    ) -> list[Candidate]:
        """``n`` (default ``generation.responses_per_prompt``) candidates per prompt, prompt by prompt."""
        self.require_version(policy_version)
        return self.engine.generate(prompts, params or sampling_params(self.config.generation, n), policy_version)

    def submit(
        self, prompts: Sequence[PromptRecord], n: int | None = None, policy_version: int = 0,
        params: SamplingParams | None = None,
    ) -> Ready[list[Candidate]]:
        """:meth:`generate`, done on the spot: one process has nothing to overlap it with."""
        return Ready(self.generate(prompts, n, policy_version, params))

    def require_version(self, version: int) -> None:
        """Refuse work stamped with a version other than the one loaded, as the actors do."""
        if version != self.version:
            raise StaleVersionError(f"asked for policy version {version}, this process holds {self.version}")


class LocalSelector:
    """The feature workers and the selector of one process (:class:`~system.loop.PairSelector`).

    Candidate rows X [N, k] and labelled rows [L, k] are the strategy's design rows under the policy held;
    ``select`` runs the selector actor's round over them.
    """

    def __init__(self, config: Config, policy: LocalPolicy) -> None:
        self.config = config
        self.policy = policy
        self.pair_ids: list[str] = []
        self.rows = torch.zeros(0, 0)
        self.labelled = torch.zeros(0, 0)
        self.record: dict[str, Any] | None = None
        self.selected_ids: list[str] = []

    def featurize(self, pairs: Sequence[CandidatePair], labelled: Sequence[CandidatePair], policy_version: int) -> int:
        """Design rows of the round's candidates and of every earlier labelled pair; returns the zero rows."""
        self.policy.require_version(policy_version)
        rule = get_strategy(self.config.selection.strategy)
        workers = self.config.features.num_workers
        rows, old = [], []
        for shard, labelled_shard in zip(shard_evenly(list(pairs), workers), shard_evenly(list(labelled), workers),
                                         strict=True):
            if shard or labelled_shard:
                both = strategy_rows(rule, self.policy.model, self.policy.tokenizer, [*shard, *labelled_shard],
                                     self.config)
                rows.append(both[: len(shard)])
                old.append(both[len(shard):])
        self.pair_ids = [pair.pair_id for pair in pairs]
        self.rows, self.labelled = torch.cat(rows), torch.cat(old)
        return int(blocked_rows(self.rows).sum())

    def select(self, budget: int, round_index: int) -> SelectionResult:
        selection = self.config.selection
        device = selection_device(selection.device)
        result, state = select_round(LocalPool(self.rows, blocked_rows(self.rows), device), self.pair_ids,
                                     self.labelled, budget, selection.strategy, round_index, selection.reg,
                                     selection.refactor_every, selection.seed, device)
        self.selected_ids.extend(result.pair_ids)
        self.record = selection_record(state, round_index + 1, self.selected_ids)
        return result

    def margins(self, pairs: Sequence[CandidatePair], policy_version: int) -> list[float]:
        """Implicit-reward margins h_i = r_θ(x, y1) − r_θ(x, y2) under the policy held → one per pair."""
        self.policy.require_version(policy_version)
        return implicit_reward_margins(self.policy.model, self.policy.tokenizer, pairs, self.config).tolist()

    def save_state(self, path: Path) -> None:
        with atomic_output(path) as staging:
            torch.save(self.record, staging)


class LocalOracle:
    """The machine oracle as the loop's :class:`~system.loop.Labeller` (no label store, no HTTP)."""

    def __init__(self, oracle: Oracle) -> None:
        self.oracle = oracle

    def label(self, pairs: Sequence[CandidatePair], round: int) -> list[Label]:
        return self.oracle.label(pairs)

    def agreement(self, round: int) -> None:
        """None: a machine oracle has no annotators to agree."""
        return None

    def rewards(self, prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        if not isinstance(self.oracle, RewardOracle):
            raise TypeError(f"oracle {self.oracle.name!r} has no reward function")
        return self.oracle.rewards(prompts, responses)


class LocalTrainer:
    """:func:`~system.training.train_preferences` from the seeded LoRA initialisation (``train.seed``) or, with
    ``train.round_start = warm_start``, from the previous round's adapter, as the loop's trainer group does."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def fit(
        self, pairs: Sequence[PreferencePair], out_dir: str | Path, resume: bool = True,
        reference_samples: Mapping[str, Sequence[str]] | None = None, initial_adapter: str | Path | None = None,
    ) -> tuple[Path, list[dict]]:
        if self.config.train.deepspeed.enabled:
            join_single_process_group()
        model, tokenizer = load_policy(self.config.model, self.config.lora, is_trainable=True,
                                       seed=self.config.train.seed)
        if initial_adapter is not None:  # train.round_start = warm_start
            load_adapter_weights(model, Path(initial_adapter))
        result = train_preferences(model, tokenizer, pairs, self.config, out_dir, resume=resume,
                                   known_samples=reference_samples)
        return result.adapter_dir, [dict(metrics) for metrics in result.epoch_metrics]


def local_parts(config: Config) -> LoopParts:
    """The loop's parts in this process (see the module docstring)."""
    policy = LocalPolicy(config)
    return LoopParts(fleet=policy, selector=LocalSelector(config, policy),
                     oracle=LocalOracle(build_oracle(config.oracle)), trainer=LocalTrainer(config),
                     sync=policy.sync)
