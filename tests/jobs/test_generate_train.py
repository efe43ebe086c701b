"""``jobs.generate`` and ``jobs.train`` entrypoints end to end on the tiny model (their own local Ray)."""

from __future__ import annotations

import json

import pytest

from jobs import generate, train
from system.config import load_config
from system.data import read_rows
from system.errors import DataError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from system.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", load_config("configs/tiny.yaml").model.tiny)


def test_generate_writes_candidates_in_prompt_order(model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": f"p{i}", "prompt": f"Tell me about cat {i}."}) + "\n"
                               for i in range(3)))
    config = load_config("configs/tiny.yaml", [f"model.path={model_dir}", "generation.engine=hf",
                                               "generation.max_new_tokens=5", "cluster.num_cpus=4"])
    assert generate.main(config, prompts, tmp_path / "out.jsonl", adapter=None) == 0
    rows = list(read_rows(tmp_path / "out.jsonl"))
    n = config.generation.responses_per_prompt
    assert [row["prompt_id"] for row in rows] == ["p0"] * n + ["p1"] * n + ["p2"] * n
    assert all(len(row["token_ids"]) == len(row["logprobs"]) >= 1 for row in rows)


def test_generate_rejects_a_missing_prompt_file(model_dir, tmp_path):
    config = load_config("configs/tiny.yaml", [f"model.path={model_dir}"])
    with pytest.raises(DataError):
        generate.main(config, tmp_path / "missing.jsonl", tmp_path / "out.jsonl", adapter=None)


@pytest.mark.slow  # a Ray Train run with a DeepSpeed start-up
def test_train_job_trains_mpo_and_writes_an_adapter(model_dir, tmp_path):
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Tell me about cat {i}.", "chosen": "Please, thank you.",
                                        "rejected": "No."}) + "\n" for i in range(4)))
    config = load_config("configs/tiny.yaml", [f"model.path={model_dir}", "train.loss=mpo", "train.epochs=2",
                                               "train.batch_size=2", "cluster.num_cpus=4"])
    assert train.main(config, data, tmp_path / "run") == 0
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()
