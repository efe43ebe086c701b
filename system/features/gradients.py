"""ActiveDPO features: unit-normalised, seeded-projected LoRA gradients of the implicit reward, per example.

For a pair (x, y1, y2) (ActiveDPO paper, §4; docs/method.md, "Pair features"):
φ = ĝ(x, y1) − ĝ(x, y2),  ĝ(x, y) = P∇r / ‖P∇r‖,  with
∇_θ r_θ(x, y) = β·∇_θ log πθ(y|x) over the LoRA parameters θ only (πref does not depend on θ).

All per-example gradients of a batch come from ONE batched backward pass: forward hooks on every
LoRA ``lora_A``/``lora_B`` linear record its projected input P_in u_t and its output; one
``autograd.grad`` of Σ_i log πθ(y_i|x_i) returns the output gradients g_t of every example (examples
do not interact in a causal LM with correct masks), and the per-example projected gradient of each
module is Σ_t (P_out g_t)(P_in u_t)ᵀ (see :mod:`system.features.projection`). No weight gradient
and no d_out × d_in per-example matrix is ever formed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from system.config import Config
from system.features.pairs import pair_differences
from system.features.projection import ModuleShape, SeededProjection
from system.models.logprobs import SequenceBatch, sequence_logps
from system.types import CandidatePair

LORA_LINEAR = re.compile(r"\.lora_[AB]\.[^.]+$")


def lora_modules(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The peft LoRA ``lora_A``/``lora_B`` linears of ``model`` by module name, in model order."""
    found = {
        name: module
        for name, module in model.named_modules()
        if LORA_LINEAR.search(name) and isinstance(module, torch.nn.Linear)
    }
    if not found:
        raise ValueError("gradient features need a LoRA (peft) model: no lora_A/lora_B linear layers found")
    return found


def projection_for(model: torch.nn.Module, dim: int, seed: int) -> SeededProjection:
    """The seeded projection of ``model``'s LoRA gradients to ``dim`` (same in every process)."""
    shapes = [ModuleShape(name, m.out_features, m.in_features) for name, m in lora_modules(model).items()]
    return SeededProjection(dim, shapes, seed)


@contextmanager
def _feature_mode(model: torch.nn.Module, modules: Sequence[torch.nn.Module]) -> Iterator[None]:
    """Eval mode (no dropout) with LoRA weights requiring grad, so their outputs join the graph; restored after."""
    was_training = model.training
    flags = [(param, param.requires_grad) for module in modules for param in module.parameters()]
    model.eval()
    for param, _ in flags:
        param.requires_grad_(True)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        model.train(was_training)


def projected_gradients(
    model: torch.nn.Module,
    batch: SequenceBatch,
    projection: SeededProjection,
    scale: float = 1.0,
    length_normalize: bool = False,
) -> Tensor:
    """P·∇_θ (scale·log πθ(y_i|x_i)) for every row i of ``batch``, from one batched backward.

    Args:
        model: a peft LoRA causal LM; each LoRA linear must run once per forward.
        batch: ``B`` rows ``prompt ‖ response`` on the model's device.
        projection: built for this model's LoRA modules (:func:`projection_for`).
        scale: β of the implicit reward.
        length_normalize: use length-normalised log-probs (``model.length_normalize``).

    Returns:
        [B, k] float32 projected per-example gradients (not normalised).
    """
    modules = lora_modules(model)
    device = batch.input_ids.device
    factors = {name: (p_out.to(device), p_in.to(device)) for name, (p_out, p_in) in projection.factors.items()}
    projected_inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def record(name: str) -> Callable[[torch.nn.Module, tuple[Tensor, ...], Tensor], None]:
        def hook(module: torch.nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            projected_inputs[name] = args[0].detach().float() @ factors[name][1].T
            outputs[name] = output

        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in modules.items()]
    try:
        with _feature_mode(model, list(modules.values())), torch.enable_grad():
            total = sequence_logps(model, batch, length_normalize).sum() * scale
            names = list(factors)
            output_grads = torch.autograd.grad(total, [outputs[name] for name in names], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    blocks = []
    for name, grad in zip(names, output_grads, strict=True):
        p_out, p_in = factors[name]
        rows = batch.input_ids.shape[0]
        if grad is None:
            blocks.append(torch.zeros(rows, p_out.shape[0] * p_in.shape[0], device=device))
            continue
        projected_grad = grad.float() @ p_out.T
        blocks.append(torch.einsum("bto,bti->boi", projected_grad, projected_inputs[name]).reshape(rows, -1))
    return projection.compress(torch.cat(blocks, dim=1))


def unit_normalize(rows: Tensor, eps: float = 1e-12) -> Tensor:
    """Each row divided by its L2 norm (all-zero rows stay zero)."""
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(eps)


def gradient_features(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[CandidatePair],
    cfg: Config,
    projection: SeededProjection | None = None,
) -> Tensor:
    """ActiveDPO pair features φ_i = ĝ(x_i, y_i1) − ĝ(x_i, y_i2) → [N, k] float32 on CPU.

    Pairs are processed ``features.batch_size`` at a time (2 sequences each, one backward per chunk);
    k = ``features.projection_dim``, projection seed ``features.seed``, β = ``train.beta``.
    """
    projection = projection or projection_for(model, cfg.features.projection_dim, cfg.features.seed)

    def unit_gradients(batch: SequenceBatch) -> Tensor:
        return unit_normalize(projected_gradients(model, batch, projection, cfg.train.beta, cfg.model.length_normalize))

    return pair_differences(model, tokenizer, pairs, cfg, unit_gradients)
