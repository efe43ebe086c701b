"""Human oracle: the annotator page in headless Chromium labels pairs into the store; the client waits for them."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from system.config import Config
from system.errors import OracleError
from system.labels import LabelStore
from system.labels.annotators import AnnotatorRegistry
from system.oracle_client import OracleClient
from system.types import CandidatePair
from tests.actors.oracle.conftest import AUTH, TOKEN, add_people, deploy, oracle_config

PAIRS = [
    {"pair_id": "h0", "prompt": "Greet me", "response_1": "Hello, nice to meet you!", "response_2": "What."},
    {"pair_id": "h1", "prompt": "Say bye", "response_1": "bye", "response_2": "Goodbye, take care!"},
]


GUIDELINES = "# Guidelines\n\nPrefer the **kinder** answer; a rude one loses.\n"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    folder = tmp_path_factory.mktemp("human")
    (folder / "guidelines.md").write_text(GUIDELINES, encoding="utf-8")
    return oracle_config(folder / "labels.db", kind="human", human={"guidelines_path": str(folder / "guidelines.md")})


@pytest.fixture(scope="module")
def url(ray_cluster, token_env: str, config: Config) -> Iterator[str]:
    yield from deploy(config)


@pytest.fixture(scope="module")
def people(config: Config) -> dict[str, dict[str, str]]:
    """Annotators added as ``activealign annotators add`` does: ``{name: Authorization header}``; gone's token is
    revoked."""
    headers = add_people(config, (("alice", "annotator"), ("bob", "annotator"), ("rita", "reviewer"),
                                  ("gone", "annotator")))
    with LabelStore(config.oracle.label_store_url) as store:
        AnnotatorRegistry(store).revoke("gone")
    return headers


def test_human_label_request_is_queued_with_202(url: str) -> None:
    response = httpx.post(f"{url}/v1/label", headers=AUTH, json={"pairs": PAIRS, "round": 3}, timeout=30)
    assert response.status_code == 202, response.text
    assert response.json()["pair_ids"] == ["h0", "h1"]
    again = httpx.post(f"{url}/v1/label", headers=AUTH, json={"pairs": PAIRS, "round": 3}, timeout=30)
    assert again.json()["task_ids"] == response.json()["task_ids"]  # queueing is idempotent


def key_for(shown: list[str | None], text: str) -> str:
    """The key ("1" or "2") that answers for ``text`` among the responses in the order shown."""
    return "1" if shown[0] == text else "2"


def test_page_keyboard_labels_land_in_the_store(url: str, config: Config, browser, people) -> None:
    """Under the page's own Content-Security-Policy: the waits below run in Playwright's isolated world, since the
    policy forbids evaluating strings in the page."""
    from playwright.sync_api import expect

    page = browser.new_page()
    external: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(url) else external.append(request.url))
    alice = people["alice"]["Authorization"].removeprefix("Bearer ")
    page.goto(f"{url}/annotate#token={alice}")
    expect(page.locator("#whoami")).to_have_text("answering as alice")
    expect(page.locator("#prompt")).to_have_text("Greet me")
    assert page.text_content("#progress") == "0 / 2 labelled"
    shown = [(page.text_content(f"#response-{side}") or "").strip() for side in (1, 2)]
    assert sorted(shown) == ["Hello, nice to meet you!", "What."]  # in the order drawn for alice and this task
    page.keyboard.press(key_for(shown, "Hello, nice to meet you!"))  # the pair's response 1
    expect(page.locator("#progress")).to_have_text("1 / 2 labelled")
    with LabelStore(config.oracle.label_store_url) as store:
        record, majority = store.labels()  # her answer, and the pair's label (one answer per pair here)
    assert (majority.pair_id, majority.preferred, majority.annotator) == ("h0", 1, "")
    assert (record.pair_id, record.preferred, record.oracle, record.annotator, record.round) == (
        "h0", 1, "human", "alice", 3)
    assert record.answer_ms is not None and 0 <= record.answer_ms < 120_000  # measured by the page
    assert record.guidelines_digest == hashlib.sha256(GUIDELINES.encode()).hexdigest()  # the ones she was shown
    expect(page.locator("#prompt")).to_have_text("Say bye")
    page.keyboard.press("s")  # skip: the only other task comes back
    expect(page.locator("body")).to_have_attribute("data-answers", "2")
    assert (page.text_content("#prompt") or "").strip() == "Say bye"
    page.keyboard.press("?")
    expect(page.locator("#guidelines-text strong")).to_have_text("kinder")  # the help panel's guidelines, rendered
    shown = [(page.text_content(f"#response-{side}") or "").strip() for side in (1, 2)]
    page.keyboard.press(key_for(shown, "Goodbye, take care!"))  # the pair's response 2
    expect(page.locator("#progress")).to_have_text("2 / 2 labelled")
    assert page.is_visible("#empty")
    with LabelStore(config.oracle.label_store_url) as store:
        assert [(r.pair_id, r.preferred) for r in store.labels() if r.annotator == "alice"] == [("h0", 1), ("h1", 2)]
    assert external == []  # no CDN or other outside resource
    page.close()


def test_page_without_token_asks_for_it(url: str, browser) -> None:
    page = browser.new_page()
    page.goto(f"{url}/annotate")
    assert page.is_visible("#login") and not page.is_visible("#task")
    page.close()


def test_page_refuses_the_run_token(url: str, browser) -> None:
    """The run token cannot answer: the page says so and asks for an annotator's own token."""
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(f"{url}/annotate#token={TOKEN}")
    expect(page.locator("#status")).to_contain_text("this is the run token")
    assert page.is_visible("#login") and not page.is_visible("#task")
    page.close()


