"""The machine-oracle deployment: concurrent requests are judged together with ``@serve.batch``.

Each ``judge`` call carries one pair and each ``reward`` call one chunk of a request's items; Serve collects up to
``oracle.max_batch_size`` calls, waiting at most ``oracle.batch_wait_timeout_s``, and the oracle scores the whole
batch in one forward pass. Every result carries the size of the batch it was
part of, which the ingress exports as a histogram.
"""

from __future__ import annotations

import asyncio
import logging

import torch
from ray import serve

from system.config import OracleConfig
from system.errors import OracleError
from system.oracles import RewardOracle, UnknownPairError, build_oracle
from system.types import CandidatePair, Label, Text

logger = logging.getLogger(__name__)

Judged = tuple[Label | UnknownPairError, int]


@serve.deployment(name="OracleJudge")
class OracleJudge:
    """Holds one oracle backend per replica (built from config; replicas autoscale by config)."""

    def __init__(self, oracle_cfg: OracleConfig) -> None:
        torch.set_num_threads(1)
        self.oracle = build_oracle(oracle_cfg)
        for batched in (self.judge, self.reward):
            batched.set_max_batch_size(oracle_cfg.max_batch_size)
            batched.set_batch_wait_timeout_s(oracle_cfg.batch_wait_timeout_s)

    @serve.batch
    async def judge(self, pairs: list[CandidatePair]) -> list[Judged]:
        """Label a batch; pairs the oracle does not know come back as :class:`UnknownPairError`."""
        unknown = set(self.oracle.missing(pairs))
        known = [pair for pair in pairs if pair.pair_id not in unknown]
        labels = iter(await asyncio.to_thread(self.oracle.label, known))
        return [(UnknownPairError([pair.pair_id]) if pair.pair_id in unknown else next(labels), len(pairs))
                for pair in pairs]

    @serve.batch
    async def reward(self, chunks: list[list[tuple[Text, str]]]) -> list[tuple[list[float] | OracleError, int]]:
        """R(x, y) for a batch of chunks of (prompt, response) items, scored in one call; each chunk gets its
        rewards in order and the number of items scored with it. An oracle without rewards answers OracleError.

        A chunk is one request's items (at most ``oracle.max_batch_size``): a large request costs one Serve call
        per chunk, not one per item, and small concurrent requests are still scored together."""
        total = sum(len(chunk) for chunk in chunks)
        if not isinstance(self.oracle, RewardOracle):
            error = OracleError(f"oracle.kind {self.oracle.name!r} has no reward function")
            return [(error, total)] * len(chunks)
        items = [item for chunk in chunks for item in chunk]
        rewards = await asyncio.to_thread(self.oracle.rewards, [prompt for prompt, _ in items],
                                          [response for _, response in items])
        results, start = [], 0
        for chunk in chunks:
            results.append((list(rewards[start:start + len(chunk)]), total))
            start += len(chunk)
        return results

    def model_version(self) -> str:
        return self.oracle.model_version
