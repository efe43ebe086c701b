"""The oracle service on real Ray Serve (127.0.0.1, free port) with the MiniLM judge, storing labels in SQLite on
disk and then in PostgreSQL (the module runs once per backend)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from system.config import Config
from system.errors import OracleError
from system.labels import LabelStore
from system.labels.annotators import AnnotatorRegistry
from system.oracle_client import OracleClient
from system.oracles import build_oracle
from system.types import CandidatePair
from tests.actors.oracle.conftest import AUTH, TOKEN, deploy, oracle_config

TASK = "A polite answer that says please and thank you."
POLITE = "Thank you for asking! Please find the answer below, and thank you again."
RUDE = "The mitochondria is the powerhouse of the cell."


def pair(pair_id: str, first: str = POLITE, second: str = RUDE) -> dict:
    return {"pair_id": pair_id, "prompt": "How do I bake bread?", "response_1": first, "response_2": second}


@pytest.fixture(scope="module")
def config(module_store_url: str) -> Config:
    return oracle_config(module_store_url, task_description=TASK, max_request_bytes=20_000)


@pytest.fixture(scope="module")
def url(ray_cluster, token_env: str, config: Config) -> Iterator[str]:
    yield from deploy(config)


def test_label_pair_is_judged_and_stored(url: str, config: Config) -> None:
    response = httpx.post(f"{url}/v1/label", headers=AUTH, json={"pairs": [pair("a1"), pair("a2", RUDE, POLITE)],
                                                                 "round": 2}, timeout=60)
    assert response.status_code == 200, response.text
    first, second = response.json()["labels"]
    assert (first["pair_id"], first["preferred"], second["preferred"]) == ("a1", 1, 2)
    assert first["prob_1"] == pytest.approx(1 - second["prob_1"], abs=1e-6)
    assert first["oracle"] == "reward_model" and first["model_version"] == "all-MiniLM-L6-v2"
    with LabelStore(config.oracle.label_store_url) as store:
        stored = {record.pair_id: record for record in store.labels(round=2)}
    assert stored["a1"].preferred == 1 and stored["a2"].preferred == 2 and stored["a1"].seq == first["seq"]


def test_resubmit_returns_the_stored_verdict_once(url: str, config: Config) -> None:
    body = {"pairs": [pair("dup")], "round": 1}
    first = httpx.post(f"{url}/v1/label", headers=AUTH, json=body, timeout=60).json()["labels"][0]
    again = httpx.post(f"{url}/v1/label", headers=AUTH, json=body, timeout=60).json()["labels"][0]
    assert again == first
    with LabelStore(config.oracle.label_store_url) as store:
        assert [record.pair_id for record in store.labels()].count("dup") == 1


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/v1/label", {}),
        ("POST", "/v1/label", {"Authorization": "Bearer wrong"}),
        ("POST", "/v1/label", {"Authorization": TOKEN}),  # no scheme
        ("GET", "/v1/labels", {}),
        ("POST", "/v1/reward", {}),
        ("GET", "/v1/tasks/next", {}),
        ("POST", "/v1/tasks/1/answer", {}),
    ],
)
def test_401_without_the_token(url: str, method: str, path: str, headers: dict) -> None:
    response = httpx.request(method, f"{url}{path}", headers=headers, json={"pairs": [pair("x")]}, timeout=30)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


BAD_BODIES = [
    ({"pairs": [pair("e1", first="")]}, "body.pairs.0.response_1"),
    ({"pairs": [pair("e2", second="   ")]}, "body.pairs.0.response_2"),
    ({"pairs": [{**pair("x"), "pair_id": "bad id!"}]}, "body.pairs.0.pair_id"),
    ({"pairs": [{**pair("x"), "pair_id": ""}]}, "body.pairs.0.pair_id"),
    ({"pairs": [{**pair("x"), "prompt": ""}]}, "body.pairs.0.prompt"),
    ({"pairs": [{k: v for k, v in pair("x").items() if k != "response_2"}]}, "body.pairs.0.response_2"),
    ({"pairs": [{**pair("x"), "colour": "red"}]}, "body.pairs.0.colour"),
    ({"pairs": []}, "body.pairs"),
    ({"pairs": [pair("x")], "round": -1}, "body.round"),
    ({"pairs": "nope"}, "body.pairs"),
]


@pytest.mark.parametrize(("body", "names"), BAD_BODIES)
def test_422_names_the_field(url: str, body: dict, names: str) -> None:
    response = httpx.post(f"{url}/v1/label", headers=AUTH, json=body, timeout=30)
    assert response.status_code == 422, response.text
    assert names in response.json()["detail"]


@pytest.mark.parametrize(("body", "names"), [
    ({"pairs": [pair("same"), pair("same")]}, "body.pairs: duplicate pair_id 'same'"),
    ({"pairs": [pair("x")], "oracle": "gpt-judge"}, "body.oracle: unknown oracle 'gpt-judge'"),
])
def test_409_for_schema_valid_requests_this_service_cannot_take(url: str, body: dict, names: str) -> None:
    """Valid by the published schema, so not a 422 (a client generated from the schema could send them)."""
    response = httpx.post(f"{url}/v1/label", headers=AUTH, json=body, timeout=30)
    assert response.status_code == 409, response.text
    assert response.json()["detail"].startswith(names)


def test_a_pair_id_sent_with_other_texts_is_409_never_the_stored_verdict(url: str, config: Config) -> None:
    """A label judges exact texts: the same pair id with another prompt, or its responses swapped, is refused
    (naming the pair), the store keeps its one row with the first texts, and the client raises, never labels."""
    first = {"pair_id": "p3/v1/0-1", "prompt": "Hi", "response_1": "please thank you", "response_2": "no"}
    swapped = {**first, "prompt": "Bonjour", "response_1": "no", "response_2": "please thank you"}
    stored = httpx.post(f"{url}/v1/label", headers=AUTH, json={"pairs": [first], "round": 1}, timeout=60)
    assert stored.status_code == 200, stored.text
    for changed in (swapped, {**first, "prompt": "Bonjour"}, {**first, "response_2": "no!"}):
        response = httpx.post(f"{url}/v1/label", headers=AUTH, json={"pairs": [changed], "round": 1}, timeout=60)
        assert response.status_code == 409, response.text
        assert response.json()["detail"].startswith("body.pairs: pair_id 'p3/v1/0-1' is bound to other texts")
    with OracleClient(url, token=TOKEN) as client, pytest.raises(OracleError, match="HTTP 409.*'p3/v1/0-1'"):
        client.label([CandidatePair("p3/v1/0-1", "p3", "Bonjour", "no", "please thank you")], round=1)
    with LabelStore(config.oracle.label_store_url) as store:
        rows = [record for record in store.labels() if record.pair_id == "p3/v1/0-1"]
    assert [(r.prompt, r.response_1, r.response_2) for r in rows] == [("Hi", "please thank you", "no")]
    assert stored.json()["labels"][0]["text_digest"] == rows[0].text_digest


def test_security_headers_forbid_framing_and_foreign_scripts(url: str) -> None:
    page = httpx.get(f"{url}/annotate", timeout=30)
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy and "default-src 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    for path in ("/healthz", "/static/annotate.js", "/v1/labels"):
        assert "frame-ancestors 'none'" in httpx.get(f"{url}{path}", timeout=30).headers["content-security-policy"]
    assert httpx.get(f"{url}/docs", timeout=30).headers["content-security-policy"] == "frame-ancestors 'none'"


def test_422_on_bad_reward_items_and_queries(url: str) -> None:
    response = httpx.post(f"{url}/v1/reward", headers=AUTH, json={"items": [{"prompt": "x", "response": ""}]})
    assert response.status_code == 422 and "body.items.0.response" in response.json()["detail"]
    response = httpx.get(f"{url}/v1/labels", headers=AUTH, params={"since": "yesterday"})
    assert response.status_code == 422 and "query.since" in response.json()["detail"]


def test_oversized_body_is_refused_with_413(url: str) -> None:
    huge = {"pairs": [pair("big", first="x" * 30_000)]}
    response = httpx.post(f"{url}/v1/label", headers=AUTH, json=huge, timeout=30)
    assert response.status_code == 413
    assert "oracle.max_request_bytes=20000" in response.json()["detail"]


def test_cors_is_closed(url: str) -> None:
    response = httpx.options(f"{url}/v1/label", headers={"Origin": "http://evil.example",
                                                         "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in response.headers


def test_reward_endpoint_equals_the_judge_run_locally(url: str, config: Config) -> None:
    """40 items: three chunks of at most oracle.max_batch_size (16) items, rewards back in request order."""
    responses = [f"{text} {index}" for index, text in enumerate([POLITE, RUDE, "please"] * 14)][:40]
    body = {"items": [{"prompt": "q", "response": text} for text in responses]}
    served = httpx.post(f"{url}/v1/reward", headers=AUTH, json=body, timeout=60).json()
    local = build_oracle(config.oracle).rewards(["q"] * len(responses), responses)  # type: ignore[attr-defined]
    assert served["rewards"] == pytest.approx(local, abs=1e-5)
    assert served["model_version"] == "all-MiniLM-L6-v2"


def batch_sizes(url: str, method: str) -> tuple[float, float]:
    """(number of observed calls, sum of their batch sizes) for ``method`` from /metrics."""
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        if family.name == "activealign_oracle_batch_size":
            samples = {(s.name, s.labels.get("method")): s.value for s in family.samples}
            return samples.get((f"{family.name}_count", method), 0.0), samples.get((f"{family.name}_sum", method), 0.0)
    return 0.0, 0.0


def test_concurrent_requests_are_batched(url: str) -> None:
    count_before, sum_before = batch_sizes(url, "judge")

    def submit(i: int) -> int:
        return httpx.post(f"{url}/v1/label", headers=AUTH, json={"pairs": [pair(f"c{i}")]}, timeout=60).status_code

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(submit, range(64))) == {200}
    count_after, sum_after = batch_sizes(url, "judge")
    assert count_after - count_before == 64
    mean_batch = (sum_after - sum_before) / (count_after - count_before)
    assert mean_batch > 1.5, f"mean batch size {mean_batch:.2f}: requests were not batched"


def test_client_labels_pages_and_rewards(url: str) -> None:
    pairs = [CandidatePair(pair_id=f"cl{i}", prompt_id="q", prompt="q", response_1=POLITE if i % 2 else RUDE,
                           response_2=RUDE if i % 2 else POLITE) for i in range(5)]
    with OracleClient(url, token=TOKEN, batch_size=2) as client:
        labels = client.label(pairs, round=7)
        assert [label.pair_id for label in labels] == [p.pair_id for p in pairs]
        assert [label.preferred for label in labels] == [2, 1, 2, 1, 2]
        rewards = client.rewards(["q", "q"], [POLITE, RUDE])
        assert rewards[0] > rewards[1]
        page = client.request("GET", "/v1/labels", params={"round": 7, "limit": 3}).json()
        rest = client.request("GET", "/v1/labels", params={"round": 7, "since": page["next_since"]}).json()
        assert [row["pair_id"] for row in page["labels"] + rest["labels"]] == [p.pair_id for p in pairs]


def test_openapi_documents_the_endpoints(url: str) -> None:
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert {"/v1/label", "/v1/labels", "/v1/reward", "/v1/tasks/next", "/v1/tasks/{task_id}/answer"} <= set(paths)


def test_labels_survive_an_app_restart(url: str, config: Config) -> None:
    from actors.oracle import start_oracle_service, stop_oracle_service

    before = httpx.get(f"{url}/v1/labels", headers=AUTH).json()["labels"]
    assert before
    stop_oracle_service(shutdown=False)
    assert start_oracle_service(config) == url
    after = httpx.get(f"{url}/v1/labels", headers=AUTH, timeout=30).json()["labels"]
    assert after == before


VALID_BODIES = {
    ("post", "/v1/label"): {"pairs": [pair("body-route")]},
    ("post", "/v1/reward"): {"items": [{"prompt": "How do I bake bread?", "response": POLITE}]},
    ("post", "/v1/tasks/{task_id}/answer"): {"choice": 1, "answer_ms": 900},
    ("put", "/v1/tasks/{task_id}/answer"): {"choice": "tie", "rationale": "same"},
    ("post", "/v1/review/{task_id}/decision"): {"choice": 2},
    ("post", "/v1/rounds/{round}/consume"): {"pair_ids": []},
}


def test_every_body_taking_route_reads_its_json_body(url: str, config: Config) -> None:
    """Each route whose published schema has a request body accepts a valid JSON body (a FastAPI upgrade once
    turned the bodies of Serve-rewritten routes into required query parameters: 422 ``query.body``)."""
    spec = httpx.get(f"{url}/openapi.json", timeout=30).json()
    body_routes = {(method, path) for path, item in spec["paths"].items()
                   for method, operation in item.items() if "requestBody" in operation}
    assert body_routes == set(VALID_BODIES)
    with LabelStore(config.oracle.label_store_url) as store:
        registry = AnnotatorRegistry(store)
        tokens = {"/v1/tasks": registry.add("body-check")[1], "/v1/review": registry.add("body-review", "reviewer")[1]}
    for (method, path), body in VALID_BODIES.items():
        token = next((token for prefix, token in tokens.items() if path.startswith(prefix)), TOKEN)
        response = httpx.request(method, f"{url}{path.format(task_id=1, round=1)}", timeout=60, json=body,
                                 headers={"Authorization": f"Bearer {token}"})
        assert "query" not in response.text, (path, response.text)
        # The machine oracle judges the first two and hands over no labels of round 1; there is no task 1 here
        expected = 404 if "{task_id}" in path else 200
        assert response.status_code == expected, (path, response.text)
