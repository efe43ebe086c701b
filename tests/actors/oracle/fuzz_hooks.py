"""Schemathesis hooks for the endpoint fuzz test (loaded with ``SCHEMATHESIS_HOOKS``)."""

from __future__ import annotations

import schemathesis

FIELD_LOCATIONS = ("body", "query", "path", "header")


@schemathesis.check
def error_names_the_field(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """A 422's one-line ``detail`` starts with where the bad value is, e.g. ``body.pairs.0.pair_id: ...``."""
    if response.status_code == 422:
        detail = response.json()["detail"]
        if detail.split(".")[0].split(":")[0] not in FIELD_LOCATIONS or "\n" in detail:
            raise AssertionError(f"422 detail does not name the field: {detail!r}")
    return None