def test_client_waits_for_human_answers(url: str, people) -> None:
    pairs = [CandidatePair(pair_id=f"w{i}", prompt_id="q", prompt="q", response_1=f"a{i}", response_2=f"b{i}")
             for i in range(3)]

    def annotate() -> None:
        answered = 0
        while answered < 3:
            task = httpx.get(f"{url}/v1/tasks/next", headers=people["bob"], timeout=30).json()["task"]
            if task is None:
                time.sleep(0.2)
                continue
            choice = int(key_for([task["response_1"], task["response_2"]], f"b{task['pair_id'][1:]}"))
            httpx.post(f"{url}/v1/tasks/{task['task_id']}/answer", headers=people["bob"], timeout=30,
                       json={"choice": choice})  # he prefers each pair's response 2, wherever it is shown
            answered += 1

    worker = threading.Thread(target=annotate)
    worker.start()
    with OracleClient(url, token=TOKEN, poll_interval_s=0.2, human_timeout_s=120, progress=False) as client:
        labels = client.label(pairs, round=5)
    worker.join(timeout=60)
    # the pairs' majority labels (annotator empty), written as bob's answers closed each task
    assert [(label.pair_id, label.preferred, label.annotator) for label in labels] == [
        ("w0", 2, ""), ("w1", 2, ""), ("w2", 2, "")]


def test_client_deadline_names_the_missing_count(url: str) -> None:
    pair = CandidatePair(pair_id="never", prompt_id="q", prompt="q", response_1="a", response_2="b")
    with OracleClient(url, token=TOKEN, poll_interval_s=0.1, human_timeout_s=0.5, progress=False) as client:
        with pytest.raises(OracleError, match="1 of 1 pairs unlabelled"):
            client.label([pair], round=6)
        assert client.label([pair], round=6, allow_partial=True) == []


def test_unknown_task_is_404_and_bad_choice_422(url: str, people) -> None:
    response = httpx.post(f"{url}/v1/tasks/999/answer", headers=people["alice"], json={"choice": 1})
    assert response.status_code == 404 and "999" in response.json()["detail"]
    response = httpx.post(f"{url}/v1/tasks/1/answer", headers=people["alice"], json={"choice": 3})
    assert response.status_code == 422 and "body.choice" in response.json()["detail"]


@pytest.mark.parametrize(("who", "method", "path", "status"), [
    ("alice", "POST", "/v1/label", 403), ("alice", "GET", "/v1/labels", 403), ("alice", "POST", "/v1/reward", 403),
    ("rita", "GET", "/v1/labels", 403), ("run", "GET", "/v1/tasks/next", 403),
    ("run", "POST", "/v1/tasks/1/answer", 403), ("gone", "GET", "/v1/tasks/next", 401),
    ("alice", "GET", "/v1/tasks/next", 200), ("rita", "GET", "/v1/tasks/next", 200),
    ("alice", "GET", "/v1/annotation/stats", 403), ("rita", "GET", "/v1/annotation/stats", 200),
    ("run", "GET", "/v1/annotation/stats", 200),
])
def test_each_token_reaches_only_its_role_s_routes(url: str, people, who: str, method: str, path: str,
                                                   status: int) -> None:
    """An annotator's token fetches and answers tasks and nothing else (no labels, no other answers, no labelling);
    the run token labels and reads but cannot answer as anyone; a revoked token is unknown."""
    headers = AUTH if who == "run" else people[who]
    body = {"pairs": [PAIRS[0]]} if path == "/v1/label" else {"items": [{"prompt": "q", "response": "r"}]}
    response = httpx.request(method, f"{url}{path}", headers=headers, json=body if method == "POST" else None,
                             timeout=30)
    assert response.status_code == status, response.text
    if status != 200:
        assert response.json()["detail"].startswith(("missing or wrong bearer token", "this route needs",
                                                      "answer with an annotator's own token"))


