"""Distributed preference training: Ray Train ``TorchTrainer`` workers running the system/training core
under DeepSpeed (ZeRO stage, offload and precision from ``train.deepspeed``) or plain DDP.

Every worker loads the policy, takes its slice ``batch[rank::world]`` of each global batch of
``train.batch_size`` pairs (the order of :func:`system.training.epoch_batches`, so the data order
does not depend on the world size), computes :func:`system.training.preference_loss` on it and lets
DeepSpeed average gradients across ranks (equal slices ⇒ the mean over the global batch). πref's
contribution (reference log-probs, or MPO's pair probabilities and samples) is computed once by
rank 0 before the first step and broadcast. After every epoch all ranks write a checkpoint
(DeepSpeed's sharded optimizer state, the offline reference, the epoch record) and call
``ray.train.report``; :meth:`Trainer.fit` resumes from the newest checkpoint under ``out_dir``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
import torch
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from system.config import Config, DeepSpeedConfig, TrainConfig
from system.errors import DataError
from system.types import PreferencePair

logger = logging.getLogger(__name__)

EPOCH_RECORD = "epoch.json"
REFERENCE_FILE = "reference.pt"
DS_TAG = "state"


def deepspeed_config(train_cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """DeepSpeed's JSON config from ``train``: micro-batch = ⌈batch_size / world⌉ pairs per rank.

    A torch optimizer is handed to DeepSpeed, hence ``zero_allow_untested_optimizer``.
    """
    ds: DeepSpeedConfig = train_cfg.deepspeed
    micro = max(1, -(-train_cfg.batch_size // world_size))
    zero: dict[str, Any] = {"stage": ds.stage}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": train_cfg.grad_accum_steps,
        "train_batch_size": micro * train_cfg.grad_accum_steps * world_size,
        "gradient_clipping": train_cfg.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": ds.precision == "bf16"},
        "fp16": {"enabled": ds.precision == "fp16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def rank_slice(indices: Sequence[int], rank: int, world_size: int) -> list[int]:
    """This rank's rows of a global batch; a batch smaller than the world is reused cyclically so every
    rank takes part in each collective step."""
    own = list(indices[rank::world_size])
    return own or [indices[rank % len(indices)]]


class _DdpStepper:
    """The DeepSpeed-engine surface (``backward``/``step``/``module``) over DDP + AdamW + clipping."""

    def __init__(self, model: torch.nn.Module, train_cfg: TrainConfig) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.module = model
        self.ddp = DistributedDataParallel(model)
        params = [p for p in model.parameters() if p.requires_grad]
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
        self.accum, self.max_norm, self.pending = train_cfg.grad_accum_steps, train_cfg.max_grad_norm, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.ddp(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accum).backward()

    def step(self) -> None:
        self.pending += 1
        if self.pending == self.accum:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.pending = 0

    def save_checkpoint(self, directory: str, tag: str) -> None:
        if torch.distributed.get_rank() == 0:
            trainable = {n: p.detach() for n, p in self.module.named_parameters() if p.requires_grad}
            torch.save({"weights": trainable, "optimizer": self.optimizer.state_dict()}, Path(directory) / f"{tag}.pt")

    def load_checkpoint(self, directory: str, tag: str) -> None:
        saved = torch.load(Path(directory) / f"{tag}.pt", weights_only=False)
        self.module.load_state_dict(saved["weights"], strict=False)
        self.optimizer.load_state_dict(saved["optimizer"])


def _engine(model: torch.nn.Module, train_cfg: TrainConfig, world_size: int) -> Any:
    if not train_cfg.deepspeed.enabled:
        return _DdpStepper(model, train_cfg)
    import deepspeed

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                      config=deepspeed_config(train_cfg, world_size))
    return engine


def _broadcast(value: Any) -> Any:
    holder = [value]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


def _all_mean(value: float, device: torch.device) -> float:
    """Mean of ``value`` over ranks; ``device`` is the rank's training device (NCCL reduces CUDA tensors only)."""
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return float(tensor) / torch.distributed.get_world_size()


STALE_BUILD_LOCK_S = 600.0


def clear_stale_extension_locks(max_age_s: float = STALE_BUILD_LOCK_S) -> list[Path]:
    """Remove JIT-build locks that a killed process left behind; returns the removed paths.

    On CPU, ``deepspeed.init_distributed`` JIT-compiles its shared-memory op through torch's
    ``cpp_extension``, which serialises builders with a ``lock`` file in the extension's build
    directory. A process killed mid-build leaves that file, and every later trainer waits on it for
    ever. A build takes a minute or two here, so a lock older than ``max_age_s`` is stale.
    """
    from torch.utils.cpp_extension import get_default_build_root

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    removed = []
    for lock in root.glob("*/*/lock"):
        try:
            if time.time() - lock.stat().st_mtime > max_age_s:
                lock.unlink()
                removed.append(lock)
                logger.warning("removed a stale extension build lock %s (its builder was killed)", lock)
        except FileNotFoundError:
            continue
    return removed


