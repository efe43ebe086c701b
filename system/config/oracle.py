"""``oracle``: where labels come from, the HTTP service that serves them, and people's answers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from system.config.section import DATASET_HINT, Section


class HumanOracleConfig(Section):
    """How people's answers become labels (``oracle.kind=human``)."""

    annotations_per_pair: int = Field(
        1, ge=1, le=15,
        description="k: how many different annotators answer each pair, blind to each other's answers; the pair's "
        "label is their majority (prob_1 = the share of votes for response 1). Odd, so a majority always exists.",
    )

    guidelines_path: str | None = Field(
        None,
        description="Markdown file of annotation guidelines, shown on the annotator page (key ?); its SHA-256 is "
        "stored with every answer, so answers can be told apart by the guidelines they were given under.",
    )

    aggregation: Literal["majority", "dawid_skene"] = Field(
        "majority",
        description="How a pair's answers become its label (system/labels/aggregate.py), for the loop's training "
        "and for export alike: 'majority' (both-bad when most say so, else prob_1 = the mean of the answers, a tie "
        "counting ½) or 'dawid_skene' (Dawid & Skene 1979: EM over every answer, weighing each annotator by their "
        "estimated confusion matrix).",
    )
    tie_policy: Literal["half", "drop"] = Field(
        "half",
        description="What a pair aggregated to a tie (prob_1 = ½) trains as: 'half' keeps it as both orientations "
        "scored ½ (the policy learns the two responses are equally good), 'drop' leaves it out. Both-bad pairs "
        "never train; they are counted.",
    )
    adjudicate_below: float = Field(
        0.0, ge=0.0, le=1.0,
        description="A pair whose k answers agree less than this (the share of its most common answer) waits for "
        "a reviewer's decision instead of taking its aggregate; the decision is final. 0 sends none to review.",
    )
    gold_path: str | None = Field(
        None,
        description="JSONL of gold pairs (prompt, response_1, response_2, answer: 1, 2, tie or both_bad), mixed "
        "into each annotator's tasks at gold_rate. Their answers never reach training or an export of labels; "
        "they give each annotator's gold accuracy in GET /v1/annotation/stats.",
    )
    gold_rate: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="The share of each annotator's tasks that are gold pairs (every 1/gold_rate-th task).",
    )

    reservation_s: float = Field(
        300.0, gt=0.0, le=86_400.0,
        description="How long a task handed to a person holds one of its k places for them (their answer, skip or "
        "next task ends it sooner). While it holds, nobody else is handed that place, so people asking at the same "
        "moment get different pairs; a person who walks away frees it when it expires.",
    )

    @model_validator(mode="after")
    def _gold_needs_pairs(self) -> HumanOracleConfig:
        if self.gold_rate > 0 and not self.gold_path:
            raise ValueError("gold_rate > 0 needs oracle.human.gold_path (the gold pairs to mix in)")
        return self

    @field_validator("annotations_per_pair")
    @classmethod
    def _odd(cls, k: int) -> int:
        if k % 2 == 0:
            raise ValueError(f"must be odd, so that a majority of 1-or-2 answers always exists (got {k})")
        return k


