"""Richer human answers on the live service: three people per pair (k = 3) answering 1 / 2 / tie / both bad with a
strength and a rationale, changing and taking back answers until the loop's client consumes the round, a
reviewer deciding a disagreement (over HTTP and on the page, keyboard only), and gold pairs measuring accuracy."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from system.config import Config
from system.labels import LabelStore
from system.oracle_client import OracleClient
from system.types import CandidatePair
from tests.actors.oracle.conftest import AUTH, TOKEN, add_people, deploy, oracle_config

GOLD = [{"prompt": "Is water wet?", "response_1": "Yes, it wets things.", "response_2": "Purple.", "answer": 1}]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    folder = tmp_path_factory.mktemp("answers")
    (folder / "gold.jsonl").write_text("".join(json.dumps(row) + "\n" for row in GOLD), encoding="utf-8")
    human = {"annotations_per_pair": 3, "adjudicate_below": 0.5, "gold_path": str(folder / "gold.jsonl"),
             "gold_rate": 0.5}
    return oracle_config(folder / "labels.db", kind="human", human=human)


@pytest.fixture(scope="module")
def url(ray_cluster, token_env: str, config: Config) -> Iterator[str]:
    yield from deploy(config)


@pytest.fixture(scope="module")
def people(config: Config) -> dict[str, dict[str, str]]:
    return add_people(config, (("ann", "annotator"), ("bob", "annotator"), ("cy", "annotator"), ("rita", "reviewer")))


def pairs(prefix: str, n: int) -> list[CandidatePair]:
    return [CandidatePair(f"{prefix}{i}", "q", f"Question {prefix}{i}?", f"Good answer {i}.", f"Bad answer {i}.")
            for i in range(n)]


def next_task(url: str, who: dict[str, str]) -> dict:
    while (task := httpx.get(f"{url}/v1/tasks/next", headers=who, timeout=30).json()["task"]) is None:
        time.sleep(0.1)
    return task


def answer(url: str, who: dict[str, str], task: dict, choice: object, **extra: object) -> httpx.Response:
    """``choice`` 1/2 names the pair's response (found by its text among those shown); tie/both_bad as they are."""
    if choice in (1, 2):
        wanted = "Good" if choice == 1 else "Bad"
        choice = 1 if task["response_1"].startswith(wanted) else 2
    return httpx.post(f"{url}/v1/tasks/{task['task_id']}/answer", headers=who, timeout=30,
                      json={"choice": choice, **extra})


def labelling(url: str, batch: list[CandidatePair], round: int) -> tuple[threading.Thread, dict]:
    """The loop's client labelling ``batch`` in a thread; its labels land in the returned dict, and its progress
    reports (round, labelled, waited for) under ``progress``."""
    out: dict = {"progress": []}

    def run() -> None:
        with OracleClient(url, token=TOKEN, poll_interval_s=0.2, human_timeout_s=120, progress=False,
                          on_progress=lambda *report: out["progress"].append(report)) as client:
            out["labels"] = client.label(batch, round=round)

    worker = threading.Thread(target=run)
    worker.start()
    return worker, out