def _sft_warmup_everywhere(
    model: torch.nn.Module, tokenizer: Any, pairs: Sequence[PreferencePair], cfg: Config
) -> None:
    """The SFT warm-up on every rank (same pairs, same seed), before DeepSpeed partitions anything; rank 0's
    trainable weights are then broadcast so that float non-determinism cannot split the ranks."""
    from system.training import sft_warmup

    sft_warmup(model, tokenizer, pairs, cfg)
    for param in model.parameters():
        if param.requires_grad:
            torch.distributed.broadcast(param.data, src=0)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def train_worker(loop: dict[str, Any]) -> None:
    """The per-worker loop Ray Train runs (``loop``: config dump, pairs ref, out_dir, resume_from)."""
    from system.models.loading import load_policy, save_adapter
    from system.training import epoch_batches, make_batch, preference_loss
    from system.training.loop import offline_reference

    torch.set_num_threads(loop.get("threads", 1))
    cfg = Config.model_validate(loop["config"])
    train_cfg = cfg.train
    if train_cfg.deepspeed.enabled:
        import deepspeed

        clear_stale_extension_locks()
        deepspeed.init_distributed(dist_backend="nccl" if train_cfg.use_gpu else "gloo")
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    pairs: list[PreferencePair] = ray.get(loop["pairs"])
    model, tokenizer = load_policy(cfg.model, cfg.lora, is_trainable=True, seed=train_cfg.seed)
    device = torch.device("cuda", torch.cuda.current_device()) if train_cfg.use_gpu else torch.device("cpu")
    model.to(device)
    resume_from = loop.get("resume_from")
    if not resume_from:
        known_samples = loop.get("reference_samples")
        reference = _broadcast(offline_reference(model, tokenizer, pairs, cfg, known_samples) if rank == 0 else None)
        if train_cfg.sft_warmup.enabled:
            _sft_warmup_everywhere(model, tokenizer, pairs, cfg)
    engine = _engine(model, train_cfg, world)
    first_epoch, history = 0, []
    if resume_from:
        engine.load_checkpoint(resume_from, tag=DS_TAG)
        record = json.loads((Path(resume_from) / EPOCH_RECORD).read_text())
        first_epoch, history = record["epoch"], record["history"]
        reference = torch.load(Path(resume_from) / REFERENCE_FILE, weights_only=False)
    engine.module.train()
    for epoch in range(first_epoch, train_cfg.epochs):
        started, losses = time.perf_counter(), []
        for indices in epoch_batches(len(pairs), train_cfg.batch_size, train_cfg.seed, epoch):
            batch = make_batch(tokenizer, pairs, rank_slice(indices, rank, world), cfg, reference).to(device)
            loss, _ = preference_loss(engine, batch, train_cfg, cfg.model.length_normalize)
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
        metrics = {"epoch": epoch + 1, "loss": _all_mean(sum(losses) / len(losses), device),
                   "step_time_s": _all_mean((time.perf_counter() - started) / len(losses), device),
                   "peak_rss_gb": _peak_rss_gb()}
        if train_cfg.use_gpu:
            metrics["peak_gpu_gb"] = _all_mean(torch.cuda.max_memory_allocated() / 2**30, device)
        history.append(metrics)
        with tempfile.TemporaryDirectory() as staging:
            engine.save_checkpoint(staging, tag=DS_TAG)
            if rank == 0:
                torch.save(reference, Path(staging) / REFERENCE_FILE)
                (Path(staging) / EPOCH_RECORD).write_text(json.dumps({"epoch": epoch + 1, "history": history}))
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(staging))
    _save_final(engine, train_cfg, rank, Path(loop["out_dir"]), save_adapter)


def _save_final(engine: Any, train_cfg: TrainConfig, rank: int, out_dir: Path, save_adapter: Any) -> None:
    """Rank 0 writes the trained adapter (ZeRO-3 partitions are gathered first, on every rank)."""
    module = engine.module
    if train_cfg.deepspeed.enabled and train_cfg.deepspeed.stage == 3:
        import deepspeed

        trainable = [p for p in module.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(trainable, modifier_rank=None):
            if rank == 0:
                save_adapter(module, out_dir / "adapter")
    elif rank == 0:
        save_adapter(module, out_dir / "adapter")


def latest_checkpoint(storage: Path) -> Path | None:
    """The newest complete epoch checkpoint under a trainer's storage directory."""
    records = [(json.loads(path.read_text())["epoch"], path.stat().st_mtime, path.parent)
               for path in storage.glob(f"*/*/{EPOCH_RECORD}")]
    return max(records)[2] if records else None


class Trainer:
    """Ray Train + DeepSpeed trainer: ``train.num_workers`` workers with ``cluster.trainer`` resources each."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def fit(
        self,
        pairs: Sequence[PreferencePair],
        out_dir: str | Path,
        resume: bool = True,
        reference_samples: Mapping[str, Sequence[str]] | None = None,
    ) -> tuple[Path, list[dict]]:
        """Train on ``pairs``; returns (adapter directory, per-epoch metrics of the whole run, resumed epochs included).

        ``reference_samples``: MPO's D_ref(x) drawn earlier, by prompt key (only missing prompts are sampled).

        Raises:
            DataError: no pairs to train on.
        """
        if not pairs:
            raise DataError("trainer: no preference pairs to train on")
        cfg, spec = self.config, self.config.cluster.trainer
        out_path = Path(out_dir).absolute()
        storage = out_path / "ray_train"
        resume_from = latest_checkpoint(storage) if resume else None
        if resume_from is not None:
            logger.info("resuming training from %s", resume_from)
        resources = {"CPU": spec.num_cpus, **spec.resources}
        if cfg.train.use_gpu:
            resources["GPU"] = max(spec.num_gpus, 1.0)
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={"config": cfg.model_dump(mode="json"), "pairs": ray.put(list(pairs)),
                               "out_dir": str(out_path), "resume_from": resume_from and str(resume_from),
                               "reference_samples": dict(reference_samples or {}),
                               "threads": max(1, int(spec.num_cpus))},
            scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                         resources_per_worker=resources),
            torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
            run_config=RunConfig(storage_path=str(storage), name=f"fit-{time.time_ns()}"),
        )
        result = trainer.fit()
        final = latest_checkpoint(storage)
        history = json.loads((final / EPOCH_RECORD).read_text())["history"] if final else []
        logger.info("training done: %s", history[-1] if history else result.metrics)
        return out_path / "adapter", history
