"""Run a recipe's stages in order; each starts from the previous stage's weights.

Stage chaining: a stage that produced a PEFT adapter is merged into its base and saved once as
`stages/<stage>/merged/` when (and only when) a later stage needs it; the next stage trains a
fresh adapter on that merged model. Every stage's `summary.json` records its `base_model`, so
its adapter is always served/evaluated on the base it was trained on. A stage with `start: base`
starts from the recipe's model instead (side-by-side variants, e.g. with and without replay), and
the stage before it is then not merged.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from attune.errors import AttuneError
from attune.recipe import Recipe, Stage, dump_recipe
from attune.runs import new_run_dir, stage_dir, training_lock
from attune.train.context import StageContext

console = Console(stderr=True)


def provenance() -> dict[str, Any]:
    """Library versions and the command line: every artefact says how it was made."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("attune-llm", "torch", "transformers", "peft", "accelerate", "datasets", "trl"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return {
        "argv": sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _accelerator(stage: Stage):
    """An Accelerator in the precision `choose_precision` resolves for this machine, and that choice."""
    import torch

    from attune.train.distributed import make_accelerator
    from attune.train.precision import choose_precision

    choice = choose_precision(stage.train.precision, "cuda" if torch.cuda.is_available() else "cpu")
    if stage.train.precision != choice.precision:
        console.print(f"precision {choice.precision}: {choice.reason}")
    allow_new_precision(choice.mixed_precision)
    return make_accelerator(choice.mixed_precision, stage.train), choice


