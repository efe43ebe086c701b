"""Versioned weight sync: the trainer's LoRA adapter to every generation and feature actor.

The adapter directory (peft format: ``adapter_config.json`` + ``adapter_model.safetensors``, a
few MB at most) is read once into an :class:`AdapterPayload`, put into the Ray object store once,
and every actor materialises it into its own temp directory; on a cluster with shared storage a
plain path works as well. Each payload carries a rising ``policy_version``; actors remember the
version they serve and refuse work stamped with any other (:class:`~system.errors.StaleVersionError`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from system.errors import StaleVersionError

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class AdapterPayload:
    """The files of one adapter directory, stamped with the policy version they define."""

    version: int
    files: dict[str, bytes]

    @property
    def num_bytes(self) -> int:
        return sum(len(data) for data in self.files.values())


def pack_adapter(adapter_dir: str | Path, version: int) -> AdapterPayload:
    """Read every file of a saved adapter (or full-weight) directory, flat as ``save_pretrained`` writes it."""
    adapter_dir = Path(adapter_dir)
    files = {path.name: path.read_bytes() for path in sorted(adapter_dir.iterdir()) if path.is_file()}
    if not any(name.endswith(".safetensors") for name in files):
        raise FileNotFoundError(f"{adapter_dir}: no *.safetensors weights (not a saved adapter or model)")
    return AdapterPayload(version=version, files=files)


def unpack_adapter(payload: AdapterPayload, out_dir: Path) -> Path:
    """Write the payload's files into ``out_dir/v{version}`` and return that directory."""
    target = out_dir / f"v{payload.version}"
    target.mkdir(parents=True, exist_ok=True)
    for name, data in payload.files.items():
        (target / name).write_bytes(data)
    return target


class VersionedAdapter:
    """Mixin for actors that serve one policy version: adapter loading and the staleness check.

    Subclasses implement ``_apply_adapter(adapter_dir, version)``.
    """

    def __init__(self) -> None:
        self.policy_version = 0
        self._adapter_root: Path | None = None

    def load_adapter(self, adapter: AdapterPayload | str | Path, version: int) -> int:
        """Switch to ``version``; ``adapter`` is a payload (Ray resolves an object ref before the call) or a path.

        Raises:
            StaleVersionError: ``version`` is older than the one already served, or the payload's differs.
        """
        if version < self.policy_version:
            raise StaleVersionError(f"refusing policy version {version}: already serving {self.policy_version}")
        if isinstance(adapter, AdapterPayload):
            if adapter.version != version:
                raise StaleVersionError(f"adapter payload is version {adapter.version}, asked to load {version}")
            if self._adapter_root is None:
                self._adapter_root = Path(tempfile.mkdtemp(prefix="activealign-adapter-"))
            adapter_dir = unpack_adapter(adapter, self._adapter_root)
        else:
            adapter_dir = Path(adapter)
        self._apply_adapter(adapter_dir, version)
        self.policy_version = version
        logger.info("%s now serves policy version %d", type(self).__name__, version)
        return version

    def _apply_adapter(self, adapter_dir: Path, version: int) -> None:
        raise NotImplementedError

    def require_version(self, version: int) -> None:
        """Raise unless this actor holds exactly ``version``."""
        if version != self.policy_version:
            raise StaleVersionError(f"asked for policy version {version}, this actor holds {self.policy_version}")


def restore_with_adapter(actor: Any, adapter: tuple[Any, int] | None) -> list[ray.ObjectRef]:
    """Bring a restarted actor back: ``setup()``, then ``load_adapter(*adapter)``, the version its group serves
    (None: the base policy, version 0). Ray runs an actor's calls in order, so the adapter loads after whatever
    ``setup()`` restored from disk, which may be an older version; returns the refs to wait for."""
    refs = [actor.setup.remote()]
    if adapter is not None:
        refs.append(actor.load_adapter.remote(*adapter))
    return refs


def broadcast_adapter(adapter_dir: str | Path, version: int, targets: Iterable[Any], by_path: bool = False) -> int:
    """Push one adapter to every target (a fleet or a feature-worker group: anything with ``load_adapter``).

    The files travel through the object store once (``ray.put``) unless ``by_path`` is set, in which
    case every actor reads ``adapter_dir`` itself (shared storage on a cluster).

    Returns:
        The adapter size in bytes (what each actor received).
    """
    payload = pack_adapter(adapter_dir, version)
    adapter: Any = str(adapter_dir) if by_path else ray.put(payload)
    for target in targets:
        target.load_adapter(adapter, version)
    logger.info("policy version %d (%d bytes) synced to %s", version, payload.num_bytes,
                [type(t).__name__ for t in targets])
    return payload.num_bytes

