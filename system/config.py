"""Typed configuration: nested pydantic models loaded from YAML with dotted overrides.

A config file is a YAML mapping whose top-level keys are the sections below. Loading merges
the file with overrides given as ``section.key=value`` (the CLI turns ``--train.lr 1e-4`` into
``train.lr=1e-4``) and validates the result: an unknown key, a wrong type or an out-of-range
value raises :class:`~system.errors.ConfigError` naming the key path and the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from system.errors import ConfigError


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TinyModelConfig(Section):
    """Architecture of the offline tiny Llama built when ``model.build_tiny`` is set.

    ``hidden_size / num_attention_heads`` is the head dimension; vLLM's CPU attention needs ≥ 32.
    """

    vocab_size: int = Field(512, ge=64)
    hidden_size: int = Field(64, ge=32)
    intermediate_size: int = Field(128, ge=8)
    num_hidden_layers: int = Field(2, ge=1)
    num_attention_heads: int = Field(2, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    max_position_embeddings: int = Field(512, ge=16)
    seed: int = 0
    pretrain_steps: int = Field(0, ge=0)  # causal-LM steps on the built-in dialogues (0: random weights)
    pretrain_lr: float = Field(5e-3, gt=0)

    @model_validator(mode="after")
    def _head_dim(self) -> TinyModelConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.hidden_size // self.num_attention_heads < 32:
            raise ValueError("head_dim = hidden_size / num_attention_heads must be ≥ 32 (vLLM CPU attention)")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        return self


class ModelConfig(Section):
    """The policy: a hub id or local checkpoint loaded with ``from_pretrained``."""

    path: str = "runs/tiny-model"
    build_tiny: bool = False
    tiny: TinyModelConfig = TinyModelConfig()
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_prompt_length: int = Field(64, ge=1)
    max_response_length: int = Field(64, ge=1)
    prompt_truncation: Literal["left", "error"] = "left"
    length_normalize: bool = False
    trust_remote_code: bool = False


class LoraConfig(Section):
    """LoRA adapters (peft). ``enabled: false`` trains full weights."""

    enabled: bool = True
    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class GenerationConfig(Section):
    """Sampling responses from the current policy."""

    engine: Literal["auto", "vllm", "hf"] = "auto"
    num_actors: int = Field(1, ge=1)
    tensor_parallel_size: int = Field(1, ge=1)
    responses_per_prompt: int = Field(3, ge=2)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(16, ge=1)
    seed: int = 0


class FeaturesConfig(Section):
    """Pair features for selection: projected LoRA gradients or last-layer embeddings."""

    kind: Literal["gradient", "embedding"] = "gradient"
    projection_dim: int = Field(256, ge=1)
    seed: int = 0
    num_workers: int = Field(2, ge=1)
    pooling: Literal["mean", "last"] = "mean"
    batch_size: int = Field(8, ge=1)


class SelectionConfig(Section):
    """Which pairs get labelled: strategy by registered name, b pairs per round."""

    strategy: str = "activedpo"
    budget: int = Field(8, ge=1)
    reg: float = Field(1.0, gt=0)
    refactor_every: int = Field(64, ge=1)
    reveal_batch_size: int = Field(8, ge=1)
    plugin_l2: float = Field(1.0, gt=0)
    seed: int = 0


class OracleConfig(Section):
    """Where labels come from, and the HTTP service that serves them."""

    kind: Literal["reward_model", "programmatic", "replay", "human"] = "reward_model"
    model: str = "minilm"
    task_description: str = "A helpful, polite answer."
    callable: str | None = None
    dataset: str | None = None
    sampling: Literal["argmax", "bradley_terry"] = "argmax"
    temperature: float = Field(1.0, gt=0)
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    token_env: str = "ACTIVEALIGN_API_TOKEN"
    label_store_url: str = "sqlite:///runs/labels.db"
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(1, ge=1)
    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    max_request_bytes: int = Field(1_000_000, ge=1024)
    human_timeout_s: float = Field(3600.0, gt=0)
    request_timeout_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _backend_inputs(self) -> OracleConfig:
        if self.kind == "programmatic" and not self.callable:
            raise ValueError("oracle.kind=programmatic needs oracle.callable ('module:function')")
        if self.kind == "replay" and not self.dataset:
            raise ValueError("oracle.kind=replay needs oracle.dataset (a labelled TRL-format file)")
        if self.max_replicas < self.min_replicas:
            raise ValueError("oracle.max_replicas must be ≥ oracle.min_replicas")
        return self


class DeepSpeedConfig(Section):
    """DeepSpeed ZeRO settings used by the distributed trainer."""

    enabled: bool = True
    stage: int = Field(2, ge=0, le=3)
    offload_optimizer: bool = False
    offload_params: bool = False
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


class SftWarmupConfig(Section):
    """Optional supervised warm-up on chosen responses before round 1 (seed 001: 1 epoch, lr 2e-5)."""

    enabled: bool = False
    epochs: int = Field(1, ge=1)
    lr: float = Field(2e-5, gt=0)


class TrainConfig(Section):
    """Preference optimisation: loss by registered name and its hyper-parameters."""

    loss: Literal["dpo", "ipo", "mpo"] = "dpo"
    beta: float = Field(0.1, gt=0)
    tau: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    epochs: int = Field(4, ge=1)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    grad_accum_steps: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 0
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    sft_warmup: SftWarmupConfig = SftWarmupConfig()
    mpo_ref_samples: int = Field(2, ge=1)


class LoopConfig(Section):
    """The active loop: rounds of generate → featurise → select → label → train → sync → evaluate."""

    mode: Literal["online", "offline"] = "online"
    rounds: int = Field(2, ge=1)
    prompts_path: str = "configs/data/tiny_prompts.jsonl"
    prompts_per_round: int = Field(16, ge=1)
    eval_prompts_path: str | None = None
    num_eval_prompts: int = Field(8, ge=0)
    # 0: one greedy response per held-out prompt; k > 0: k responses sampled at generation.temperature
    # (seeded by generation.seed), their rewards averaged — smoother than greedy for small, peaked models.
    eval_samples_per_prompt: int = Field(0, ge=0)
    pool_path: str | None = None
    run_dir: str = "runs/tiny"
    seed: int = 0

    @model_validator(mode="after")
    def _offline_pool(self) -> LoopConfig:
        if self.mode == "offline" and not self.pool_path:
            raise ValueError("loop.mode=offline needs loop.pool_path (Parquet/JSONL of candidate pairs)")
        return self


class TrackingConfig(Section):
    """MLflow tracking: a local sqlite store by default, an ``http://`` server on a cluster.

    Each round uploads what a person reads (metrics, the picked pairs and their labels, the adapter);
    the design state resume needs stays in the run directory (see ``upload_design_state``).
    """

    enabled: bool = True
    uri: str = "sqlite:///runs/mlflow.db"
    experiment: str = "activealign"
    artifact_location: str | None = None
    upload_design_state: bool = Field(
        False,
        description="Upload the design state (selector checkpoint with V and V⁻¹ in float64, feature-worker shards, "
        "RNG states) once when the run ends, as one design_state.tar.gz; off because at k = 8192 V and V⁻¹ are "
        "1 GiB, and resume reads them from the run directory anyway.",
    )


class ResourceSpec(Section):
    """Ray resources one actor of a group asks for."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_gb: float | None = Field(None, gt=0)
    resources: dict[str, float] = Field(default_factory=dict)


