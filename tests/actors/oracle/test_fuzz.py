"""The oracle endpoint fuzzed from its own OpenAPI document (schemathesis, every check): no 5xx, every answer
matches the published schema (status, content type, body), auth is enforced, and every 422 names its field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from system.config import Config
from system.labels import LabelStore
from system.labels.annotators import AnnotatorRegistry
from tests.actors.oracle.conftest import TOKEN, deploy, oracle_config
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    store = tmp_path_factory.mktemp("fuzz") / "labels.db"
    return oracle_config(store, kind="programmatic", callable="tests.system.oracles.rewards_for_tests:politeness")


@pytest.fixture(scope="module")
def url(ray_cluster, token_env: str, config: Config) -> Iterator[str]:
    yield from deploy(config)


def test_endpoint_conforms_to_its_published_schema(url: str, tmp_path: Path) -> None:
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/openapi.json",
               "--checks", "all", "--max-examples", "25", "--seed", "1", "--generation-database", "none",
               "--request-timeout", "120", "--max-response-time", "120",  # a 4096-item reward on a loaded box
               "--header", f"Authorization: Bearer {TOKEN}", "--report-dir", str(tmp_path)]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.actors.oracle.fuzz_hooks", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    (tmp_path / "out.txt").write_text(done.stdout)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


PAIR = '{"pair_id": "h1", "prompt": "Hi", "response_1": "please thank you", "response_2": "no"}'


def label_body(pair: str = PAIR, round_value: str = "0", extra: str = "") -> str:
    """A raw ``POST /v1/label`` body: JSON text, so it can hold what ``json.dumps`` would not write."""
    return '{"round": ' + round_value + ', "pairs": [' + pair + "]" + extra + "}"


HOSTILE_REQUESTS = [  # (method, path, raw JSON body or None, status, where the detail must point)
    ("POST", "/v1/label", label_body(round_value="1e309"), 422, "body.round"),
    ("POST", "/v1/label", label_body(round_value="NaN"), 422, "body.round"),
    ("POST", "/v1/label", label_body(round_value="Infinity"), 422, "body.round"),
    ("POST", "/v1/label", label_body(round_value="-Infinity"), 422, "body.round"),
    ("POST", "/v1/label", label_body(round_value="9223372036854775808"), 422, "body.round"),
    ("POST", "/v1/label", label_body(PAIR.replace('"Hi"', '"\\ud800"')), 422, "body.pairs.0.prompt"),
    ("POST", "/v1/label", label_body(PAIR.replace('"no"', '"n\\udfffo"')), 422, "body.pairs.0.response_2"),
    ("POST", "/v1/label", label_body(extra=', "\\ud800": 1'), 422, "body: "),  # a key no model can name
    ("POST", "/v1/reward", '{"items": [{"prompt": "x", "response": "\\ud800"}]}', 422, "body.items.0.response"),
    ("POST", "/v1/reward", '{"items": [{"prompt": NaN, "response": "y"}]}', 422, "body.items.0.prompt"),
    ("POST", "/v1/tasks/99999999999999999999999/answer", '{"choice": 1}', 422, "path.task_id"),
    ("POST", "/v1/tasks/1/answer", '{"choice": 1, "answer_ms": 1e309}', 422, "body.answer_ms"),
    ("GET", "/v1/labels?since=99999999999999999999", None, 422, "query.since"),
    ("GET", "/v1/labels?round=9223372036854775808", None, 422, "query.round"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "where"), HOSTILE_REQUESTS,
                         ids=[f"{case[1].split('?')[0]}-{index}" for index, case in enumerate(HOSTILE_REQUESTS)])
def test_values_json_cannot_hold_or_the_store_cannot_take_get_a_json_4xx(url: str, config: Config, method: str,
                                                                         path: str, body: str | None, status: int,
                                                                         where: str) -> None:
    """Cases schemathesis does not generate (non-standard JSON numbers, lone surrogates, integers past the store's
    32-bit columns): each is the documented ``{"detail": ...}`` answer naming the field, never a 500. Task routes
    are called with an annotator's token, the others with the run token."""
    token = TOKEN
    if path.startswith("/v1/tasks"):
        with LabelStore(config.oracle.label_store_url) as store:
            _, token = AnnotatorRegistry(store).add(f"fuzz-{abs(hash(path + str(body))) % 10**9}")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    response = httpx.request(method, f"{url}{path}", headers=headers, content=body, timeout=60)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"].startswith(where), response.json()["detail"]


def test_more_pairs_than_the_schema_allows_is_422(url: str) -> None:
    """Over the published schema's 4,096 items: 422, as for any schema violation (docs/oracle.md says so; schemathesis
    expects it); the configurable, lower ``oracle.max_pairs_per_request`` is not in the schema and answers 413."""
    pairs = [json.loads(PAIR.replace('"h1"', f'"c{index}"')) for index in range(4097)]
    response = httpx.post(f"{url}/v1/label", headers={"Authorization": f"Bearer {TOKEN}"}, json={"pairs": pairs},
                          timeout=120)
    assert response.status_code == 422, response.text[:500]
    assert response.json()["detail"].startswith("body.pairs: List should have at most 4096 items")


def test_a_chunked_body_over_the_limit_is_413(url: str, config: Config) -> None:
    """A body without Content-Length is counted as it streams in and refused once past oracle.max_request_bytes."""
    limit = config.oracle.max_request_bytes

    def chunks() -> Iterator[bytes]:
        yield b'{"pairs": [{"pair_id": "big", "prompt": "'
        for _ in range(limit // 2**16 + 2):
            yield b"x" * 2**16
        yield b'", "response_1": "a", "response_2": "b"}]}'

    response = httpx.post(f"{url}/v1/label", headers={"Authorization": f"Bearer {TOKEN}"}, content=chunks(),
                          timeout=120)
    assert response.status_code == 413, response.text[:500]
    assert response.json()["detail"] == f"body: request body exceeds oracle.max_request_bytes={limit}"
