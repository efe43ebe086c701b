"""``activealign export``: collected labels or people's answers (TRL JSONL/Parquet, Label Studio, Argilla), or the
latest adapter."""

from __future__ import annotations

import shutil
from pathlib import Path

from system.config import Config
from system.errors import DataError
from system.fileio import atomic_output
from system.labels import LabelStore
from system.labels.formats import WHAT, export_labels
from system.run_state import load_round_state


def main(config: Config, out: Path, what: str = "labels", fmt: str = "trl-jsonl", run_dir: Path | None = None) -> int:
    """Export ``what`` (labels | answers | adapter) of ``run_dir`` (default ``loop.run_dir``) to ``out``."""
    if what in WHAT:
        with LabelStore(config.oracle.label_store_url) as store:
            written = export_labels(store, out, fmt, what=what, tie_policy=config.oracle.human.tie_policy)
        print("\n".join(f"exported {rows} {what} ({fmt}) to {path}" for path, rows in written.items()), flush=True)
        return 0
    if what != "adapter":
        raise DataError(f"--what {what!r}: expected labels, answers or adapter")
    source = Path(run_dir or config.loop.run_dir)
    state = load_round_state(source)
    if state is None or state.adapter_path is None:
        raise DataError(f"{source}: no trained adapter yet (no round has finished training)")
    with atomic_output(out) as staging:
        shutil.copytree(state.adapter_path, staging, symlinks=True)  # a link is copied as a link, never its target
    print(f"exported adapter of policy version {state.policy_version} to {out}", flush=True)
    return 0
