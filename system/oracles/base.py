"""What every machine oracle shares: rewards → P(y1 ≻ y2) → a label, by argmax or Bradley–Terry sampling.

Given rewards R1 = R(x, y1) and R2 = R(x, y2) and a temperature T > 0,

    prob_1 = P(y1 ≻ y2) = σ((R1 − R2) / T),   σ(z) = 1 / (1 + e^(−z)).

``argmax`` labels y1 preferred iff prob_1 ≥ 0.5; ``bradley_terry`` draws preferred = 1 with
probability prob_1 from a uniform u(seed, pair_id) — a hash of the seed and the pair id, so a pair
gets the same label whichever batch or replica judges it.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

from system.errors import OracleError
from system.types import CandidatePair, Label, Text

Sampling = Literal["argmax", "bradley_terry"]


class UnknownPairError(OracleError):
    """The oracle has no verdict for these pair ids (replay data lacks them)."""

    def __init__(self, pair_ids: Sequence[str]) -> None:
        self.pair_ids = list(pair_ids)
        shown = ", ".join(repr(pair_id) for pair_id in self.pair_ids[:5])
        more = f" (+{len(self.pair_ids) - 5} more)" if len(self.pair_ids) > 5 else ""
        super().__init__(f"unknown pair_id {shown}{more}: not in the oracle's data")


def text_of(text: Text) -> str:
    """A prompt as plain text: strings as they are, conversations as ``role: content`` lines."""
    if isinstance(text, str):
        return text
    return "\n".join(f"{message.get('role', 'user')}: {message.get('content', '')}" for message in text)


def response_text(response: Text) -> str:
    """A response as plain text (a conversational response is its messages' contents, joined)."""
    return response if isinstance(response, str) else "".join(message["content"] for message in response)


def preference_probability(reward_1: float, reward_2: float, temperature: float) -> float:
    """σ((R1 − R2)/T), computed without overflow for large reward gaps."""
    z = (reward_1 - reward_2) / temperature
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def pair_uniform(seed: int, pair_id: str) -> float:
    """A uniform number in [0, 1) determined by (seed, pair_id) alone."""
    digest = hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def decide(prob_1: float, sampling: Sampling, seed: int, pair_id: str) -> Literal[1, 2]:
    """The preferred response (1 or 2) under ``sampling``."""
    if sampling == "argmax":
        return 1 if prob_1 >= 0.5 else 2
    return 1 if pair_uniform(seed, pair_id) < prob_1 else 2


class Oracle(ABC):
    """A machine oracle: ``label(pairs)`` gives one :class:`Label` per pair, in order."""

    name: str
    model_version: str = ""

    @abstractmethod
    def label(self, pairs: Sequence[CandidatePair]) -> list[Label]:
        """Judge every pair; raises :class:`UnknownPairError` when some pair cannot be judged."""

    def missing(self, pairs: Sequence[CandidatePair]) -> list[str]:
        """Pair ids this oracle cannot judge (empty for reward-based oracles)."""
        return []


class RewardOracle(Oracle):
    """An oracle defined by a scalar reward R(x, y); labels follow the module docstring."""

    def __init__(self, temperature: float = 1.0, sampling: Sampling = "argmax", seed: int = 0) -> None:
        if temperature <= 0:
            raise OracleError(f"oracle.temperature must be > 0 (got {temperature})")
        self.temperature = temperature
        self.sampling = sampling
        self.seed = seed

    @abstractmethod
    def rewards(self, prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        """R(x_i, y_i) for each (prompt, response) position i."""

    def label(self, pairs: Sequence[CandidatePair]) -> list[Label]:
        """Score both responses of every pair in one ``rewards`` call, then turn reward gaps into labels."""
        if not pairs:
            return []
        prompts = [pair.prompt for pair in pairs] * 2
        responses = [pair.response_1 for pair in pairs] + [pair.response_2 for pair in pairs]
        scores = self.rewards(prompts, responses)
        labels = []
        for pair, reward_1, reward_2 in zip(pairs, scores[: len(pairs)], scores[len(pairs):], strict=True):
            prob_1 = preference_probability(reward_1, reward_2, self.temperature)
            labels.append(Label(
                pair_id=pair.pair_id, preferred=decide(prob_1, self.sampling, self.seed, pair.pair_id),
                prob_1=prob_1, oracle=self.name, model_version=self.model_version,
            ))
        return labels