def test_an_answer_is_its_token_holder_s_and_a_task_takes_one(url: str, config: Config, people) -> None:
    """The attack of a shared token: one answered task taking more answers under other names. A body cannot
    name anyone (422), the same or another person answering a done task gets 409, and the store keeps one label."""
    pair = {"pair_id": "once", "prompt": "Pick one", "response_1": "This one.", "response_2": "That one."}
    (task_id,) = httpx.post(f"{url}/v1/label", headers=AUTH, json={"pairs": [pair]}, timeout=30).json()["task_ids"]
    forged = httpx.post(f"{url}/v1/tasks/{task_id}/answer", headers=people["alice"],
                        json={"choice": 1, "annotator": "bob"}, timeout=30)
    assert forged.status_code == 422 and forged.json()["detail"].startswith("body.annotator")
    first = httpx.post(f"{url}/v1/tasks/{task_id}/answer", headers=people["alice"], json={"choice": 1}, timeout=30)
    assert first.status_code == 200 and first.json()["label"]["annotator"] == "alice"
    for who in ("alice", "bob", "rita"):
        again = httpx.post(f"{url}/v1/tasks/{task_id}/answer", headers=people[who], json={"choice": 2}, timeout=30)
        assert again.status_code == 409, again.text
        assert again.json()["detail"] == f"task_id: task_id {task_id}: pair 'once' is answered already"
    with LabelStore(config.oracle.label_store_url) as store:
        stored = [(r.annotator, r.preferred) for r in store.labels() if r.pair_id == "once"]
    vote = stored[0][1]  # "1" is the first response shown to alice, which may be either of the pair's
    assert stored == [("alice", vote), ("", vote)]
    assert httpx.get(f"{url}/v1/whoami", headers=people["rita"], timeout=30).json() == {"name": "rita",
                                                                                        "role": "reviewer"}


def test_reward_needs_a_machine_oracle(url: str) -> None:
    response = httpx.post(f"{url}/v1/reward", headers=AUTH, json={"items": [{"prompt": "q", "response": "r"}]})
    assert response.status_code == 409 and "human" in response.json()["detail"]


def test_requeueing_a_pair_id_with_new_texts_is_409_not_the_old_task(url: str) -> None:
    """Last in the module: it adds a task to the queue the page tests count."""
    first = {"pair_id": "requeued", "prompt": "Greet me", "response_1": "Hi!", "response_2": "Go away."}
    assert httpx.post(f"{url}/v1/label", headers=AUTH, json={"pairs": [first]}, timeout=30).status_code == 202
    changed = {**first, "response_2": "Hello there, friend."}
    response = httpx.post(f"{url}/v1/label", headers=AUTH, json={"pairs": [changed]}, timeout=30)
    assert response.status_code == 409, response.text
    assert response.json()["detail"].startswith("body.pairs: pair_id 'requeued' is bound to other texts")


def test_hostile_model_output_shows_as_text_on_the_page(url: str, config: Config, browser, people) -> None:
    """Last in the module. Markdown renders; HTML in model output stays text and runs nothing; the page still loads
    nothing from outside."""
    from playwright.sync_api import expect

    hostile = {"pair_id": "hostile", "prompt": "Show **bold** and <b>tags</b>",
               "response_1": '<img src=x onerror="document.body.dataset.pwned=1"> ![p](https://tracker.example/p.png)',
               "response_2": "```\n<script>document.body.dataset.pwned=1</script>\n```"}
    assert httpx.post(f"{url}/v1/label", headers=AUTH, json={"pairs": [hostile]}, timeout=30).status_code == 202
    with LabelStore(config.oracle.label_store_url) as store:
        _, token = AnnotatorRegistry(store).add("carl")
    carl = {"Authorization": f"Bearer {token}"}
    while (task := httpx.get(f"{url}/v1/tasks/next", headers=carl, timeout=30).json()["task"])["pair_id"] != "hostile":
        httpx.post(f"{url}/v1/tasks/{task['task_id']}/answer", headers=carl, json={"choice": 1}, timeout=30)
    page = browser.new_page()
    external: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(url) else external.append(request.url))
    page.goto(f"{url}/annotate#token={token}")
    expect(page.locator("#prompt strong")).to_have_text("bold")
    expect(page.locator("#prompt")).to_contain_text("<b>tags</b>")
    responses = page.locator("#response-1").inner_text() + page.locator("#response-2").inner_text()
    assert "onerror=" in responses and "<script>" in responses  # shown as text
    assert page.locator(".text img, .text script").count() == 0
    assert page.get_attribute("body", "data-pwned") is None
    assert external == []
    page.close()
