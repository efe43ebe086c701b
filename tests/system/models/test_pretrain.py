"""Pre-training of the tiny model: labels cover exactly the replies, and a pre-trained model answers in English."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from system.models.corpus import pretraining_dialogues
from system.models.pretrain import dialogue_rows, reply_batch
from system.models.tiny import build_tiny_model
from tests.system.models.conftest import TINY


def test_labels_are_the_reply_tokens_and_the_loss_is_their_mean_nll(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = dialogue_rows(tokenizer, pretraining_dialogues()[:3])
    batch = reply_batch(rows, tokenizer.pad_token_id)
    assert [int((labels != -100).sum()) for labels in batch["labels"]] == [len(reply) for _, reply in rows]
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for prompt, reply in rows:  # one row at a time, no padding: an independent computation
            logits = model(torch.tensor([prompt + reply])).logits[0, len(prompt) - 1 : -1].double()
            nll -= logits.log_softmax(-1).gather(1, torch.tensor(reply)[:, None]).sum().item()
            tokens += len(reply)
        assert model(**batch).loss.item() == pytest.approx(nll / tokens, rel=1e-4)


def test_a_pretrained_tiny_model_greedily_answers_with_a_reply_from_its_dialogues(tmp_path: Path) -> None:
    model_dir = build_tiny_model(tmp_path / "model", TINY.model_copy(update={"pretrain_steps": 150}))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    question = "How can I help my cat stay calm?"
    replies = {reply for asked, reply in pretraining_dialogues() if asked == question}
    inputs = tokenizer(question, return_tensors="pt")
    output = model.generate(**inputs, do_sample=False, max_new_tokens=40)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert answer in replies, answer
