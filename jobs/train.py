"""``activealign train``: standalone DPO/IPO/MPO training on a TRL-format preference file (Ray Train + DeepSpeed).

Also the entrypoint of a ``ray job submit`` training job: on a cluster it connects to ``$RAY_ADDRESS``.
Rerunning with the same ``out`` resumes from the newest epoch checkpoint there.
"""

from __future__ import annotations

import logging
from pathlib import Path

from jobs.ray_session import ray_session
from system.config import Config, dump_config
from system.data import load_preferences
from system.errors import DataError
from system.fileio import atomic_write_text

logger = logging.getLogger(__name__)


def main(config: Config, data: Path, out: Path) -> int:
    """Train ``train.loss`` on ``data`` into ``out`` (``out/adapter`` + per-epoch checkpoints); 0 on success."""
    from actors.trainer import Trainer

    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: exists and is not a directory")
    pairs = load_preferences(data)
    if not pairs:
        raise DataError(f"{data}: no preference pairs to train on")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_config(config))
    with ray_session(config):
        adapter_dir, history = Trainer(config).fit(pairs, out, resume=True)
    for metrics in history:
        logger.info("epoch %d: loss %.4f (%.3f s/step, peak RSS %.2f GB)", metrics["epoch"], metrics["loss"],
                    metrics["step_time_s"], metrics["peak_rss_gb"])
    logger.info("trained %s on %d pairs → %s", config.train.loss, len(pairs), adapter_dir)
    return 0
