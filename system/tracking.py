"""MLflow tracking for one active-learning loop: one MLflow run per loop, metrics indexed by round.

The run id is stored in the run directory's round state, so a resumed loop reopens the same MLflow
run (:meth:`Tracker.open` with ``run_id``) and keeps logging round metrics at their round step.
A local ``sqlite:///…`` store is the default; its artifacts go next to the database file unless
``tracking.artifact_location`` says otherwise. An ``http://`` URI points at a tracking server.

Artifacts are what a person looks at: each round's readable files and adapter (:meth:`Tracker.log_round`),
the report and the final model. The design state (V and V⁻¹ in float64, 1 GiB at k = 8192, plus the
feature shards and RNG states) stays in the run directory for resume and is uploaded only on request,
once, compressed (:meth:`Tracker.log_design_state`).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException

from system.config import Config, TrackingConfig, flatten_config
from system.errors import ConfigError
from system.run_state import ROUND_READABLE_FILES, archive_design_state

logger = logging.getLogger(__name__)

_PARAM_BATCH = 100  # MLflow accepts at most 100 params per log_batch call
_PARAM_VALUE_LIMIT = 6000


def _local_store_dir(uri: str) -> Path | None:
    """The directory holding a local sqlite/file store, or None for a remote server."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).expanduser().resolve().parent
    if uri.startswith("file://"):
        return Path(urlparse(uri).path).resolve()
    if "://" not in uri:
        return Path(uri).resolve()
    return None


def _artifact_location(cfg: TrackingConfig) -> str | None:
    if cfg.artifact_location:
        return cfg.artifact_location
    store_dir = _local_store_dir(cfg.uri)
    return (store_dir / "mlartifacts").as_uri() if store_dir is not None else None


class Tracker:
    """Logs params, step-indexed metrics and artifacts of one loop into one MLflow run.

    Args:
        client: MLflow client bound to the tracking URI.
        run_id: the MLflow run all calls write to.
    """

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @classmethod
    def open(cls, cfg: TrackingConfig, run_name: str, run_id: str | None = None) -> Tracker:
        """Create a run in ``cfg.experiment`` (creating the experiment if needed), or reopen ``run_id``."""
        store_dir = _local_store_dir(cfg.uri)
        if store_dir is not None:
            store_dir.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=cfg.uri)
        if run_id is not None:
            try:
                client.get_run(run_id)
            except MlflowException:
                raise ConfigError(
                    f"tracking.uri {cfg.uri}: has no MLflow run {run_id} to continue (a copied run directory?); "
                    "point --tracking.uri at the store that holds it, or add --new-mlflow-run to continue in a new "
                    "MLflow run"
                ) from None
            client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            logger.info("resuming MLflow run %s", run_id)
            return cls(client, run_id)
        experiment = client.get_experiment_by_name(cfg.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(cfg.experiment, artifact_location=_artifact_location(cfg))
        )
        run = client.create_run(experiment_id, run_name=run_name)
        logger.info("MLflow run %s in experiment %r (%s)", run.info.run_id, cfg.experiment, cfg.uri)
        return cls(client, run.info.run_id)

    def log_config(self, config: Config) -> None:
        """Every config setting as a param (``train.lr`` …); keys already logged (a resumed run) are kept."""
        logged = self.client.get_run(self.run_id).data.params
        params = [
            Param(key, value[:_PARAM_VALUE_LIMIT])
            for key, value in sorted(flatten_config(config).items())
            if key not in logged
        ]
        for start in range(0, len(params), _PARAM_BATCH):
            self.client.log_batch(self.run_id, params=params[start : start + _PARAM_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Finite numeric metrics at ``step`` (the round index); NaN/inf values are skipped with a warning."""
        now_ms = int(time.time() * 1000)
        batch = []
        for key, value in metrics.items():
            if value is None or not math.isfinite(float(value)):
                logger.warning("metric %s=%r at step %d is not finite: not logged", key, value, step)
                continue
            batch.append(Metric(key, float(value), now_ms, step))
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file or a whole directory into the run's artifacts under ``artifact_path``."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_round(self, round_path: Path, round_index: int, adapter_dir: str | Path | None) -> None:
        """Round ``round_index``'s readable files (:data:`~system.run_state.ROUND_READABLE_FILES`) under
        ``round_NNN/`` and its adapter under ``round_NNN/adapter``; trainer checkpoints, candidates and
        the selector snapshot stay on disk."""
        artifact_path = f"round_{round_index:03d}"
        for name in ROUND_READABLE_FILES:
            if (round_path / name).is_file():
                self.log_artifact(round_path / name, artifact_path)
        if adapter_dir is not None:
            self.log_artifact(adapter_dir, f"{artifact_path}/adapter")

    def log_design_state(self, run_dir: str | Path) -> None:
        """The run's design state as one ``design_state/design_state.tar.gz`` (staged inside ``run_dir``)."""
        with tempfile.TemporaryDirectory(dir=run_dir, prefix=".design-upload-") as staging:
            self.log_artifact(archive_design_state(run_dir, Path(staging) / "design_state.tar.gz"), "design_state")

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status=status)

    def ui_command(self, uri: str) -> str:
        """The shell command that opens this store in the MLflow UI."""
        return f"mlflow ui --backend-store-uri {uri}" if not uri.startswith("http") else f"open {uri}"
