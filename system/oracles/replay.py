"""Replay oracle: labels looked up in a labelled TRL-format preference dataset (offline experiments).

A pair is found by its ``pair_id`` when the dataset has one, else by its text
(prompt, {response_1, response_2}) matched against (prompt, {chosen, rejected}). The dataset's
chosen response is preferred: prob_1 = σ((score_chosen − score_rejected)/T) oriented to response 1
when both scores are present, else 1 (or 0).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from system.data import is_dataset, read_preferences
from system.oracles.base import Oracle, UnknownPairError, preference_probability, response_text
from system.types import CandidatePair, Label, PreferencePair, Text


def text_key(prompt: Text, response_a: Text, response_b: Text) -> tuple[str, frozenset[str]]:
    """Order-free key of a pair by its text."""
    return json.dumps(prompt, sort_keys=True), frozenset((response_text(response_a), response_text(response_b)))


class ReplayOracle(Oracle):
    """Verdicts replayed from ``dataset`` (JSONL/Parquet with prompt/chosen/rejected, optional pair_id/scores)."""

    name = "replay"

    def __init__(self, dataset: str | Path, temperature: float = 1.0) -> None:
        self.temperature = temperature
        self.by_id: dict[str, PreferencePair] = {}
        self.by_text: dict[tuple[str, frozenset[str]], PreferencePair] = {}
        for row in read_preferences(dataset):
            if row.pair_id:
                self.by_id[row.pair_id] = row
            self.by_text[text_key(row.prompt, row.chosen, row.rejected)] = row
        self.model_version = str(dataset) if is_dataset(dataset) else Path(dataset).name

    def lookup(self, pair: CandidatePair) -> PreferencePair | None:
        found = self.by_id.get(pair.pair_id)
        if found is not None and text_key(found.prompt, found.chosen, found.rejected)[1] == {
            pair.response_1, pair.response_2
        }:
            return found
        return self.by_text.get(text_key(pair.prompt, pair.response_1, pair.response_2))

    def missing(self, pairs: Sequence[CandidatePair]) -> list[str]:
        return [pair.pair_id for pair in pairs if self.lookup(pair) is None]

    def label(self, pairs: Sequence[CandidatePair]) -> list[Label]:
        unknown = self.missing(pairs)
        if unknown:
            raise UnknownPairError(unknown)
        labels = []
        for pair in pairs:
            row = self.lookup(pair)
            assert row is not None  # checked by missing()
            prob_chosen = 1.0
            if row.score_chosen is not None and row.score_rejected is not None:
                prob_chosen = preference_probability(row.score_chosen, row.score_rejected, self.temperature)
            one_is_chosen = response_text(row.chosen) == pair.response_1
            prob_1 = prob_chosen if one_is_chosen else 1.0 - prob_chosen
            labels.append(Label(
                pair_id=pair.pair_id, preferred=1 if one_is_chosen else 2, prob_1=prob_1, oracle=self.name,
                model_version=self.model_version,
            ))
        return labels
