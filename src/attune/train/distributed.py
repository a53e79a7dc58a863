"""Sharded data parallelism for the loop: DeepSpeed ZeRO-2/3 and FSDP2, on GPUs and on CPU processes.

How a run is spread over processes comes from the accelerate launch config
(`accelerate launch --config_file $(attune launch-config zero3) -m attune train RECIPE`); the
recipe keeps deciding everything about the training itself (batch, accumulation, clipping,
precision). What sharding changes for the loop lives here, each as one call:

- `make_accelerator`: accelerate enables DeepSpeed and FSDP only for accelerator devices; torch's
  FSDP2 and DeepSpeed (with its CPU accelerator) both run on gloo, so on a machine without CUDA the
  gloo process group is set up first and the sharding plugin is switched on over it. DeepSpeed's
  batch/accumulation/clipping settings are filled from the recipe (the loop accumulates itself).
- `micro_sync`: gradients synchronise on the last micro-batch of a step only (DeepSpeed needs its
  accumulation boundary set; DDP/FSDP use `no_sync`).
- `full_state`: the full tensors of sharded parameters (ZeRO-3 partitions, FSDP DTensors), gathered
  by every process and returned on the main one, so saved adapters/models and checkpoints are
  complete (saving a ZeRO-3 model as-is writes empty tensors).
- `save_sharded` / `resume_sharded`: checkpoints with one optimizer shard per process.
- `check_launch`: configurations that cannot work are refused before the model loads.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attune.errors import AttuneError


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() == "true"


def launch_sharding() -> str | None:
    """'deepspeed', 'fsdp' or None, from the environment `accelerate launch` sets (before anything loads)."""
    if _env_flag("ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    if _env_flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    return None


def make_accelerator(mixed_precision: str, options: Any):
    """The stage's Accelerator, with the launch config's sharding also on CPU processes."""
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedType

    cpu = not torch.cuda.is_available()
    if cpu and launch_sharding() is not None:
        state = PartialState(cpu=True)  # gloo; without cpu=True every torchrun rank believes it is rank 0
        if state.distributed_type == DistributedType.MULTI_CPU and launch_sharding() == "fsdp":
            # accelerate turns FSDP on for multi-device types only; FSDP2 itself runs on gloo
            PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU
        cpu = state.num_processes == 1
    acc = Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    if acc.distributed_type == DistributedType.DEEPSPEED:
        _fill_deepspeed_config(acc, options)
    return acc


def _fill_deepspeed_config(acc, options: Any) -> None:
    """The loop plans token-budget micro-batches and accumulates them itself: DeepSpeed sees one
    micro-batch per backward and a boundary set by `micro_sync`; clipping is the recipe's."""
    cfg = acc.state.deepspeed_plugin.deepspeed_config
    ga = cfg.get("gradient_accumulation_steps", "auto")
    if ga not in ("auto", 1, None):
        raise AttuneError(
            f"the DeepSpeed config sets gradient_accumulation_steps={ga}; attune accumulates itself: "
            "remove it from the launch config and set `train: {grad_accum: N}` in the recipe"
        )
    cfg["gradient_accumulation_steps"] = 1
    cfg["train_micro_batch_size_per_gpu"] = 1
    cfg["train_batch_size"] = acc.num_processes
    cfg["gradient_clipping"] = float(options.grad_clip or 0.0)
    acc.state.deepspeed_plugin.gradient_accumulation_steps = 1
    if not acc.state.deepspeed_plugin.zero3_init_flag:
        # accelerate registers the config with transformers even when the launch config says
        # `zero3_init_flag: false`; from_pretrained would then load the model already partitioned
        # (parameter counts of 0, and a DPO reference copied from it would be empty)
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()


def sharding(acc) -> str | None:
    """'zero1'/'zero2'/'zero3', 'fsdp' or None for a live accelerator."""
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.DEEPSPEED:
        return f"zero{acc.state.deepspeed_plugin.zero_stage}"
    if acc.distributed_type == DistributedType.FSDP:
        return "fsdp"
    return None


def check_launch(acc, objective: Any, stage: Any) -> None:
    """Refuse, before the model loads, what cannot work under this launch's sharding."""
    kind = sharding(acc)
    if kind == "fsdp" and acc.device.type == "cpu" and getattr(stage.adapter, "type", None) in ("full", "freeze"):
        raise AttuneError(
            f"stage {stage.name!r}: FSDP with {stage.adapter.type} fine-tuning crashes on CPU processes (SIGSEGV in the "
            "first step, measured with torch 2.13 and gloo); on CPU use `attune launch-config zero3` or `ddp`"
        )
    if kind not in ("zero3", "fsdp"):
        return
    if getattr(objective, "online", False):
        raise AttuneError(
            f"stage {stage.name!r}: {stage.objective} generates rollouts from the policy every step, which needs "
            f"the whole model on each process; under {kind} the weights are sharded. Launch it with DDP or ZeRO-2 "
            "(`attune launch-config ddp` / `zero2`)"
        )
    if getattr(stage.train, "loss", None) == "logit" and getattr(stage, "teacher", None):
        _check_teacher_fits(acc, objective, stage)