def test_answers_change_until_the_client_consumes_the_round(url: str, config: Config, people) -> None:
    bad = httpx.post(f"{url}/v1/tasks/1/answer", headers=people["ann"], json={"choice": "tie", "strength": "clearly"})
    assert bad.status_code == 422 and "only an answer of 1 or 2 has a strength" in bad.json()["detail"]
    long = httpx.post(f"{url}/v1/tasks/1/answer", headers=people["ann"], json={"choice": 1, "rationale": "x" * 2001})
    assert long.status_code == 422 and long.json()["detail"].startswith("body.rationale")
    worker, out = labelling(url, pairs("c", 1), round=1)
    task = next_task(url, people["ann"])
    assert task["pair_id"] == "c0"
    stored = answer(url, people["ann"], task, 1, strength="clearly", rationale="It answers.").json()["label"]
    assert (stored["choice"], stored["strength"], stored["rationale"]) == ("1", "clearly", "It answers.")
    assert answer(url, people["bob"], next_task(url, people["bob"]), "tie").status_code == 200
    # bob changes his mind, then takes it back and answers again: still one answer of his
    changed = httpx.put(f"{url}/v1/tasks/{task['task_id']}/answer", headers=people["bob"], json={"choice": "both_bad"},
                        timeout=30)
    assert changed.json()["label"]["choice"] == "both_bad"
    undone = httpx.delete(f"{url}/v1/tasks/{task['task_id']}/answer", headers=people["bob"], timeout=30)
    assert undone.json()["task"]["task_id"] == task["task_id"]
    assert answer(url, people["bob"], next_task(url, people["bob"]), 2).status_code == 200
    assert answer(url, people["cy"], next_task(url, people["cy"]), 1).status_code == 200  # 1, 2, 1: agreement 2/3
    worker.join(timeout=60)
    (label,) = out["labels"]
    assert (label.pair_id, label.decision, label.prob_1, label.annotator) == ("c0", "1", pytest.approx(2 / 3), "")
    late = httpx.put(f"{url}/v1/tasks/{task['task_id']}/answer", headers=people["cy"], json={"choice": 2}, timeout=30)
    assert late.status_code == 409, late.text
    assert "round 1's labels were consumed by training" in late.json()["detail"]
    with LabelStore(config.oracle.label_store_url) as store:
        assert {r.annotator: r.decision for r in store.labels() if r.pair_id == "c0"} == {
            "ann": "1", "bob": "2", "cy": "1", "": "1"}


def test_a_reviewer_decides_a_disagreement_over_http(url: str, people) -> None:
    worker, out = labelling(url, pairs("d", 1), round=2)
    for who, choice in (("ann", 1), ("bob", 2), ("cy", "both_bad")):  # agreement 1/3 < 0.5: to review
        gold = next_task(url, people[who])  # every 2nd task is the gold pair: each answers it right
        assert gold["pair_id"].startswith("gold-")
        right = 1 if gold["response_1"].startswith("Yes") else 2
        assert httpx.post(f"{url}/v1/tasks/{gold['task_id']}/answer", headers=people[who], json={"choice": right},
                          timeout=30).json()["label"] is None
        task = next_task(url, people[who])
        assert task["pair_id"] == "d0"
        assert answer(url, people[who], task, choice).status_code == 200
    for who, status in (("ann", 403), ("run", 403)):
        headers = AUTH if who == "run" else people[who]
        assert httpx.get(f"{url}/v1/review/next", headers=headers, timeout=30).status_code == status
    review = httpx.get(f"{url}/v1/review/next", headers=people["rita"], timeout=30).json()
    assert review["waiting"] == 1 and review["task"]["pair_id"] == "d0"
    assert sorted(a["choice"] for a in review["task"]["answers"]) == ["1", "2", "both_bad"]
    decided = httpx.post(f"{url}/v1/review/{review['task']['task_id']}/decision", headers=people["rita"], timeout=30,
                         json={"choice": 2, "rationale": "the first one is wrong"}).json()
    assert (decided["choice"], decided["adjudicated_by"]) == ("2", "rita")
    worker.join(timeout=60)
    (label,) = out["labels"]
    assert (label.decision, label.prob_1) == ("2", 0.0)  # the reviewer's decision is the label training takes
    again = httpx.post(f"{url}/v1/review/{review['task']['task_id']}/decision", headers=people["rita"],
                       json={"choice": 1})
    assert again.status_code == 409


def test_gold_accuracy_per_annotator_in_the_stats(url: str, people) -> None:
    """Each answered the gold pair right in the test above; the stats say so, and the gold pair is in no label."""
    stats = httpx.get(f"{url}/v1/annotation/stats", headers=people["rita"], timeout=30).json()
    assert {a["name"]: (a["gold_answers"], a["gold_accuracy"]) for a in stats["annotators"]} == {
        "ann": (1, 1.0), "bob": (1, 1.0), "cy": (1, 1.0)}
    assert stats["adjudicated"] == 1 and stats["outcomes"] == {"1": 1, "2": 1}
    labels = httpx.get(f"{url}/v1/labels", headers=AUTH, timeout=30).json()["labels"]
    assert not [row for row in labels if row["pair_id"].startswith("gold-")]


