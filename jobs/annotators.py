"""``activealign annotators add|list|revoke``: the people who answer tasks, in the run's label store."""

from __future__ import annotations

from system.config import Config
from system.labels import LabelStore
from system.labels.annotators import AnnotatorRegistry, Role


def add(config: Config, name: str, role: Role) -> int:
    """Add ``name`` and print their token, once (the store keeps only its hash)."""
    with LabelStore(config.oracle.label_store_url) as store:
        annotator, token = AnnotatorRegistry(store).add(name, role)
    print(f"added {annotator.role} {annotator.name!r}; their token (shown once, give it to them only):\n{token}",
          flush=True)
    return 0


def show(config: Config) -> int:
    """One line per annotator: name, role, added, revoked."""
    with LabelStore(config.oracle.label_store_url) as store:
        annotators = AnnotatorRegistry(store).list()
    for annotator in annotators:
        revoked = f"  revoked {annotator.revoked_at:%Y-%m-%d %H:%M}" if annotator.revoked_at else ""
        print(f"{annotator.name}\t{annotator.role}\tadded {annotator.created_at:%Y-%m-%d %H:%M}{revoked}", flush=True)
    return 0


def revoke(config: Config, name: str) -> int:
    """Stop ``name``'s token from working; their answers stay."""
    with LabelStore(config.oracle.label_store_url) as store:
        annotator = AnnotatorRegistry(store).revoke(name)
    print(f"revoked {annotator.name!r}: their token no longer works; their answers stay", flush=True)
    return 0
