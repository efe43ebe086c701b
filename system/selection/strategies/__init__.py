"""Built-in strategies; importing this package registers them."""

from system.selection.strategies import dopt, uniform

__all__ = ["dopt", "uniform"]
