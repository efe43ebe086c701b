"""Ray Train + DeepSpeed trainer: ZeRO-2 over gloo with 2 workers, loss falls across two runs with resume, and a
run resumed from a checkpoint inside an epoch ends bit for bit where the uninterrupted run ends."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from actors.trainer import Trainer
from system.config import load_config
from system.models.loading import load_policy
from system.models.logprobs import encode_sequences, sequence_logps
from system.training.checkpoint import PROGRESS_FILE, latest_checkpoint
from system.types import PreferencePair
from tests.conftest import REPO_ROOT
from tests.system.training.conftest import assert_identical, saved_tensors


def _pairs(count: int) -> list[PreferencePair]:
    return [PreferencePair(f"Tell me about cat {i}.", f"Please give cat {i} a soft blanket, thank you.",
                           f"No. Cat {i} is loud.") for i in range(count)]


@pytest.mark.slow  # two Ray Train runs with DeepSpeed start-up: ~90 s on an idle 2-core box
def test_zero2_training_loss_falls_across_resumed_runs(ray_cluster, tiny_model_dir, tmp_path):
    overrides = [f"model.path={tiny_model_dir}", "train.num_workers=2", "train.batch_size=4", "train.lr=5e-3",
                 "train.loss=dpo", "train.deepspeed.stage=2", "cluster.trainer.num_cpus=1"]
    pairs = _pairs(8)
    first_cfg = load_config("configs/tiny.yaml", [*overrides, "train.epochs=1"])
    adapter, history = Trainer(first_cfg).fit(pairs, tmp_path)
    assert [m["epoch"] for m in history] == [1] and adapter.exists()
    assert json.loads((latest_checkpoint(tmp_path / "ray_train") / PROGRESS_FILE).read_text())["epoch"] == 1

    adapter, history = Trainer(load_config("configs/tiny.yaml", [*overrides, "train.epochs=3"])).fit(pairs, tmp_path)
    assert [m["epoch"] for m in history] == [1, 2, 3]  # epoch 1 came from the checkpoint, not rerun
    # DPO starts at log 2 (policy == reference) and falls epoch after epoch, across the resume
    assert history[2]["loss"] < history[1]["loss"] < history[0]["loss"] < 0.6932

    # the saved adapter is what was trained: it prefers the chosen responses over the reference
    model, tokenizer = load_policy(first_cfg.model, first_cfg.lora, adapter_path=adapter, is_trainable=False)
    batch = encode_sequences(tokenizer, [p.prompt for p in pairs] * 2, [p.chosen for p in pairs]
                             + [p.rejected for p in pairs], first_cfg.model)
    with torch.no_grad():
        policy = sequence_logps(model, batch)
        with model.disable_adapter():
            reference = sequence_logps(model, batch)
    margin = (policy - reference)[:8] - (policy - reference)[8:]
    assert float(margin.mean()) > 0


@pytest.mark.slow  # two Ray Train runs of 2 DeepSpeed workers: ~100 s on a 2-core box
def test_resume_inside_an_epoch_is_bit_identical(ray_cluster, tiny_model_dir, tmp_path):
    """12 pairs in global batches of 5, 5, 2 split 3/2, 3/2, 1/1 over the ranks; 2 batches per step; LoRA dropout.
    The run resumed from the checkpoint after step 3 (inside epoch 2) — a process that died there — ends with
    the same adapter, optimizer state and metrics as the run that went straight through."""
    config = load_config("configs/tiny.yaml", [
        f"model.path={tiny_model_dir}", "train.num_workers=2", "train.epochs=2", "train.batch_size=5",
        "train.grad_accum_steps=2", "train.deepspeed.stage=2", "lora.dropout=0.1", "cluster.trainer.num_cpus=1",
        "train.checkpoint_every_steps=1"])
    pairs = _pairs(12)
    straight_adapter, straight_history = Trainer(config).fit(pairs, tmp_path / "straight")

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight" / "ray_train", resumed_dir / "ray_train")
    for progress in list((resumed_dir / "ray_train").rglob(PROGRESS_FILE)):
        if json.loads(progress.read_text())["optimizer_steps"] > 3:
            shutil.rmtree(progress.parent)
    assert json.loads((latest_checkpoint(resumed_dir) / PROGRESS_FILE).read_text())["batch"] == 2
    adapter, history = Trainer(config).fit(pairs, resumed_dir)

    timing = {"step_time_s", "peak_rss_gb"}
    assert [{k: v for k, v in m.items() if k not in timing} for m in history] == \
        [{k: v for k, v in m.items() if k not in timing} for m in straight_history]
    assert_identical(load_file(straight_adapter / "adapter_model.safetensors"),
                     load_file(adapter / "adapter_model.safetensors"))
    finals = [latest_checkpoint(run_dir) for run_dir in (tmp_path / "straight", resumed_dir)]
    assert_identical(*(saved_tensors(final) for final in finals if final is not None))  # engine, RNG, tallies


def test_sft_warmup_runs_inside_the_ray_trainer(ray_cluster, tiny_model_dir, tmp_path):
    """A preference step too small to matter (lr 1e-9) after an SFT warm-up on the chosen responses: whatever
    the adapter learned came from the warm-up, so the chosen responses became more likely than under πref."""
    config = load_config("configs/tiny.yaml", [
        f"model.path={tiny_model_dir}", "train.num_workers=1", "train.epochs=1", "train.lr=1e-9",
        "train.deepspeed.enabled=false", "train.sft_warmup.enabled=true", "train.sft_warmup.epochs=2",
        "train.sft_warmup.lr=1e-2", "cluster.trainer.num_cpus=1"])
    pairs = _pairs(8)
    adapter, _ = Trainer(config).fit(pairs, tmp_path)
    model, tokenizer = load_policy(config.model, config.lora, adapter_path=adapter, is_trainable=False)
    batch = encode_sequences(tokenizer, [p.prompt for p in pairs], [p.chosen for p in pairs], config.model)
    with torch.no_grad():
        policy = sequence_logps(model, batch)
        with model.disable_adapter():
            reference = sequence_logps(model, batch)
    assert bool((policy > reference + 1.0).all()), (policy - reference).tolist()


TINY_EXTENSION = """
#include <Python.h>
static struct PyModuleDef tiny = {PyModuleDef_HEAD_INIT, "tiny_op", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit_tiny_op() { return PyModule_Create(&tiny); }
"""
HOLD_MID_BUILD = """
import time
from torch.utils.file_baton import FileBaton
from actors.trainer_rank import extension_build_lock
with extension_build_lock("tiny_op") as build_dir:
    assert FileBaton(str(build_dir / "lock")).try_acquire()  # what torch's JIT build does first
    print("building", flush=True)
    time.sleep(600)
"""
BUILD = """
import sys
from torch.utils.cpp_extension import load
from actors.trainer_rank import extension_build_lock
print("waiting", flush=True)
with extension_build_lock("tiny_op"):
    load("tiny_op", [sys.argv[1]])
print("built", flush=True)
"""


@pytest.mark.drill  # ~60 s: torch builds a tiny extension after a SIGKILLed builder
def test_a_killed_builders_lock_does_not_hold_up_the_next_build(tmp_path, monkeypatch):
    """A live builder makes the next one wait; once it is SIGKILLed mid-build (torch's baton file left behind),
    the next one goes ahead and builds the extension."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    source = tmp_path / "tiny_op.cpp"
    source.write_text(TINY_EXTENSION)
    baton = tmp_path / "extensions" / "tiny_op" / "lock"

    def python(code: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO_ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    holder = python(HOLD_MID_BUILD)
    builder = None
    try:
        assert holder.stdout.readline() == "building\n" and baton.exists()  # type: ignore[union-attr]
        builder = python(BUILD, str(source))
        assert builder.stdout.readline() == "waiting\n"  # type: ignore[union-attr]
        time.sleep(2)
        assert builder.poll() is None and baton.exists()  # the live builder is waited for, its baton left alone
        holder.kill()
        holder.wait()
        output, _ = builder.communicate(timeout=180)  # before, it polled the left-over baton for ever
        assert builder.returncode == 0 and output.endswith("built\n"), output
        assert not baton.exists()
    finally:
        for process in (holder, builder):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
