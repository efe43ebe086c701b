"""``activealign import``: labels from a TRL preference file, a Label Studio export or Argilla records, into the
run's label store (``oracle.label_store_url``) — idempotent, bound to their texts like every stored label."""

from __future__ import annotations

from pathlib import Path

from system.config import Config
from system.labels import LabelStore
from system.labels.formats import import_labels


def main(config: Config, path: Path, fmt: str, round: int = 0, oracle: str = "trl") -> int:
    """Import ``path`` (``fmt``); ``round`` and ``oracle`` name TRL rows, which carry neither. 0 on success."""
    with LabelStore(config.oracle.label_store_url) as store:
        added = import_labels(store, path, fmt, round=round, oracle=oracle)
    print(f"imported {added} new labels ({fmt}) from {path} into {config.oracle.label_store_url}", flush=True)
    return 0
