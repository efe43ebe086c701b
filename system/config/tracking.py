"""``tracking``: MLflow tracking."""

from __future__ import annotations

from pydantic import Field

from system.config.section import Section


class TrackingConfig(Section):
    """MLflow tracking: a local sqlite store by default, an ``http://`` server on a cluster.

    Each round uploads what a person reads (metrics, the picked pairs and their labels, the adapter);
    the design state resume needs stays in the run directory (see ``upload_design_state``).
    """

    enabled: bool = Field(True, description="Log params, per-round metrics and artifacts of a run to MLflow.")
    uri: str = Field(
        "sqlite:///runs/mlflow.db",
        description="MLflow tracking URI: 'sqlite:///path' or a directory for a local store (created if missing), "
        "'http://host:port' for a tracking server.",
    )
    experiment: str = Field("activealign", description="MLflow experiment the run goes into (created if missing).")
    artifact_location: str | None = Field(
        None,
        description="Artifact root given to a newly created experiment; null puts a local store's artifacts in "
        "mlartifacts/ next to it and leaves a server's default.",
    )
    upload_design_state: bool = Field(
        False,
        description="Upload the design state (selector checkpoint with V and V⁻¹ in float64, feature-worker shards, "
        "RNG states) once when the run ends, as one design_state.tar.gz; off because at k = 8192 V and V⁻¹ are "
        "1 GiB, and resume reads them from the run directory anyway.",
    )
