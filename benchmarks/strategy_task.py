"""The online strategy benchmark's task: prompts, config, held-out labelled pairs and one paired run.

One run = one (seed, strategy): :class:`~system.loop.ActiveLoop` over the in-process parts
(:mod:`system.local_parts`, the product's generation, features, selection, oracle and trainer code) on the
offline tiny model, for ``rounds`` rounds of ``prompts_per_round`` prompts × ``responses`` responses
(all C(m, 2) pairs per prompt are candidates: 40 × C(8, 2) = 1,120 a round by default) and ``labels_per_round``
labels per round. Labels are drawn Bradley–Terry from the MiniLM judge's reward with a temperature T fixed for
the task (:func:`calibrate_rewards`, cached by :func:`judge_temperature`).

Pairing: the loop's prompt order, the generation, training, oracle and feature seeds are the seed itself for
every strategy, so all strategies of a seed see the same prompts and the same round-1 pool (checked by
:func:`round_one_pool`), and differ only in what they select; the selection seed is the seed too
(``selection_offset`` shifts it: the negative control runs random twice with different selection seeds).

Scores, per round r = 0 … R: the implicit reward h = β·(log πθ − log πref)(y1) − (…)(y2) of policy
version r on ``heldout_pairs`` — fixed pairs of held-out prompts with responses of πref — scored against the
judge's preference probability p: accuracy = mean 1[sign h = sign(p − ½)] (h = 0 counts ½) and log-loss
= mean −[p log σ(h) + (1 − p) log σ(−h)] (a proper score: lowest, at the entropy of p, when σ(h) = p);
and the loop's own evaluation (judge reward of ``eval_samples`` sampled generations per evaluation prompt,
and win-rate against πref's, on ``eval_prompts`` prompts).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from system.config import Config, load_config
from system.data import read_prompts, write_prompts
from system.features import implicit_reward_margins
from system.fileio import atomic_write_text
from system.generation import candidate_pairs, sampling_params
from system.local_parts import LocalOracle, LocalPolicy, local_parts
from system.loop import ActiveLoop
from system.models.loading import load_adapter_weights
from system.models.tiny import build_tiny_model
from system.oracles import Oracle, RewardOracle, build_oracle
from system.run_state import RoundState, round_dir
from system.types import CandidatePair, PromptRecord

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = (
    "my cat", "our pet", "the old cat", "a small animal", "a kitten", "a stray kitten", "my friend's cat",
    "the cat next door", "the dog", "a puppy", "the bird", "my rabbit", "the young dog", "a shy kitten",
    "my neighbour's rabbit", "the family dog", "a new puppy", "the little bird", "an old rabbit", "a lazy cat",
    "the happy puppy", "our kitten", "my old dog", "a hungry cat",
)
QUESTIONS = (
    "How can I help {s} stay calm?", "What toys does {s} like?", "Where should {s} sleep at night?",
    "How do I play with {s}?", "Describe a day in the life of {s}.", "What should I feed {s}?",
    "Give me one tip about {s}.", "Write a short note about {s}.", "Tell me about {s}.",
    "Why does {s} sleep all day?", "Is it safe to give {s} milk?", "How often should I brush {s}?",
    "What does {s} need every day?", "How can I keep {s} healthy?", "When should I walk {s}?",
    "How do I teach {s} a trick?", "What makes {s} happy?", "Can {s} live outside?",
    "How much water does {s} need?", "What games can I play with {s}?", "How do I clean the bed of {s}?",
    "What should I do when {s} is sick?", "How do I make friends with {s}?", "Where can {s} play safely?",
)
OPENINGS = ("", "Please help: ")


PRIMARY = "reward"
"""The primary score of the online comparison: the judge's reward of the policy's generations (ActiveDPO's metric),
chosen on the random-only pilot (``benchmarks/results/pilot_random.md``)."""
SCORES = {"log_loss": False, "accuracy": True, "reward": True, "win_rate": True}
"""Every per-round score of a run, with whether higher is better."""
SCORE_MEANINGS = {
    "log_loss": "held-out log-loss of the implicit reward against the oracle's P",
    "accuracy": "held-out preference accuracy of the implicit reward",
    "reward": "the oracle's reward of the policy's generations on the evaluation prompts",
    "win_rate": "win-rate of the policy's generations against πref's",
}
"""What each score of :data:`SCORES` measures."""


def better_drop(first: float, last: float, higher_is_better: bool) -> float:
    """How much better ``last`` is than ``first`` (positive = improved) for a score of the given direction."""
    return last - first if higher_is_better else first - last


@dataclass(frozen=True)
class Task:
    """Sizes of the benchmark task (defaults: the task random learns on, ``benchmarks/results/pilot_random.md``)."""

    rounds: int = 8
    prompts_per_round: int = 40
    responses: int = 8
    labels_per_round: int = 48
    heldout_prompts: int = 36
    eval_prompts: int = 100
    eval_samples: int = 2
    max_new_tokens: int = 16
    epochs: int = 4

    def __post_init__(self) -> None:
        if self.heldout_prompts * math.comb(self.responses, 2) < 1 or self.rounds < 1:
            raise ValueError(f"task sizes must be positive: {self}")


def task_prompts(heldout: int, evaluation: int) -> tuple[list[PromptRecord], list[PromptRecord], list[PromptRecord]]:
    """(training, held-out, evaluation) prompts: every opening × question × subject, in one fixed shuffle;
    the three sets are disjoint."""
    texts = [opening + question.format(s=subject)
             for opening, question, subject in itertools.product(OPENINGS, QUESTIONS, SUBJECTS)]
    random.Random(0).shuffle(texts)
    records = [PromptRecord(prompt_id=f"bench-{index:04d}", prompt=text) for index, text in enumerate(texts)]
    if heldout + evaluation >= len(records):
        raise ValueError(f"{heldout} held-out + {evaluation} evaluation prompts leave none of {len(records)} to train")
    return records[heldout + evaluation:], records[:heldout], records[heldout:heldout + evaluation]


def task_config(task: Task, workdir: Path, seed: int, strategy: str, temperature: float,
                selection_offset: int = 0, overrides: Sequence[str] = ()) -> Config:
    """``configs/tiny.yaml`` at the task's sizes: every seed = ``seed`` (selection: + ``selection_offset``),
    Bradley–Terry labels at ``temperature``, plain PyTorch training, no tracking. The tiny model lives in a
    directory named by a digest of ``model.tiny``, so a changed architecture or pre-training never reuses an
    old build."""
    tiny = load_config(REPO_ROOT / "configs/tiny.yaml").model.tiny
    digest = hashlib.sha256(json.dumps(tiny.model_dump(), sort_keys=True).encode()).hexdigest()[:12]
    model_dir = workdir / f"tiny-model-{digest}"
    train_path, eval_path = workdir / "train_prompts.jsonl", workdir / "eval_prompts.jsonl"
    settings = {
        "model.path": model_dir, "loop.run_dir": workdir / f"seed_{seed}" / f"{strategy}+{selection_offset}",
        "loop.rounds": task.rounds, "loop.prompts_per_round": task.prompts_per_round, "loop.seed": seed,
        "loop.prompts_path": train_path, "loop.eval_prompts_path": eval_path,
        "loop.num_eval_prompts": task.eval_prompts, "loop.eval_samples_per_prompt": task.eval_samples,
        "generation.responses_per_prompt": task.responses, "generation.max_new_tokens": task.max_new_tokens,
        "generation.seed": seed, "generation.batch_size": 32, "features.seed": seed, "features.num_workers": 1,
        "selection.strategy": strategy, "selection.budget": task.labels_per_round,
        "selection.seed": seed + selection_offset, "train.seed": seed, "train.epochs": task.epochs,
        "train.deepspeed.enabled": False, "oracle.sampling": "bradley_terry", "oracle.temperature": temperature,
        "oracle.seed": seed, "tracking.enabled": False,
    }
    return load_config(REPO_ROOT / "configs/tiny.yaml",
                       [f"{key}={value}" for key, value in settings.items()] + list(overrides))


def write_task_prompts(task: Task, workdir: Path) -> list[PromptRecord]:
    """Write the training and evaluation prompt files the config names; returns the held-out prompts."""
    train, heldout, evaluation = task_prompts(task.heldout_prompts, task.eval_prompts)
    write_prompts(workdir / "train_prompts.jsonl", train)
    write_prompts(workdir / "eval_prompts.jsonl", evaluation)
    return heldout


@dataclass(frozen=True)
class HeldOut:
    """Fixed labelled pairs: πref's responses to held-out prompts and the judge's P(y1 ≻ y2) at the task's T."""

    pairs: list[CandidatePair]
    prob_1: list[float]


def heldout_pairs(config: Config, prompts: list[PromptRecord], policy: LocalPolicy) -> HeldOut:
    """All C(m, 2) pairs of ``generation.responses_per_prompt`` πref responses per held-out prompt (generation seed
    shifted by 10 000 so they are not round 1's draws), judged by the configured oracle."""
    params = sampling_params(config.generation)
    candidates = policy.generate(prompts, policy_version=0, params=replace(params, seed=params.seed + 10_000))
    pairs = candidate_pairs(candidates)
    judge = build_oracle(config.oracle)
    return HeldOut(pairs, [label.prob_1 for label in judge.label(pairs)])


def calibrate_rewards(oracle: RewardOracle, pairs: Sequence[CandidatePair], target: float = 0.8,
                      quantile: float = 0.5) -> float:
    """The temperature T at which the ``quantile`` of |ΔR| = |R(x, y1) − R(x, y2)| over ``pairs`` maps to
    P = ``target``: T = q(|ΔR|) / logit(target). At the median, half the pairs get P(y1 ≻ y2) beyond [0.2, 0.8]:
    labels that agree with the reward's ranking often enough to teach a few hundred of them (at the 75th
    percentile three pairs in four were near coin flips, and the implicit reward's held-out log-loss never fell
    below ln 2)."""
    prompts = [pair.prompt for pair in pairs]
    first = oracle.rewards(prompts, [pair.response_1 for pair in pairs])
    second = oracle.rewards(prompts, [pair.response_2 for pair in pairs])
    gaps = torch.tensor(first, dtype=torch.float64) - torch.tensor(second, dtype=torch.float64)
    return float(torch.quantile(gaps.abs(), quantile)) / math.log(target / (1 - target))


def judge_temperature(task: Task, workdir: Path) -> float:
    """The task's judge temperature: :func:`calibrate_rewards` of the judge on seed 0's held-out pairs, computed
    once per ``workdir`` (builds the tiny model when missing) and kept in ``workdir/judge_temperature.json``, so runs of
    different seeds in different processes label at the same T."""
    path = workdir / "judge_temperature.json"
    if not path.exists():
        probe = task_config(task, workdir, 0, "random", 1.0)
        if not Path(probe.model.path).exists():
            build_tiny_model(probe.model.path, probe.model.tiny)
        judge = build_oracle(probe.oracle)
        assert isinstance(judge, RewardOracle)
        heldout = heldout_pairs(probe, write_task_prompts(task, workdir), LocalPolicy(probe))
        temperature = calibrate_rewards(judge, heldout.pairs)
        atomic_write_text(path, json.dumps({"temperature": temperature}))
    return float(json.loads(path.read_text())["temperature"])


def preference_scores(margins: torch.Tensor, prob_1: torch.Tensor) -> dict[str, float]:
    """Accuracy (h = 0 counts ½) and log-loss of σ(h) against P(y1 ≻ y2) over pairs: margins, prob_1 [N]."""
    h = margins.to(torch.float64)
    agree = torch.where(h == 0, torch.full_like(h, 0.5), ((h > 0) == (prob_1 > 0.5)).to(torch.float64))
    log_loss = -(prob_1 * torch.nn.functional.logsigmoid(h) + (1 - prob_1) * torch.nn.functional.logsigmoid(-h))
    return {"accuracy": float(agree.mean()), "log_loss": float(log_loss.mean())}


def run_strategy(config: Config, heldout: HeldOut, oracle: Oracle | None = None) -> dict[str, list[float]]:
    """Run the loop for ``config`` (labelled by ``oracle`` instead of the configured one when given; it also
    scores the evaluation's generations) and score every policy version 0 … R: per-round lists of
    ``accuracy``, ``log_loss``, ``reward`` and ``win_rate``, plus ``labels`` (labels used by each version)."""
    run_dir = Path(config.loop.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train = read_prompts(str(config.loop.prompts_path))
    evaluation = read_prompts(str(config.loop.eval_prompts_path))
    parts = local_parts(config)
    if oracle is not None:
        parts = replace(parts, oracle=LocalOracle(oracle))
    ActiveLoop(config, run_dir, parts, None, RoundState(), train, evaluation[: config.loop.num_eval_prompts]).run()
    policy = LocalPolicy(config)  # πref: version 0, then each round's adapter in turn
    probabilities = torch.tensor(heldout.prob_1, dtype=torch.float64)
    curves: dict[str, list[float]] = {"accuracy": [], "log_loss": [], "reward": [], "win_rate": [], "labels": []}
    for version in range(config.loop.rounds + 1):
        if version:
            load_adapter_weights(policy.model, round_dir(run_dir, version) / "train" / "adapter")
        margins = implicit_reward_margins(policy.model, policy.tokenizer, heldout.pairs, config)
        for key, value in preference_scores(margins, probabilities).items():
            curves[key].append(value)
        metrics = json.loads((round_dir(run_dir, version) / "metrics.json").read_text())
        curves["reward"].append(metrics["eval/reward"])
        curves["win_rate"].append(metrics["eval/win_rate"])
        curves["labels"].append(metrics["labels"])
    return curves


def round_one_pool(run_dir: Path) -> str:
    """Round 1's candidates file of a finished run (identical across the strategies of a seed)."""
    return (round_dir(run_dir, 1) / "candidates.jsonl").read_text()

