"""Selection strategies by registered name: a user adds one with ``@register_strategy`` in a single file.

The contract is sharded by construction, so every strategy — built-in or a user's ``module:name`` —
runs the same way in one process and on the selector actor over W feature workers:

1. worker side (:meth:`Strategy.design_rows`): which features the workers compute (``feature_kind``;
   ``needs_weights`` adds the plug-in weights w_i) and how each pair's design row x_i is formed from
   its feature φ_i (φ_i itself, or √w_i·φ_i for ADPO+). Workers keep the rows; the design matrix is
   V = λI + Σ_j x_j x_jᵀ over labelled pairs.
2. pick side (:meth:`Strategy.pick`): ``budget`` picks over a :class:`~system.selection.shards.ShardedPool`
   (the rows split over W shards, W = 1 in one process), folding every pick into the design state so
   log det V stays comparable across strategies.

``get_strategy("pkg.module:name")`` imports ``pkg.module`` first, so a strategy defined outside this
package is found by its dotted path.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, TypeVar

from torch import Tensor

from system.errors import ConfigError
from system.selection.design import DesignState

if TYPE_CHECKING:
    from system.selection.shards import ShardedPool

FeatureKind = Literal["gradient", "embedding", "fixed"]


@dataclass(frozen=True)
class PoolInputs:
    """A candidate pool in one process, one entry per candidate pair (N pairs).

    Attributes:
        phi: [N, k] pair features φ_i (validated finite).
        weights: [N] ADPO+ plug-in weights μ_i(1 − μ_i) ≥ 0, or None.
    """

    phi: Tensor
    weights: Tensor | None = None


@dataclass(frozen=True)
class Picks:
    """Indices into the pool in pick order and the score each had when it was picked."""

    indices: list[int]
    scores: list[float]


class Strategy(ABC):
    """A pair-selection rule: a worker-side row transform and a pick step over a sharded pool.

    Attributes:
        name: registered name.
        feature_kind: which φ the workers compute: projected LoRA gradients, last-layer embeddings of the
            current policy, or the frozen reference model's embeddings (``fixed``).
        needs_weights: whether the workers also compute plug-in weights w_i = μ_i(1 − μ_i) for
            :meth:`design_rows`.
        regenerates: whether the loop samples fresh candidates from the current policy every round;
            False draws the pool once (round 1) and selects from its unlabelled pairs ever after (APO).
        learns_from_labels: whether :meth:`learn` uses the labels (the selector calls it before every pick
            step; offline selection reveals labels batch by batch for it).
    """

    name: ClassVar[str]
    feature_kind: ClassVar[FeatureKind] = "gradient"
    needs_weights: ClassVar[bool] = False
    regenerates: ClassVar[bool] = True
    learns_from_labels: ClassVar[bool] = False

    def design_rows(self, phi: Tensor, weights: Tensor | None) -> Tensor:
        """Worker side: the design rows x_i [N, k] of features φ [N, k] (weights [N] when ``needs_weights``)."""
        return phi

    def row_scales(self, weights: Tensor | None) -> Tensor | float | None:
        """Scales a ([N] or one for all rows) with :meth:`design_rows` x_i = a_i·φ_i, or None when the rows are not a
        per-row scaling of φ. Offline selection carries score bounds across refits through them (x_iᵀV⁻¹x_i =
        a_i²·φ_iᵀV⁻¹φ_i); None makes it score every row after each refit. 1 for the base rows φ."""
        del weights
        return 1.0 if type(self).design_rows is Strategy.design_rows else None

    def learn(self, rows: Tensor, prefer_first: Tensor, seed: int) -> None:
        """Pick side, before :meth:`pick`: the design rows [L, k] of every labelled pair and its label [L] (True:
        y1 preferred); ``seed`` is ``selection.seed`` (the same every round). Nothing by default."""
        del rows, prefer_first, seed

    @abstractmethod
    def pick(self, pool: ShardedPool, budget: int, state: DesignState, seed: int) -> Picks:
        """Pick ``budget`` distinct unblocked rows of ``pool`` (global indices), updating ``state`` with each pick.

        ``seed`` changes every round (``selection.seed`` + round); the caller has checked that ``budget``
        unblocked rows exist.
        """


StrategyT = TypeVar("StrategyT", bound=type[Strategy])
_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(name: str) -> Callable[[StrategyT], StrategyT]:
    """Class decorator registering a :class:`Strategy` subclass under ``name``."""

    def decorate(cls: StrategyT) -> StrategyT:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"selection strategy {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def strategy_names() -> Sequence[str]:
    """Registered strategy names, sorted."""
    return sorted(_REGISTRY)


def get_strategy(name: str) -> Strategy:
    """A fresh instance of the strategy registered as ``name`` (or ``module.path:name``).

    Raises:
        ConfigError: unknown name or unimportable module, listing the registered names.
    """
    if ":" in name:
        module, _, name = name.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"selection.strategy: cannot import {module!r} ({exc})") from None
    if name not in _REGISTRY:
        raise ConfigError(f"selection.strategy: unknown strategy {name!r} (known: {', '.join(strategy_names())})")
    return _REGISTRY[name]()
