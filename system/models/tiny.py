"""The offline tiny model: a Llama-architecture causal LM plus a locally trained byte-level BPE tokenizer.

This box (and CI) cannot download weights, so tests and the embedded default run build a small
model from :class:`~system.config.TinyModelConfig` and save it with ``save_pretrained``. Everything
downstream then loads it through the same ``from_pretrained`` path a user takes with a hub id.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from system.config import TinyModelConfig
from system.errors import ConfigError
from system.models.corpus import builtin_corpus, pretraining_dialogues
from system.models.pretrain import pretrain_on_dialogues

logger = logging.getLogger(__name__)

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<s>", "</s>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *ROLE_TOKENS)
BUILD_RECORD = "activealign_tiny.json"

# Each turn is "<|role|>\n{content}</s>"; a generation prompt ends with "<|assistant|>\n".
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def train_tokenizer(corpus: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with pad/bos/eos, chat-role tokens and a chat template.

    Plain text encodes as ``<s> tokens…`` (a BOS is prepended, as Llama tokenizers do); every byte
    sequence is encodable because the initial alphabet is the 256 byte symbols.

    Raises:
        ConfigError: when ``vocab_size`` cannot hold the byte alphabet plus the special tokens.
    """
    minimum = len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ConfigError(f"model.tiny.vocab_size: {vocab_size} is below the byte-level BPE minimum {minimum}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(ROLE_TOKENS),
        chat_template=CHAT_TEMPLATE,
        model_max_length=1 << 20,
    )


def build_tiny_llama(tiny: TinyModelConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A randomly initialised Llama whose weights depend only on ``tiny.seed`` (global RNG untouched)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_hidden_layers,
        num_attention_heads=tiny.num_attention_heads,
        num_key_value_heads=tiny.num_key_value_heads,
        max_position_embeddings=tiny.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny.seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def build_tiny_model(out_dir: str | Path, tiny: TinyModelConfig, corpus: Sequence[str] | None = None) -> Path:
    """Build (once) the tiny model and its tokenizer under ``out_dir``.

    Idempotent: when ``out_dir`` already holds a build of the same ``tiny`` config it returns at once; a build
    of another config is an error, never silently reused (a changed architecture or pre-training would
    otherwise keep the old weights). The directory appears atomically (one rename), complete or not at all;
    of concurrent builders the first to finish wins and the others keep its build.

    Args:
        out_dir: target directory, loadable afterwards with ``from_pretrained(out_dir)``.
        tiny: architecture, init seed and optional pre-training (``pretrain_steps`` on
            :func:`~system.models.corpus.pretraining_dialogues`); ``vocab_size`` is the tokenizer's vocabulary.
        corpus: lines to train the tokenizer on; defaults to :func:`~system.models.corpus.builtin_corpus`.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ConfigError: when ``out_dir`` holds a build of another ``tiny`` config (naming the keys that differ).
    """
    out_path = Path(out_dir)
    record = out_path / BUILD_RECORD
    if record.exists():
        built, wanted = json.loads(record.read_text()), tiny.model_dump()
        if built != wanted:
            changed = ", ".join(f"{key}: {built.get(key)} → {value}" for key, value in wanted.items()
                                if built.get(key) != value)
            raise ConfigError(f"model.path {str(out_path)!r} holds a tiny model built from another model.tiny "
                              f"({changed}); delete it to rebuild, or set model.path to another directory")
        return out_path
    tokenizer = train_tokenizer(list(corpus) if corpus is not None else builtin_corpus(), tiny.vocab_size)
    if len(tokenizer) != tiny.vocab_size:
        logger.warning("tokenizer learned %d tokens (model.tiny.vocab_size=%d)", len(tokenizer), tiny.vocab_size)
    model = build_tiny_llama(tiny, tokenizer)
    if tiny.pretrain_steps:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tiny.seed)
            pretrain_on_dialogues(model, tokenizer, pretraining_dialogues(), tiny.pretrain_steps, tiny.pretrain_lr,
                                  tiny.seed)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_path.parent, prefix=f".{out_path.name}.build-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / BUILD_RECORD).write_text(json.dumps(tiny.model_dump(), indent=1))
        try:
            os.rename(staging, out_path)  # atomic; refuses to replace a directory another builder completed
        except OSError:
            if not record.exists():
                raise
            logger.info("%s was built concurrently by another process; keeping that one", out_path)
            return out_path
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built tiny model (%d parameters) at %s", model.num_parameters(), out_path)
    return out_path
