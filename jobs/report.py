"""``activealign report RUN_DIR…``: reward vs labels per strategy, as HTML + PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from system.report import write_report


def main(run_dirs: Sequence[Path], out: Path) -> int:
    """Compare the runs in ``run_dirs``; writes ``out/report.html`` and ``out/report.png``."""
    html = write_report(run_dirs, out)
    print(f"report: {html}\nplot: {html.with_name('report.png')}", flush=True)
    return 0
