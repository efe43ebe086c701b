"""``loop``: rounds, prompts, evaluation and the run directory."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from system.config.section import DATASET_HINT, Section


class LoopConfig(Section):
    """The active loop: rounds of generate → featurise → select → label → train → sync → evaluate."""

    mode: Literal["online", "offline"] = Field(
        "online",
        description="'online' generates fresh candidates from the current policy every round; 'offline' selects "
        "from the fixed pool in pool_path instead (every 5th pool pair held out for the logit-error evaluation).",
    )
    rounds: int = Field(2, ge=1, description="Active-learning rounds; policy version r is trained in round r.")
    prompts_path: str = Field(
        "configs/data/tiny_prompts.jsonl",
        description=f"Training prompts (JSONL/Parquet with a 'prompt' column, text or chat messages; {DATASET_HINT}); "
        "must exist.",
    )
    prompts_per_round: int = Field(
        16, ge=1,
        description="Training prompts answered per round: consecutive windows of one seeded shuffle of the "
        "prompts, wrapping around when they run out.",
    )
    eval_prompts_path: str | None = Field(
        None,
        description=f"Held-out prompts for evaluation (a file, or {DATASET_HINT}); null takes the last "
        "num_eval_prompts training prompts and keeps them out of training.",
    )
    num_eval_prompts: int = Field(
        8, ge=0,
        description="Held-out prompts evaluated after each round (the first ones of eval_prompts_path, else the "
        "last training prompts); 0: none.",
    )
    eval_samples_per_prompt: int = Field(
        0, ge=0,
        description="0: one greedy response per held-out prompt; k > 0: k responses sampled at "
        "generation.temperature (seeded by generation.seed), their rewards averaged — smoother than greedy for "
        "small, peaked models.",
    )
    pool_path: str | None = Field(
        None,
        description="Offline mode's labelled pool (TRL-format prompt/chosen/rejected, Parquet or JSONL; "
        f"{DATASET_HINT}); required when mode=offline. Its pairs are offered unlabelled; selected pairs get labels "
        "from the oracle (e.g. kind=replay on the same file).",
    )
    fixed_pool: bool = Field(
        False,
        description="Online mode: select every round from round 1's candidates (generated once by πref) instead of "
        "fresh generations of the current policy — what strategy apo always does; here for any strategy (e.g. "
        "random from the same pool as apo's control).",
    )
    run_dir: str = Field(
        "runs/tiny",
        description="Directory of the run: config.yaml, per-round outputs, state for --resume. A fresh run there "
        "replaces an earlier run's rounds.",
    )
    seed: int = Field(
        0, description="Seed of the prompt order across rounds and of the response order of offline pool pairs."
    )

    @model_validator(mode="after")
    def _offline_pool(self) -> LoopConfig:
        if self.mode == "offline" and not self.pool_path:
            raise ValueError("loop.mode=offline needs loop.pool_path (Parquet/JSONL of candidate pairs)")
        return self
