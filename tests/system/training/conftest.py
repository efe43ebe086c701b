"""Toy preference data (chosen responses say "please", rejected ones do not) and a fast training config."""

from __future__ import annotations

import pytest

from system.config import Config, GenerationConfig, LoraConfig, ModelConfig, TrainConfig
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
    """A config for a few-second run on the tiny model; ``train`` overrides fields of the train section."""
    defaults: dict[str, object] = {"beta": 0.1, "lr": 5e-3, "epochs": 3, "batch_size": 8, "mpo_ref_samples": 2}
    return Config(
        model=model,
        lora=lora,
        generation=GenerationConfig(max_new_tokens=8, temperature=1.0, seed=0),
        train=TrainConfig.model_validate({**defaults, **train}),
    )
