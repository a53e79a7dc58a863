"""The training loop: one loop for every objective, on Accelerate.

    for step in steps:                       # an optimizer step
        micro = next grad_accum micro-batches of this rank (planned by batching.plan_epoch)
        for batch in micro:                  # each weighted by its share of the step's loss tokens
            loss, metrics = objective.loss(model, batch, context)
            accelerator.backward(loss * weight)
        clip; optimizer.step(); scheduler.step()
        log -> metrics.jsonl + TensorBoard; eval every N; checkpoint every M

Objectives with an `expand` hook (online RL) turn each batch of prompts into rollout
minibatches; each of those is one optimizer step. Run it with one process, or many under
`accelerate launch` / `torchrun` (DDP, FSDP, DeepSpeed come from accelerate's config); each
rank takes every world-th micro-batch of the same deterministic plan.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from attune.errors import AttuneError
from attune.models.architecture import packing_ok
from attune.train.attention import packed_attention
from attune.train.batching import plan_epoch
from attune.train.checkpoint import TrainState, list_checkpoints, resume_latest, save_checkpoint
from attune.train.context import ObjectiveContext
from attune.train.lora_fused import fused_lora


class TrainingStopped(AttuneError):
    """Training was asked to stop (SIGTERM) and did, at a step boundary, after writing a checkpoint."""


class _StopRequest:
    """SIGTERM asks the loop to stop at the next step boundary with a checkpoint (how `attune studio`
    stops a run); `attune train RECIPE --resume RUN` continues it. Only the main thread can install it."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)


@dataclass
class LoopResult:
    steps: int
    tokens_seen: int
    train_seconds: float
    final_loss: float | None
    eval_loss: float | None
    best_eval_loss: float | None
    stopped_early: bool
    out_of_time: bool = False


def is_prompt_learning(model: nn.Module) -> bool:
    """Prefix / prompt tuning add virtual tokens inside PEFT's forward: no packing for them."""
    config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", "default"))
    return bool(getattr(config, "is_prompt_learning", False))


class _Plan:
    """Maps a global micro-batch index to (epoch, micro-batch) for this run's data."""

    def __init__(self, examples: list[dict], options: Any, packing: bool, per_step: int) -> None:
        self.examples = examples
        self.options = options
        self.packing = packing
        self.lengths = [ex["num_tokens"] for ex in examples]
        self._cache: dict[int, list] = {}
        first = self.epoch(0)
        self.per_epoch = (len(first) // per_step) * per_step
        if self.per_epoch == 0:
            raise AttuneError(
                f"not enough training data for one optimizer step: {len(examples)} examples make "
                f"{len(first)} micro-batches but a step needs {per_step} (grad_accum x processes); "
                "lower batch_tokens or grad_accum, or add data"
            )

    def epoch(self, e: int) -> list:
        if e not in self._cache:
            self._cache = {
                e: plan_epoch(
                    self.lengths,
                    batch_tokens=self.options.batch_tokens,
                    max_length=self.options.max_length,
                    packing=self.packing,
                    seed=self.options.seed + e,
                )
            }
        return self._cache[e]

    def rows(self, g: int) -> list[list[dict]]:
        e, i = divmod(g, self.per_epoch)
        return [[self.examples[j] for j in row] for row in self.epoch(e)[i]]


def _collate(objective: ModuleType, rows: list[list[dict]], options: Any, pad_id: int) -> dict:
    """Row-aware objectives get rows (one example each when packing is off); others a flat list."""
    if getattr(objective, "PACKABLE", False):
        return objective.collate(rows, options, pad_id)
    return objective.collate([ex for row in rows for ex in row], options, pad_id)


def _lr_scheduler(optimizer: torch.optim.Optimizer, options: Any, total_steps: int):
    from transformers import get_scheduler

    warmup = int(round(options.warmup_ratio * total_steps))
    return get_scheduler(options.schedule, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


class MetricsLog:
    """metrics.jsonl (appended, flushed per line) and the stage's trackers (`report_to`), on the main process only."""

    def __init__(self, out_dir: Path, enabled: bool, context: ObjectiveContext | None = None) -> None:
        from attune.train.tracking import Trackers, stage_trackers

        self.enabled = enabled
        self.file = None
        self.trackers = Trackers({})
        if enabled:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.file = open(out_dir / "metrics.jsonl", "a")
            if context is not None:
                self.trackers = stage_trackers(context, out_dir)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        assert self.file is not None
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        self.trackers.log(row)

    def close(self) -> None:
        if self.file:
            self.file.close()
        self.trackers.close()


def _truncate_metrics(out_dir: Path, step: int) -> None:
    """On resume, drop log lines written after the checkpoint (they will be written again)."""
    path = out_dir / "metrics.jsonl"
    if path.is_file():
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in keep))