class OracleConfig(Section):
    """Where labels come from, and the HTTP service that serves them."""

    kind: Literal["reward_model", "programmatic", "replay", "human"] = Field(
        "reward_model",
        description="Label source: 'reward_model' (oracle.model judges), 'programmatic' (oracle.callable gives "
        "rewards), 'replay' (verdicts looked up in oracle.dataset) or 'human' (pairs queued for annotators over "
        "HTTP). Machine rewards R become P(y1 ≻ y2) = σ((R1 − R2) / temperature).",
    )
    model: str = Field(
        "minilm",
        description="Judge of kind=reward_model: 'minilm' (the bundled all-MiniLM-L6-v2, offline) or a local model "
        "directory. A *ForSequenceClassification model is a reward model; any other encoder scores "
        "R(x, y) = cosine(e(y), e(task_description)).",
    )
    task_description: str = Field(
        "A helpful, polite answer.",
        description="What a good response looks like, embedded once by an encoder judge (not by classifier "
        "reward models).",
    )
    callable: str | None = Field(
        None,
        description="'module:function' with function(prompt, response) -> float reward; required when "
        "kind=programmatic. A non-finite reward is an error.",
    )
    dataset: str | None = Field(
        None,
        description="TRL-format preference file (JSONL/Parquet: prompt/chosen/rejected, optional pair_id and "
        f"score_chosen/score_rejected; {DATASET_HINT}) whose verdicts kind=replay returns; required for that kind. "
        "Pairs are matched by pair_id, else by prompt and the two response texts; an unknown pair is an error.",
    )
    sampling: Literal["argmax", "bradley_terry"] = Field(
        "argmax",
        description="How reward and programmatic oracles turn P(y1 ≻ y2) into a label: 'argmax' prefers y1 iff "
        "P ≥ 0.5 (noise-free); 'bradley_terry' draws the label with probability P from a hash of (seed, pair id), "
        "so a pair gets the same label on every replica and retry.",
    )
    temperature: float = Field(
        1.0, gt=0,
        description="T in P(y1 ≻ y2) = σ((R1 − R2) / T): larger T makes preferences noisier under bradley_terry "
        "(replay uses it when the dataset has scores).",
    )
    seed: int = Field(0, description="Seed of bradley_terry label sampling.")
    host: str = Field(
        "127.0.0.1",
        description="Interface the oracle service listens on and clients connect to; loopback by default, and a "
        "non-loopback host refuses to start without a token in $token_env.",
    )
    port: int = Field(
        8000, ge=1, le=65535,
        description="TCP port of the oracle service; on a local cluster a taken port is replaced by a free one.",
    )
    token_env: str = Field(
        "ACTIVEALIGN_API_TOKEN",
        description="Environment variable holding the service's bearer token (server and clients). Unset on a "
        "loopback host, a random token is generated for the run.",
    )
    label_store_url: str = Field(
        "",
        description="SQLAlchemy URL of the label store (sqlite:/// path relative to the working directory, or "
        "e.g. postgresql+psycopg://… on a cluster); also where activealign export reads labels. Empty: the run's "
        "own store, sqlite:///<loop.run_dir>/labels.db. A store shared by runs on purpose is safe: a pair id is "
        "bound to its texts, so no run gets another's verdict for other texts.",
    )
    min_replicas: int = Field(
        1, ge=1, description="Fewest judge replicas under Ray Serve autoscaling (the exact count when equal to max)."
    )
    max_replicas: int = Field(
        1, ge=1,
        description="Most judge replicas; must be ≥ min_replicas. Above it, Serve autoscales aiming at "
        "max_batch_size ongoing requests per replica.",
    )
    max_batch_size: int = Field(
        32, ge=1,
        description="Pairs per judge batch on the server (Serve @batch) and per HTTP request from the client.",
    )
    batch_wait_timeout_s: float = Field(
        0.01, ge=0, description="Seconds the judge waits to fill a batch before running a partial one."
    )
    max_request_bytes: int = Field(
        1_000_000, ge=1024, description="Largest accepted HTTP request body in bytes; bigger requests get HTTP 413."
    )
    human_timeout_s: float = Field(
        3600.0, gt=0,
        description="Seconds a labelling call waits for human annotators to label every queued pair (kind=human).",
    )
    request_timeout_s: float = Field(60.0, gt=0, description="Timeout of one HTTP request to the service (seconds).")
    retry_deadline_s: float = Field(
        120.0, gt=0,
        description="Seconds a client keeps retrying a request the service could not answer (down, restarting, "
        "overloaded) before the command exits 3.",
    )
    retry_max_attempts: int = Field(
        30, ge=1, description="Tries of one request within retry_deadline_s before the command exits 3."
    )
    max_pairs_per_request: int = Field(
        4096, ge=1, le=4096,
        description="Most pairs (or reward items) one request may carry; more get HTTP 413. 4096 is the cap the "
        "published API schema states.",
    )
    max_ongoing_requests: int = Field(
        64, ge=1, description="Requests the ingress replica works on at once; more wait in the proxy's queue."
    )
    max_queued_requests: int = Field(
        256, ge=1,
        description="Requests that may wait for the ingress beyond max_ongoing_requests; further ones are refused at "
        "once with HTTP 503 and Retry-After (bounded memory under overload; the client retries them).",
    )
    retry_after_s: float = Field(
        1.0, ge=0, description="Seconds a refused (503) client is told to wait, in the Retry-After header."
    )
    server_timeout_s: float = Field(
        300.0, gt=0,
        description="End-to-end limit of one request inside the service; past it the proxy answers HTTP 408 "
        "(stored labels stay stored, so a retry gets them).",
    )
    human: HumanOracleConfig = Field(HumanOracleConfig(), description="People's answers (kind=human).")

    @model_validator(mode="after")
    def _backend_inputs(self) -> OracleConfig:
        if self.kind == "programmatic" and not self.callable:
            raise ValueError("oracle.kind=programmatic needs oracle.callable ('module:function')")
        if self.kind == "replay" and not self.dataset:
            raise ValueError("oracle.kind=replay needs oracle.dataset (a labelled TRL-format file)")
        if self.max_replicas < self.min_replicas:
            raise ValueError("oracle.max_replicas must be ≥ oracle.min_replicas")
        return self


MIN_TOKEN_CHARS = 16
"""Shortest bearer token the oracle service accepts in ``$<oracle.token_env>``."""
