"""Reward functions the benchmarks' programmatic oracles load by ``module:function`` (no other imports, so a
Serve replica can import this module on its own)."""

from __future__ import annotations


def politeness(prompt: object, response: str) -> float:
    """+1 per 'please' or 'thank' in the response."""
    lowered = response.lower()
    return float(lowered.count("please") + lowered.count("thank"))
