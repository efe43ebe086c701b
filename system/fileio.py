"""Atomic writes: write beside the target, then rename into place.

A reader sees either the old file or the complete new one, never a half-written file: the data goes to a
temporary path in the same directory (same filesystem, so :func:`os.replace` is an atomic rename), is flushed
to disk, and only then replaces the target. If the writer raises, the temporary path is removed and the
target is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory entry's) data to disk; directories are best effort."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The caller writes a file (or creates a directory) at the yielded path. On a normal exit it replaces
    ``path``; on an exception it is deleted and ``path`` keeps its old content. Parent directories are created.
    A directory replacing an existing directory is swapped in two renames (old → backup, new → target) and the
    backup is then deleted; only that swap is not a single atomic step.

    Example::

        with atomic_output("labels.parquet") as tmp:
            pyarrow.parquet.write_table(table, tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{target}: nothing was written to the temporary path {tmp}")
        if tmp.is_dir():
            for child in tmp.rglob("*"):
                if child.is_file():
                    _fsync(child)
        else:
            _fsync(tmp)
        if tmp.is_dir() and target.is_dir():
            backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, backup)
            os.replace(tmp, target)
            _remove(backup)
        else:
            os.replace(tmp, target)
        _fsync(target.parent)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding=encoding)
