"""Training engines: what the epoch runner needs from plain PyTorch, DDP or DeepSpeed, behind one protocol.

Gradient contract (the same on every engine): ``backward(loss)`` adds ∇loss *summed over ranks* to
the accumulated gradient. The runner hands each rank Σ_{i ∈ rank} w_i·ℓ_i with w_i = 1/N for the N
examples of the whole optimizer step (all ranks, all micro-batches), so the step follows ∇ of the
global mean (1/N)·Σ_i ℓ_i however the examples are split. DDP and DeepSpeed *average* gradients over
the W data-parallel ranks, so their ``backward`` multiplies the loss by W first (OpenRLHF's
``aggregate_loss`` argument). ``step()`` is always an accumulation boundary: clip the global gradient
norm to ``train.max_grad_norm``, take the AdamW step, zero the gradients — so a partial accumulation
window at the end of an epoch is stepped by every engine in the same way.

``deepspeed`` is imported only when a DeepSpeed engine is built (``system`` imports without it).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from system.config import DeepSpeedConfig, TrainConfig
from system.errors import ConfigError
from system.models.loading import save_adapter
from system.run_state import load_state_file

TORCH_STATE_FILE = "engine.pt"
DEEPSPEED_TAG = "deepspeed"


class TrainEngine(Protocol):
    """The optimisation side of training, owned by one rank.

    Attributes:
        module: the unwrapped policy (what is saved and exported).
        forward: what the loss calls forward on (the DDP/DeepSpeed wrapper, or ``module`` itself).
    """

    module: torch.nn.Module
    forward: torch.nn.Module

    def backward(self, loss: Tensor) -> None:
        """Accumulate ∇``loss`` summed over ranks (collective under DDP/DeepSpeed)."""

    def step(self) -> None:
        """Clip the accumulated gradient, take an optimizer step, zero the gradients."""

    def save(self, directory: Path) -> None:
        """Write trainable weights and optimizer state under ``directory`` (called on every rank)."""

    def load(self, directory: Path) -> None:
        """Restore what :meth:`save` wrote (called on every rank)."""

    def export(self, out_dir: Path, rank: int) -> Path:
        """Write the trained weights as a peft adapter (full model without LoRA) to ``out_dir`` from rank 0."""

    def release(self) -> None:
        """Detach from ``module`` (gradient hooks, wrappers) so that a later engine can train it afresh."""


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an optimizer updates; raises ValueError when there are none."""
    params = [param for param in model.parameters() if param.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return params


def _adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(trainable_parameters(model), lr=lr, weight_decay=weight_decay)


def distributed_ready() -> bool:
    """Whether this process belongs to an initialised ``torch.distributed`` group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class TorchEngine:
    """AdamW with gradient clipping in plain PyTorch; ``distributed``: the model wrapped in DDP (the
    process group must be initialised), else this process alone."""

    def __init__(
        self, model: torch.nn.Module, lr: float, weight_decay: float, max_grad_norm: float, distributed: bool
    ) -> None:
        self.module = model
        self.distributed = distributed
        self.world_size = torch.distributed.get_world_size() if distributed else 1
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.forward: torch.nn.Module = DistributedDataParallel(model)
        else:
            self.forward = model
        self.params = trainable_parameters(model)
        self.optimizer = _adamw(model, lr, weight_decay)
        self.max_grad_norm = max_grad_norm
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: Tensor) -> None:
        (loss * self.world_size).backward()  # DDP averages over ranks; ×W makes it the sum

    def step(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def save(self, directory: Path) -> None:
        if not self.distributed or torch.distributed.get_rank() == 0:
            trainable = {name: p.detach() for name, p in self.module.named_parameters() if p.requires_grad}
            torch.save({"weights": trainable, "optimizer": self.optimizer.state_dict()}, directory / TORCH_STATE_FILE)

    def load(self, directory: Path) -> None:
        saved = torch.load(directory / TORCH_STATE_FILE, weights_only=True, map_location=self.params[0].device)
        with torch.no_grad():
            for name, param in self.module.named_parameters():
                if param.requires_grad:
                    param.copy_(saved["weights"][name])
        self.optimizer.load_state_dict(saved["optimizer"])

    def export(self, out_dir: Path, rank: int) -> Path:
        if rank == 0:
            save_adapter(self.module, out_dir)
        return out_dir

    def release(self) -> None:
        self.forward = self.module  # the DDP wrapper's reducer, and with it its gradient hooks, goes with it


def deepspeed_config(train_cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """DeepSpeed's JSON config from ``train``: micro-batch = ⌈batch_size / world⌉ pairs per rank.

    The runner owns the accumulation boundary (``managed_gradient_accumulation: false``: every
    ``step()`` reduces and updates), so a short last window is stepped like a full one. A torch
    optimizer is handed to DeepSpeed, hence ``zero_allow_untested_optimizer``.
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
        "managed_gradient_accumulation": False,
        "gradient_clipping": train_cfg.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": ds.precision == "bf16"},
        "fp16": {"enabled": ds.precision == "fp16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


class DeepSpeedEngine:
    """A DeepSpeed engine (ZeRO stage, offload, precision from ``train.deepspeed``) over AdamW.

    Needs ``torch.distributed`` initialised (``deepspeed.init_distributed``), also at world size 1.

    Raises:
        ConfigError: naming ``train.deepspeed.enabled`` when no process group is initialised.
    """

    def __init__(self, model: torch.nn.Module, train_cfg: TrainConfig) -> None:
        if not distributed_ready():
            raise ConfigError("train.deepspeed.enabled: DeepSpeed needs an initialised torch.distributed group "
                              "(the Ray trainer starts one); set it to false to train in this process alone")
        import deepspeed

        self.module = model
        self.world_size = torch.distributed.get_world_size()
        self.stage = train_cfg.deepspeed.stage
        engine, *_ = deepspeed.initialize(model=model, optimizer=_adamw(model, train_cfg.lr, train_cfg.weight_decay),
                                          config=deepspeed_config(train_cfg, self.world_size))
        self.engine = engine
        self.forward = engine

    def backward(self, loss: Tensor) -> None:
        # DeepSpeed averages over ranks (×W makes it the sum); the runner already weighted the window (no 1/gas)
        self.engine.backward(loss * self.world_size, scale_wrt_gas=False)

    def step(self) -> None:
        self.engine.step()

    def save(self, directory: Path) -> None:
        self.engine.save_checkpoint(str(directory), tag=DEEPSPEED_TAG)

    def load(self, directory: Path) -> None:
        # DeepSpeed unpickles its files with weights_only=False: each is vetted first with weights_only=True,
        # allowing only DeepSpeed's own plain-data classes, so a file holding anything else is refused unrun
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address

        for path in sorted((directory / DEEPSPEED_TAG).rglob("*.pt")):
            load_state_file(path, allow=(LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address), mmap=True)
        self.engine.load_checkpoint(str(directory), tag=DEEPSPEED_TAG)

    def export(self, out_dir: Path, rank: int) -> Path:
        if self.stage != 3:
            if rank == 0:
                save_adapter(self.module, out_dir)
            return out_dir
        import deepspeed

        with deepspeed.zero.GatheredParameters(trainable_parameters(self.module), modifier_rank=None):
            if rank == 0:
                save_adapter(self.module, out_dir)
        return out_dir

    def release(self) -> None:
        """Remove DeepSpeed's gradient hooks. Under ZeRO-3 the module's parameters stay partitioned: the module
        cannot be trained again and must be loaded anew."""
        self.engine.destroy()


def build_engine(model: torch.nn.Module, train_cfg: TrainConfig) -> TrainEngine:
    """DeepSpeed when ``train.deepspeed.enabled``, else :class:`TorchEngine` (DDP in a ``torch.distributed`` group)."""
    if train_cfg.deepspeed.enabled:
        return DeepSpeedEngine(model, train_cfg)
    return TorchEngine(model, train_cfg.lr, train_cfg.weight_decay, train_cfg.max_grad_norm, distributed_ready())


def join_single_process_group() -> None:
    """Make this process a ``torch.distributed`` world of one on gloo (127.0.0.1), as DeepSpeed needs at world
    size 1; a no-op when a group exists. The group stays for the life of the process: DeepSpeed caches its
    sub-groups, and an engine built after the group was destroyed and re-created would use stale ones."""
    if torch.distributed.is_initialized():
        return
    import deepspeed

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():
        os.environ.setdefault(key, value)
    deepspeed.init_distributed(dist_backend="gloo")
