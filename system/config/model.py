"""``model``: the policy checkpoint, its dtype and token limits, and the offline tiny model's architecture."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from system.config.section import Section


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
