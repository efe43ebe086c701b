"""Reward functions the programmatic-oracle tests load by ``module:function``."""

from __future__ import annotations


def politeness(prompt: object, response: str) -> float:
    """+1 per 'please' or 'thank' in the response."""
    lowered = response.lower()
    return float(lowered.count("please") + lowered.count("thank"))


def not_a_number(prompt: object, response: str) -> str:
    return "high"


NOT_CALLABLE = 3
