"""Annotators in the label store: personal tokens kept only as hashes, one person per name whatever its case or
Unicode form, revocation that takes effect at once (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from system.errors import ConfigError
from system.labels import LabelStore
from system.labels.annotators import AnnotatorRegistry, annotator_name


@pytest.fixture
def registry(store_url: str) -> AnnotatorRegistry:
    with LabelStore(store_url) as store:
        yield AnnotatorRegistry(store)


def test_a_token_authenticates_its_annotator_until_revoked(registry: AnnotatorRegistry) -> None:
    alice, alice_token = registry.add("alice")
    rita, rita_token = registry.add("rita", role="reviewer")
    assert len(alice_token) == 32 and alice_token != rita_token
    assert registry.authenticate(alice_token) == alice and registry.authenticate(rita_token).role == "reviewer"
    assert registry.authenticate("not-a-token") is None and registry.authenticate(alice_token + "x") is None
    revoked = registry.revoke("ALICE")
    assert revoked.revoked_at is not None and registry.authenticate(alice_token) is None
    assert [(a.name, a.role, a.revoked_at is not None) for a in registry.list()] == [
        ("alice", "annotator", True), ("rita", "reviewer", False)]


@pytest.mark.parametrize("taken", ["Alice", "ALICE", "ａｌｉｃｅ"])
def test_one_person_per_name_whatever_its_case_or_width(registry: AnnotatorRegistry, taken: str) -> None:
    registry.add("alice")
    with pytest.raises(ConfigError, match="the name is taken"):
        registry.add(taken)


@pytest.mark.parametrize("bad", ["", " alice", "alice ", "alice\u200b", "al\nice", "-x", "a" * 65, "bob\n"])
def test_names_that_could_impersonate_or_break_a_line_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="annotator name"):
        annotator_name(bad)


@pytest.mark.parametrize("name", ["José", "bob smith", "r.oneil", "mary-jane_2", "李雷", "a" * 64])
def test_names_of_people_are_accepted_as_written(name: str) -> None:
    assert annotator_name(name) == name


def test_the_store_keeps_only_the_token_s_hash(tmp_path: Path) -> None:
    with LabelStore(f"sqlite:///{tmp_path / 'labels.db'}") as store:
        _, token = AnnotatorRegistry(store).add("alice")
    stored = b"".join(path.read_bytes() for path in tmp_path.iterdir())
    assert token.encode() not in stored
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored


def test_unknown_names_and_roles_are_one_line_errors(registry: AnnotatorRegistry) -> None:
    with pytest.raises(ConfigError, match="annotator 'nobody': no such annotator"):
        registry.revoke("nobody")
    with pytest.raises(ConfigError, match="annotator role 'admin': expected one of annotator, reviewer"):
        registry.add("eve", role="admin")  # type: ignore[arg-type]