def press_for(page, text: str) -> None:  # noqa: ANN001
    """Press the key (1 or 2) of the response whose text starts with ``text``, wherever it is shown."""
    shown = [(page.text_content(f"#response-{side}") or "").strip() for side in (1, 2)]
    page.keyboard.press("1" if shown[0].startswith(text) else "2")


def test_three_people_and_a_reviewer_label_a_round_keyboard_only(url: str, config: Config, browser,
                                                                  people) -> None:
    """Under the page's CSP, keys only: ann gives a rationale (r … Esc) and an answer, answers tie, takes it back (u)
    and says both bad; bob and cy answer; the split pair goes to rita's review view (v) and her key decides it. The
    loop's client gets the aggregate of the first pair and rita's decision for the second."""
    from playwright.sync_api import expect

    worker, out = labelling(url, pairs("e", 2), round=3)
    pages = {}

    def sign_in(who: str) -> None:
        pages[who] = browser.new_page()
        token = people[who]["Authorization"].removeprefix("Bearer ")
        pages[who].goto(f"{url}/annotate#token={token}")
        expect(pages[who].locator("#whoami")).to_have_text(f"answering as {who}")

    for who in ("ann", "bob", "cy"):  # rita signs in to review: her page would hold a place of a pair (reservations)
        sign_in(who)
    ann = pages["ann"]
    expect(ann.locator("#prompt")).to_have_text("Question e0?")
    ann.keyboard.press("r")
    ann.keyboard.type("It answers the question.")
    ann.keyboard.press("Escape")
    press_for(ann, "Good")
    expect(ann.locator("#prompt")).to_have_text("Question e1?")
    ann.keyboard.press("t")
    expect(ann.locator("body")).to_have_attribute("data-answers", "2")
    ann.keyboard.press("u")  # undo: e1 comes back, hers to answer again
    expect(ann.locator("#status")).to_have_text("Answer taken back: answer this pair again.")
    expect(ann.locator("#prompt")).to_have_text("Question e1?")
    ann.keyboard.press("b")
    expect(ann.locator("#empty")).to_be_visible()
    for who, first, second in (("bob", "Good", "Good"), ("cy", "Bad", "t")):
        page = pages[who]
        expect(page.locator("#prompt")).to_have_text("Question e0?")
        press_for(page, first)
        expect(page.locator("#prompt")).to_have_text("Question e1?")
        press_for(page, second) if second != "t" else page.keyboard.press("t")
        expect(page.locator("#empty")).to_be_visible()
    sign_in("rita")
    rita = pages["rita"]
    rita.keyboard.press("v")  # e1's answers (both bad, 1, tie) agree 1/3 < 0.5: it waits for her
    expect(rita.locator("#prompt")).to_have_text("Question e1?")
    expect(rita.locator("#answers li")).to_have_count(3)
    rita.keyboard.press("2")  # the pair's own order in the review view: response 2 wins, for good
    expect(rita.locator("#progress")).to_have_text("0 waiting for review")
    worker.join(timeout=60)
    assert [(label.pair_id, label.decision) for label in out["labels"]] == [("e0", "1"), ("e1", "2")]
    assert out["progress"] == [(3, 0, 2), (3, 1, 2), (3, 2, 2)]  # e1 waited for rita after e0 had its label
    with LabelStore(config.oracle.label_store_url) as store:
        stored = {(r.pair_id, r.annotator): (r.decision, r.rationale, r.adjudicated_by) for r in store.labels()
                  if r.pair_id in ("e0", "e1")}
    assert stored[("e0", "ann")] == ("1", "It answers the question.", "")
    assert stored[("e1", "ann")][0] == "both_bad"  # her tie was taken back
    assert stored[("e1", "")] == ("2", "", "rita")
    for page in pages.values():
        page.close()
