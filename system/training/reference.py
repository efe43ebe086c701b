"""What training needs from πref, computed once before the first step: reference log-probs, MPO's data.

πref is the model with its LoRA adapters disabled; with full-weight training (no adapters) it is
the model as passed in, before any update. Either way the values are computed in one no-grad pass
and stored beside the checkpoints, so training steps (and a resumed run) never run πref again.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from system.config import Config, ModelConfig
from system.errors import DataError
from system.fileio import atomic_write_text
from system.generation import HFEngine, sampling_params
from system.losses import pair_preference_prob
from system.models.loading import reference_mode, unwrap
from system.models.logprobs import sequence_logps
from system.training.batches import collate_preferences
from system.types import PreferencePair, PromptRecord, Text


@contextlib.contextmanager
def as_reference(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """πref in eval mode without gradients: adapters disabled for a peft model, the model itself otherwise."""
    was_training = model.training
    model.eval()
    context = reference_mode(model) if isinstance(unwrap(model), PeftModel) else contextlib.nullcontext(model)
    try:
        with torch.no_grad(), context:
            yield model
    finally:
        model.train(was_training)


def reference_pair_logps(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    model_cfg: ModelConfig,
    batch_size: int,
) -> Tensor:
    """``[N, 2]`` (log πref(y_w|x), log πref(y_l|x)) for every pair, in ``batch_size`` chunks.

    Summed or length-normalised per ``model.length_normalize``, as the training step expects.
    """
    device = next(model.parameters()).device
    chunks = []
    with as_reference(model):
        for start in range(0, len(pairs), batch_size):
            batch = collate_preferences(tokenizer, pairs[start : start + batch_size], model_cfg).to(device)
            logps = sequence_logps(model, batch.pair_sequences, model_cfg.length_normalize)
            chunks.append(torch.stack(logps.split(batch.num_pairs), dim=1).cpu())
    return torch.cat(chunks)


@dataclass(frozen=True)
class MpoReference:
    """MPO's offline reference data, aligned with the training pairs.

    Attributes:
        pair_prob_chosen: per pair πp_ref(y_w≻y_l|x) = σ(log πref(y_w|x) − log πref(y_l|x)).
        samples: per pair, S responses sampled from πref(·|x) for that pair's prompt (D_ref(x)).
    """

    pair_prob_chosen: tuple[float, ...]
    samples: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.pair_prob_chosen)

    def subset(self, indices: Sequence[int]) -> MpoReference:
        """The entries of the pairs at ``indices`` (for a batch)."""
        return MpoReference(tuple(self.pair_prob_chosen[i] for i in indices), tuple(self.samples[i] for i in indices))

    def save(self, path: str | Path) -> None:
        """Write as JSON, atomically."""
        atomic_write_text(path, json.dumps({"pair_prob_chosen": self.pair_prob_chosen, "samples": self.samples}))

    @classmethod
    def load(cls, path: str | Path) -> MpoReference:
        """Read what :meth:`save` wrote."""
        data = json.loads(Path(path).read_text())
        return cls(tuple(data["pair_prob_chosen"]), tuple(tuple(samples) for samples in data["samples"]))


def prompt_key(prompt: Text) -> str:
    """A prompt (plain or conversational) as a string key: canonical JSON."""
    return json.dumps(prompt, sort_keys=True)


def prepare_mpo_reference(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    cfg: Config,
    known_samples: Mapping[str, Sequence[str]] | None = None,
) -> MpoReference:
    """Compute MPO's reference data from πref once, before training.

    πp_ref(y_w≻y_l|x) comes from the reference log-probs of each pair; D_ref(x) are
    ``train.mpo_ref_samples`` responses per distinct prompt sampled from πref with the
    ``generation`` settings (seeded by ``generation.seed``; the global RNG is left untouched).

    Args:
        known_samples: D_ref(x) already drawn, by :func:`prompt_key` (the loop samples every training
            prompt once before round 1); only prompts missing here are sampled.
    """
    if not pairs:
        raise DataError("prepare_mpo_reference: no preference pairs")
    ref_logps = reference_pair_logps(model, tokenizer, pairs, cfg.model, cfg.train.batch_size)
    pair_prob = pair_preference_prob(ref_logps[:, 0], ref_logps[:, 1])
    by_prompt = {key: list(samples) for key, samples in (known_samples or {}).items()}
    missing = {prompt_key(pair.prompt): pair.prompt for pair in pairs if prompt_key(pair.prompt) not in by_prompt}
    if missing:
        records = [PromptRecord(prompt=prompt, prompt_id=key) for key, prompt in missing.items()]
        params = sampling_params(cfg.generation, n=cfg.train.mpo_ref_samples)
        engine = HFEngine(unwrap(model), tokenizer, cfg.model, cfg.generation.batch_size)  # type: ignore[arg-type]
        with torch.random.fork_rng(devices=[]), as_reference(model):
            candidates = engine.generate(records, params, policy_version=0)
        for candidate in candidates:
            by_prompt.setdefault(candidate.prompt_id, []).append(candidate.response)
    samples = tuple(tuple(by_prompt[prompt_key(pair.prompt)]) for pair in pairs)
    return MpoReference(tuple(pair_prob.tolist()), samples)