def _check_teacher_fits(acc, objective: Any, stage: Any) -> None:
    """Logit distillation replicates the frozen teacher (fp32) on every process: its size is counted
    from its config on the meta device, with no weights loaded, and compared with this process's share
    of free memory."""
    from transformers import AutoConfig, AutoModelForCausalLM

    ref = str(stage.teacher)
    try:
        config = AutoConfig.from_pretrained(ref)
    except (OSError, ValueError):
        return  # an earlier stage or a builtin: reference; its size is known only once it is resolved
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    need = sum(p.numel() for p in model.parameters()) * 4
    free = _free_bytes_per_process(acc)
    if need > free:
        raise AttuneError(
            f"stage {stage.name!r}: the logit-distillation teacher {ref} needs {need / 2**30:.1f} GiB in fp32 on every "
            f"process, but each of the {acc.num_processes} processes has {free / 2**30:.1f} GiB free; under "
            f"{sharding(acc)} the student is sharded, the teacher is not. Use `loss: sequence` (the teacher's answers "
            "are generated once and cached) or a smaller teacher"
        )


def _free_bytes_per_process(acc) -> int:
    if acc.device.type == "cuda":
        return int(torch.cuda.mem_get_info(acc.device)[0])
    import psutil

    local = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes))
    return int(psutil.virtual_memory().available // max(local, 1))


def is_partitioned(param: torch.Tensor) -> bool:
    """A ZeRO-3 parameter outside its module's forward holds no data: fast paths that read weights
    directly (fused LoRA, fused LM-head cross-entropy) must take the module's own forward instead."""
    return hasattr(param, "ds_id")


@contextmanager
def micro_sync(acc, model: nn.Module, last: bool) -> Iterator[None]:
    """Synchronise gradients on the last micro-batch of an optimizer step only."""
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.DEEPSPEED:
        # accelerate's backward steps the DeepSpeed engine when sync_gradients is set
        acc.gradient_state._set_sync_gradients(last)
        try:
            yield
        finally:
            acc.gradient_state._set_sync_gradients(True)
    elif last:
        yield
    else:
        with acc.no_sync(model):
            yield


def full_state(acc, raw: nn.Module, trainable_only: bool) -> dict[str, torch.Tensor] | None:
    """Full CPU tensors of `raw`'s trainable parameters (or its whole state dict) on the main process,
    None elsewhere, and None everywhere when nothing is sharded (the model's own tensors are complete).
    Every process must call it: the gathers are collective."""
    if sharding(acc) is None:
        return None
    if trainable_only:
        names = [n for n, p in raw.named_parameters() if p.requires_grad]
    else:  # each tied parameter once (as named_parameters lists it), plus the persistent buffers
        saved = set(raw.state_dict().keys())
        names = [n for n, _ in raw.named_parameters()] + [n for n, _ in raw.named_buffers() if n in saved]
    zero3 = sharding(acc) == "zero3"
    out: dict[str, torch.Tensor] = {}
    for name in names:  # one tensor at a time: peak memory is one full tensor
        try:
            tensor = raw.get_parameter(name)
        except AttributeError:
            tensor = raw.get_buffer(name)
        if zero3 and is_partitioned(tensor):
            import deepspeed

            with deepspeed.zero.GatheredParameters([tensor], modifier_rank=None):
                if acc.is_main_process:
                    out[name] = tensor.detach().cpu().clone()
            continue
        full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor  # FSDP2 DTensor
        if acc.is_main_process:
            out[name] = full.detach().cpu().clone()
    return out if acc.is_main_process else None


def _assign_full(acc, raw: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy full tensors into (possibly sharded) parameters; every process calls it with the same weights."""
    params = dict(raw.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise AttuneError(f"checkpoint does not match this model/adapter (e.g. {missing[0]})")
    kind = sharding(acc)
    with torch.no_grad():
        for name, value in weights.items():
            p = params[name]
            if kind == "zero3":
                import deepspeed

                with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
                    if acc.is_main_process:
                        p.copy_(value.to(p.device))
            elif hasattr(p, "full_tensor"):
                from torch.distributed.tensor import distribute_tensor

                p.copy_(distribute_tensor(value.to(p.device), p.device_mesh, p.placements))
            else:
                p.copy_(value.to(p.device))


def _shard_dir(root: Path, step: int) -> Path:
    return root / f".optim-step-{step:08d}"


class _NoOptimizerState:
    """Stands for the optimizer in the main process's checkpoint files when each process writes its own shard."""

    def state_dict(self) -> dict:
        return {}


def save_sharded(acc, root: Path, raw: nn.Module, optimizer: Any, scheduler: Any, state: Any, keep: int) -> Path | None:
    """Every process calls this at a checkpoint. Unsharded: the main process writes, as before.
    Sharded: the trainable weights are gathered (the same weights file as an unsharded run) and each
    process writes its optimizer shard before the checkpoint is renamed into place, so a complete
    checkpoint always has its shards. Returns the checkpoint's path on the main process."""
    from attune.train.checkpoint import list_checkpoints, save_checkpoint

    acc.wait_for_everyone()
    if sharding(acc) is None:
        return save_checkpoint(root, raw, optimizer, scheduler, state, keep) if acc.is_main_process else None
    weights = full_state(acc, raw, trainable_only=True)
    shards = _shard_dir(root, state.step)
    if acc.is_main_process:
        shards.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper -> the torch or DeepSpeed optimizer
    torch.save({"world": acc.num_processes, "state": _local_state(inner.state_dict())}, shards / f"rank-{acc.process_index}.pt")
    acc.wait_for_everyone()
    path = None
    if acc.is_main_process:
        path = save_checkpoint(root, raw, _NoOptimizerState(), scheduler, state, keep, weights=weights)
        live = {p.name.removeprefix("step-") for p in list_checkpoints(root)}
        for old in root.glob(".optim-step-*"):
            if old.name.removeprefix(".optim-step-") not in live:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return path


class _ShardHooks:
    """How `checkpoint.load_checkpoint` restores a sharded run: full weights into the shards, and this
    process's own optimizer shard."""

    def __init__(self, acc, raw: nn.Module, optimizer: Any) -> None:
        self.acc, self.raw, self.optimizer = acc, raw, getattr(optimizer, "optimizer", optimizer)

    def _shard(self, path: Path) -> Path:
        return _shard_dir(path.parent, int(path.name.removeprefix("step-"))) / f"rank-{self.acc.process_index}.pt"

    def check(self, path: Path) -> None:
        from attune.train.checkpoint import CorruptCheckpoint

        if not self._shard(path).is_file():
            raise CorruptCheckpoint(f"{path}: no optimizer shard for process {self.acc.process_index}")

    def assign(self, weights: dict[str, torch.Tensor]) -> None:
        _assign_full(self.acc, self.raw, weights)

    def load_optimizer(self, path: Path) -> None:
        with torch.serialization.safe_globals(_deepspeed_state_types() if sharding(self.acc) in ("zero1", "zero2", "zero3") else []):
            saved = torch.load(self._shard(path), map_location="cpu", weights_only=True)
        if saved["world"] != self.acc.num_processes:
            raise AttuneError(
                f"checkpoint {path} was written by {saved['world']} processes; resume it with the same number "
                f"(this launch has {self.acc.num_processes})"
            )
        if sharding(self.acc) in ("zero1", "zero2", "zero3"):
            states: list[dict | None] = [None] * self.acc.num_processes
            states[self.acc.process_index] = saved["state"]  # DeepSpeed reads its own rank's entry
            self.optimizer.load_state_dict(states, load_optimizer_states=True, load_from_fp32_weights=False)
        else:
            self.optimizer.load_state_dict(_sharded_state(saved["state"], self.optimizer))


def _deepspeed_state_types() -> list[type]:
    """The DeepSpeed classes inside a ZeRO optimizer's state dict (its stage enum, loss scaler, fragment
    addresses). `weights_only` loading refuses any class not allowlisted; these four are plain records,
    so a shard stays safe to load without unpickling arbitrary code."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


def _local_state(state: dict) -> dict:
    """A torch optimizer state dict with FSDP2's DTensor states as their local shards (plain tensors);
    DeepSpeed's own state dicts (no "state" mapping) pass through."""
    if not isinstance(state.get("state"), dict):
        return state
    out = dict(state)
    out["state"] = {i: {k: v.to_local() if hasattr(v, "to_local") else v for k, v in st.items()} for i, st in state["state"].items()}
    return out


def _sharded_state(state: dict, optimizer: Any) -> dict:
    """The inverse of `_local_state`: local shards wrapped back as DTensors shaped like their parameters."""
    from torch.distributed.tensor import DTensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    out = dict(state)
    out["state"] = {}
    for i, st in state["state"].items():
        p = params[int(i)]
        out["state"][i] = {
            k: DTensor.from_local(v, p.device_mesh, p.placements, shape=p.shape, stride=p.stride())
            if isinstance(p, DTensor) and torch.is_tensor(v) and v.dim() > 0 else v
            for k, v in st.items()
        }
    return out


def resume_sharded(acc, root: Path, raw: nn.Module, optimizer: Any, scheduler: Any):
    """`checkpoint.resume_latest` on every process, with the shard hooks when the run is sharded."""
    from attune.train.checkpoint import resume_latest

    hooks = _ShardHooks(acc, raw, optimizer) if sharding(acc) is not None else None
    return resume_latest(root, raw, optimizer, scheduler, hooks)
