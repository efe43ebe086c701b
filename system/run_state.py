"""Round state of an active loop, persisted atomically after every phase so a killed run can resume.

A run directory holds ``config.yaml``, ``state.json`` (this module) and one ``round_NNN/`` directory
per round with the outputs of each finished phase (candidates, pairs, selection, labels, adapter,
selector state). ``state.json`` is the commit point: it is replaced atomically (temp file + rename)
only after the files it references are written, so a reader never sees a half-finished phase.

The RNG states of ``random``, ``numpy`` and ``torch`` are captured with each save and restored on
resume, so the phases that follow draw the same numbers as an uninterrupted run. They are stored as plain
JSON (lists of integers), and every tensor state file of a run directory is read with
:func:`load_state_file` (``torch.load(weights_only=True)``): loading a run directory never unpickles code.
"""

from __future__ import annotations

import base64
import json
import pickle
import random
import tarfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from system.config import Config, flatten_config
from system.errors import ConfigError, DataError
from system.fileio import atomic_write_text

PHASES = ("start", "generated", "selected", "labelled", "trained", "synced", "evaluated")
"""Phases of one round in execution order; ``RoundState.phase`` names the last one finished."""

STATE_FILE = "state.json"

FEATURES_DIR = "features"
"""``RUN_DIR/features/``: each feature worker's shard of pair features (``actors.selection.SelectionParts``),
reloaded when Ray restarts a worker."""

ROUND_READABLE_FILES = ("metrics.json", "train_metrics.json", "selection.json", "selected_pairs.parquet",
                        "labels.jsonl")
"""Files of a round directory a person reads; the rest (candidates with token log-probs, the selector
snapshot ``selector_state.pt`` with V and V⁻¹, trainer checkpoints) is state for resume."""


@dataclass
class RoundState:
    """Where a loop stands: round ``round`` has finished phase ``phase`` (round 0 = before round 1).

    Attributes:
        round: 1-based index of the current round; 0 until round 1 starts.
        phase: last finished phase of ``round`` (one of :data:`PHASES`).
        policy_version: version of the adapter the fleet and feature workers serve.
        adapter_path: latest trained adapter directory (None = the base policy).
        mlflow_run_id: MLflow run the loop logs into.
        labelled_pair_ids: ids of every pair labelled so far, in labelling order.
        selector_state_path: the selector's saved design state (V⁻¹ …) after the last selection.
        rng: RNG states of python/numpy/torch as JSON values (:func:`capture_rng`), captured at save time.
    """

    round: int = 0
    phase: str = "start"
    policy_version: int = 0
    adapter_path: str | None = None
    mlflow_run_id: str | None = None
    labelled_pair_ids: list[str] = field(default_factory=list)
    selector_state_path: str | None = None
    rng: dict[str, Any] = field(default_factory=dict)

    def done(self, round_index: int, phase: str) -> bool:
        """Whether ``phase`` of round ``round_index`` had finished when this state was saved."""
        if round_index != self.round:
            return round_index < self.round
        return PHASES.index(phase) <= PHASES.index(self.phase)


def round_dir(run_dir: str | Path, round_index: int) -> Path:
    """``RUN_DIR/round_NNN`` — where round ``round_index`` keeps its phase outputs."""
    return Path(run_dir) / f"round_{round_index:03d}"


def capture_rng() -> dict[str, Any]:
    """The python/numpy/torch RNG states as JSON values.

    ``python``: ``[version, [625 ints], gauss_next]`` (:func:`random.getstate`); ``numpy``: ``[name, [624 ints],
    pos, has_gauss, cached_gaussian]`` (:func:`numpy.random.get_state`); ``torch``: the CPU generator's byte
    state, base64.
    """
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
    }


def restore_rng(states: dict[str, Any]) -> None:
    """Restore RNG states captured by :func:`capture_rng` (no-op for an empty mapping)."""
    if not states:
        return
    try:
        version, internal, gauss_next = states["python"]
        random.setstate((version, tuple(internal), gauss_next))
        name, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch_state = np.frombuffer(base64.b64decode(states["torch"], validate=True), dtype=np.uint8)
        torch.set_rng_state(torch.from_numpy(torch_state.copy()))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{STATE_FILE}: field 'rng': not a saved RNG state ({exc})") from None


def load_state_file(path: str | Path, allow: Sequence[type] = (), mmap: bool = False) -> Any:
    """A tensor state file of a run directory (selector, feature worker, trainer checkpoint), read with
    ``torch.load(weights_only=True)``: tensors, numbers, strings and lists/tuples/dicts of them only, never
    pickled code. ``allow`` names further plain-data classes the file may hold; ``mmap`` maps tensor storages
    instead of reading them (to vet a large file cheaply). Anything else raises :class:`DataError` naming
    the file."""
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, weights_only=True, map_location="cpu", mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a tensor state file (refused to load: {first_line})") from None


RESUME_SAFE_KEYS = (
    "tracking.", "cluster.", "loop.rounds", "loop.run_dir", "oracle.host", "oracle.port", "oracle.token_env",
    "oracle.min_replicas", "oracle.max_replicas", "oracle.max_batch_size", "oracle.batch_wait_timeout_s",
    "oracle.max_request_bytes", "oracle.human_timeout_s", "oracle.request_timeout_s", "oracle.retry_deadline_s",
    "oracle.retry_max_attempts", "oracle.max_pairs_per_request", "oracle.max_ongoing_requests",
    "oracle.max_queued_requests", "oracle.retry_after_s", "oracle.server_timeout_s",
)
"""Settings a resumed run may change (a key matches an entry equal to it or, for entries ending in ``.``,
starting with it); see :func:`check_resume_config`."""


