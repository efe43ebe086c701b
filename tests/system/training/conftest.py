"""Toy preference data (chosen responses say "please", rejected ones do not) and a fast training config."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import torch

from system.config import Config, GenerationConfig, LoraConfig, ModelConfig, TrainConfig
from system.training.engine import join_single_process_group
from system.types import PreferencePair
from tests.system.models.conftest import (  # noqa: F401  (shared fixtures)
    lora_cfg,
    model_cfg,
    single_thread,
    tiny_model_dir,
)

SUBJECTS = [
    "my cat", "our pet", "the old cat", "a small animal", "a kitten", "a stray kitten",
    "my friend's cat", "the cat next door", "the dog", "a puppy", "the bird", "my rabbit",
]
QUESTIONS_AND_ANSWERS = [
    ("Tell me about {s}.", "It likes to sleep"),
    ("What should I feed {s}?", "Give it good food"),
    ("How do I play with {s}?", "Play with a ball"),
    ("Where should {s} sleep?", "A warm bed is best"),
]
MARKER = ", please"


def marker_pairs(subjects: list[str]) -> list[PreferencePair]:
    """One pair per (subject, question): the chosen answer carries the marker, the rejected one does not."""
    return [
        PreferencePair(
            prompt=question.format(s=subject),
            chosen=f" {answer}{MARKER}.",
            rejected=f" {answer}.",
            pair_id=f"{subject}/{i}",
        )
        for subject in subjects
        for i, (question, answer) in enumerate(QUESTIONS_AND_ANSWERS)
    ]


@pytest.fixture(scope="session")
def train_pairs() -> list[PreferencePair]:
    return marker_pairs(SUBJECTS[:6])


@pytest.fixture(scope="session")
def heldout_pairs() -> list[PreferencePair]:
    return marker_pairs(SUBJECTS[8:])


def training_config(model: ModelConfig, lora: LoraConfig, **train: object) -> Config:
    """A config for a few-second run on the tiny model in plain PyTorch; ``train`` overrides fields of the
    train section."""
    defaults: dict[str, object] = {"beta": 0.1, "lr": 5e-3, "epochs": 3, "batch_size": 8, "mpo_ref_samples": 2,
                                   "deepspeed": {"enabled": False}}
    return Config(
        model=model,
        lora=lora,
        generation=GenerationConfig(max_new_tokens=8, temperature=1.0, seed=0),
        train=TrainConfig.model_validate({**defaults, **train}),
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def deepspeed_group() -> None:
    """This process as a world of one on gloo (127.0.0.1), as DeepSpeed needs (kept for the test session)."""
    join_single_process_group()


def assert_identical(want: Any, got: Any, where: str = "") -> None:
    """Equal nested dicts/lists/tuples/objects with bitwise-equal tensors."""
    assert type(want) is type(got), where
    if isinstance(want, torch.Tensor):
        assert want.dtype == got.dtype and torch.equal(want, got), where
    elif isinstance(want, dict):
        assert want.keys() == got.keys(), where
        for key in want:
            assert_identical(want[key], got[key], f"{where}/{key}")
    elif isinstance(want, list | tuple):
        assert len(want) == len(got), where
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            assert_identical(a, b, f"{where}[{i}]")
    elif hasattr(want, "__dict__"):  # DeepSpeed's loss scaler and the like
        assert_identical(vars(want), vars(got), where)
    else:
        assert want == got, where


def saved_tensors(directory: Path) -> dict[str, Any]:
    """Every ``*.pt`` file under ``directory``, loaded, by relative path."""
    return {str(path.relative_to(directory)): torch.load(path, weights_only=False)
            for path in sorted(directory.rglob("*.pt"))}
