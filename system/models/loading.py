"""Loading the policy and tokenizer the way a user does (``from_pretrained``), LoRA, and the reference policy.

The reference policy πref is the base model with the LoRA adapters switched off
(:func:`reference_mode`), so training never holds a second copy of the weights.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from system.config import LoraConfig, ModelConfig
from system.errors import ModelLoadError
from system.fileio import atomic_output
from system.models.tiny import build_tiny_model

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
"""The file of a saved peft adapter that holds its LoRA weights."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def resolve_model_path(model_cfg: ModelConfig) -> str:
    """The path or hub id to load; builds the offline tiny model first when asked to and missing."""
    if model_cfg.build_tiny and not Path(model_cfg.path).exists():
        build_tiny_model(model_cfg.path, model_cfg.tiny)
    return model_cfg.path


def load_tokenizer(model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of ``model.path`` (built first when ``model.build_tiny``); pad token defaults to EOS.

    Raises:
        ModelLoadError: one line naming ``model.path`` when it cannot be loaded.
    """
    path = resolve_model_path(model_cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"model.path {path!r}: cannot load tokenizer ({_first_line(exc)})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_base(path: str | Path, model_cfg: ModelConfig, what: str) -> PreTrainedModel:
    try:
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=DTYPES[model_cfg.dtype], trust_remote_code=model_cfg.trust_remote_code
        )
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"{what} {str(path)!r}: cannot load model ({_first_line(exc)})") from None


def peft_lora_config(lora_cfg: LoraConfig) -> PeftLoraConfig:
    """peft's LoRA config for a causal LM from our ``lora`` section (rank r, scaling α/r, dropout, targets)."""
    return PeftLoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,  # type: ignore[arg-type]  # peft scales by alpha / r; a float alpha works
        lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules),
        task_type="CAUSAL_LM",
    )


def load_policy(
    model_cfg: ModelConfig,
    lora_cfg: LoraConfig,
    adapter_path: str | Path | None = None,
    is_trainable: bool = True,
    seed: int = 0,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The policy πθ and its tokenizer.

    With ``lora.enabled`` the result is a ``PeftModel``: a saved adapter when ``adapter_path`` is given,
    else fresh adapters (B = 0, so the policy starts equal to the reference) initialised from ``seed``.
    With LoRA disabled all weights train and ``adapter_path``, if given, is a full checkpoint directory.

    Args:
        model_cfg: ``model`` section (path or hub id, dtype, ``build_tiny``).
        lora_cfg: ``lora`` section.
        adapter_path: a directory written by :func:`save_adapter`.
        is_trainable: train mode with gradients on the trainable weights, else eval mode and frozen.
        seed: seed of the LoRA ``A`` initialisation (the global RNG is left untouched).

    Raises:
        ModelLoadError: one line naming the model path or adapter directory that cannot be loaded.
    """
    tokenizer = load_tokenizer(model_cfg)
    model: torch.nn.Module
    if not lora_cfg.enabled:
        source = adapter_path or resolve_model_path(model_cfg)
        model = _load_base(source, model_cfg, "adapter" if adapter_path else "model.path")
    elif adapter_path is not None:
        base = _load_base(resolve_model_path(model_cfg), model_cfg, "model.path")
        try:
            model = PeftModel.from_pretrained(base, str(adapter_path), is_trainable=is_trainable)
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(f"adapter {str(adapter_path)!r}: cannot load ({_first_line(exc)})") from None
    else:
        base = _load_base(resolve_model_path(model_cfg), model_cfg, "model.path")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = get_peft_model(base, peft_lora_config(lora_cfg))
    model.train(is_trainable)
    if not is_trainable:
        model.requires_grad_(False)
    return model, tokenizer


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP/DeepSpeed wrapper (``.module``), or ``model`` itself."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else model


@contextmanager
def reference_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run the block with the reference policy πref: the same model with its LoRA adapters disabled.

    Accepts a ``PeftModel`` or a wrapper around one (DDP, a DeepSpeed engine). Gradients are not
    disabled here: wrap reference forwards in ``torch.no_grad()``.

    Raises:
        TypeError: when the model has no adapters (full-weight training needs precomputed reference log-probs).
    """
    peft_model = unwrap(model)
    if not isinstance(peft_model, PeftModel):
        raise TypeError(
            "reference_mode needs a LoRA (peft) model; with lora.enabled=false precompute reference log-probs"
        )
    with peft_model.disable_adapter():
        yield model


def save_adapter(model: torch.nn.Module, out_dir: str | Path) -> Path:
    """Write the trainable weights atomically: the peft adapter for LoRA, else the full model.

    The directory is complete or absent (written beside it and renamed into place), and replaces a
    previous version. LoRA output loads with ``PeftModel.from_pretrained(base, out_dir)``.
    """
    out_path = Path(out_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    inner = unwrap(model)
    with atomic_output(out_path) as staging:
        inner.save_pretrained(str(staging))  # type: ignore[operator]
    return out_path


def load_adapter_weights(model: torch.nn.Module, adapter_dir: Path) -> None:
    """Overwrite the LoRA weights of ``model`` in place with those saved in ``adapter_dir``.

    Raises:
        ValueError: the adapter's LoRA keys do not match the model's modules.
    """
    state = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    result: Any = set_peft_model_state_dict(model, state)
    unexpected = [key for key in result.unexpected_keys if "lora_" in key]
    if unexpected:
        raise ValueError(f"{adapter_dir}: adapter keys do not match the model ({unexpected[:3]} ...)")


def serve_adapter(model: torch.nn.Module, model_cfg: ModelConfig, lora_cfg: LoraConfig,
                  adapter_dir: Path) -> torch.nn.Module:
    """The policy of a new version for generation or features: with ``lora.enabled`` the adapter's weights are
    loaded into ``model`` in place and ``model`` is returned; with full weights ``adapter_dir`` is a checkpoint and
    a new (non-trainable) policy is loaded from it."""
    if lora_cfg.enabled:
        load_adapter_weights(model, adapter_dir)
        return model
    return load_policy(model_cfg, lora_cfg, adapter_dir, is_trainable=False)[0]