def evaluate_loss(model: nn.Module, objective: ModuleType, batches: list[dict], context: ObjectiveContext) -> dict[str, float]:
    """Token-weighted validation loss plus the objective's own validation metrics."""
    if not batches:
        return {}
    model.eval()
    total, weight = 0.0, 0.0
    with torch.no_grad():
        for batch in batches:
            loss, _ = objective.loss(model, batch, context)
            w = float(batch.get("num_loss_tokens", 1))
            total += float(loss) * w
            weight += w
    out = {"eval_loss": total / max(weight, 1e-9)}
    if hasattr(objective, "evaluate"):
        out.update({f"eval_{k}": v for k, v in objective.evaluate(model, batches, context).items()})
    model.train()
    return out


def train_loop(
    model: nn.Module,
    objective: ModuleType,
    examples: list[dict],
    val_examples: list[dict],
    context: ObjectiveContext,
    out_dir: Path,
    *,
    resume: bool = False,
    show_progress: bool = True,
    val_tasks: dict[str, list[dict]] | None = None,
) -> LoopResult:
    """Train `model` in place with `objective`; checkpoints and logs go under `out_dir`.

    `examples` may be a stream (`attune.train.streaming.RowStream`, anything with `.plan`);
    `val_tasks` (task name -> validation examples) adds `eval_loss/<task>` to every eval.
    """
    acc = context.accelerator
    opts = context.options
    pad_id = context.tokenizer.pad_token_id
    packable = bool(getattr(objective, "PACKABLE", False)) and opts.packing and not is_prompt_learning(model) and packing_ok(model)
    if not packable and getattr(objective, "PACKABLE", False):
        opts = opts.model_copy(update={"packing": False})
        context.options = opts
    online = hasattr(objective, "expand")
    per_step = (1 if online else opts.grad_accum) * acc.num_processes
    plan = examples.plan(opts, per_step) if hasattr(examples, "plan") else _Plan(examples, opts, packable, per_step)
    steps_per_epoch = plan.per_epoch // per_step
    total_steps = opts.max_steps or max(1, math.ceil(opts.epochs * steps_per_epoch))
    eval_every = opts.eval_every or steps_per_epoch
    save_every = opts.save_every or steps_per_epoch

    val_plan = plan_epoch(
        [ex["num_tokens"] for ex in val_examples],
        batch_tokens=opts.batch_tokens, max_length=opts.max_length, packing=packable, seed=0,
    ) if val_examples else []
    val_batches = [
        _collate(objective, [[val_examples[j] for j in row] for row in mb], opts, pad_id) for mb in val_plan
    ]
    task_batches = {
        name: [_collate(objective, [[exs[j] for j in row] for row in mb], opts, pad_id) for mb in plan_epoch(
            [ex["num_tokens"] for ex in exs], batch_tokens=opts.batch_tokens, max_length=opts.max_length,
            packing=packable, seed=0)]
        for name, exs in (val_tasks or {}).items() if exs
    }

    if hasattr(objective, "USES_REFERENCE") and objective.USES_REFERENCE:
        context.prepare_reference(model)
    if hasattr(objective, "setup"):  # before the optimizer: setup may add trainable heads (reward, value)
        objective.setup(model, context)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise AttuneError("nothing to train: the adapter left no trainable parameters")
    # fused: one kernel over all parameters instead of ~10 ops per tensor (a LoRA has hundreds of small tensors)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay, fused=fused)
    scheduler = _lr_scheduler(optimizer, opts, total_steps)
    if opts.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    # The scheduler is stepped by hand: accelerate's wrapper would step it once per process.
    model, optimizer = acc.prepare(model, optimizer)
    raw_model = acc.unwrap_model(model)

    ckpt_root = out_dir / "checkpoints"
    state = TrainState(step=0)
    if resume and (restored := resume_latest(ckpt_root, raw_model, optimizer, scheduler)) is not None:
        state = restored
        if acc.is_main_process:
            _truncate_metrics(out_dir, state.step)
    log = MetricsLog(out_dir, acc.is_main_process, context)
    progress = _progress(show_progress and acc.is_main_process, total_steps, state.step)

    model.train()
    last_loss: float | None = None
    last_eval: float | None = None
    stopped_early = out_of_time = False
    last_ckpt = list_checkpoints(ckpt_root)[-1] if list_checkpoints(ckpt_root) else None
    scope = ExitStack()
    stop = scope.enter_context(_StopRequest())
    if packable:
        scope.enter_context(packed_attention(raw_model))
    scope.enter_context(fused_lora(raw_model))
    try:
        for step in range(state.step, total_steps):
            t0 = time.perf_counter()
            context.step = step
            base = step * per_step + acc.process_index
            micro = [
                _collate(objective, plan.rows(base + j * acc.num_processes), opts, pad_id)
                for j in range(per_step // acc.num_processes)
            ]
            if online:
                micro = [mb for b in micro for mb in objective.expand(model, b, context)]
                groups = [[mb] for mb in micro]
            else:
                groups = [micro]
            for group in groups:
                last_loss, metrics, tokens, loss_tokens, grad_norm = _optimizer_step(
                    model, objective, group, context, optimizer, scheduler, opts, acc
                )
                if not math.isfinite(last_loss):
                    where = f"last good checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                    raise AttuneError(
                        f"loss became {last_loss} at step {step + 1}; training stopped ({where}). "
                        "Lower the learning rate or check the data."
                    )
                state.tokens_seen += tokens
            dt = time.perf_counter() - t0
            state.train_seconds += dt
            state.step = step + 1
            row: dict[str, Any] = {
                "step": state.step,
                "epoch": round(state.step / steps_per_epoch, 4),
                "loss": round(last_loss, 6),
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": grad_norm,
                "tokens": tokens,
                "loss_tokens": loss_tokens,
                "seconds": round(dt, 3),
                "tokens_per_s": round(tokens / dt, 2),
                "loss_tokens_per_s": round(loss_tokens / dt, 2),
                **metrics,
            }
            if state.step % eval_every == 0 or state.step == total_steps:
                ev = evaluate_loss(model, objective, val_batches, context)
                for name, batches in task_batches.items():
                    ev[f"eval_loss/{name}"] = evaluate_loss(model, objective, batches, context)["eval_loss"]
                row.update(ev)
                if "eval_loss" in ev:
                    last_eval = ev["eval_loss"]
                    stopped_early = _early_stop(state, last_eval, opts.early_stopping_patience)
            if state.step % opts.log_every == 0 or "eval_loss" in row or state.step == total_steps:
                log.write(row)
            out_of_time = opts.max_seconds is not None and _past_deadline(state.train_seconds, opts.max_seconds, acc)
            stop_now = _any_process(stop.requested, acc) and state.step < total_steps
            if state.step % save_every == 0 or state.step == total_steps or stopped_early or out_of_time or stop_now:
                acc.wait_for_everyone()
                if acc.is_main_process:
                    last_ckpt = save_checkpoint(ckpt_root, raw_model, optimizer, scheduler, state, opts.keep_checkpoints)
            progress.update(state.step, row)
            if stop_now:
                raise TrainingStopped(
                    f"training stopped by SIGTERM at step {state.step}/{total_steps} with a checkpoint in {ckpt_root}; "
                    f"continue with `attune train RECIPE --resume {out_dir.parent.parent}`"
                )
            if stopped_early or out_of_time:
                break
    finally:
        scope.close()
        progress.close()
        log.close()
    return LoopResult(
        steps=state.step,
        tokens_seen=state.tokens_seen,
        train_seconds=round(state.train_seconds, 2),
        final_loss=last_loss,
        eval_loss=last_eval,
        best_eval_loss=state.best_eval,
        stopped_early=stopped_early,
        out_of_time=out_of_time,
    )


