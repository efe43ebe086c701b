"""Capacity plan of one active-learning round, recomputed from a config file (``docs/scaling.md`` explains it).

Per phase of a round (generation, features, selection, labelling, training, sync) it prints the time, the memory
one actor of that phase needs and the bytes the round moves, from the config's sizes and a few hardware figures:

    N = prompts_per_round · n(n−1)/2 candidate pairs (n responses per prompt), L labels before the last round,
    T = prompt + response tokens per sequence, P base parameters, P_lora adapter parameters, k feature dimension,
    W_g / W_f / W_t generation actors / feature workers / trainer ranks.

* generation: prompts · n · T_r new tokens (plus the evaluation prompts) at ``gen_tokens_per_s`` per actor.
* features: (N + L) pairs, 2 sequences each, ``feature_cost`` (measured: 1.09–1.24) times one LoRA forward+backward,
  4·P FLOPs per token (forward 2·P, backward to the activations 2·P; LoRA weight gradients are negligible).
* selection: Φ shards of (N + L)/W_f rows × k × 4 bytes; V and V⁻¹ 2·k²·8 bytes on the selector; per pick z
  (k float64) to each worker and one float32 row back from each: 12·W_f·k bytes (``actors/selector.py``).
* labelling: 2 · budget sequences through the judge, 2·P_judge FLOPs per token.
* training: every label so far, ``train.epochs`` times: policy forward+backward (4·P per token) plus a reference
  forward (2·P) unless the loss is reference-free.
* sync: the adapter (P_lora parameters in the model's dtype) to every generation actor and feature worker.

Times divide FLOPs by ``peak_flops · mfu`` per device; activations follow Korthikanti et al. (2022) with
FlashAttention, 34·h bytes per token per layer in 16-bit (twice that in float32). The figures are estimates for
sizing, not measurements; ``tests/benchmarks/test_capacity_plan.py`` checks the exact ones (pairs, shard, V⁻¹ and
per-pick bytes, adapter size) against a tiny round on CPU.

Usage: python benchmarks/capacity_plan.py --config configs/cluster-7b.yaml [--markdown] [--peak-flops 989e12 ...]
       [section.key=value ...]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields

from system.config import Config, TinyModelConfig, load_config
from system.loop import regenerates
from system.losses import get_loss

GiB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
KNOWN_MODELS = {
    # config.json of meta-llama/Llama-2-7b-hf on the Hugging Face hub (6.74 B parameters)
    "meta-llama/Llama-2-7b-hf": TinyModelConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                                                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                                                max_position_embeddings=4096),
}
JUDGE_PARAMS = {
    "minilm": 22.7e6,  # sentence-transformers/all-MiniLM-L6-v2 model card
    "OpenAssistant/reward-model-deberta-v3-large-v2": 435e6,  # DeBERTa-v3-large backbone + head
}
ROW_BYTES = 4  # a feature row is float32
DESIGN_BYTES = 8  # V and V⁻¹ are float64
TEXT_BYTES_PER_TOKEN = 4  # about four characters of UTF-8 per token of English text
FEATURE_COST = 1.24
"""Gradient features cost this many plain LoRA forward+backward passes (measured: 1.24x on CPU, 1.09x on an H200)."""


@dataclass(frozen=True)
class Hardware:
    """The figures a plan assumes per device; defaults: one NVIDIA H100 SXM per GPU actor.

    Attributes:
        peak_flops: dense bf16 FLOP/s (989e12: NVIDIA's H100 SXM datasheet; this project measured 778e12 on an H200,
            which has the same compute).
        mfu: fraction of the peak a forward+backward reaches (0.4 assumed for 7B at ~1k-token sequences).
        gen_tokens_per_s: new tokens per second per generation actor (vLLM, 7B bf16 on one H100: 5,000 assumed,
            under half the ~12,500 tok/s third parties report for Llama-3.1-8B, because every request carries a
            rank-128 LoRA).
        net_bytes_per_s: bytes per second between nodes through Ray's object store (5e9 assumed: half of 100 Gb/s).
        selector_flops: FLOP/s of the selector's CPU for the O(k³) rebuild (1e11 assumed: a few cores in float64).
        worker_read_bytes_per_s: memory bandwidth a feature worker's per-pick score update reads its shard at (104e9:
            measured on the H200 box's CPU at k = 8192; a GPU shard reads faster).
        rpc_s: round-trip latency of one Ray actor call (1e-3 assumed).
        device_gib: memory of one GPU (80 GiB: H100).
    """

    peak_flops: float = 989e12
    mfu: float = 0.4
    gen_tokens_per_s: float = 5000.0
    net_bytes_per_s: float = 5e9
    selector_flops: float = 1e11
    worker_read_bytes_per_s: float = 104e9
    rpc_s: float = 1e-3
    device_gib: float = 80.0


@dataclass(frozen=True)
class Sizes:
    """The counts a round's cost follows, read from a config (the last round: most labels)."""

    prompts: int
    responses: int
    pairs: int  # N, candidate pairs of the round
    labelled: int  # L, labels before the last round (their features are recomputed)
    labels_total: int  # labels the last round trains on
    budget: int
    eval_sequences: int
    prompt_tokens: int
    response_tokens: int
    dim: int  # k
    gen_actors: int
    feature_workers: int
    train_ranks: int
    params: int  # P
    lora_params: int  # P_lora
    param_bytes: int
    layers: int
    hidden: int
    kv_dim: int

    @property
    def seq_tokens(self) -> int:
        return self.prompt_tokens + self.response_tokens


