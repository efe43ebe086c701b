"""Projected per-example LoRA gradients against autograd per-example gradients and a dense Kronecker matrix."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from system.features.gradients import lora_modules, projected_gradients, projection_for, unit_normalize
from system.features.projection import ModuleShape, SeededProjection
from system.models.logprobs import sequence_logps
from tests.conftest import REPO_ROOT
from tests.system.features.conftest import random_batch


def dense_projection_matrix(projection: SeededProjection) -> torch.Tensor:
    """The explicit [k, p] matrix: block-diagonal Kronecker factors, then the CountSketch as a matrix."""
    blocks = [torch.kron(p_out, p_in) for p_out, p_in in projection.factors.values()]
    kron = torch.block_diag(*blocks).double()
    if projection.sketch is None:
        return kron
    buckets, signs = projection.sketch
    sketch = torch.zeros(projection.dim, projection.block_width, dtype=torch.float64)
    sketch[buckets, torch.arange(projection.block_width)] = signs.double()
    return sketch @ kron


def loop_per_example_gradients(model: torch.nn.Module, batch, scale: float) -> torch.Tensor:
    """Reference: one backward per example, LoRA weight gradients flattened row-major in module order."""
    weights = [module.weight for module in lora_modules(model).values()]
    rows = []
    for i in range(batch.input_ids.shape[0]):
        logp = sequence_logps(model, batch.select(slice(i, i + 1))).sum() * scale
        grads = torch.autograd.grad(logp, weights)
        rows.append(torch.cat([grad.reshape(-1) for grad in grads]).double())
    return torch.stack(rows)


@pytest.mark.parametrize(("dim", "oversample"), [(256, 1), (100, 4)])  # blocks are exactly k wide / CountSketch
def test_projected_gradients_equal_dense_projection_of_autograd_gradients(lora_llama, dim: int, oversample: int):
    batch = random_batch(5, seed=dim)
    shapes = [ModuleShape(name, m.out_features, m.in_features) for name, m in lora_modules(lora_llama).items()]
    projection = SeededProjection(dim, shapes, seed=3, oversample=oversample)
    assert (projection.sketch is None) == (oversample == 1)
    assert any(not torch.equal(p_in, torch.eye(p_in.shape[1])) for _, p_in in projection.factors.values())
    fast = projected_gradients(lora_llama, batch, projection, scale=0.1).double()
    reference = loop_per_example_gradients(lora_llama, batch, 0.1) @ dense_projection_matrix(projection).T
    assert fast.shape == (5, dim)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))


def test_projection_preserves_inner_products_within_jl_bounds(lora_llama) -> None:
    batch = random_batch(6, seed=11)
    raw = loop_per_example_gradients(lora_llama, batch, 1.0)
    unit = raw / raw.norm(dim=1, keepdim=True)
    dim = 1024
    errors = []
    for seed in range(4):
        projected = projected_gradients(lora_llama, batch, projection_for(lora_llama, dim, seed)).double()
        projected = projected / raw.norm(dim=1, keepdim=True)  # the same linear map applied to unit vectors
        errors.append(float((projected @ projected.T - unit @ unit.T).abs().max()))
    # JL: for unit a, b a k-dim random projection has std(<Pa,Pb> − <a,b>) ≤ √(2/k) ≈ 0.044 at k = 1024;
    # the max over 21 entries stays below 4 standard deviations, the mean over seeds below 2.5.
    bound = (2 / dim) ** 0.5
    assert max(errors) < 4 * bound
    assert sum(errors) / len(errors) < 2.5 * bound
    assert torch.allclose(unit_normalize(projected).norm(dim=1), torch.ones(6, dtype=torch.float64))


def test_projection_is_identical_in_a_fresh_process() -> None:
    code = (
        "import torch\n"
        "from system.features.projection import ModuleShape, SeededProjection\n"
        "p = SeededProjection(40, [ModuleShape('a.lora_A.default', 8, 64), ModuleShape('a.lora_B.default', 64, 8)],"
        " seed=7)\n"
        "x = torch.arange(p.block_width, dtype=torch.float32).unsqueeze(0)\n"
        "result = repr([f.sum().item() for pair in p.factors.values() for f in pair] + p.compress(x)[0].tolist())\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code + "print(result)"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    namespace: dict = {}
    exec(code, namespace)  # the same construction in this process
    assert namespace["result"] == other.stdout.strip()
    p_out, p_in = namespace["p"].factors["a.lora_A.default"]
    assert not torch.equal(p_in, torch.eye(64))  # a random factor, not an identity


def test_different_seeds_give_different_projections(lora_llama) -> None:
    first, second = projection_for(lora_llama, 16, seed=0), projection_for(lora_llama, 16, seed=1)
    name = next(iter(first.factors))
    assert not torch.equal(first.factors[name][1], second.factors[name][1])
    assert torch.equal(first.factors[name][1], projection_for(lora_llama, 16, seed=0).factors[name][1])
