"""The training loop: one loop for every objective, on Accelerate.

    for step in steps:                       # an optimizer step
        micro = next grad_accum micro-batches of this rank (planned by batching.plan_epoch)
        for batch in micro:                  # each weighted by its share of the step's loss tokens
            loss, metrics = objective.loss(model, batch)
            accelerator.backward(loss * weight)
        clip; optimizer.step(); scheduler.step()
        log (metrics.jsonl, TensorBoard, progress); eval every N; checkpoint every M

Online objectives (`objective.online`) turn each batch of prompts into rollout minibatches with
`expand`; each of those is one optimizer step. Run it with one process, or many under
`accelerate launch` / `torchrun` (DDP, FSDP, DeepSpeed come from accelerate's config); each
rank takes every world-th micro-batch of the same deterministic plan.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attune.errors import AttuneError
from attune.models.architecture import is_prompt_learning, packing_ok
from attune.train.attention import packed_attention
from attune.train.batching import plan_epoch
from attune.train.checkpoint import TrainState, list_checkpoints
from attune.train.distributed import micro_sync, resume_sharded, save_sharded
from attune.train.lora_fused import fused_lora
from attune.train.objective import Batch, Example, Objective
from attune.train.progress import progress as make_progress
from attune.train.tracking import Trackers


class TrainingStopped(AttuneError):
    """Training was asked to stop (SIGTERM) and did, at a step boundary, after writing a checkpoint."""


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


def train_loop(
    model: nn.Module,
    objective: Objective,
    examples: list[Example] | Any,
    val_examples: list[Example],
    out_dir: Path,
    *,
    resume: bool = False,
    show_progress: bool = True,
    val_tasks: dict[str, list[Example]] | None = None,
    trackers: Trackers | None = None,
) -> LoopResult:
    """Train `model` in place with `objective`; checkpoints and logs go under `out_dir`.

    `examples` may be a stream (`attune.train.batching.ExampleStream`, anything with `.plan`);
    `val_tasks` (task name -> validation examples) adds `eval_loss/<task>` to every eval;
    `trackers` (the stage's `report_to`) get every logged row. SIGTERM stops at the next step
    boundary with a checkpoint (`TrainingStopped`).
    """
    ctx = objective.context
    acc, opts = ctx.accelerator, _settle_packing(objective, model)
    per_step = (1 if objective.online else opts.grad_accum) * acc.num_processes
    plan = examples.plan(opts, per_step) if hasattr(examples, "plan") else _Plan(examples, opts, per_step)
    steps_per_epoch = plan.per_epoch // per_step
    total_steps = opts.max_steps or max(1, math.ceil(opts.epochs * steps_per_epoch))
    validation = Validation(objective, val_examples, val_tasks or {})
    if objective.needs_reference():
        ctx.reference.freeze(model)
    objective.setup(model)  # before the optimizer: setup may add trainable heads (reward, value)
    model, optimizer, scheduler = _prepare_optimizer(model, opts, total_steps, acc)
    raw_model = acc.unwrap_model(model)
    saver = Checkpoints(out_dir / "checkpoints", raw_model, optimizer, scheduler, opts.keep_checkpoints, acc)
    state = saver.restore(out_dir) if resume else TrainState(step=0)
    log = StepLog(out_dir, acc.is_main_process, show_progress, total_steps, state.step, opts.log_every, trackers)
    last_loss = last_eval = None
    stopped_early = out_of_time = False
    model.train()
    with ExitStack() as scope:
        if opts.packing:  # settled: only packable objectives on models that take packed rows
            scope.enter_context(packed_attention(raw_model))
        scope.enter_context(fused_lora(raw_model))
        scope.callback(log.close)
        # the loop autocasts each step itself; the caller gets its model back without the autocast forward
        # that `prepare` installed (which would keep later inference in bf16)
        scope.callback(acc.unwrap_model, model, keep_fp32_wrapper=False)
        stop = scope.enter_context(_StopRequest())
        for step in range(state.step, total_steps):
            t0 = time.perf_counter()
            ctx.step = step
            for group in _step_groups(objective, model, plan, step, per_step, acc):
                last_loss, metrics, tokens, loss_tokens, grad_norm = _optimizer_step(
                    model, objective, group, optimizer, scheduler, opts, acc)
                if not math.isfinite(last_loss):
                    raise AttuneError(f"loss became {last_loss} at step {step + 1}; training stopped "
                                      f"({saver.last_good()}). Lower the learning rate or check the data.")
                state.tokens_seen += tokens
            dt = time.perf_counter() - t0
            state.train_seconds += dt
            state.step = step + 1
            row: dict[str, Any] = {
                "step": state.step, "epoch": round(state.step / steps_per_epoch, 4), "loss": round(last_loss, 6),
                "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm, "tokens": tokens, "loss_tokens": loss_tokens,
                "seconds": round(dt, 3), "tokens_per_s": round(tokens / dt, 2), "loss_tokens_per_s": round(loss_tokens / dt, 2),
                **metrics,
            }
            if state.step % (opts.eval_every or steps_per_epoch) == 0 or state.step == total_steps:
                row.update(validation.run(model))
                if "eval_loss" in row:
                    last_eval = row["eval_loss"]
                    stopped_early = _early_stop(state, last_eval, opts.early_stopping_patience)
            log.step(row, last=state.step == total_steps)
            out_of_time = opts.max_seconds is not None and _any_process(state.train_seconds >= opts.max_seconds, acc)
            stop_now = _any_process(stop.requested, acc) and state.step < total_steps
            if (state.step % (opts.save_every or steps_per_epoch) == 0 or state.step == total_steps or stopped_early
                    or out_of_time or stop_now):
                saver.save(state)
            if stop_now:
                raise TrainingStopped(f"training stopped by SIGTERM at step {state.step}/{total_steps} with a checkpoint in "
                                      f"{saver.root}; continue with `attune train RECIPE --resume {out_dir.parent.parent}`")
            if stopped_early or out_of_time:
                break
    return LoopResult(state.step, state.tokens_seen, round(state.train_seconds, 2), last_loss, last_eval, state.best_eval,
                      stopped_early, out_of_time)


def _settle_packing(objective: Objective, model: nn.Module) -> Any:
    """The options the run uses: packing only for packable objectives on models that can take packed rows."""
    opts = objective.context.options
    if opts.packing and not (objective.packable and not is_prompt_learning(model) and packing_ok(model)):
        opts = objective.context.options = opts.model_copy(update={"packing": False})
    return opts


class _Plan:
    """Maps a global micro-batch index to (epoch, micro-batch) for this run's data."""

    def __init__(self, examples: list[Example], options: Any, per_step: int) -> None:
        self.examples = examples
        self.options = options
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
            o = self.options
            self._cache = {e: plan_epoch(self.lengths, batch_tokens=o.batch_tokens, max_length=o.max_length,
                                         packing=o.packing, seed=o.seed + e)}
        return self._cache[e]

    def rows(self, g: int) -> list[list[Example]]:
        e, i = divmod(g, self.per_epoch)
        return [[self.examples[j] for j in row] for row in self.epoch(e)[i]]


def _step_groups(objective: Objective, model: nn.Module, plan: Any, step: int, per_step: int, acc) -> list[list[Batch]]:
    """This rank's micro-batches of one step, as groups of one optimizer step each (online: one per minibatch)."""
    base = step * per_step + acc.process_index
    micro = [objective.collate(plan.rows(base + j * acc.num_processes)) for j in range(per_step // acc.num_processes)]
    if objective.online:
        return [[mb] for b in micro for mb in objective.expand(model, b)]
    return [micro]


def _prepare_optimizer(model: nn.Module, opts: Any, total_steps: int, acc):
    """(model, AdamW, scheduler), the model and optimizer wrapped by accelerate."""
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise AttuneError("nothing to train: the adapter left no trainable parameters")
    # fused: one kernel over all parameters instead of ~10 ops per tensor (a LoRA has hundreds of small tensors)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay, fused=fused)
    warmup = int(round(opts.warmup_ratio * total_steps))
    scheduler = get_scheduler(opts.schedule, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    if opts.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    # The scheduler is stepped by hand: accelerate's wrapper would step it once per process.
    model, optimizer = acc.prepare(model, optimizer)
    return model, optimizer, scheduler


class Validation:
    """The validation batches, planned once, and one evaluation over them (plus per-task losses)."""

    def __init__(self, objective: Objective, examples: list[Example], tasks: dict[str, list[Example]]) -> None:
        self.objective = objective
        self.batches = self._batches(examples)
        self.tasks = {name: self._batches(exs) for name, exs in tasks.items() if exs}

    def _batches(self, examples: list[Example]) -> list[Batch]:
        if not examples:
            return []
        o = self.objective.options
        plan = plan_epoch([ex["num_tokens"] for ex in examples], batch_tokens=o.batch_tokens, max_length=o.max_length,
                          packing=o.packing, seed=0)
        return [self.objective.collate([[examples[j] for j in row] for row in mb]) for mb in plan]

    def run(self, model: nn.Module) -> dict[str, float]:
        out = evaluate_loss(model, self.objective, self.batches)
        for name, batches in self.tasks.items():
            out[f"eval_loss/{name}"] = evaluate_loss(model, self.objective, batches)["eval_loss"]
        return out


def evaluate_loss(model: nn.Module, objective: Objective, batches: list[Batch]) -> dict[str, float]:
    """Token-weighted validation loss plus the objective's own validation metrics."""
    if not batches:
        return {}
    model.eval()
    total, weight = 0.0, 0.0
    with torch.no_grad():
        for batch in batches:
            loss, _ = objective.loss(model, batch)
            w = float(batch.get("num_loss_tokens", 1))
            total += float(loss) * w
            weight += w
    out = {"eval_loss": total / max(weight, 1e-9)}
    out.update({f"eval_{k}": v for k, v in objective.evaluate(model, batches).items()})
    model.train()
    return out


def _optimizer_step(model, objective: Objective, group: list[Batch], optimizer, scheduler, opts, acc):
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
        with micro_sync(acc, model, last), acc.autocast():
            loss, metrics = objective.loss(model, batch)
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


class Checkpoints:
    """Where and when the loop saves and restores its state: the one place that writes checkpoints.

    Every process calls `save`; the main process writes (trainable parameters, optimizer,
    scheduler, RNG states) after all have arrived.
    """

    def __init__(self, root: Path, model: nn.Module, optimizer, scheduler, keep: int, acc) -> None:
        self.root, self.model, self.optimizer, self.scheduler, self.keep, self.acc = root, model, optimizer, scheduler, keep, acc
        found = list_checkpoints(root)
        self.last = found[-1] if found else None

    def restore(self, out_dir: Path) -> TrainState:
        """The newest intact checkpoint loaded into the live objects (step 0 when there is none)."""
        state = resume_sharded(self.acc, self.root, self.model, self.optimizer, self.scheduler)
        if state is None:
            return TrainState(step=0)
        if self.acc.is_main_process:
            _truncate_metrics(out_dir, state.step)
        return state

    def save(self, state: TrainState) -> None:
        self.last = save_sharded(self.acc, self.root, self.model, self.optimizer, self.scheduler, state, self.keep) or self.last

    def last_good(self) -> str:
        return f"last good checkpoint: {self.last}" if self.last else "no checkpoint was written yet"


def _truncate_metrics(out_dir: Path, step: int) -> None:
    """On resume, drop log lines written after the checkpoint (they will be written again)."""
    path = out_dir / "metrics.jsonl"
    if path.is_file():
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in keep))


class StepLog:
    """Where every step's row goes: metrics.jsonl and the stage's trackers (every `log_every` steps, evals
    and the last step) and the progress bar (every step), on the main process only.

    A new sink (another tracker, a plain progress line) is one more call in `step` and `close`.
    """

    def __init__(self, out_dir: Path, main: bool, show_progress: bool, total: int, start: int, every: int,
                 trackers: Trackers | None = None) -> None:
        self.main, self.every = main, every
        self.file = None
        self.trackers = trackers or Trackers({})
        if main:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.file = open(out_dir / "metrics.jsonl", "a")
        self.progress = make_progress(show_progress and main, total, start)

    def step(self, row: dict[str, Any], last: bool = False) -> None:
        if not self.main:
            return
        if row["step"] % self.every == 0 or "eval_loss" in row or last:
            assert self.file is not None
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
            self.trackers.log(row)
        self.progress.update(row)

    def close(self) -> None:
        self.progress.close()
        if self.file:
            self.file.close()
        self.trackers.close()


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


def _any_process(flag: bool, acc) -> bool:
    """`flag` on any process (an all-reduce with several), so every process takes the same branch
    (one process stopping early would hang the others' all-reduce)."""
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
