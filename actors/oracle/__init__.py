"""The oracle and annotation service on Ray Serve (FastAPI ingress + batched machine-oracle judge)."""

from actors.oracle.service import APP_NAME, app_builder, build_app, start_oracle_service, stop_oracle_service

__all__ = ["APP_NAME", "app_builder", "build_app", "start_oracle_service", "stop_oracle_service"]
