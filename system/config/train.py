"""``train``: preference optimisation (loss by registered name), its DeepSpeed settings and SFT warm-up."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from system.config.section import Section
from system.errors import ConfigError


class DeepSpeedConfig(Section):
    """DeepSpeed ZeRO settings used by the distributed trainer."""

    enabled: bool = Field(
        True,
        description="Wrap the trainer workers in a DeepSpeed engine; false uses plain DDP with AdamW and the same "
        "clipping (no DeepSpeed build needed).",
    )
    stage: int = Field(
        2, ge=0, le=3,
        description="ZeRO stage: 0 replicates everything, 1 partitions optimizer states, 2 also gradients, 3 also "
        "parameters (gathered on every rank to save the adapter).",
    )
    offload_optimizer: bool = Field(False, description="Keep ZeRO optimizer states in CPU memory (stage ≥ 1).")
    offload_params: bool = Field(False, description="Keep ZeRO-partitioned parameters in CPU memory (stage 3).")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="DeepSpeed mixed precision: 'bf16' or 'fp16' turn on its bf16/fp16 mode; fp32 suits CPUs.",
    )


class SftWarmupConfig(Section):
    """Optional supervised warm-up on chosen responses before round 1 (ActiveDPO paper: 1 epoch, lr 2e-5)."""

    enabled: bool = Field(
        False,
        description="Before the preference epochs of a training run (not on resume), fit the chosen responses by "
        "next-token NLL with a separate AdamW that is discarded afterwards.",
    )
    epochs: int = Field(1, ge=1, description="Passes of the warm-up over the labelled pairs' chosen responses.")
    lr: float = Field(2e-5, gt=0, description="AdamW learning rate of the warm-up (uses train.weight_decay).")


class TrainConfig(Section):
    """Preference optimisation: loss by registered name and its hyper-parameters."""

    loss: str = Field(
        "dpo",
        description="Preference loss: 'dpo' (sigmoid, optional cDPO label smoothing), 'ipo' (TRL's convention) or "
        "'mpo' (reference-free: πref enters only through precomputed pair probabilities and samples).",
    )
    beta: float = Field(
        0.1, gt=0,
        description="β: scale of the implicit reward β·log(πθ/πref) in DPO, 1/(2β) target margin in IPO, weight of "
        "the pair-wise KL in MPO. Gradient features and the offline logit evaluation use the same β.",
    )
    tau: float = Field(
        0.0, ge=0,
        description="MPO only: weight τ of the point-wise KL term −τ·mean log πθ(y_s|x) on samples y_s ∼ πref; "
        "0 drops it.",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5,
        description="DPO only: assumed probability ε that a label is flipped (cDPO), "
        "loss = −(1−ε)·log σ(h) − ε·log σ(−h); 0 is plain DPO.",
    )
    epochs: int = Field(
        4, ge=1,
        description="Passes over the training pairs; in the loop, every labelled pair so far, each round starting "
        "from where train.round_start says.",
    )
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate (constant, no schedule).")
    batch_size: int = Field(
        8, ge=1,
        description="Pairs per micro-batch across all workers (each rank takes ⌈batch_size / num_workers⌉); also "
        "the batch of the reference log-prob pass.",
    )
    grad_accum_steps: int = Field(
        1, ge=1,
        description="Micro-batches whose gradients are averaged per optimizer step: a step sees "
        "batch_size × grad_accum_steps pairs.",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Global L2 norm the gradients are clipped to before each step.")
    seed: int = Field(
        0,
        description="Seed of the LoRA initialisation and of the pair order of each epoch (a function of "
        "(seed, epoch) only, so it does not depend on the number of workers or on resuming).",
    )
    num_workers: int = Field(
        1, ge=1, description="Ray Train workers (data-parallel ranks), each with cluster.trainer resources."
    )
    use_gpu: bool = Field(
        False,
        description="Train on one GPU per worker with NCCL (each worker asks for max(cluster.trainer.num_gpus, 1) "
        "GPUs); false trains on CPU with gloo.",
    )
    deepspeed: DeepSpeedConfig = Field(DeepSpeedConfig(), description="DeepSpeed ZeRO settings of the trainer.")
    sft_warmup: SftWarmupConfig = Field(
        SftWarmupConfig(), description="Optional supervised warm-up on the chosen responses before preference training."
    )
    mpo_ref_samples: int = Field(
        2, ge=1,
        description="MPO only: responses sampled from πref per training prompt (drawn once, then reused) to "
        "estimate the point-wise KL term.",
    )
    round_start: Literal["reset", "warm_start"] = Field(
        "reset",
        description="Where each round of the loop starts training from. 'reset' (default): the base policy with the "
        "seeded LoRA initialisation (B = 0) and a fresh AdamW, every round — the loop's behaviour so far, and what "
        "training on all labels so far means: the round's adapter depends on those labels and the seeds only, not "
        "on the earlier rounds' training paths, so a round equals a fresh trainer's run on the same labels. "
        "'warm_start': the previous round's adapter (fresh AdamW; πref stays the base policy), which may need fewer "
        "epochs per round but revisits the older labels again every round. Needs lora.enabled.",
    )
    checkpoint_every_steps: int = Field(
        0, ge=0,
        description="Also checkpoint inside an epoch every this many optimizer steps, so a restarted trainer loses "
        "at most that much work; 0 checkpoints at epoch ends only.",
    )

    @field_validator("loss")
    @classmethod
    def _registered_loss(cls, name: str) -> str:
        from system.losses import get_loss  # imported here: keeps torch out of importing the config

        try:
            get_loss(name)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("train.loss: ")) from None
        return name
