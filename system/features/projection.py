"""A seeded random projection of LoRA gradients that every process regenerates instead of shipping.

LoGra-style (structured per module): the gradient of a per-example scalar w.r.t. a linear module's
weight M [d_out, d_in] is G = Σ_t g_t u_tᵀ (g_t: gradient at the output, u_t: the input, summed over
the example's tokens). It is projected with two small seeded factors, P_out [k_out, d_out] and
P_in [k_in, d_in]:

    P_out G P_inᵀ = Σ_t (P_out g_t)(P_in u_t)ᵀ  ∈ R^{k_out × k_in},

which equals the dense Kronecker projection (P_out ⊗ P_in)·vec(G) (row-major vec) without ever
forming G. Factors have i.i.d. entries ±1/√k (Rademacher) or N(0, 1/k) (Gaussian), so the map
preserves squared norms in expectation (Johnson–Lindenstrauss); a side that is not compressed (the
LoRA rank r when r² ≤ the block budget) uses the identity and is exact. The per-module blocks are
concatenated (width K = Σ k_out·k_in, a few times k); when K differs from the requested dimension k, a seeded
CountSketch (each of the K coordinates added, with a random sign, to one of k buckets) maps them to
exactly k, again norm-preserving in expectation.

Every factor is drawn from a generator seeded by (seed, module name, shape) through a stable hash,
so any process with the same model architecture and seed rebuilds the same projection.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

ProjectionKind = Literal["rademacher", "gaussian"]


@dataclass(frozen=True)
class ModuleShape:
    """A linear module to project: its name in ``model.named_modules()`` and weight shape [d_out, d_in]."""

    name: str
    out_features: int
    in_features: int


def _generator(seed: int, *parts: object) -> torch.Generator:
    key = zlib.crc32(repr((seed, *parts)).encode())
    return torch.Generator().manual_seed(key)


def _random_matrix(rows: int, cols: int, kind: ProjectionKind, generator: torch.Generator) -> Tensor:
    if kind == "gaussian":
        return torch.randn(rows, cols, generator=generator) / math.sqrt(rows)
    signs = torch.randint(0, 2, (rows, cols), generator=generator).float() * 2.0 - 1.0
    return signs / math.sqrt(rows)


def _block_shape(numbers: int, module: ModuleShape) -> tuple[int, int]:
    """(k_out, k_in) with k_out·k_in ≈ ``numbers`` within the module's dimensions.

    A side no larger than √numbers (a LoRA rank r) is kept whole — its factor is the identity, so that side
    is exact — and the other side gets numbers / r; otherwise the block is near-square.
    """
    small, large = sorted((module.out_features, module.in_features))
    if small * large <= numbers or small * small <= numbers:
        k_small, k_large = small, min(large, max(1, numbers // small))
    else:
        k_small = k_large = math.isqrt(numbers)
    return (k_small, k_large) if module.out_features == small else (k_large, k_small)


def _factor(rows: int, cols: int, kind: ProjectionKind, generator: torch.Generator) -> Tensor:
    """A [rows, cols] projection factor: the identity when rows = cols (nothing to compress), else random."""
    return torch.eye(cols) if rows == cols else _random_matrix(rows, cols, kind, generator)


class SeededProjection:
    """Per-module Kronecker factors plus an optional CountSketch, all regenerated from ``seed``.

    Args:
        dim: output dimension k.
        modules: the projected modules, in the order their blocks are concatenated.
        seed: projection seed (``features.seed``).
        kind: distribution of the factor entries.

        oversample: blocks hold about ``oversample``·k numbers in all, compressed to k by the CountSketch.
            A Kronecker block distorts inner products more than a dense projection of the same width
            (its error is set by the sides k_out, k_in, not their product), so the blocks are made wider
            than k and the sketch, whose error matches a dense Gaussian projection's, brings them to k.

    Each module gets about oversample·k / M numbers (M modules) as a k_out × k_in block; a small side
    (the LoRA rank) is kept whole, and a module with fewer weights than that is not projected at all.
    """

    def __init__(
        self,
        dim: int,
        modules: Sequence[ModuleShape],
        seed: int = 0,
        kind: ProjectionKind = "rademacher",
        oversample: int = 4,
    ) -> None:
        if dim < 1 or not modules or oversample < 1:
            raise ValueError("a projection needs dim ≥ 1, oversample ≥ 1 and at least one module")
        self.dim = dim
        self.seed = seed
        self.kind: ProjectionKind = kind
        self.modules = tuple(modules)
        per_module = max(1, math.ceil(oversample * dim / len(self.modules)))
        self.factors: dict[str, tuple[Tensor, Tensor]] = {}
        for module in self.modules:
            k_out, k_in = _block_shape(per_module, module)
            shape = (module.out_features, module.in_features)
            p_out = _factor(k_out, module.out_features, kind, _generator(seed, module.name, shape, "out"))
            p_in = _factor(k_in, module.in_features, kind, _generator(seed, module.name, shape, "in"))
            self.factors[module.name] = (p_out, p_in)
        self.block_width = sum(p_out.shape[0] * p_in.shape[0] for p_out, p_in in self.factors.values())
        self.sketch: tuple[Tensor, Tensor] | None = None
        if self.block_width != dim:
            generator = _generator(seed, "countsketch", self.block_width, dim)
            buckets = torch.randint(0, dim, (self.block_width,), generator=generator)
            signs = torch.randint(0, 2, (self.block_width,), generator=generator).float() * 2.0 - 1.0
            self.sketch = (buckets, signs)

    def compress(self, blocks: Tensor) -> Tensor:
        """Concatenated module blocks [B, K] → [B, k] (the CountSketch; identity when K = k)."""
        if self.sketch is None:
            return blocks
        buckets, signs = self.sketch
        out = torch.zeros(blocks.shape[0], self.dim, dtype=blocks.dtype, device=blocks.device)
        return out.index_add_(1, buckets.to(blocks.device), blocks * signs.to(blocks))
