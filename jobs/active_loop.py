"""``activealign run``: the active loop as a Ray job (local in-process Ray, or a cluster under ``ray job submit``)."""

from __future__ import annotations

import logging
from pathlib import Path

from actors.oracle.security import configured_token
from jobs.loop_setup import (
    RayParts,
    check_config,
    load_pool,
    load_prompt_sets,
    open_run_dir,
    write_run_dir,
)
from jobs.ray_metrics import LabellingProgress, RayMetricsSink
from jobs.ray_session import check_oracle_port, ray_session
from system.config import Config
from system.loop import ActiveLoop
from system.report import write_report
from system.tracking import Tracker

logger = logging.getLogger(__name__)


def main(config: Config, resume: Path | None = None, overwrite: bool = False, new_mlflow_run: bool = False) -> int:
    """Run (or resume) the loop; returns the process exit code.

    Everything that reads input — config, files, the run directory, the MLflow run to continue — is checked
    before anything is written or started. ``overwrite`` lets a fresh run replace an earlier run's outputs in
    ``loop.run_dir``; ``new_mlflow_run`` lets a resumed run log into a new MLflow run (a copied run directory
    whose MLflow store lacks the saved run).
    """
    check_config(config)
    configured_token(config.oracle)  # a too-short oracle token stops here, before Ray starts
    check_oracle_port(config)
    prompts, eval_prompts = load_prompt_sets(config)
    pool = load_pool(config)
    run_dir, state = open_run_dir(config, resume, overwrite)
    tracker = None
    if config.tracking.enabled:
        run_id = None if new_mlflow_run else state.mlflow_run_id
        tracker = Tracker.open(config.tracking, run_name=run_dir.name, run_id=run_id)
        tracker.log_config(config)
        state.mlflow_run_id = tracker.run_id
    write_run_dir(config, run_dir, fresh=resume is None)
    status = "FAILED"
    try:
        with ray_session(config) as dashboard_url:
            parts = RayParts(config, run_dir, on_label_progress=LabellingProgress(tracker))
            try:
                loop = ActiveLoop(config, run_dir, parts.start(state), tracker, state, prompts, eval_prompts, pool,
                                  sinks=[RayMetricsSink()])
                loop.run()
            finally:
                parts.shutdown()
        report = write_report([run_dir], run_dir / "report")
        if tracker is not None:
            tracker.log_artifact(report.parent, "report")
            if state.adapter_path is not None:
                tracker.log_artifact(state.adapter_path, "model")
            if config.tracking.upload_design_state:
                tracker.log_design_state(run_dir)
        status = "FINISHED"
    finally:
        if tracker is not None:
            tracker.finish(status)
    _print_where_to_look(config, run_dir, report, dashboard_url, tracker)
    return 0


def _print_where_to_look(config: Config, run_dir: Path, report: Path, dashboard: str | None,
                         tracker: Tracker | None) -> None:
    lines = [f"run directory: {run_dir}  (resume with: activealign run --resume {run_dir})", f"report: {report}"]
    if tracker is not None:
        lines.append(f"MLflow run {tracker.run_id}: {tracker.ui_command(config.tracking.uri)}")
    if dashboard:
        lines.append(f"Ray dashboard: {dashboard}")
    print("\n".join(lines), flush=True)
