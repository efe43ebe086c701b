"""An oracle whose reward is a Python function ``module:function(prompt, response) -> float``."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence

from system.errors import OracleError
from system.oracles.base import RewardOracle, Sampling
from system.types import Text

RewardFn = Callable[[Text, str], float]


def load_callable(spec: str) -> RewardFn:
    """Import ``module:function`` (dots allowed in both parts); errors name the spec."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise OracleError(f"oracle.callable {spec!r}: expected 'module:function'")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise OracleError(f"oracle.callable {spec!r}: cannot import module {module_name!r} ({exc})") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise OracleError(f"oracle.callable {spec!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise OracleError(f"oracle.callable {spec!r}: {attribute!r} is not callable")
    return target  # type: ignore[return-value]


class ProgrammaticOracle(RewardOracle):
    """Rewards from a user function; P(y1 ≻ y2) = σ((R1 − R2)/T) as for every reward oracle."""

    name = "programmatic"

    def __init__(self, spec: str, temperature: float = 1.0, sampling: Sampling = "argmax", seed: int = 0) -> None:
        super().__init__(temperature, sampling, seed)
        self.spec = spec
        self.reward_fn = load_callable(spec)
        self.model_version = spec

    def rewards(self, prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        """Call the function per (prompt, response); a non-finite or non-numeric result raises OracleError."""
        values = []
        for prompt, response in zip(prompts, responses, strict=True):
            try:
                value = float(self.reward_fn(prompt, response))
            except Exception as exc:  # user code may raise anything; report it in one line
                raise OracleError(f"oracle.callable {self.spec!r}: failed ({exc.__class__.__name__}: {exc})") from None
            if not math.isfinite(value):
                raise OracleError(f"oracle.callable {self.spec!r}: returned {value} (not finite)")
            values.append(value)
        return values