def allow_new_precision(mixed_precision: str) -> None:
    """Accelerate keeps one process-wide mixed-precision setting, but stages of one recipe (and runs
    in one Python session) may each resolve their own: drop the old setting, keep the process group."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    state = AcceleratorState._shared_state
    if state.get("_mixed_precision") not in (None, mixed_precision) and state.get("distributed_type") != DistributedType.DEEPSPEED:
        AcceleratorState._reset_state(reset_partial_state=False)


def train_stage(
    recipe: Recipe, stage: Stage, base_model: str, out: Path, *, resume: bool = False, show_progress: bool = True
) -> dict[str, Any]:
    """Train one stage from `base_model`; writes adapter/ or model/, metrics and summary.json."""
    import torch

    from attune.adapters import apply_adapter, count_parameters, shape
    from attune.models import load_model
    from attune.train.distributed import check_launch, full_state
    from attune.train.loop import train_loop
    from attune.train.objectives import get_objective
    from attune.train.stage_data import load_stage_records, stream_stage
    from attune.train.tracking import Trackers, stage_trackers

    torch.manual_seed(stage.train.seed)
    acc, precision = _accelerator(stage)
    check_launch(acc, get_objective(stage.objective), stage)
    adapter_cfg = stage.adapter
    adapter_shape = shape(adapter_cfg.type)
    run_dir = out.parent.parent
    loaded = load_model(base_model, device=str(acc.device), model_kwargs=adapter_shape.load_kwargs(adapter_cfg))
    tokenizer = loaded.tokenizer
    context = StageContext(
        tokenizer=tokenizer, options=stage.train, accelerator=acc, device=acc.device, stage=str(stage.name),
        base_dir=recipe.base_dir, cache_dir=Path(recipe.output_dir) / recipe.name,
        teacher=_teacher(recipe, stage, run_dir), reward_model=_reward_model(recipe, stage, run_dir),
    )
    objective = get_objective(stage.objective)(context)
    model = apply_adapter(objective.student(loaded.model), adapter_cfg)
    del loaded  # a smaller student must not keep the full model alive
    trainable, total = count_parameters(model)
    if acc.is_main_process:
        console.print(
            f"[bold]{stage.name}[/bold]: {stage.objective} with {adapter_cfg.type} on {base_model} — "
            f"trainable {trainable:,} / {total:,} parameters ({100 * trainable / max(total, 1):.3f}%)",
            soft_wrap=True,
        )
    val_tasks: dict[str, list[dict]] = {}
    dropped: dict[str, int] = {}
    if objective.streams and stage.train.streaming:  # read, tokenize and pack while training
        examples, val_examples = stream_stage(recipe, stage, objective)
    else:
        train_records, val_records, task_records = load_stage_records(recipe, stage, objective.record_kinds)
        examples = objective.prepare(train_records)
        val_examples = objective.prepare(val_records) if val_records else []
        # what tokenization cut or removed from the stage's records, training and validation (counted as they
        # are prepared; the per-task validation sets below are the same records again)
        dropped = {k: n for k in ("dropped_no_labels", "truncated") if (n := getattr(objective, k, 0))}
        val_tasks = {name: objective.prepare(recs) for name, recs in task_records.items()}
        if not examples:
            raise AttuneError(f"stage {stage.name!r}: no usable training examples after tokenization")
    if dropped and acc.is_main_process:  # records tokenization cut or removed: never silent
        said = {"dropped_no_labels": "dropped (no supervised token left within max_length)", "truncated": "truncated"}
        console.print(f"[yellow]{stage.name}: " + ", ".join(f"{n} record(s) {said[k]}" for k, n in dropped.items())
                      + f" at max_length {stage.train.max_length} (see `attune data check --model`)[/yellow]")
    out.mkdir(parents=True, exist_ok=True)
    trackers = stage_trackers(stage.train, out, recipe=recipe, stage=stage, run_dir=run_dir) if acc.is_main_process else Trackers({})
    result = train_loop(model, objective, examples, val_examples, out, resume=resume, show_progress=show_progress,
                        val_tasks=val_tasks, trackers=trackers)
    acc.wait_for_everyone()
    summary = {
        "stage": stage.name,
        "objective": stage.objective,
        "adapter_type": adapter_cfg.type,
        "base_model": base_model,
        "trainable_params": trainable,
        "total_params": total,
        "train_examples": len(examples) if isinstance(examples, list) else None,  # a stream has no length
        "val_examples": len(val_examples),
        **{k: v for k, v in result.__dict__.items()},
        "eval_loss_per_task": _last_task_losses(out / "metrics.jsonl"),
        "records_dropped_or_truncated": dropped,
        "precision": precision.as_dict(),
    }
    raw = acc.unwrap_model(model)
    weights = full_state(acc, raw, trainable_only=adapter_shape.output == "adapter")  # every process: gathers shards
    if acc.is_main_process:
        _save_output(raw, tokenizer, out, adapter_cfg, summary, weights)
        objective.save(raw, out)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    acc.wait_for_everyone()
    return summary


def _teacher(recipe: Recipe, stage: Stage, run_dir: Path) -> str | None:
    """The stage's teacher as a model reference: an earlier stage's name becomes its (merged) weights."""
    names = [s.name for s in recipe.stages]
    if stage.teacher in names:
        return merged_stage_model(run_dir, stage.teacher)
    return stage.teacher


def _reward_model(recipe: Recipe, stage: Stage, run_dir: Path) -> Path | None:
    """The stage's reward model as a directory: a reward stage of this run, or a path (relative to the recipe)."""
    if stage.reward_model is None:
        return None
    if stage.reward_model in [s.name for s in recipe.stages]:
        return stage_dir(run_dir, stage.reward_model)
    return recipe.path(stage.reward_model)


def _last_task_losses(metrics: Path) -> dict[str, float]:
    """The last logged `eval_loss/<task>` of each task (multi-task and replay stages)."""
    last: dict[str, float] = {}
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            last.update({k.removeprefix("eval_loss/"): v for k, v in row.items() if k.startswith("eval_loss/")})
    return last


