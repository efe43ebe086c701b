"""Errors raised where bad input enters activealign.

Every error carries one line that names the offending thing (file, row, field, key) so the
CLI can print it and exit non-zero without a traceback from deep inside a library.
"""

from __future__ import annotations


class ActiveAlignError(Exception):
    """Base class: a user-facing failure with a one-line message."""

    exit_code = 2


class ConfigError(ActiveAlignError):
    """A config file or override is invalid (unknown key, wrong type, out-of-range value)."""


class DataError(ActiveAlignError):
    """A dataset file or row is malformed (missing column, empty text, NaN score)."""


class ModelLoadError(ActiveAlignError):
    """A model or tokenizer cannot be loaded from the given path or hub id."""


class SelectionError(ActiveAlignError):
    """Selection input is unusable (NaN features, budget larger than pool, dimension mismatch)."""


class OracleError(ActiveAlignError):
    """The oracle service or a backend failed or was misconfigured."""

    exit_code = 3


class LabelStoreError(ActiveAlignError):
    """The durable label store cannot be opened, migrated or written."""

    exit_code = 3


class PairTextConflictError(LabelStoreError):
    """A pair id arrived with other texts than the ones it is bound to in the label store.

    A label judges exact texts: a verdict stored for ``pair_id`` must never be handed out for different ones.
    """

    exit_code = 2

    def __init__(self, pair_id: str, stored_digest: str, given_digest: str) -> None:
        self.pair_id = pair_id
        super().__init__(
            f"pair_id {pair_id!r} is bound to other texts in the label store (stored digest "
            f"{stored_digest[:12]}…, given {given_digest[:12]}…): a pair id names one prompt and response pair; "
            "give changed texts a new pair id"
        )


class TaskAnsweredError(LabelStoreError):
    """An answer to an annotation task that is answered already."""

    exit_code = 2

    def __init__(self, task_id: int, pair_id: str, by: str | None = None) -> None:
        whom = f" by {by!r}" if by is not None else ""
        super().__init__(f"task_id {task_id}: pair {pair_id!r} is answered already{whom}")


class AnswerClosedError(LabelStoreError):
    """An answer (or decision) that can no longer be given or changed: its round's labels were consumed by
    training, a reviewer decided the pair, or the task is not waiting for what was sent."""

    exit_code = 2


class NoAnswerError(LabelStoreError):
    """A change to an answer that the annotator never gave."""

    exit_code = 2

    def __init__(self, task_id: int, annotator: str) -> None:
        super().__init__(f"task_id {task_id}: no answer of {annotator!r} to change")


class StaleVersionError(ActiveAlignError):
    """Work was requested for a policy version the worker does not hold."""


class ActorFailureError(ActiveAlignError):
    """A Ray actor kept dying or did not come back: its retries (count and time) are used up."""

    exit_code = 3


class ActorGoneError(ActorFailureError):
    """A Ray actor died and will not be restarted again: its restarts are used up."""