def _optimizer_step(model, objective, group, context, optimizer, scheduler, opts, acc):
    """One optimizer step over `group`; returns (loss, metrics, tokens, loss tokens, grad norm), all global.

    Each micro-batch's mean loss is weighted by its share of the step's loss tokens across all
    processes; DDP averages gradients over processes, so the weights are multiplied by the world
    size. The result is the gradient of one big batch: 2 processes x N equals 1 process x 2N.
    """
    weights = [float(b.get("num_loss_tokens", 1)) for b in group]
    local = torch.tensor([sum(weights), 0.0, 0.0, 0.0], dtype=torch.float64)
    global_w = float(acc.reduce(local.to(acc.device), reduction="sum")[0]) if acc.num_processes > 1 else float(local[0])
    global_w = global_w or 1.0
    stats = torch.zeros(3, dtype=torch.float64)  # weighted loss sum, tokens, loss tokens
    sums: dict[str, float] = {}
    for i, batch in enumerate(group):
        last = i == len(group) - 1
        sync = nullcontext() if last else acc.no_sync(model)
        with sync, acc.autocast():
            loss, metrics = objective.loss(model, batch, context)
            acc.backward(loss * (weights[i] * acc.num_processes / global_w))
        stats[0] += float(loss.detach()) * weights[i]
        stats[1] += int(batch.get("num_tokens", 0))
        stats[2] += int(batch.get("num_loss_tokens", 0))
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) * weights[i] / max(sum(weights), 1e-9)
    grad_norm = None
    if opts.grad_clip:
        grad_norm = float(acc.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], opts.grad_clip))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if acc.num_processes > 1:
        stats = acc.reduce(stats.to(acc.device), reduction="sum").cpu()
    return float(stats[0]) / global_w, sums, int(stats[1]), int(stats[2]), grad_norm


def _past_deadline(seconds: float, budget: float, acc) -> bool:
    """Whether the time budget is spent; with several processes, as soon as any one is past it,
    so that all stop at the same step (one process leaving early would hang the others' all-reduce)."""
    return _any_process(seconds >= budget, acc)


def _any_process(flag: bool, acc) -> bool:
    """`flag` on any process (an all-reduce with several), so every process takes the same branch."""
    if acc.num_processes == 1:
        return flag
    return bool(acc.reduce(torch.tensor(float(flag), device=acc.device), reduction="sum").item() > 0)


def _early_stop(state: TrainState, value: float, patience: int | None) -> bool:
    if state.best_eval is None or value < state.best_eval:
        state.best_eval = value
        state.evals_without_improvement = 0
        return False
    state.evals_without_improvement += 1
    return patience is not None and state.evals_without_improvement >= patience


class _progress:
    """A rich progress bar with ETA and the latest loss (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]train[/bold] step {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def update(self, step: int, row: dict) -> None:
        if self.bar:
            info = f"loss {row['loss']:.4f}  {row['tokens_per_s']:.0f} tok/s"
            if "eval_loss" in row:
                info += f"  eval {row['eval_loss']:.4f}"
            self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
