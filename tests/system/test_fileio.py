"""Atomic writes: the target holds either the old or the complete new content, and no temp files linger."""

from __future__ import annotations

from pathlib import Path

import pytest

from system.fileio import atomic_output, atomic_write_bytes, atomic_write_text


def test_write_text_and_bytes_create_and_replace(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "old")
    assert target.read_text() == "old"
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_failure_mid_stream_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "data.jsonl"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_output(target) as tmp, tmp.open("w") as handle:
        handle.write("partial line 1\n")
        handle.flush()
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["data.jsonl"]


def test_nothing_written_is_an_error_and_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(FileNotFoundError, match="x.bin"), atomic_output(target):
        pass
    assert target.read_bytes() == b"old"


def test_directory_output_replaces_existing_directory(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    for content in ("v1", "v2"):
        with atomic_output(target) as tmp:
            tmp.mkdir()
            (tmp / "weights.bin").write_text(content)
    assert (target / "weights.bin").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]

    with pytest.raises(ValueError), atomic_output(target) as tmp:
        tmp.mkdir()
        (tmp / "weights.bin").write_text("v3-partial")
        raise ValueError("crash")
    assert (target / "weights.bin").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]
