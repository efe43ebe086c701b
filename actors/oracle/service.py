"""Build, start and stop the oracle Serve application.

Two deployments: ``OracleJudge`` (machine oracle, ``@serve.batch``, autoscaled between
``oracle.min_replicas`` and ``oracle.max_replicas``) and ``OracleIngress`` (FastAPI routes and the
label store; one replica, the store's single writer). The human oracle needs no judge.

Under overload the service protects itself rather than growing without bound: the ingress works on at most
``oracle.max_ongoing_requests`` requests, at most ``oracle.max_queued_requests`` more wait in the proxy, and
the rest are refused at once with HTTP 503 and ``Retry-After: oracle.retry_after_s`` (the client retries
them); a request running longer than ``oracle.server_timeout_s`` gets HTTP 408. Body size and pairs per
request are bounded by ``oracle.max_request_bytes`` and ``oracle.max_pairs_per_request`` (HTTP 413).
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import BackpressureConfig

from actors.oracle.ingress import OracleIngress
from actors.oracle.judge import OracleJudge
from actors.oracle.security import resolve_token
from system.config import Config, load_config
from system.labels.gold import load_gold
from system.labels.migrate import absolute_store_url
from system.labels.render import load_guidelines

logger = logging.getLogger(__name__)
APP_NAME = "activealign-oracle"


def judge_scaling(config: Config) -> dict[str, Any]:
    """Replica count or autoscaling bounds for the judge, and how many calls a replica may hold (≥ 4 batches)."""
    oracle = config.oracle
    scaling: dict[str, Any] = {"max_ongoing_requests": max(4 * oracle.max_batch_size, 16)}
    if oracle.max_replicas == oracle.min_replicas:
        scaling["num_replicas"] = oracle.min_replicas
    else:
        scaling["autoscaling_config"] = {
            "min_replicas": oracle.min_replicas, "max_replicas": oracle.max_replicas,
            "target_ongoing_requests": oracle.max_batch_size,
        }
    return scaling


def build_app(config: Config, token: str) -> Application:
    """The Serve application for ``config.oracle`` (label store path made absolute for the replicas)."""
    oracle = config.oracle
    resources = config.cluster.oracle
    actor_options: dict[str, Any] = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if resources.resources:
        actor_options["resources"] = dict(resources.resources)
    judge = None
    if oracle.kind != "human":
        judge = OracleJudge.options(ray_actor_options=actor_options, **judge_scaling(config)).bind(oracle)
    ingress = OracleIngress.options(
        num_replicas=1, max_ongoing_requests=oracle.max_ongoing_requests, ray_actor_options={"num_cpus": 0.1},
        max_queued_requests=oracle.max_queued_requests,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=oracle.retry_after_s),
    )
    guidelines = load_guidelines(oracle.human.guidelines_path)  # read here: a replica's working directory differs
    gold = load_gold(oracle.human.gold_path) if oracle.kind == "human" else []
    return ingress.bind(oracle, absolute_store_url(oracle.label_store_url), token, judge, guidelines, gold)


def base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def start_oracle_service(config: Config, port: int | None = None) -> str:
    """Deploy the oracle app on the Ray cluster this driver is connected to; returns its base URL.

    The token is ``$<oracle.token_env>``; on a loopback host without one, a random token is
    generated and stored in that variable (see :func:`actors.oracle.security.resolve_token`).
    """
    port = config.oracle.port if port is None else port
    token, _ = resolve_token(config.oracle)
    serve.start(http_options={"host": config.oracle.host, "port": port,
                              "request_timeout_s": config.oracle.server_timeout_s})
    serve.run(build_app(config, token), name=APP_NAME, route_prefix="/")
    url = base_url(config.oracle.host, port)
    logger.info("oracle service (%s) at %s", config.oracle.kind, url)
    return url


def stop_oracle_service(shutdown: bool = True) -> None:
    """Delete the oracle app; with ``shutdown`` also stop Serve's HTTP proxy (frees the port)."""
    serve.delete(APP_NAME)
    if shutdown:
        serve.shutdown()


def app_builder(args: dict[str, Any]) -> Application:
    """Entry for ``serve run configs/serve.yaml``: args ``config`` (YAML path) and optional ``overrides``.

    The token must be set in the environment (no token is generated where nobody would see it).
    """
    config = load_config(args.get("config", "configs/tiny.yaml"), args.get("overrides", []))
    token, _ = resolve_token(config.oracle, allow_generate=False)
    return build_app(config, token)
