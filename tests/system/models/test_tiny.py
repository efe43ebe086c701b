"""The offline tiny model: built from config, saved with save_pretrained, loadable like a hub checkpoint."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from system.config import TinyModelConfig
from system.errors import ConfigError
from system.models.tiny import build_tiny_model, train_tokenizer
from tests.system.models.conftest import TINY


def test_build_loads_through_from_pretrained(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = model.config
    assert config.model_type == "llama"
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 2)
    assert config.hidden_size // config.num_attention_heads == 32
    assert config.vocab_size == len(tokenizer) == TINY.vocab_size
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert {tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token} == {"<pad>", "<s>", "</s>"}


def test_tokenizer_roundtrips_any_text(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for text in ["How can I help my cat stay calm?", "Zürich, 😀 — ünïcode & $42", "  leading spaces"]:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_chat_template_renders_turns(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == "<s><|user|>\nHi</s><|assistant|>\nHello!</s>"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<s><|user|>\nHi</s><|assistant|>\n"
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[:2]) == ["<s>", "<|user|>"]


def test_build_is_idempotent_and_deterministic(tiny_model_dir: Path, tmp_path: Path) -> None:
    weights = tiny_model_dir / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert build_tiny_model(tiny_model_dir, TINY) == tiny_model_dir
    assert weights.stat().st_mtime_ns == stamp
    other = build_tiny_model(tmp_path / "again", TINY)
    first = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    second = AutoModelForCausalLM.from_pretrained(other).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert [p.name for p in tmp_path.iterdir()] == ["again"]


def test_a_build_of_another_config_is_refused_not_reused(tiny_model_dir: Path) -> None:
    weights = tiny_model_dir / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    changed = TINY.model_copy(update={"pretrain_steps": TINY.pretrain_steps + 1})
    with pytest.raises(ConfigError, match=f"pretrain_steps: {TINY.pretrain_steps} → {TINY.pretrain_steps + 1}"):
        build_tiny_model(tiny_model_dir, changed)
    assert weights.stat().st_mtime_ns == stamp


def test_concurrent_builders_agree(tmp_path: Path) -> None:
    target = tmp_path / "shared"
    with ThreadPoolExecutor(2) as pool:
        built = list(pool.map(lambda _: build_tiny_model(target, TINY), range(2)))
    assert built == [target, target]
    assert AutoModelForCausalLM.from_pretrained(target).config.vocab_size == TINY.vocab_size
    assert [p.name for p in tmp_path.iterdir()] == ["shared"]


def test_vocab_too_small_for_byte_alphabet() -> None:
    with pytest.raises(ConfigError, match="model.tiny.vocab_size: 100"):
        train_tokenizer(["hello"], TinyModelConfig(vocab_size=100).vocab_size)