def base_params(shape: TinyModelConfig) -> int:
    """Parameters of a Llama: embeddings and an untied head (V·h each), per layer attention (q, o: h²; k, v: h·kv)
    plus a SwiGLU MLP (3·h·i) plus two norms (2·h), and the final norm (h)."""
    h, i, kv = shape.hidden_size, shape.intermediate_size, kv_width(shape)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    return 2 * shape.vocab_size * h + shape.num_hidden_layers * per_layer + h


def kv_width(shape: TinyModelConfig) -> int:
    return shape.num_key_value_heads * (shape.hidden_size // shape.num_attention_heads)


def lora_params(shape: TinyModelConfig, rank: int, targets: list[str]) -> int:
    """r·(d_in + d_out) per targeted linear per layer."""
    h, i, kv = shape.hidden_size, shape.intermediate_size, kv_width(shape)
    dims = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    return shape.num_hidden_layers * sum(rank * sum(dims[name]) for name in targets)


def model_shape(config: Config) -> TinyModelConfig:
    """The policy's architecture: ``model.tiny`` when it is built, else a known hub model's config."""
    if config.model.build_tiny:
        return config.model.tiny
    if config.model.path in KNOWN_MODELS:
        return KNOWN_MODELS[config.model.path]
    raise SystemExit(f"model.path: {config.model.path} is not in KNOWN_MODELS of {__file__}; add its config.json "
                     "sizes there")


def sizes(config: Config, shape: TinyModelConfig | None = None) -> Sizes:
    shape = shape or model_shape(config)
    n, prompts, budget = config.generation.responses_per_prompt, config.loop.prompts_per_round, config.selection.budget
    rounds = config.loop.rounds
    return Sizes(
        prompts=prompts, responses=n, pairs=prompts * n * (n - 1) // 2, labelled=budget * (rounds - 1),
        labels_total=budget * rounds, budget=budget,
        eval_sequences=config.loop.num_eval_prompts * max(1, config.loop.eval_samples_per_prompt),
        prompt_tokens=config.model.max_prompt_length,
        response_tokens=min(config.generation.max_new_tokens, config.model.max_response_length),
        dim=config.features.projection_dim, gen_actors=config.generation.num_actors,
        feature_workers=config.features.num_workers, train_ranks=config.train.num_workers,
        params=base_params(shape), lora_params=lora_params(shape, config.lora.r, config.lora.target_modules)
        if config.lora.enabled else 0,
        param_bytes=DTYPE_BYTES[config.model.dtype], layers=shape.num_hidden_layers, hidden=shape.hidden_size,
        kv_dim=kv_width(shape),
    )


@dataclass(frozen=True)
class Phase:
    """One phase of a round: seconds, bytes of memory one actor of it needs, bytes it moves, what it grows with."""

    name: str
    seconds: float
    memory_per_actor: float
    bytes_moved: float
    grows_with: str
    bound_by: str
    note: str = ""


def activation_bytes(s: Sizes, sequences: int) -> float:
    """Activations kept for a backward pass over ``sequences`` full-length sequences: 34·h bytes per token per layer
    in 16-bit (Korthikanti et al. 2022, FlashAttention: no T² term), scaled by the dtype."""
    return sequences * s.seq_tokens * s.layers * 34 * s.hidden * s.param_bytes / 2


def plan(config: Config, hardware: Hardware = Hardware(), shape: TinyModelConfig | None = None) -> list[Phase]:
    """The phases of the config's last round (most labels), in loop order."""
    s = sizes(config, shape)
    hw = hardware
    device_flops = hw.peak_flops * hw.mfu
    device = hw.device_gib * GiB
    weights = s.params * s.param_bytes
    adapter = s.lora_params * s.param_bytes
    fresh_every_round = regenerates(config) or config.loop.rounds == 1

    new_tokens = (s.prompts * s.responses * int(fresh_every_round) + s.eval_sequences) * s.response_tokens
    sequences = config.generation.batch_size * s.responses
    kv_per_sequence = s.seq_tokens * s.layers * 2 * s.kv_dim * s.param_bytes
    kv_room = 0.9 * device - weights - adapter  # vLLM's default gpu_memory_utilization is 0.9
    held = min(sequences, int(kv_room // kv_per_sequence))
    generation = Phase(
        "generation", new_tokens / (s.gen_actors * hw.gen_tokens_per_s), weights + adapter + held * kv_per_sequence,
        new_tokens * (TEXT_BYTES_PER_TOKEN + 8),  # text and one float64 log-prob per token back to the driver
        "prompts·n·T_r / W_g", "GPU (decode is memory-bandwidth bound)",
        "" if held == sequences else
        f"the KV cache of generation.batch_size × n = {sequences} full-length sequences needs "
        f"{_size(sequences * kv_per_sequence)}; vLLM pages it, holding {held} at once on a {hw.device_gib:.0f} GiB "
        "device (the tokens/s figure assumes such batches)")

    feature_pairs = s.pairs + s.labelled
    feature_flops = feature_pairs * 2 * s.seq_tokens * 4 * s.params * FEATURE_COST
    shard_rows = math.ceil(feature_pairs / s.feature_workers)
    feature_memory = (weights + adapter + activation_bytes(s, 2 * config.features.batch_size)
                      + shard_rows * s.dim * ROW_BYTES)
    features = Phase(
        "features", feature_flops / (s.feature_workers * device_flops), feature_memory,
        feature_pairs * 2 * s.seq_tokens * TEXT_BYTES_PER_TOKEN,  # the pairs' texts to the workers; Φ stays there
        "(N + L)·T·P / W_f", "GPU FLOPs", too_big(feature_memory, device, "features.batch_size"))

    design = 2 * s.dim**2 * DESIGN_BYTES
    per_pick = per_pick_bytes(s)
    scoring = 2 * shard_rows * s.dim**2 / device_flops  # s_i = φᵢᵀ V⁻¹ φᵢ on each worker's shard
    picks = s.budget * (max(shard_rows * s.dim * 8 / hw.worker_read_bytes_per_s, 2 * s.dim**2 / hw.selector_flops)
                        + hw.rpc_s + per_pick / hw.net_bytes_per_s)
    rebuild = (s.labelled * s.dim**2 + s.dim**3 / 3) / hw.selector_flops  # Gram of the labelled rows + Cholesky
    broadcast = s.dim**2 * DESIGN_BYTES * s.feature_workers + s.labelled * s.dim * ROW_BYTES
    selection = Phase(
        "selection", rebuild + scoring + picks + broadcast / hw.net_bytes_per_s, design,
        broadcast + s.budget * per_pick,
        "k³ + L·k² (selector), N·k²/W_f + b·N·k/W_f (workers), b·12·W_f·k bytes", "selector CPU (k³)")

    judge = JUDGE_PARAMS.get(config.oracle.model or "", 0.0) if config.oracle.kind == "reward_model" else 0.0
    judged_tokens = 2 * s.budget * s.seq_tokens
    labelling = Phase(
        "labelling", 2 * judge * judged_tokens / device_flops, judge * 4, judged_tokens * TEXT_BYTES_PER_TOKEN,
        "b·T (a human judge: b × seconds per label)", "judge (a human bounds everything)")

    reference = 0 if get_loss(config.train.loss).reference_free else 2
    train_flops = config.train.epochs * s.labels_total * 2 * s.seq_tokens * (4 + reference) * s.params
    steps = math.ceil(config.train.epochs * s.labels_total / (config.train.batch_size * config.train.grad_accum_steps))
    rank_pairs = math.ceil(config.train.batch_size / s.train_ranks)
    optimizer = s.lora_params * (s.param_bytes + 4 + 4 + 4)  # gradients, fp32 master and two Adam moments
    sharded = optimizer / s.train_ranks if config.train.deepspeed.enabled and config.train.deepspeed.stage >= 2 else (
        optimizer)
    train_memory = weights + adapter + sharded + activation_bytes(s, 2 * rank_pairs)
    training = Phase(
        "training", train_flops / (s.train_ranks * device_flops), train_memory,
        steps * 2 * (s.train_ranks - 1) * adapter,  # a ring all-reduce of the adapter's gradients per step
        "epochs·L_total·T·P / W_t", "GPU FLOPs", too_big(train_memory, device, "train.batch_size"))

    receivers = s.gen_actors + s.feature_workers
    sync = Phase("sync", adapter * receivers / hw.net_bytes_per_s, adapter, adapter * receivers,
                 "P_lora·(W_g + W_f)", "network")
    return [generation, features, selection, labelling, training, sync]


def per_pick_bytes(s: Sizes) -> int:
    """One greedy pick: z (k float64) to each of W_f workers, one float32 row back from each."""
    return s.feature_workers * s.dim * (DESIGN_BYTES + ROW_BYTES)


def too_big(memory: float, device: float, key: str) -> str:
    """A note when one actor needs more than its device holds."""
    if memory <= device:
        return ""
    return f"{_size(memory)} per actor exceeds a {device / GiB:.0f} GiB device: halve {key} (activations scale with it)"


def _count(value: float) -> str:
    return f"{value / 1e9:.2f} B" if value >= 1e9 else f"{value / 1e6:.2f} M"


def _size(value: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def _time(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.2g} s"


def table(phases: list[Phase], markdown: bool) -> str:
    header = ["phase", "time", "memory / actor", "bytes moved", "grows with", "bound by"]
    rows = [[p.name, _time(p.seconds), _size(p.memory_per_actor), _size(p.bytes_moved), p.grows_with, p.bound_by]
            for p in phases]
    bound = max(phases, key=lambda p: p.seconds)
    total = f"round ≈ {_time(sum(p.seconds for p in phases))} (phases in sequence); longest: {bound.name}"
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines + ["", total])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in [header, *rows]]
    return "\n".join(lines + [total])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/cluster-7b.yaml")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. features.projection_dim=16384")
    defaults = Hardware()
    for field in fields(Hardware):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=float, default=getattr(defaults, field.name))
    args = parser.parse_args(argv)
    hardware = Hardware(**{field.name: getattr(args, field.name) for field in fields(Hardware)})
    config = load_config(args.config, args.overrides)
    s = sizes(config)
    print(f"{args.config}: N = {s.pairs} pairs, L = {s.labelled} earlier labels, k = {s.dim}, T = {s.seq_tokens}, "
          f"P = {_count(s.params)}, P_lora = {_count(s.lora_params)}, W_g/W_f/W_t = "
          f"{s.gen_actors}/{s.feature_workers}/{s.train_ranks}\n")
    phases = plan(config, hardware)
    print(table(phases, args.markdown))
    for phase in phases:
        if phase.note:
            print(f"\n- {phase.name}: {phase.note}" if args.markdown else f"note: {phase.name}: {phase.note}")


if __name__ == "__main__":
    main()
