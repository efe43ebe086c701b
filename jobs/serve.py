"""``activealign serve``: run the oracle/annotation service until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

from system.config import Config
from system.labels.render import load_guidelines

logger = logging.getLogger(__name__)


def main(config: Config) -> int:
    """Start (or join) Ray, deploy the oracle app on ``oracle.host:oracle.port``, block until interrupted."""
    from actors.oracle import start_oracle_service, stop_oracle_service
    from actors.oracle.security import resolve_token
    from jobs.ray_session import check_oracle_port, ray_session

    check_oracle_port(config)
    load_guidelines(config.oracle.human.guidelines_path)  # an unreadable guidelines file stops here, before Ray
    token, generated = resolve_token(config.oracle)
    stop = threading.Event()

    def request_stop(*_: Any) -> None:
        stop.set()

    with ray_session(config):
        signal.signal(signal.SIGTERM, request_stop)  # after ray.init, which installs its own handler
        url = start_oracle_service(config)
        print(f"oracle ({config.oracle.kind}) serving at {url}  (annotate: {url}/annotate, API docs: {url}/docs)",
              flush=True)
        if generated:
            print(f"generated bearer token for this run (set ${config.oracle.token_env} to choose one): {token}",
                  file=sys.stderr, flush=True)
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            logger.info("interrupted: stopping the oracle service")
        stop_oracle_service()
    return 0
