"""``activealign generate``: sample responses for a prompt file with the generation fleet (vLLM or HF)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from jobs.ray_session import ray_session
from system.config import Config
from system.data import file_format, read_prompts, write_rows
from system.errors import DataError

logger = logging.getLogger(__name__)


def main(config: Config, prompts: Path, out: Path, adapter: Path | None) -> int:
    """Write ``generation.responses_per_prompt`` candidates per prompt (with token ids and log-probs) to ``out``."""
    from actors.generation import GenerationFleet
    from actors.weights import broadcast_adapter

    file_format(out)  # an unwritable output type fails before Ray starts, not after generating
    if adapter is not None and not adapter.is_dir():
        raise DataError(f"--adapter {adapter}: not a directory")
    records = read_prompts(prompts)
    with ray_session(config):
        fleet = GenerationFleet(config)
        try:
            engines = fleet.setup()
            version = 0
            if adapter is not None:
                version = 1
                broadcast_adapter(adapter, version, [fleet])
            candidates = fleet.generate(records, policy_version=version)
        finally:
            fleet.shutdown()
    count = write_rows(out, (dataclasses.asdict(candidate) for candidate in candidates))
    logger.info("%d responses for %d prompts (engine %s) → %s", count, len(records), engines[0], out)
    return 0
