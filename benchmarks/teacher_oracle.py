"""The online benchmark's positive control: an oracle whose preferences the learner can represent exactly.

The teacher is the task's own policy with one fixed LoRA adapter θ* (same architecture, rank and target modules
as the learner's), trained once by the product's DPO trainer on judge-labelled πref pairs of training prompts
(:func:`teacher_adapter`). Its reward is the implicit reward of that adapter,

    R*(x, y) = log πθ*(y | x) − log πref(y | x),

so Bradley–Terry labels P(y1 ≻ y2) = σ((R*(x, y1) − R*(x, y2)) / T*) are exactly what a DPO learner's
implicit reward β·(log πθ − log πref) can reach (θ = θ* at β = T*). The temperature T* is calibrated like the
judge's (:func:`~benchmarks.strategy_task.calibrate_rewards`: the median |ΔR*| over held-out pairs maps to P = 0.8).
Labels reach the learner through the loop's oracle part, so the control goes through generation, selection,
DPO training and evaluation exactly as the task does — only the labeller differs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from system.config import Config
from system.fileio import atomic_write_text
from system.generation import candidate_pairs, sampling_params
from system.local_parts import LocalPolicy, LocalTrainer
from system.loop import labelled_pairs
from system.models.loading import load_adapter_weights
from system.models.logprobs import encode_sequences, policy_and_reference_logps
from system.oracles import build_oracle
from system.oracles.base import RewardOracle
from system.types import PromptRecord, Text

TEACHER_PAIRS = 1000
"""Judge-labelled πref pairs the teacher adapter is trained on."""


class TeacherOracle(RewardOracle):
    """R*(x, y) = log πθ*(y|x) − log πref(y|x) of a fixed adapter; labels as every :class:`RewardOracle`'s."""

    name = "teacher"

    def __init__(self, config: Config, adapter_dir: Path, temperature: float = 1.0, seed: int = 0,
                 batch_size: int = 32) -> None:
        super().__init__(temperature, "bradley_terry", seed)
        self.config, self.batch_size = config, batch_size
        self.policy = LocalPolicy(config)
        load_adapter_weights(self.policy.model, adapter_dir)
        self.model_version = str(adapter_dir)

    def rewards(self, prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = encode_sequences(self.policy.tokenizer, prompts[start:start + self.batch_size],
                                     responses[start:start + self.batch_size], self.config.model)
            with torch.no_grad():
                policy, reference = policy_and_reference_logps(self.policy.model, batch,
                                                               self.config.model.length_normalize)
            scores += (policy - reference).tolist()
        return scores


def teacher_adapter(config: Config, train_prompts: list[PromptRecord], workdir: Path) -> Path:
    """θ*: the learner's DPO trainer on :data:`TEACHER_PAIRS` pairs of πref responses to training prompts
    (generation seed + 20 000, so not the task's draws), labelled by the task's judge at argmax; trained once
    per ``workdir`` (``workdir/teacher/train/adapter``)."""
    out = workdir / "teacher"
    adapter = out / "train" / "adapter"
    if (out / "done.json").exists():
        return adapter
    params = sampling_params(config.generation)
    policy = LocalPolicy(config)
    candidates = policy.generate(train_prompts, policy_version=0, params=replace(params, seed=params.seed + 20_000))
    pairs = candidate_pairs(candidates)
    pairs = random.Random(0).sample(pairs, min(TEACHER_PAIRS, len(pairs)))
    judge_cfg = config.oracle.model_copy(update={"sampling": "argmax"})
    preferences = labelled_pairs(pairs, build_oracle(judge_cfg).label(pairs))
    LocalTrainer(config).fit(preferences, out / "train", resume=False)
    atomic_write_text(out / "done.json", json.dumps({"pairs": len(preferences)}))
    return adapter
