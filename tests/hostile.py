"""Hostile inputs shared by the input-validation tests: a pickle that runs code, ids that try to escape."""

from __future__ import annotations

from pathlib import Path

HOSTILE_IDS = ("../../etc/passwd", "/etc/passwd", "x'; DROP TABLE labels; --", "a\x00b", "..", "a/b", "C:\\x")
"""Ids that would escape a directory, inject into a query or truncate a C string if used unchecked."""


class HostilePickle:
    """Unpickling this object creates ``marker`` (a stand-in for ``os.system``): a state file holding it must
    be refused without the file ever appearing."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))