def check_resume_config(saved: Config, resumed: Config, run_dir: str | Path) -> None:
    """Refuse to resume ``run_dir`` (saved config ``saved``) with a config that would change its results.

    The rule: a resumed run must compute what the uninterrupted run would have computed, so every setting
    must equal the saved one except :data:`RESUME_SAFE_KEYS`, which change where and how the run executes,
    not what it computes — MLflow tracking (``tracking.*``), the Ray cluster and per-actor resources
    (``cluster.*``), the run directory (``loop.run_dir``: resume uses ``run_dir`` itself), the number of rounds
    (``loop.rounds``: extend a finished run or stop earlier; finished rounds stay as they are) and the oracle
    service's address, token variable, replica counts, batching, request limits and timeouts. Everything
    else — the model, LoRA, generation, features, selection (strategy, budget, seed), the oracle's labels
    (kind, model, sampling, label store), training (loss, β, lr, seed) and the loop's data and seed —
    changes the numbers, and is refused.

    Raises:
        ConfigError: one line naming every differing key with its saved and new value.
    """
    before, after = flatten_config(saved), flatten_config(resumed)
    changed = [key for key in sorted(before.keys() | after.keys())
               if before.get(key) != after.get(key)
               and not any(key == safe or (safe.endswith(".") and key.startswith(safe)) for safe in RESUME_SAFE_KEYS)]
    if changed:
        shown = ", ".join(f"{key} ({before.get(key, '<unset>')!r} -> {after.get(key, '<unset>')!r})"
                          for key in changed)
        raise ConfigError(f"--resume {run_dir}: the overrides change settings that change results: {shown}; "
                          "start a new run instead")


def save_round_state(run_dir: str | Path, state: RoundState) -> None:
    """Capture the RNG states into ``state`` and write ``RUN_DIR/state.json`` atomically."""
    if state.phase not in PHASES:
        raise ValueError(f"unknown phase {state.phase!r}; expected one of {PHASES}")
    state.rng = capture_rng()
    atomic_write_text(Path(run_dir) / STATE_FILE, json.dumps(asdict(state), indent=1))


def load_round_state(run_dir: str | Path) -> RoundState | None:
    """The state saved in ``run_dir``, or None when the loop has not saved one yet (no file, not even a link).

    Raises:
        DataError: ``state.json`` is there but cannot be read (a dangling or looping symlink, a directory …) or
            holds no valid state.
    """
    path = Path(run_dir) / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if path.is_symlink():
            raise DataError(f"{path}: a symlink to a missing file, not a round state") from None
        return None
    except OSError as exc:  # a symlink loop, a directory, no permission …
        raise DataError(f"{path}: cannot read the round state ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: corrupt round state (not UTF-8: {exc.reason})") from None
    try:
        data: dict[str, Any] = json.loads(text)
        state = RoundState(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise DataError(f"{path}: corrupt round state ({exc})") from None
    if not isinstance(state.rng, dict):
        raise DataError(f"{path}: field 'rng': expected the JSON RNG states of this version, got "
                        f"{type(state.rng).__name__} (a pickled state from an older version is not loaded)")
    _check_state_fields(path, state, Path(run_dir))
    return state


def _check_state_fields(path: Path, state: RoundState, run_dir: Path) -> None:
    """Types of ``state.json``'s fields, and its stored paths inside ``run_dir`` (a resume loads and exports
    what they point to, so a tampered file must not point outside the run)."""
    for name, number in (("round", state.round), ("policy_version", state.policy_version)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise DataError(f"{path}: field {name!r}: expected a non-negative integer, got {number!r}")
    if state.phase not in PHASES:
        raise DataError(f"{path}: field 'phase': {state.phase!r} is not one of {', '.join(PHASES)}")
    if not isinstance(state.labelled_pair_ids, list) or not all(isinstance(i, str) for i in state.labelled_pair_ids):
        raise DataError(f"{path}: field 'labelled_pair_ids': expected a list of strings")
    root = run_dir.resolve()
    for name in ("adapter_path", "selector_state_path", "mlflow_run_id"):
        value = getattr(state, name)
        if value is None:
            continue
        if not isinstance(value, str) or "\x00" in value:
            raise DataError(f"{path}: field {name!r}: expected a string, got {value!r}")
        if name != "mlflow_run_id" and not Path(value).resolve().is_relative_to(root):
            raise DataError(f"{path}: field {name!r}: {value!r} is outside the run directory {run_dir}")


def design_state_files(run_dir: str | Path) -> list[Path]:
    """What a resume needs beyond the readable round files: ``state.json`` (round pointer, RNG states), the
    selector snapshot it points to (V, V⁻¹ in float64: k² · 16 bytes) and the feature workers' shards."""
    run_dir = Path(run_dir)
    state = load_round_state(run_dir)
    if state is None:
        return []
    files = [run_dir / STATE_FILE]
    if state.selector_state_path is not None:
        files.append(Path(state.selector_state_path))
    return files + sorted(path for path in (run_dir / FEATURES_DIR).glob("*") if path.is_file())


def archive_design_state(run_dir: str | Path, archive: str | Path) -> Path:
    """Write :func:`design_state_files` into one gzip-compressed tar at ``archive``, named relative to ``run_dir``
    (extracting it into a run directory restores them where resume looks). Level 1: float64 matrices barely
    shrink at higher levels, which only cost time."""
    root = Path(run_dir).resolve()
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path in design_state_files(run_dir):
            resolved = path.resolve()
            tar.add(resolved, arcname=str(resolved.relative_to(root)) if resolved.is_relative_to(root) else path.name)
    return Path(archive)
