"""Frozen records that cross component boundaries (driver ⇄ actors ⇄ oracle ⇄ store).

Text is either a plain string or a conversation (a list of ``{"role", "content"}`` messages),
the two forms TRL accepts for ``prompt``/``chosen``/``rejected``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal, Union

Message = dict[str, str]
Text = Union[str, list[Message]]


@dataclass(frozen=True)
class PreferencePair:
    """A labelled pair in TRL's preference format: ``chosen`` ≻ ``rejected`` given ``prompt``."""

    prompt: Text
    chosen: Text
    rejected: Text
    score_chosen: float | None = None
    score_rejected: float | None = None
    pair_id: str | None = None


@dataclass(frozen=True)
class PromptRecord:
    """A prompt-only row (the input of generation)."""

    prompt: Text
    prompt_id: str


@dataclass(frozen=True)
class Candidate:
    """One sampled response. ``token_ids``/``logprobs`` have one entry per generated token."""

    prompt_id: str
    prompt: Text
    response: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    policy_version: int = 0


def pair_text_digest(prompt: Text, response_1: str, response_2: str) -> str:
    """SHA-256 (hex, 64 characters) of the texts a verdict judges, in order: the canonical JSON of
    ``[prompt, response_1, response_2]``. Swapping the responses gives another digest, since a verdict's
    ``preferred`` names a position."""
    canonical = json.dumps([prompt, response_1, response_2], ensure_ascii=False, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class CandidatePair:
    """An unlabelled pair (x, y1, y2) eligible for selection."""

    pair_id: str
    prompt_id: str
    prompt: Text
    response_1: str
    response_2: str
    policy_version: int = 0

    @property
    def text_digest(self) -> str:
        """:func:`pair_text_digest` of this pair's texts: what a label of ``pair_id`` is bound to."""
        return pair_text_digest(self.prompt, self.response_1, self.response_2)


@dataclass(frozen=True)
class Label:
    """An oracle's verdict on a pair: ``prob_1`` = P(y1 ≻ y2), ``preferred`` the winner (1 or 2).

    People may also find no winner: ``choice`` is then ``"tie"`` (``prob_1`` = ½) or ``"both_bad"``
    (neither response acceptable: no preference to train on); "" (or ``"1"``/``"2"``) is a preference.
    """

    pair_id: str
    preferred: Literal[1, 2]
    prob_1: float
    oracle: str
    model_version: str = ""
    annotator: str = ""
    choice: str = ""

    @property
    def decision(self) -> str:
        """``"1"``, ``"2"``, ``"tie"`` or ``"both_bad"``."""
        return self.choice or str(self.preferred)


@dataclass(frozen=True)
class SelectionResult:
    """Selected pairs in pick order, with the score (φᵀV⁻¹φ, weighted for ADPO+) each had when picked."""

    pair_ids: tuple[str, ...]
    scores: tuple[float, ...]
    strategy: str
    round: int = 0
    skipped_zero_norm: int = 0
    extra: dict[str, float] = field(default_factory=dict)
