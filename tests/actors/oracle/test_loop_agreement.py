"""The loop logs each round's annotator agreement to MLflow (a real SQLite tracking store): the active loop runs two
rounds on its in-process parts with the human oracle service (Ray Serve, k = 3) as its labeller, while three
annotators answer over HTTP with their own tokens, and ``annotation/*`` at steps 1 and 2 equal the closed forms of
their answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from system.config import Config, load_config
from system.labels import LabelStore
from system.labels.annotators import AnnotatorRegistry
from system.labels.queue import swapped_for
from system.local_parts import LocalPolicy, LocalSelector, LocalTrainer
from system.loop import ActiveLoop, LoopParts
from system.oracle_client import OracleClient
from system.run_state import RoundState, round_dir
from system.tracking import Tracker
from tests.actors.oracle.conftest import PORT, deploy
from tests.conftest import REPO_ROOT
from tests.system.models.conftest import tiny_model_dir  # noqa: F401  (shared fixture)

BUDGET = 2  # pairs a round
VOTES = {"ann": 1, "bob": 1, "cy": 2}  # each person always prefers the pair's response 1 (ann, bob) or 2 (cy)


def expected_alpha(units: int) -> float:
    """α of ``units`` pairs each answered {1, 1, 2}: per unit o_11 = o_12 = o_21 = 1, o_22 = 0, so n_1 = 2N,
    n_2 = N, n = 3N and α = 1 − (n − 1)·2N / (2·2N·N) = 1 − (3N − 1)/(2N)."""
    return 1 - (3 * units - 1) / (2 * units)


# Fleiss' κ of the same answers: P_u = 2/6 = 1/3 on every unit, p = (2/3, 1/3), P̄e = 5/9: κ = (1/3 − 5/9)/(4/9).
FLEISS = -1 / 2


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Config:  # noqa: F811
    folder = tmp_path_factory.mktemp("loop-agreement")
    settings = {
        "model.path": tiny_model_dir, "model.build_tiny": False, "loop.run_dir": folder / "run", "loop.rounds": 2,
        "loop.prompts_per_round": 2, "loop.num_eval_prompts": 0, "generation.responses_per_prompt": 3,
        "generation.max_new_tokens": 6, "selection.budget": BUDGET, "selection.strategy": "random",
        "train.epochs": 1, "train.batch_size": 2, "train.deepspeed.enabled": False,
        "train.sft_warmup.enabled": False, "oracle.kind": "human", "oracle.human.annotations_per_pair": 3,
        "oracle.host": "127.0.0.1", "oracle.port": PORT, "oracle.label_store_url": f"sqlite:///{folder}/labels.db",
        "cluster.oracle.num_cpus": 0.5, "tracking.enabled": True, "tracking.uri": f"sqlite:///{folder}/mlflow.db",
    }
    return load_config(REPO_ROOT / "configs/tiny.yaml", [f"{key}={value}" for key, value in settings.items()])


@pytest.fixture(scope="module")
def url(ray_cluster, token_env: str, config: Config) -> Iterator[str]:
    yield from deploy(config)


def annotate(url: str, name: str, token: str, stop: threading.Event) -> None:
    """Fetch and answer this person's next task until ``stop``, always for the pair's response ``VOTES[name]``
    (translated to its place as shown to them)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        while not stop.is_set():
            task = client.get("/v1/tasks/next").json()["task"]
            if task is None:
                stop.wait(0.1)
                continue
            preferred = VOTES[name]
            shown = 3 - preferred if swapped_for(name, task["task_id"]) else preferred
            client.post(f"/v1/tasks/{task['task_id']}/answer", json={"choice": shown}).raise_for_status()


def test_each_round_s_agreement_is_logged_to_mlflow(url: str, config: Config) -> None:
    from jobs.loop_setup import load_prompt_sets

    with LabelStore(config.oracle.label_store_url) as store:
        registry = AnnotatorRegistry(store)
        tokens = {name: registry.add(name)[1] for name in VOTES}
    stop = threading.Event()
    people = [threading.Thread(target=annotate, args=(url, name, token, stop), daemon=True)
              for name, token in tokens.items()]
    for person in people:
        person.start()
    run_dir = Path(config.loop.run_dir)
    run_dir.mkdir(parents=True)
    tracker = Tracker.open(config.tracking, run_name="agreement")
    policy = LocalPolicy(config)
    prompts, _ = load_prompt_sets(config)
    try:
        with OracleClient.from_config(config.oracle, base_url=url, poll_interval_s=0.2, progress=False) as oracle:
            parts = LoopParts(fleet=policy, selector=LocalSelector(config, policy), oracle=oracle,
                              trainer=LocalTrainer(config), sync=policy.sync)
            ActiveLoop(config, run_dir, parts, tracker, RoundState(), prompts, []).run()
    finally:
        stop.set()
        for person in people:
            person.join(timeout=30)
    client = MlflowClient(tracking_uri=config.tracking.uri)

    def history(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(tracker.run_id, key))

    # Per round, not cumulative: over both rounds' 4 pairs α would be expected_alpha(4) = −0.375.
    assert history("annotation/alpha") == [(1, pytest.approx(expected_alpha(BUDGET))),
                                           (2, pytest.approx(expected_alpha(BUDGET)))]
    assert history("annotation/fleiss_kappa") == [(1, pytest.approx(FLEISS)), (2, pytest.approx(FLEISS))]
    assert history("annotation/pairs") == [(1, BUDGET), (2, BUDGET)]
    assert history("annotation/answers") == [(1, 3 * BUDGET), (2, 3 * BUDGET)]
    # cy against ann and bob's majority (response 1): never equal, and κ = (0 − 0)/(1 − 0) = 0; ann's others (bob, cy)
    # split on every pair, so ann and bob have no κ with the others.
    assert history("annotation/kappa_with_others/cy") == [(1, 0.0), (2, 0.0)]
    assert history("annotation/kappa_with_others/ann") == []
    written = json.loads((round_dir(run_dir, 2) / "metrics.json").read_text())  # the round's file has them too
    assert written["annotation/alpha"] == pytest.approx(expected_alpha(BUDGET))
