"""SIGKILL the serve process mid-stream: a retrying client's acknowledged labels all survive, exactly once, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from benchmarks.oracle_server import kill_session, start_healthy, stop_server
from system.labels.migrate import create_store_engine
from system.labels.schema import labels_table
from system.oracle_client import OracleClient
from system.types import CandidatePair
from tests.actors.oracle.conftest import TOKEN
from tests.conftest import free_port

N_PAIRS = 40
KILL_AFTER = 12


@pytest.mark.drill
def test_sigkill_mid_stream_loses_and_duplicates_nothing(tmp_path: Path, store_url: str) -> None:
    port = free_port()
    config_path = tmp_path / "serve.yaml"
    config_path.write_text(yaml.safe_dump({
        "oracle": {"kind": "programmatic", "callable": "tests.system.oracles.rewards_for_tests:politeness",
                   "port": port, "label_store_url": store_url},
        "cluster": {"num_cpus": 4},
    }))
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    pairs = [CandidatePair(pair_id=f"k{i}", prompt_id="q", prompt="q", response_1="please" * (i % 2 + 1),
                           response_2="thanks") for i in range(N_PAIRS)]
    acknowledged: list[str] = []
    failures: list[BaseException] = []

    def stream() -> None:
        with OracleClient(url, token=TOKEN, timeout=10, retry_deadline_s=900, progress=False) as client:
            for pair in pairs:
                try:
                    (label,) = client.label([pair], round=1)
                except BaseException as exc:  # surfaced in the main thread
                    failures.append(exc)
                    return
                acknowledged.append(label.pair_id)

    server = start_healthy(config_path, log, url, TOKEN)
    try:
        client_thread = threading.Thread(target=stream)
        client_thread.start()
        while len(acknowledged) < KILL_AFTER and client_thread.is_alive():
            time.sleep(0.05)
        kill_session(server)
        acked_before_kill = list(acknowledged)
        assert len(acked_before_kill) < N_PAIRS, "the stream finished before the kill"
        server = start_healthy(config_path, log, url, TOKEN)
        client_thread.join(timeout=400)
        assert not client_thread.is_alive() and not failures, (failures, log.read_text()[-3000:])
    finally:
        stop_server(server)
    engine = create_store_engine(store_url)
    with engine.connect() as connection:
        counts = dict(connection.execute(
            select(labels_table.c.pair_id, func.count()).group_by(labels_table.c.pair_id)).tuples().all())
    engine.dispose()
    assert set(acked_before_kill) <= set(counts)
    assert sorted(acknowledged) == sorted(counts) == sorted(pair.pair_id for pair in pairs)
    assert set(counts.values()) == {1}