def _save_output(model, tokenizer, out: Path, adapter_cfg, summary: dict, weights: dict | None = None) -> None:
    """Write adapter/ (with the base's fingerprint) or model/ atomically, as the adapter shape saves it;
    `weights` are the full tensors gathered from sharded processes (PEFT keeps its adapter's keys of them)."""
    from attune.adapters import shape
    from attune.adapters.base import save_pretrained
    from attune.models.adapters_io import check_adapter_dir, write_fingerprint

    adapter_shape = shape(adapter_cfg.type)
    target = out / adapter_shape.output
    tmp = out / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if weights is not None and adapter_shape.save is save_pretrained:
        model.save_pretrained(str(tmp), safe_serialization=True, state_dict=weights)
    else:
        adapter_shape.save(model, tmp)
    tokenizer.save_pretrained(str(tmp))
    if adapter_shape.output == "adapter":
        write_fingerprint(tmp, model, {"stage": summary["stage"], "base_model": summary["base_model"], "shape": adapter_shape.name})
        check_adapter_dir(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def merged_stage_model(run_dir: Path, stage_name: str) -> str:
    """The weights a stage ended with, as a model directory (merging its adapter once if needed)."""
    from attune.runs import stage_output

    out = stage_output(run_dir, stage_name)
    if out.model is not None:
        return str(out.model)
    merged = out.dir / "merged"
    if not (merged / "config.json").is_file():
        from attune.train.export import merge_adapter

        merge_adapter(out.summary["base_model"], str(out.adapter), merged, verify=False)
    return str(merged)


def run_recipe(
    recipe: Recipe,
    run_dir: Path | None = None,
    *,
    resume: bool = False,
    only: list[str] | None = None,
    show_progress: bool = True,
) -> Path:
    """Train every stage of `recipe` (or those named in `only`); returns the run directory."""
    import torch
    from accelerate import PartialState

    # cpu=True matters under torchrun on CPU: without it every rank believes it is rank 0.
    state = PartialState(cpu=not torch.cuda.is_available())
    if resume and run_dir is not None and not (Path(run_dir) / "recipe.yaml").is_file():
        what = "does not exist" if not Path(run_dir).exists() else "is not a run directory (no recipe.yaml)"
        raise AttuneError(f"--resume {run_dir}: {what}")
    if run_dir is None:
        if state.is_main_process:
            run_dir = new_run_dir(Path(recipe.output_dir), recipe.name)
            marker = Path(recipe.output_dir) / recipe.name / ".current"
            marker.write_text(str(run_dir))
        state.wait_for_everyone()
        run_dir = Path((Path(recipe.output_dir) / recipe.name / ".current").read_text())
    run_dir = Path(run_dir)
    if not state.is_main_process:
        return _train_stages(recipe, run_dir, state, resume, only, show_progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    with training_lock(run_dir):  # before anything is written: a second trainer changes nothing
        (run_dir / "recipe.yaml").write_text(dump_recipe(recipe))
        (run_dir / "provenance.json").write_text(json.dumps(provenance(), indent=2))
        return _train_stages(recipe, run_dir, state, resume, only, show_progress)


def _train_stages(recipe: Recipe, run_dir: Path, state, resume: bool, only: list[str] | None, show_progress: bool) -> Path:
    base = recipe.model
    for stage in recipe.stages:
        assert stage.name is not None
        out = stage_dir(run_dir, stage.name)
        done = (out / "summary.json").is_file()
        if stage.start == "base":
            base = recipe.model
        if (only and stage.name not in only) or (resume and done):
            if done:
                base = _next_base(run_dir, stage, recipe, state)
            continue
        train_stage(recipe, stage, base, out, resume=resume, show_progress=show_progress)
        base = _next_base(run_dir, stage, recipe, state)
    return run_dir


def _next_base(run_dir: Path, stage: Stage, recipe: Recipe, state) -> str:
    """The model the stage after `stage` starts from (merged only if that stage starts from this one)."""
    i = recipe.stages.index(stage)
    if i + 1 >= len(recipe.stages) or recipe.stages[i + 1].start == "base":
        return ""
    from attune.train.objectives import get_objective

    if not get_objective(stage.objective).changes_policy:
        # a reward model scores the policy; the stage after it continues from the weights it started on
        return str(json.loads((stage_dir(run_dir, stage.name) / "summary.json").read_text())["base_model"])
    if state.is_main_process:
        merged_stage_model(run_dir, stage.name)
    state.wait_for_everyone()
    return merged_stage_model(run_dir, stage.name)
