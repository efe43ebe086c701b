"""Agreement statistics over HTTP and on the reviewers' page ``/annotate/stats`` (headless Chromium, under the page's
Content-Security-Policy): the values shown equal α and Fleiss' κ counted by hand from a known set of answers, and
an annotator's token sees none of it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from system.config import Config
from system.labels import LabelStore
from system.labels.annotators import AnnotatorRegistry
from system.labels.queue import swapped_for
from tests.actors.oracle.conftest import AUTH, TOKEN, deploy, oracle_config

# Choices for each pair's response 1 or 2, by person. Round 2's units {1,1,1} {1,2,1} {2,2} and round 3's {1,2,1}
# {2,1,2} (cy leaves round 2's third pair to nobody).
VOTES = {2: {"ann": [1, 1, 2], "bob": [1, 2, 2], "cy": [1, 1]}, 3: {"ann": [1, 2], "bob": [2, 1], "cy": [1, 2]}}
# Hand counts (coincidences and category shares of the units above; the same derivation as
# tests/system/labels/test_stats.py): α and Fleiss' κ of round 2, round 3 and all rounds.
ALPHA = {2: 8 / 15, 3: -1 / 9, None: 3 / 16}
FLEISS = {2: 71 / 135, 3: -1 / 3, None: 11 / 60}


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return oracle_config(tmp_path_factory.mktemp("stats") / "labels.db", kind="human",
                         human={"annotations_per_pair": 3})


@pytest.fixture(scope="module")
def url(ray_cluster, token_env: str, config: Config) -> Iterator[str]:
    yield from deploy(config)


@pytest.fixture(scope="module")
def people(config: Config) -> dict[str, str]:
    """``{name: token}``: three annotators and a reviewer."""
    with LabelStore(config.oracle.label_store_url) as store:
        registry = AnnotatorRegistry(store)
        return {name: registry.add(name, role)[1] for name, role in
                (("ann", "annotator"), ("bob", "annotator"), ("cy", "annotator"), ("rita", "reviewer"))}


@pytest.fixture(scope="module")
def answered(url: str, people: dict[str, str]) -> None:
    """Queue each round's pairs with the run token and answer them as :data:`VOTES`, each person with their own
    token, naming the response by its place as shown to them."""
    for round, votes in VOTES.items():
        pairs = [{"pair_id": f"r{round}p{i}", "prompt": f"prompt {i}", "response_1": f"first {round}.{i}",
                  "response_2": f"second {round}.{i}"} for i in range(3)]
        queued = httpx.post(f"{url}/v1/label", headers=AUTH, json={"pairs": pairs, "round": round}, timeout=30)
        assert queued.status_code == 202, queued.text
        for name, choices in votes.items():
            for task_id, preferred in zip(queued.json()["task_ids"], choices, strict=False):
                shown = 3 - preferred if swapped_for(name, task_id) else preferred
                response = httpx.post(f"{url}/v1/tasks/{task_id}/answer", json={"choice": shown},
                                      headers={"Authorization": f"Bearer {people[name]}"}, timeout=30)
                assert response.status_code == 200, response.text


def test_stats_route_gives_alpha_and_fleiss_kappa_per_round_and_overall(url: str, people, answered) -> None:
    for token in (people["rita"], TOKEN):  # a reviewer and the run token
        stats = httpx.get(f"{url}/v1/annotation/stats", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert stats.status_code == 200, stats.text
        body = stats.json()
        for scope in (body, *body["rounds"]):
            assert scope["krippendorff_alpha"] == pytest.approx(ALPHA[scope["round"]])
            assert scope["fleiss_kappa"] == pytest.approx(FLEISS[scope["round"]])
        assert [r["round"] for r in body["rounds"]] == [2, 3]
        bob = {a["name"]: a for a in body["rounds"][1]["annotators"]}["bob"]
        assert bob["kappa_with_others"] == pytest.approx(-1.0)  # ann and cy agree on both pairs, bob on neither
    one = httpx.get(f"{url}/v1/annotation/stats", params={"round": 3}, headers=AUTH, timeout=30).json()
    assert one == {**body["rounds"][1], "rounds": []}


@pytest.mark.parametrize("path", ["/v1/annotation/stats", "/v1/annotation/stats?round=2"])
def test_an_annotator_s_token_gets_403_from_the_stats(url: str, people, path: str) -> None:
    response = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {people['ann']}"}, timeout=30)
    assert response.status_code == 403 and "reviewer" in response.json()["detail"]


def cell(page, row: str, column: str) -> str:
    return (page.text_content(f"{row} td.{column}") or "").strip()


def test_stats_page_shows_the_hand_counted_alpha_and_kappa(url: str, people, answered, browser) -> None:
    from playwright.sync_api import expect

    page = browser.new_page()
    external: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(url) else external.append(request.url))
    page.goto(f"{url}/annotate/stats#token={people['rita']}")
    expect(page.locator("#whoami")).to_have_text("signed in as rita")
    expect(page.locator("body")).to_have_attribute("data-loaded", "1")
    for round, row in ((2, "#rounds tr[data-round='2']"), (3, "#rounds tr[data-round='3']"),
                       (None, "#rounds tr.overall")):
        assert cell(page, row, "alpha") == f"{ALPHA[round]:.3f}"  # shown to 3 decimals
        assert cell(page, row, "fleiss") == f"{FLEISS[round]:.3f}"
    assert page.locator("#annotators tbody tr").count() == 3
    assert page.locator("#annotators th.kappa-round").all_text_contents() == ["κ, round 2", "κ, round 3"]
    bob_round_3 = page.locator("#annotators tr[data-annotator='bob'] td.kappa-round").nth(1)
    assert bob_round_3.text_content() == "-1.000"
    assert page.url == f"{url}/annotate/stats"  # the token is gone from the address bar
    assert external == []
    page.close()


def test_stats_page_refuses_an_annotator_s_token(url: str, people, answered, browser) -> None:
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(f"{url}/annotate/stats#token={people['ann']}")
    expect(page.locator("#status")).to_contain_text("403: this route needs a reviewer's token")
    assert page.is_visible("#login") and not page.is_visible("#stats")
    assert page.locator("#rounds tbody tr").count() == 0  # nothing of the statistics reached the page
    page.close()
