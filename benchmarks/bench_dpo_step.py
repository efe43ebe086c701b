"""Our DPO training step vs TRL's ``DPOTrainer`` step: same tiny model, same LoRA, same batch, CPU, fp32.

Both steps do the same work: one policy forward over the chosen+rejected rows, one no-grad reference forward
with the adapters disabled, the sigmoid DPO loss, backward, grad-norm clipping and an AdamW update. TRL's step
is what ``Trainer.train`` runs per step (its collator on the pre-tokenised rows, ``training_step``, clipping,
optimizer step); ours includes tokenising the batch. The two steps alternate so that load from other processes
hits both alike; warm-up steps are excluded and medians reported.
Loss agreement: both compute the loss of the same batch at the same (non-trivial) LoRA weights.

    .venv/bin/python benchmarks/bench_dpo_step.py                 # tiny default (hidden 64, 2 layers)
    .venv/bin/python benchmarks/bench_dpo_step.py --hidden 256 --layers 4 --batch 16
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from trl import DPOConfig, DPOTrainer

from system.config import LoraConfig, ModelConfig, TinyModelConfig, TrainConfig
from system.models.loading import load_policy, peft_lora_config
from system.training import collate_preferences, preference_loss
from system.types import PreferencePair

SUBJECTS = ["my cat", "our pet", "the old cat", "a small animal", "a kitten", "a stray kitten", "the dog", "a puppy"]
ANSWERS = ["It likes to sleep in the sun", "Give it good food twice a day", "Play with a ball", "A warm bed is best"]


def preference_pairs(count: int) -> list[PreferencePair]:
    """``count`` plain-text pairs whose prompts end on a token boundary, so TRL and we tokenise identically."""
    pairs = []
    for i in range(count):
        subject, answer = SUBJECTS[i % len(SUBJECTS)], ANSWERS[i % len(ANSWERS)]
        pairs.append(PreferencePair(f"Tell me about {subject}.", f" {answer}, please.", f" {answer}."))
    return pairs


def trl_trainer(
    policy: torch.nn.Module, lora_cfg: LoraConfig, tokenizer, pairs: list[PreferencePair], steps: int, out: Path
) -> DPOTrainer:
    """TRL's trainer on a copy of ``policy``'s base with the same LoRA config, then ``policy``'s adapter weights.

    Given the base model and ``peft_config``, TRL's reference is the base with adapters disabled, as ours.
    """
    dataset = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    args = DPOConfig(
        output_dir=str(out), use_cpu=True, per_device_train_batch_size=len(pairs), max_steps=steps, beta=0.1,
        learning_rate=1e-4, lr_scheduler_type="constant", optim="adamw_torch", max_grad_norm=1.0,
        gradient_checkpointing=False, bf16=False, max_length=None, report_to=[], save_strategy="no",
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    base = copy.deepcopy(policy).get_base_model()  # type: ignore[operator]
    fresh_base = type(base)(base.config)
    base_weights = {name.replace("base_layer.", ""): w for name, w in base.state_dict().items() if "lora_" not in name}
    fresh_base.load_state_dict(base_weights)
    trainer = DPOTrainer(
        model=fresh_base,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_lora_config(lora_cfg),
    )
    set_peft_model_state_dict(trainer.model, get_peft_model_state_dict(policy))
    return trainer


def real_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    """The unpadded token rows, sorted."""
    return sorted(row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask, strict=True))


def perturbed_policy(model_cfg: ModelConfig, lora_cfg: LoraConfig) -> tuple[torch.nn.Module, object]:
    """Our LoRA policy with random (non-zero) B matrices, so policy ≠ reference and the loss is not log 2."""
    model, tokenizer = load_policy(model_cfg, lora_cfg)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return model, tokenizer


def our_step(model: torch.nn.Module, optimizer, tokenizer, pairs, model_cfg, train_cfg) -> None:
    """Tokenise and collate, policy + reference forward, DPO loss, backward, clip, AdamW step."""
    batch = collate_preferences(tokenizer, pairs, model_cfg)
    loss, _ = preference_loss(model, batch, train_cfg)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], train_cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def trl_step(trainer: DPOTrainer, features: list[dict]) -> None:
    """What ``Trainer.train`` does per step: collate, ``training_step`` (loss + backward), clip, optimizer step."""
    inputs = trainer._prepare_inputs(trainer.data_collator(features))
    trainer.training_step(trainer.model, inputs)
    trainer.accelerator.clip_grad_norm_(trainer.model.parameters(), trainer.args.max_grad_norm)
    trainer.optimizer.step()
    trainer.model.zero_grad(set_to_none=True)


def timed(step) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="preference pairs per step")
    parser.add_argument("--steps", type=int, default=30, help="timed steps after warm-up")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        heads = args.hidden // 32
        tiny = TinyModelConfig(
            hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_hidden_layers=args.layers,
            num_attention_heads=heads, num_key_value_heads=heads,
        )
        model_cfg = ModelConfig(path=f"{tmp}/model", build_tiny=True, tiny=tiny, max_prompt_length=64,
                                max_response_length=64)
        lora_cfg = LoraConfig(r=8, alpha=16.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
        train_cfg = TrainConfig(loss="dpo", beta=0.1, lr=1e-4, max_grad_norm=1.0)
        pairs = preference_pairs(args.batch)
        ours, tokenizer = perturbed_policy(model_cfg, lora_cfg)
        trainer = trl_trainer(ours, lora_cfg, tokenizer, pairs, args.warmup + args.steps, Path(tmp) / "trl")
        trl_inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        our_batch = collate_preferences(tokenizer, pairs, model_cfg)
        same_tokens = real_rows(trl_inputs["input_ids"], trl_inputs["attention_mask"]) == real_rows(
            our_batch.sequences.input_ids, our_batch.sequences.attention_mask
        )  # TRL's sampler shuffles the pairs: compare the rows as sets
        with torch.no_grad():
            trl_loss = float(trainer.compute_loss(trainer.model, trl_inputs))
            our_loss = float(preference_loss(ours, our_batch, train_cfg)[0])

        features = list(trainer.train_dataset)
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop, which we unroll here
        trainer.model.train()
        optimizer = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=train_cfg.lr)
        trl_times: list[float] = []
        our_times: list[float] = []
        for _ in range(args.warmup + args.steps):  # interleaved, so a busy spell on a shared box hits both sides
            trl_times.append(timed(lambda: trl_step(trainer, features)))
            our_times.append(timed(lambda: our_step(ours, optimizer, tokenizer, pairs, model_cfg, train_cfg)))
        trl_times, our_times = trl_times[args.warmup :], our_times[args.warmup :]

    trl_median, our_median = statistics.median(trl_times), statistics.median(our_times)
    paired = statistics.median(t / o for t, o in zip(trl_times, our_times, strict=True))
    print(f"model: Llama hidden {args.hidden} x {args.layers} layers, LoRA r=8 (q,k,v,o); batch {args.batch} pairs; "
          f"{args.steps} timed steps after {args.warmup} warm-up, {args.threads} thread(s)")
    print(f"identical token ids: {same_tokens}")
    print(f"initial loss  ours {our_loss:.8f}  TRL {trl_loss:.8f}  |diff| {abs(our_loss - trl_loss):.2e}")
    print(f"step time     ours {our_median * 1e3:.2f} ms  TRL {trl_median * 1e3:.2f} ms  (medians)")
    print(f"speed ratio (TRL time / ours): {trl_median / our_median:.2f}x (median paired ratio {paired:.2f}x)")


if __name__ == "__main__":
    main()
