"""Gold pairs: pairs with a known answer, mixed into annotators' tasks to measure how often each gets them right.

``oracle.human.gold_path`` is a JSONL file (or ``hf:`` dataset) of rows ``{"prompt", "response_1", "response_2",
"answer"}``, ``answer`` one of 1, 2, ``"tie"`` or ``"both_bad"``. Each gold pair gets the id
``gold-<first 16 hex digits of its text digest>``, so loading the same file twice queues nothing new.
"""

from __future__ import annotations

from pathlib import Path

from system.data import parse_field, read_numbered_rows
from system.errors import ConfigError, DataError
from system.labels.aggregate import CHOICES, Choice
from system.types import CandidatePair

GoldPair = tuple[CandidatePair, Choice]


def load_gold(path: str | Path | None) -> list[GoldPair]:
    """The gold pairs of ``path`` with their answers (none when ``path`` is None).

    Raises:
        ConfigError: naming ``oracle.human.gold_path``, the file, the row and the field of a bad row.
    """
    if path is None:
        return []
    gold: list[GoldPair] = []
    try:
        for number, row in read_numbered_rows(path):
            prompt, response_1, response_2 = (parse_field(path, number, row, field, "text")
                                              for field in ("prompt", "response_1", "response_2"))
            if not isinstance(response_1, str) or not isinstance(response_2, str):
                raise DataError(f"{path}: row {number}: responses must be plain strings")
            answer = str(row.get("answer"))
            if answer not in CHOICES:
                raise DataError(f"{path}: row {number}: field 'answer': {row.get('answer')!r} is not one of 1, 2, "
                                "tie, both_bad")
            digest = CandidatePair("", "", prompt, response_1, response_2).text_digest
            pair = CandidatePair(pair_id=f"gold-{digest[:16]}", prompt_id="", prompt=prompt, response_1=response_1,
                                 response_2=response_2)
            gold.append((pair, answer))  # type: ignore[arg-type]
    except DataError as exc:
        raise ConfigError(f"oracle.human.gold_path: {exc}") from None
    if not gold:
        raise ConfigError(f"oracle.human.gold_path: {path}: no gold pairs")
    return gold
