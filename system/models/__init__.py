"""Policies: the offline tiny model, loading with LoRA, the adapters-off reference, sequence log-probs."""

from system.models.loading import load_policy, load_tokenizer, reference_mode, save_adapter
from system.models.logprobs import SequenceBatch, encode_sequences, sequence_logps, token_logps
from system.models.tiny import build_tiny_model

__all__ = [
    "SequenceBatch",
    "build_tiny_model",
    "encode_sequences",
    "load_policy",
    "load_tokenizer",
    "reference_mode",
    "save_adapter",
    "sequence_logps",
    "token_logps",
]
