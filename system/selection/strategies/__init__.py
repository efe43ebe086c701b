"""Built-in strategies; importing this package registers them."""

from system.selection.strategies import aplp, dopt, uniform

__all__ = ["aplp", "dopt", "uniform"]
