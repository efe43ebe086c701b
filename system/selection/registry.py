"""Selection strategies by registered name: a user adds one with ``@register_strategy`` in a single file.

A strategy sees the whole candidate pool (:class:`PoolInputs`), the design state carried across
rounds, and a mask of pairs it may not pick (zero-norm features); it returns picks in order and the
score each had when picked, and folds every pick into the design state so V stays comparable across
strategies. ``get_strategy("pkg.module:name")`` imports ``pkg.module`` first, so a strategy defined
outside this package is found by its dotted path.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeVar

from torch import Tensor

from system.errors import ConfigError
from system.selection.design import DesignState

FeatureKind = Literal["gradient", "embedding", "fixed"]


@dataclass(frozen=True)
class PoolInputs:
    """What a strategy may look at, one entry per candidate pair (N pairs).

    Attributes:
        phi: [N, k] pair features φ_i (validated finite).
        weights: [N] ADPO+ plug-in weights μ_i(1 − μ_i) ≥ 0, or None.
        prompt_entropy: [N] predictive entropy of the pair's prompt under the policy (APLP), or None.
        reward_margin: [N] implicit-reward margin r(x, y1) − r(x, y2) (APLP), or None.
    """

    phi: Tensor
    weights: Tensor | None = None
    prompt_entropy: Tensor | None = None
    reward_margin: Tensor | None = None


@dataclass(frozen=True)
class Picks:
    """Indices into the pool in pick order and the score each had when it was picked."""

    indices: list[int]
    scores: list[float]


class Strategy(ABC):
    """A pair-selection rule. Class attributes tell the active loop what to compute for it.

    Attributes:
        name: registered name.
        feature_kind: which φ it expects: projected LoRA gradients, last-layer embeddings, or a fixed encoder's.
        needs_weights: whether ``PoolInputs.weights`` (ADPO+ plug-in weights) must be given.
        regenerates: whether candidates are re-sampled from the current policy each round (APO: no).
    """

    name: ClassVar[str]
    feature_kind: ClassVar[FeatureKind] = "gradient"
    needs_weights: ClassVar[bool] = False
    regenerates: ClassVar[bool] = True

    @abstractmethod
    def select(self, pool: PoolInputs, budget: int, state: DesignState, blocked: Tensor, seed: int) -> Picks:
        """Pick ``budget`` distinct indices with ``blocked[i]`` False, updating ``state`` with each pick."""


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