class ClusterConfig(Section):
    """Where Ray runs: an in-process local cluster (``address: null``) or an existing one."""

    address: str | None = None
    num_cpus: int | None = Field(8, ge=1)
    include_dashboard: bool = False
    dashboard_host: str = "127.0.0.1"
    placement: Literal["split", "colocate"] = "split"
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    generation: ResourceSpec = ResourceSpec()
    features: ResourceSpec = ResourceSpec(num_cpus=0.5)
    selector: ResourceSpec = ResourceSpec(num_cpus=0.25)
    trainer: ResourceSpec = ResourceSpec()
    oracle: ResourceSpec = ResourceSpec(num_cpus=0.5)


class Config(Section):
    """The whole activealign configuration, one section per component."""

    model: ModelConfig = ModelConfig()
    lora: LoraConfig = LoraConfig()
    generation: GenerationConfig = GenerationConfig()
    features: FeaturesConfig = FeaturesConfig()
    selection: SelectionConfig = SelectionConfig()
    oracle: OracleConfig = OracleConfig()
    train: TrainConfig = TrainConfig()
    loop: LoopConfig = LoopConfig()
    tracking: TrackingConfig = TrackingConfig()
    cluster: ClusterConfig = ClusterConfig()


def overrides_from_args(args: Sequence[str]) -> list[str]:
    """Turn CLI tokens ``--train.lr 1e-4 --loop.rounds=3`` into ``["train.lr=1e-4", "loop.rounds=3"]``."""
    dotlist: list[str] = []
    tokens = list(args)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or "." not in token.split("=", 1)[0]:
            raise ConfigError(f"override {token!r}: expected --section.key VALUE or --section.key=VALUE")
        key = token[2:]
        if "=" in key:
            dotlist.append(key)
            i += 1
            continue
        if i + 1 >= len(tokens):
            raise ConfigError(f"override --{key}: missing value")
        dotlist.append(f"{key}={tokens[i + 1]}")
        i += 2
    return dotlist


def _format_validation_error(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    value = first.get("input")
    shown = "" if first["type"] == "extra_forbidden" or isinstance(value, dict) else f" (got {value!r})"
    more = len(error.errors()) - 1
    suffix = f" [+{more} more]" if more else ""
    return f"{source}: {key}: {message}{shown}{suffix}"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a plain nested mapping; ``source`` names it in error messages."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply dotted overrides.

    Args:
        path: YAML file whose top-level keys are config sections.
        overrides: ``section.key=value`` strings, values parsed as YAML scalars/lists.

    Raises:
        ConfigError: naming the file (or ``override``) and the key path of the first problem.
    """
    source = str(path) if path is not None else "<defaults>"
    data = _read_yaml(Path(path)) if path is not None else {}
    if overrides:
        try:
            merged = OmegaConf.merge(OmegaConf.create(data), OmegaConf.from_dotlist(list(overrides)))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {list(overrides)}: {exc}") from None
        data = OmegaConf.to_container(merged, resolve=True)  # type: ignore[assignment]
        source = f"{source} + overrides"
    return config_from_dict(data, source)


def dump_config(config: Config) -> str:
    """The config as YAML text (what a run directory stores next to its checkpoints)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def flatten_config(config: Config) -> dict[str, str]:
    """``{"train.lr": "0.0001", ...}`` for logging every setting as an MLflow param."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = str(value)

    walk("", config.model_dump(mode="json"))
    return flat
