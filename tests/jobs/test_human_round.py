"""Three people label one round of a live ``activealign run`` in Chromium, keyboard only.

The run (its own Ray, the human oracle on Ray Serve, k = 3, adjudication below agreement ½) queues the round's two
picked pairs; ann, bob and cy, each signed in with the token ``activealign annotators add`` printed for them,
answer them on ``/annotate``: ann writes a rationale, answers a tie, takes it back (u) and says both bad; the
second pair's answers (both bad, tie, a preference) agree ⅓, so it waits for rita, a reviewer, whose key decides it.
The run then trains round 1 on the aggregated labels: its ``labels.jsonl`` holds the first pair's majority and
rita's decision. While round 2 waits for people, the statistics page shows round 1's α of the stored answers,
computed here by the pairwise definition (independent of the coincidence-matrix code the service runs); then the
run is stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from benchmarks.oracle_server import wait_healthy
from system.labels import LabelStore
from tests.conftest import REPO_ROOT, free_port
from tests.jobs.test_clean_stop import start_command
from tests.system.labels.test_agreement import pairwise_alpha
from tests.system.models.conftest import tiny_model_dir  # noqa: F401  (shared fixture)

PEOPLE = (("ann", "annotator"), ("bob", "annotator"), ("cy", "annotator"), ("rita", "reviewer"))


def write_config(tmp_path: Path, model_dir: Path, port: int) -> Path:
    config = yaml.safe_load((REPO_ROOT / "configs/tiny.yaml").read_text())
    config["model"].update({"path": str(model_dir), "build_tiny": False})
    config["generation"].update({"responses_per_prompt": 3, "max_new_tokens": 6})
    config["selection"].update({"budget": 2})
    config["oracle"] = {"kind": "human", "host": "127.0.0.1", "port": port, "human_timeout_s": 600,
                        "label_store_url": f"sqlite:///{tmp_path}/labels.db",
                        "human": {"annotations_per_pair": 3, "adjudicate_below": 0.5}}
    config["train"].update({"epochs": 1, "batch_size": 2, "sft_warmup": {"enabled": False},
                            "deepspeed": {"enabled": False}})
    config["loop"].update({"rounds": 2, "prompts_per_round": 2, "num_eval_prompts": 0,
                           "run_dir": str(tmp_path / "run")})
    config["tracking"] = {"enabled": True, "uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "human-round"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "RAY_ADDRESS": ""}
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=True)


def press_keys(page, *keys: str) -> None:  # noqa: ANN001
    for key in keys:
        page.keyboard.press(key)


def test_three_people_and_a_reviewer_label_a_live_round(tmp_path: Path, browser,
                                                        tiny_model_dir: Path) -> None:  # noqa: F811
    from playwright.sync_api import expect

    port = free_port()
    config = write_config(tmp_path, tiny_model_dir, port)
    tokens = {}
    for name, role in PEOPLE:
        printed = cli("annotators", "add", name, "--role", role, "--config", str(config)).stdout
        tokens[name] = printed.strip().splitlines()[-1]
    run, log = start_command(["run", "--config", str(config)], tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_healthy(url, run, timeout=300), log.read_text()[-3000:]

        def sign_in(name: str):  # noqa: ANN202
            page = browser.new_page()
            page.goto(f"{url}/annotate#token={tokens[name]}")
            expect(page.locator("#whoami")).to_have_text(f"answering as {name}")
            return page

        # rita signs in only to review: a reviewer's page in annotation mode would hold a place of a pair too
        ann, bob, cy = (sign_in(name) for name in ("ann", "bob", "cy"))
        expect(ann.locator("#task")).to_be_visible(timeout=300_000)  # the round's pairs are queued
        first = ann.locator("body").get_attribute("data-task-id")
        ann.keyboard.press("r")
        ann.keyboard.type("Stays on the question.")
        press_keys(ann, "Escape", "1")
        expect(ann.locator("body")).to_have_attribute("data-answers", "1")
        second = ann.locator("body").get_attribute("data-task-id")
        assert second != first
        press_keys(ann, "t")
        expect(ann.locator("body")).to_have_attribute("data-answers", "2")
        press_keys(ann, "u")  # the tie is taken back: the pair is hers to answer again
        expect(ann.locator("#status")).to_have_text("Answer taken back: answer this pair again.")
        expect(ann.locator("body")).to_have_attribute("data-task-id", second)
        press_keys(ann, "b")
        expect(ann.locator("#empty")).to_be_visible()
        for page, key in ((bob, "t"), (cy, "2")):  # pairs already started come first: the same two, in order
            expect(page.locator("body")).to_have_attribute("data-task-id", first, timeout=30_000)
            press_keys(page, "1")
            expect(page.locator("body")).to_have_attribute("data-task-id", second)
            press_keys(page, key)
            expect(page.locator("#empty")).to_be_visible()
        rita = sign_in("rita")
        rita.keyboard.press("v")  # the second pair's answers (both bad, tie, a preference) agree ⅓ < ½
        expect(rita.locator("body")).to_have_attribute("data-task-id", second, timeout=30_000)
        expect(rita.locator("#answers li")).to_have_count(3)
        rita.keyboard.press("2")  # in the review view the pair's own order: response 2 wins, for good
        expect(rita.locator("#progress")).to_have_text("0 waiting for review")

        # Round 1 trains on the aggregates; round 2 then waits for people, with the service up.
        round_1 = tmp_path / "run/round_001"
        deadline = time.monotonic() + 300
        while not (round_1 / "metrics.json").exists():
            assert run.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        with LabelStore(f"sqlite:///{tmp_path}/labels.db") as store:
            records = [r for r in store.labels(round=1) if r.oracle == "human"]
        answers: dict[str, dict[str, str]] = defaultdict(dict)
        for record in records:
            if record.annotator:
                answers[record.pair_id][record.annotator] = record.decision
        labels = {record.pair_id: record for record in records if not record.annotator}
        (first_id,) = [r.pair_id for r in records if r.rationale == "Stays on the question."]
        (second_id,) = set(labels) - {first_id}
        assert {"both_bad", "tie"} <= set(answers[second_id].values())
        votes_for_1 = sum(choice == "1" for choice in answers[first_id].values())
        trained = {row["pair_id"]: row for row in map(json.loads, (round_1 / "labels.jsonl").read_text().splitlines())}
        assert set(trained) == {first_id, second_id}
        assert trained[first_id]["chosen"] == (labels[first_id].response_1 if votes_for_1 >= 2
                                               else labels[first_id].response_2)
        assert trained[first_id]["score_chosen"] == pytest.approx(max(votes_for_1, 3 - votes_for_1) / 3)
        assert trained[second_id]["chosen"] == labels[second_id].response_2
        assert (labels[second_id].adjudicated_by, trained[second_id]["score_chosen"]) == ("rita", 1.0)
        metrics = json.loads((round_1 / "metrics.json").read_text())
        assert metrics["annotation/answers"] == 6 and any(key.startswith("train/") for key in metrics)
        tracking = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
        (mlflow_run,) = tracking.search_runs([tracking.get_experiment_by_name("human-round").experiment_id])
        waiting = [m.value for m in tracking.get_metric_history(mlflow_run.info.run_id, "labelling/pending")
                   if m.step == 1]
        assert waiting[0] == 2 and waiting[-1] == 0  # round 1's wait for people, as it went

        alpha = pairwise_alpha({pair: list(votes.values()) for pair, votes in answers.items()})
        stats = browser.new_page()
        stats.goto(f"{url}/annotate/stats#token={tokens['rita']}")
        expect(stats.locator("body")).to_have_attribute("data-loaded", "1")
        round_row = "#rounds tr[data-round='1']"
        assert (stats.text_content(f"{round_row} td.alpha") or "").strip() == f"{alpha:.3f}"
        first_is_1 = labels[first_id].decision == "1"
        assert stats.text_content(f"{round_row} td.outcomes") == f"{int(first_is_1)} / {2 - first_is_1} / 0 / 0"
        assert stats.text_content(f"{round_row} td.adjudicated") == "1"
    finally:
        if run.poll() is None:
            run.terminate()
        stopped = run.wait(timeout=120)
    assert stopped == 130, log.read_text()[-3000:]  # a clean stop while round 2 waits for people
