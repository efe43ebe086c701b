"""The active loop's round logic, independent of how its parts run (Ray actors in ``jobs/active_loop.py``).

One round r (the ActiveDPO paper's online loop): generate ``m`` responses per prompt with policy version r−1 → all
C(m,2) candidate pairs per prompt → features on the workers, of the candidates and of every pair
labelled in rounds < r (recomputed under version r−1) → select ``b`` pairs (V = λI + Σ over the
labelled pairs' recomputed rows, then updated pick by pick) → labels from the oracle → train on every
label so far → sync the new adapter (version r) → evaluate → log. Offline mode (the ADPO paper's setting) replaces
generation by the unselected pairs of a fixed pool, and a strategy that does not regenerate (APO)
draws its pool once, in round 1. Every finished phase is persisted (:mod:`system.run_state`) so a
killed loop resumes where it stopped and, with fixed seeds, selects exactly the pairs an
uninterrupted run selects.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import torch
from tqdm import tqdm

from system.api import AnnotationStats
from system.config import Config
from system.data import load_preferences, read_rows, write_preferences, write_rows
from system.evaluation import evaluate_generations
from system.evaluation.offline import logit_error_report, scored_pairs
from system.fileio import atomic_write_text
from system.generation import SamplingParams, candidate_pairs, evaluation_params
from system.labels.aggregate import TiePolicy, pair_rows
from system.labels.stats import agreement_metrics
from system.losses import get_loss
from system.run_state import RoundState, restore_rng, round_dir, save_round_state
from system.selection import get_strategy
from system.training.reference import prompt_key
from system.types import Candidate, CandidatePair, Label, PreferencePair, PromptRecord, SelectionResult, Text

if TYPE_CHECKING:  # MLflow is imported only where a run is tracked, not by the in-process harness
    from system.tracking import Tracker

logger = logging.getLogger(__name__)
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Pending(Protocol[T_co]):
    """Work in flight (a generation fleet call); ``result()`` waits for it."""

    def result(self) -> T_co: ...


@dataclass(frozen=True)
class Ready(Generic[T]):
    """A :class:`Pending` whose work is already done (parts that compute in the loop's own process)."""

    value: T

    def result(self) -> T:
        return self.value


class Generator(Protocol):
    """``n`` candidates per prompt from policy ``policy_version`` (``params``: other sampling, e.g. evaluation's).
    ``submit`` returns at once where the parts run elsewhere (actors), so the loop overlaps independent work;
    parts in the loop's own process may compute it on the spot."""

    def generate(
        self, prompts: Sequence[PromptRecord], n: int | None = None, policy_version: int = 0,
        params: SamplingParams | None = None,
    ) -> list[Candidate]: ...
    def submit(
        self, prompts: Sequence[PromptRecord], n: int | None = None, policy_version: int = 0,
        params: SamplingParams | None = None,
    ) -> Pending[list[Candidate]]: ...


class PairSelector(Protocol):
    """Feature workers + selector: featurise the round's candidates and the earlier rounds' labelled pairs,
    pick ``budget`` candidates, snapshot V; ``margins`` are the implicit-reward margins h_i = r_θ(x, y1) −
    r_θ(x, y2) of ``pairs`` under ``policy_version`` [N] (the offline evaluation's predicted logits)."""

    def featurize(
        self, pairs: Sequence[CandidatePair], labelled: Sequence[CandidatePair], policy_version: int
    ) -> int: ...
    def select(self, budget: int, round_index: int) -> SelectionResult: ...
    def save_state(self, path: Path) -> None: ...
    def margins(self, pairs: Sequence[CandidatePair], policy_version: int) -> list[float]: ...


class Labeller(Protocol):
    """Labels pairs; ``rewards`` scores responses (machine oracles); ``agreement`` is how far the people who
    answered a round's pairs agree (None for a machine oracle)."""

    def label(self, pairs: Sequence[CandidatePair], round: int) -> list[Label]: ...
    def rewards(self, prompts: Sequence[Text], responses: Sequence[str]) -> list[float]: ...
    def agreement(self, round: int) -> AnnotationStats | None: ...


class PreferenceTrainer(Protocol):
    """Trains on every label so far, from ``initial_adapter`` when given, else from the seeded initialisation."""

    def fit(
        self, pairs: Sequence[PreferencePair], out_dir: str | Path, resume: bool = True,
        reference_samples: Mapping[str, Sequence[str]] | None = None, initial_adapter: str | Path | None = None,
    ) -> tuple[Any, list[dict]]: ...


class MetricsSink(Protocol):
    """Receives each round's final metrics (round 0: the untrained policy's evaluation), e.g. to export them."""

    def __call__(self, metrics: Mapping[str, float], round_index: int) -> None: ...


@dataclass
class LoopParts:
    """What a round talks to; ``sync(adapter_dir, version)`` pushes an adapter to the generators and the feature
    workers."""

    fleet: Generator
    selector: PairSelector
    oracle: Labeller
    trainer: PreferenceTrainer
    sync: Callable[[Path, int], None]


@dataclass
class Prefetch:
    """Round ``round``'s candidates in flight on the fleet; ``started_at`` (``time.perf_counter()``): when the fleet
    began on them — their submission, or once the evaluation responses queued ahead of them came back."""

    round: int
    candidates: Pending[list[Candidate]]
    started_at: float


def prompts_for_round(
    prompts: Sequence[PromptRecord], per_round: int, round_index: int, seed: int
) -> list[PromptRecord]:
    """Round ``round_index``'s prompts: consecutive windows of one seeded shuffle, wrapping around."""
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    start = (round_index - 1) * per_round
    return [prompts[order[(start + i) % len(order)]] for i in range(min(per_round, len(order)))]


@dataclass(frozen=True)
class OfflinePool:
    """A fixed labelled pool (the ADPO paper's offline setting): ``candidates`` to select from (labels hidden,
    response order drawn from a seeded coin) and ``held_out`` pairs kept for the logit-error evaluation."""

    candidates: list[CandidatePair]
    held_out: list[PreferencePair]


def offline_pool(pairs: Sequence[PreferencePair], seed: int, eval_every: int = 5) -> OfflinePool:
    """Hold out every ``eval_every``-th pair; present the others as unlabelled candidate pairs."""
    coin = random.Random(seed)
    candidates, held_out = [], []
    for index, pair in enumerate(pairs):
        if index % eval_every == 0:
            held_out.append(pair)
            continue
        first, second = (pair.chosen, pair.rejected) if coin.random() < 0.5 else (pair.rejected, pair.chosen)
        pair_id = pair.pair_id or f"pool-{index}"
        candidates.append(CandidatePair(pair_id, pair_id, pair.prompt, str(first), str(second)))
    return OfflinePool(candidates, held_out)


def regenerates(config: Config) -> bool:
    """Whether an online run samples fresh candidates from the current policy every round: unless
    ``loop.fixed_pool`` or a strategy that keeps round 1's pool (APO)."""
    return not config.loop.fixed_pool and get_strategy(config.selection.strategy).regenerates


def labelled_pairs(pairs: Sequence[CandidatePair], labels: Sequence[Label],
                   tie_policy: TiePolicy = "half") -> list[PreferencePair]:
    """Turn labels into TRL preference pairs (``chosen`` = the preferred response, scored P(chosen ≻ rejected)) by
    :func:`~system.labels.aggregate.pair_rows`, as ``activealign export`` does: a both-bad pair gives none, a
    tie none or both orientations (``tie_policy``)."""
    by_id = {pair.pair_id: pair for pair in pairs}
    return [row for label in labels
            for row in pair_rows(by_id[label.pair_id], label.decision, label.prob_1, tie_policy)]


def label_counts(labels: Sequence[Label]) -> dict[str, float]:
    """A round's labels by outcome: ``labels/both_bad`` (kept out of preference training) and ``labels/ties``."""
    decisions = [label.decision for label in labels]
    return {"labels/both_bad": float(decisions.count("both_bad")), "labels/ties": float(decisions.count("tie"))}


class ActiveLoop:
    """Runs rounds ``state.round … loop.rounds`` and persists ``state`` after each phase.

    Args:
        config: the whole configuration.
        run_dir: where round outputs and ``state.json`` live.
        parts: the generation fleet, selector, oracle, trainer and weight sync.
        tracker: MLflow run to log into (None disables tracking).
        state: loaded round state (resume) or a fresh one.
        prompts: the training prompt set; eval_prompts: held-out prompts for evaluation.
        pool: the fixed pool of offline mode (then nothing is generated).
        sinks: called with every round's metrics after they are written and tracked.
    """

    def __init__(
        self, config: Config, run_dir: Path, parts: LoopParts, tracker: Tracker | None, state: RoundState,
        prompts: Sequence[PromptRecord], eval_prompts: Sequence[PromptRecord], pool: OfflinePool | None = None,
        sinks: Sequence[MetricsSink] = (),
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.parts = parts
        self.tracker = tracker
        self.state = state
        self.prompts = list(prompts)
        self.eval_prompts = list(eval_prompts)
        self.pool = pool
        self.sinks = list(sinks)
        self.timings: dict[str, float] = {}
        self.reference_samples: dict[str, list[str]] | None = None
        self.eval_params = evaluation_params(config.generation, config.loop.eval_samples_per_prompt)
        self.prefetch: Prefetch | None = None

    def run(self) -> RoundState:
        """Bring the parts to the saved state, then run the remaining rounds."""
        restore_rng(self.state.rng)
        if self.state.adapter_path is not None:
            self.parts.sync(Path(self.state.adapter_path), self.state.policy_version)
        if not self.state.done(0, "evaluated"):
            metrics: dict[str, float] = {}
            self._evaluate(0, metrics)
            self._record(0, metrics)
            self._save(0, "evaluated")
        self.reference_samples = self._mpo_reference_samples()
        first = self.state.round if not self.state.done(self.state.round, "evaluated") else self.state.round + 1
        for round_index in range(max(first, 1), self.config.loop.rounds + 1):
            self._round(round_index)
        return self.state

    def _save(self, round_index: int, phase: str) -> None:
        self.state.round, self.state.phase = round_index, phase
        save_round_state(self.run_dir, self.state)

    @contextmanager
    def _timed(self, phase: str, bar: tqdm) -> Iterator[None]:
        bar.set_postfix_str(phase)
        start = time.perf_counter()
        yield
        self.timings[f"time/{phase}_s"] = time.perf_counter() - start
        bar.update(1)

    def _round(self, r: int) -> None:
        out = round_dir(self.run_dir, r)
        out.mkdir(parents=True, exist_ok=True)
        self.timings = {}
        metrics: dict[str, float] = {}
        start = time.perf_counter()
        with tqdm(total=5, desc=f"round {r}/{self.config.loop.rounds}", ascii=True, ncols=100) as bar:
            with self._timed("generation", bar):
                pairs = self._candidates(r, out, metrics)
            with self._timed("selection", bar):
                selection = self._select(r, out, pairs, metrics)
            with self._timed("labelling", bar):
                self._label(r, out, pairs, selection, metrics)
            with self._timed("training", bar):
                self._train(r, out, metrics)
            with self._timed("evaluation", bar):
                self._evaluate(r, metrics)
        self.timings["time/round_s"] = time.perf_counter() - start
        self._record(r, metrics)
        self._save(r, "evaluated")

    def _candidates(self, r: int, out: Path, metrics: dict[str, float]) -> list[CandidatePair]:
        """This round's candidate pairs: freshly generated, or the unlabelled pairs of a pool drawn once — the
        offline pool, or round 1's candidates when the strategy does not regenerate (APO)."""
        if self._generates_fresh(r):
            return candidate_pairs(self._generate(r, out, metrics))
        if self.pool is not None:
            pool = self.pool.candidates
        else:
            pool = candidate_pairs(self._generate(1, round_dir(self.run_dir, 1), metrics))
        labelled = set(self.state.labelled_pair_ids)
        return [pair for pair in pool if pair.pair_id not in labelled]

    def _generate(self, r: int, out: Path, metrics: dict[str, float]) -> list[Candidate]:
        path = out / "candidates.jsonl"
        if not self.state.done(r, "generated"):
            prefetch = self.prefetch if self.prefetch is not None and self.prefetch.round == r else self._submit(r)
            self.prefetch = None
            candidates = prefetch.candidates.result()
            tokens = sum(len(c.token_ids) for c in candidates)
            metrics["generation/tokens_per_s"] = tokens / max(time.perf_counter() - prefetch.started_at, 1e-9)
            write_rows(path, [asdict(c) for c in candidates])
            self._save(r, "generated")
        return [Candidate(**{**row, "token_ids": tuple(row["token_ids"]), "logprobs": tuple(row["logprobs"])})
                for row in read_rows(path)]

    def _submit(self, r: int) -> Prefetch:
        """Send round ``r``'s prompts to the fleet (policy version held now) without waiting."""
        prompts = prompts_for_round(self.prompts, self.config.loop.prompts_per_round, r, self.config.loop.seed)
        return Prefetch(r, self.parts.fleet.submit(prompts, self.config.generation.responses_per_prompt,
                                                   self.state.policy_version), time.perf_counter())

    def _generates_fresh(self, r: int) -> bool:
        """Whether round ``r`` generates its candidates (online, and round 1 or :func:`regenerates`)."""
        return self.pool is None and (r == 1 or regenerates(self.config))

    def _prefetch_next(self, r: int) -> None:
        """Submit round ``r + 1``'s generation when it will be generated fresh from the policy just evaluated."""
        following = r + 1
        if (following <= self.config.loop.rounds and self._generates_fresh(following)
                and not self.state.done(following, "generated")):
            self.prefetch = self._submit(following)

    def _select(self, r: int, out: Path, pairs: list[CandidatePair], metrics: dict[str, float]) -> SelectionResult:
        path = out / "selection.json"
        if not self.state.done(r, "selected"):
            zero = self.parts.selector.featurize(pairs, self.labelled_candidates(r - 1), self.state.policy_version)
            budget = min(self.config.selection.budget, len(pairs) - zero)  # zero-feature pairs are never picked
            if budget < self.config.selection.budget:
                logger.warning("round %d: only %d selectable candidate pairs for a budget of %d", r, budget,
                               self.config.selection.budget)
            result = self.parts.selector.select(budget, r)
            selector_path = out / "selector_state.pt"
            self.parts.selector.save_state(selector_path)
            atomic_write_text(path, json.dumps(asdict(result)))
            self.state.selector_state_path = str(selector_path)
            self._save(r, "selected")
        result = SelectionResult(**{**json.loads(path.read_text())})
        scores = torch.tensor(result.scores or [float("nan")], dtype=torch.float64)
        metrics.update({"selection/score_mean": scores.mean().item(), "selection/score_max": scores.max().item(),
                        "selection/pairs_available": float(len(pairs))})
        return result

    def _label(
        self, r: int, out: Path, pairs: list[CandidatePair], selection: SelectionResult, metrics: dict[str, float]
    ) -> None:
        path = out / "labels.jsonl"
        if not self.state.done(r, "labelled"):
            by_id = {pair.pair_id: pair for pair in pairs}
            chosen = [by_id[pair_id] for pair_id in selection.pair_ids]
            start = time.perf_counter()
            labels = self.parts.oracle.label(chosen, r)
            metrics["oracle/latency_s"] = time.perf_counter() - start
            if self.config.oracle.kind == "human":
                atomic_write_text(out / "label_counts.json", json.dumps(label_counts(labels)))
            write_preferences(path, labelled_pairs(chosen, labels, self.config.oracle.human.tie_policy))
            write_rows(out / "selected_pairs.parquet", [asdict(pair) for pair in chosen])
            self.state.labelled_pair_ids.extend(selection.pair_ids)
            self._save(r, "labelled")
        agreement = self.parts.oracle.agreement(r)
        if agreement is not None:
            metrics.update(agreement_metrics(agreement))
        counts = out / "label_counts.json"
        if counts.exists():  # people's labels only (machine oracles always prefer one response)
            metrics.update(json.loads(counts.read_text()))

    def labelled_candidates(self, upto: int) -> list[CandidatePair]:
        """Every pair labelled in rounds 1…``upto`` as its candidate pair (text only), in labelling order, with the
        preferred response first: a labelled row is then φ(chosen) − φ(rejected), which a strategy that learns
        from labels reads as its label (the design V = λI + Σ x xᵀ does not depend on the sign of x)."""
        paths = [round_dir(self.run_dir, i) / "selected_pairs.parquet" for i in range(1, upto + 1)]
        chosen = {pair.pair_id: pair.chosen for pair in self.all_labels(upto)}
        pairs = [CandidatePair(**row) for path in paths for row in read_rows(path)]
        return [pair if chosen[pair.pair_id] == pair.response_1
                else replace(pair, response_1=pair.response_2, response_2=pair.response_1)
                for pair in pairs if pair.pair_id in chosen]  # a both-bad pair has no preference to learn from

    def all_labels(self, upto: int) -> list[PreferencePair]:
        """Every labelled pair of rounds 1…``upto``, in labelling order."""
        paths = [round_dir(self.run_dir, i) / "labels.jsonl" for i in range(1, upto + 1)]
        return [pair for path in paths for pair in load_preferences(path)]

    def _train(self, r: int, out: Path, metrics: dict[str, float]) -> None:
        metrics_path = out / "train_metrics.json"
        if not self.state.done(r, "trained"):
            warm = self.config.train.round_start == "warm_start"
            adapter_dir, history = self.parts.trainer.fit(self.all_labels(r), out / "train", resume=True,
                                                          reference_samples=self.reference_samples,
                                                          initial_adapter=self.state.adapter_path if warm else None)
            last_epoch = history[-1] if history else {}
            numeric = {k: float(v) for k, v in last_epoch.items() if isinstance(v, (int, float))}
            atomic_write_text(metrics_path, json.dumps(numeric))
            self.state.adapter_path, self.state.policy_version = str(adapter_dir), r
            self._save(r, "trained")
        metrics.update({f"train/{k}": v for k, v in json.loads(metrics_path.read_text()).items()})
        if not self.state.done(r, "synced"):
            self.parts.sync(Path(str(self.state.adapter_path)), self.state.policy_version)
            self._save(r, "synced")

    def _evaluate(self, r: int, metrics: dict[str, float]) -> None:
        """Evaluate the policy of round ``r`` into ``metrics``; the next round's generation runs meanwhile.

        Online, the evaluation responses are submitted first and round r+1's candidates (same policy) right
        after, so the fleet generates them while the oracle scores the evaluation responses and the driver logs;
        round r+1 then only collects them (its ``time/generation_s`` is what was left to wait).
        """
        if self.pool is not None:
            margins = self.parts.selector.margins(scored_pairs(self.pool.held_out), self.state.policy_version)
            metrics.update(logit_error_report(margins, self.pool.held_out))
        elif self.eval_prompts:
            reference = self._reference_responses()
            pending = self.parts.fleet.submit(self.eval_prompts, policy_version=self.state.policy_version,
                                              params=self.eval_params)
            self._prefetch_next(r)
            responses = [candidate.response for candidate in pending.result()]
            if self.prefetch is not None:  # the fleet works through its queue in order: the candidates start now
                self.prefetch.started_at = time.perf_counter()
            per_prompt = len(responses) // len(self.eval_prompts)
            prompts = [record.prompt for record in self.eval_prompts for _ in range(per_prompt)]
            metrics.update(evaluate_generations(prompts, responses, reference, self.parts.oracle.rewards).metrics())
        else:
            self._prefetch_next(r)

    def _record(self, r: int, metrics: dict[str, float]) -> None:
        """Write round ``r``'s metrics (with the labels so far and the phase times), track them, feed the sinks."""
        metrics["labels"] = float(len(self.state.labelled_pair_ids))
        metrics.update(self.timings)
        round_dir(self.run_dir, r).mkdir(parents=True, exist_ok=True)
        atomic_write_text(round_dir(self.run_dir, r) / "metrics.json", json.dumps(metrics, indent=1))
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step=r)
            if r > 0:
                self.tracker.log_round(round_dir(self.run_dir, r), r, self.state.adapter_path)
        for sink in self.sinks:
            sink(metrics, r)
        logger.info("round %d: %s", r, {k: round(v, 4) for k, v in metrics.items() if not k.startswith("time/")})

    def _mpo_reference_samples(self) -> dict[str, list[str]] | None:
        """MPO's D_ref(x) for every training prompt, sampled once from πref (policy version 0) by the fleet
        before round 1 and kept in the run dir; None for losses that need no reference samples and offline."""
        if get_loss(self.config.train.loss).reference != "samples" or self.pool is not None:
            return None
        path = self.run_dir / "mpo_reference_samples.json"
        if not path.exists():
            if self.state.policy_version != 0:
                raise RuntimeError("MPO reference samples must be drawn before the first sync")
            candidates = self.parts.fleet.generate(self.prompts, self.config.train.mpo_ref_samples, 0)
            samples: dict[str, list[str]] = {}
            for candidate in candidates:
                samples.setdefault(prompt_key(candidate.prompt), []).append(candidate.response)
            atomic_write_text(path, json.dumps(samples))
        return dict(json.loads(path.read_text()))

    def _reference_responses(self) -> list[str]:
        """Evaluation responses of the reference policy (version 0), generated once and kept in the run dir."""
        path = self.run_dir / "reference_responses.json"
        if not path.exists():
            if self.state.policy_version != 0:
                raise RuntimeError("reference responses must be generated before the first sync")
            candidates = self.parts.fleet.generate(self.eval_prompts, policy_version=0, params=self.eval_params)
            atomic_write_text(path, json.dumps([candidate.response for candidate in candidates]))
        return list(json.loads(path.read_text()))
