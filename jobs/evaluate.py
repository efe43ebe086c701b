"""``activealign evaluate``: oracle reward of generations (greedy or sampled) and win-rate vs the reference policy."""

from __future__ import annotations

import json
from pathlib import Path

from system.config import Config
from system.evaluation.local import evaluate_adapter


def main(config: Config, adapter: Path | None = None) -> int:
    """Print the evaluation metrics of ``adapter`` (default: the base policy) as JSON."""
    print(json.dumps(evaluate_adapter(config, adapter).metrics(), indent=1), flush=True)
    return 0
