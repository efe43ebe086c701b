"""Gradient-feature extraction vs one plain forward+backward of the same LoRA model on the same batch.

ActiveDPO features need every example's projected LoRA gradient. ``projected_gradients`` gets them from
one batched forward plus one ``autograd.grad`` over the LoRA outputs (hooks, LoGra-style projection);
the baseline is the ordinary training step's forward + ``backward()`` of Σ log π(y|x) (which yields
only the batch-summed gradient). Goal: ≤ 1.5x the baseline.

    .venv/bin/python benchmarks/bench_features.py            # Llama 512 hidden × 4 layers, LoRA r=16, k=8192
    .venv/bin/python benchmarks/bench_features.py --hidden 128 --layers 2 --dim 1024   # quick
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from peft import LoraConfig, get_peft_model
from timing import best_of
from transformers import LlamaConfig, LlamaForCausalLM

from system.features import projected_gradients, projection_for
from system.models.batch import SequenceBatch, pad_rows
from system.models.logprobs import sequence_logps


def build_model(hidden: int, layers: int, rank: int) -> torch.nn.Module:
    config = LlamaConfig(
        vocab_size=4096, hidden_size=hidden, intermediate_size=hidden * 8 // 3, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, max_position_embeddings=512,
    )
    torch.manual_seed(0)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      init_lora_weights=False)
    return get_peft_model(LlamaForCausalLM(config), lora).eval()


def random_batch(sequences: int, prompt_len: int, response_len: int) -> SequenceBatch:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(sequences):
        length = int(torch.randint(response_len // 2, response_len + 1, (1,), generator=generator))
        tokens = torch.randint(1, 4096, (prompt_len + length,), generator=generator).tolist()
        rows.append((tokens[:prompt_len], tokens[prompt_len:]))
    return pad_rows(rows, pad_token_id=0, padding_side="right")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--dim", type=int, default=8192, help="projection dimension k")
    parser.add_argument("--pairs", type=int, default=8, help="pairs per batch (2 sequences each)")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--response-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = build_model(args.hidden, args.layers, args.rank).to(device)
    batch = random_batch(2 * args.pairs, args.prompt_len, args.response_len).to(device)
    projection = projection_for(model, args.dim, seed=0)

    def synchronized(step: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run

    def plain_step() -> None:
        model.zero_grad(set_to_none=True)
        sequence_logps(model, batch).sum().backward()

    timed_plain = synchronized(plain_step)
    timed_features = synchronized(lambda: projected_gradients(model, batch, projection))

    timed_plain(), timed_features()  # warm-up
    baseline = best_of(args.repeats, timed_plain)
    ours = best_of(args.repeats, timed_features)
    print(f"Llama hidden={args.hidden} layers={args.layers}, LoRA r={args.rank} on q/k/v/o, k={args.dim} "
          f"(blocks {projection.block_width} → CountSketch), batch {2 * args.pairs} sequences × ≤"
          f"{args.prompt_len + args.response_len} tokens, device {device}, torch threads={torch.get_num_threads()}")
    print(f"plain forward+backward: {baseline * 1e3:.0f} ms; per-example projected gradients: {ours * 1e3:.0f} ms "
          f"({ours / args.pairs * 1e3:.1f} ms per pair)")
    print(f"ratio features / plain step: {ours / baseline:.2f}x (goal ≤ 1.5x)")


if __name__ == "__main__":
    main()
