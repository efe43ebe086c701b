"""Built-in strategies; importing this package registers them."""

from system.selection.strategies import dopt, ensemble, uniform

__all__ = ["dopt", "ensemble", "uniform"]
