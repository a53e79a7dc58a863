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
    from accelerate import Accelerator

    from attune.train.precision import choose_precision

    choice = choose_precision(stage.train.precision, "cuda" if torch.cuda.is_available() else "cpu")
    if stage.train.precision != choice.precision:
        console.print(f"precision {choice.precision}: {choice.reason}")
    _allow_new_precision(choice.mixed_precision)
    return Accelerator(mixed_precision=choice.mixed_precision, cpu=not torch.cuda.is_available()), choice


def _allow_new_precision(mixed_precision: str) -> None:
    """Accelerate keeps one process-wide mixed-precision setting, but stages of one recipe (and runs
    in one Python session) may each resolve their own: drop the old setting, keep the process group."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    state = AcceleratorState._shared_state
    if state.get("_mixed_precision") not in (None, mixed_precision) and state.get("distributed_type") != DistributedType.DEEPSPEED:
        AcceleratorState._reset_state(reset_partial_state=False)


def _task_name(src, taken: set[str]) -> str:
    name = src.name or Path(src.path.removeprefix("builtin:")).stem
    while name in taken:
        name += "'"
    taken.add(name)
    return name


def _load_stage_records(recipe: Recipe, stage: Stage, kinds: tuple[str, ...]) -> tuple[list, list, dict[str, list]]:
    """(train records, validation records, validation records per task).

    Each dataset (and the replay set) is split before mixing, so a record repeated by up-sampling
    never lands on both sides, and every task keeps its own validation share: the loop logs
    `eval_loss/<task>` for each when a stage mixes several (replay counts as the task "replay").
    """
    from attune.data import load_records, mix_datasets, train_val_split
    from attune.recipe import DataSource

    if not stage.sources:
        raise AttuneError(f"stage {stage.name!r}: no data (add `data: {{path: ...}}`)")
    seed, frac = stage.train.seed, 0.0 if stage.validation is not None else stage.train.val_fraction
    taken: set[str] = set()
    train_sets, val_sets, weights = [], {}, []
    for src in stage.sources:
        records = load_records(src, base_dir=recipe.base_dir)
        bad = sorted({r.kind for r in records} - set(kinds))
        if bad:
            raise AttuneError(
                f"stage {stage.name!r}: objective {stage.objective!r} trains on {', '.join(kinds)} records, "
                f"but {src.path} holds {', '.join(bad)} records"
            )
        train, val = train_val_split(records, frac, seed)
        train_sets.append(train)
        val_sets[_task_name(src, taken)] = val
        weights.append(src.weight)
    if stage.replay is not None:
        replay = load_records(DataSource(path=stage.replay.path, format="text"), base_dir=recipe.base_dir)
        train, val = train_val_split(replay, frac, seed)
        domain_records = sum(len(d) for d in train_sets)
        want = max(1, round(domain_records * stage.replay.ratio / (1 - stage.replay.ratio)))
        train_sets.append((train * (want // len(train) + 1))[:want])
        val_sets[_task_name(DataSource(path="replay"), taken)] = val
        weights.append(1.0)
    if len(train_sets) == 1:
        records = train_sets[0]
    else:
        records = mix_datasets(train_sets, weights, strategy=stage.mixing.strategy, temperature=stage.mixing.temperature, seed=seed)
    if stage.validation is not None:
        return records, load_records(stage.validation, base_dir=recipe.base_dir), {}
    per_task = val_sets if len(val_sets) > 1 else {}
    return records, [r for v in val_sets.values() for r in v], {k: v for k, v in per_task.items() if v}


def train_stage(
    recipe: Recipe, stage: Stage, base_model: str, out: Path, *, resume: bool = False, show_progress: bool = True
) -> dict[str, Any]:
    """Train one stage from `base_model`; writes adapter/ or model/, metrics and summary.json."""
    import torch

    from attune.adapters import apply_adapter, count_parameters, parse_adapter, shape
    from attune.models import load_model
    from attune.train.context import ObjectiveContext
    from attune.train.loop import train_loop
    from attune.train.objectives import get_objective

    objective = get_objective(stage.objective)
    torch.manual_seed(stage.train.seed)
    acc, precision = _accelerator(stage)
    adapter_cfg = stage.adapter or parse_adapter({"type": "lora"})
    adapter_shape = shape(adapter_cfg.type)
    load_kwargs = adapter_shape.load_kwargs(adapter_cfg) if getattr(adapter_shape, "load_kwargs", None) else {}
    loaded = load_model(base_model, device=str(acc.device), model_kwargs=load_kwargs)
    tokenizer, model = loaded.tokenizer, loaded.model
    del loaded  # a smaller student must not keep the full model alive
    if hasattr(objective, "student"):  # distill: a smaller student cut from (or shaped like) the starting model
        model = objective.student(model, stage)
    model = apply_adapter(model, adapter_cfg)
    trainable, total = count_parameters(model)
    if acc.is_main_process:
        console.print(
            f"[bold]{stage.name}[/bold]: {stage.objective} with {adapter_cfg.type} on {base_model} — "
            f"trainable {trainable:,} / {total:,} parameters ({100 * trainable / max(total, 1):.3f}%)",
            soft_wrap=True,
        )
    context = ObjectiveContext(tokenizer=tokenizer, options=stage.train, stage=stage, accelerator=acc, device=acc.device)
    context.state["recipe"] = recipe
    context.state["run_dir"] = out.parent.parent
    val_tasks: dict[str, list[dict]] = {}
    if getattr(stage.train, "streaming", False):  # cpt: read, tokenize and pack while training
        examples, val_examples = objective.stream(recipe, stage, tokenizer, context)
    else:
        train_records, val_records, task_records = _load_stage_records(recipe, stage, tuple(objective.RECORD_KINDS))
        examples = objective.prepare(train_records, tokenizer, stage.train, context)
        val_examples = objective.prepare(val_records, tokenizer, stage.train, context) if val_records else []
        val_tasks = {name: objective.prepare(recs, tokenizer, stage.train, context) for name, recs in task_records.items()}
        if not examples:
            raise AttuneError(f"stage {stage.name!r}: no usable training examples after tokenization")
    out.mkdir(parents=True, exist_ok=True)
    result = train_loop(
        model, objective, examples, val_examples, context, out, resume=resume, show_progress=show_progress, val_tasks=val_tasks
    )
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
        "precision": precision.as_dict(),
    }
    if acc.is_main_process:
        raw = acc.unwrap_model(model)
        _save_output(raw, tokenizer, out, adapter_shape.uses_peft, adapter_cfg, summary)
        if hasattr(objective, "save"):
            objective.save(raw, out, context)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    acc.wait_for_everyone()
    return summary


def _last_task_losses(metrics: Path) -> dict[str, float]:
    """The last logged `eval_loss/<task>` of each task (multi-task and replay stages)."""
    last: dict[str, float] = {}
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            last.update({k.removeprefix("eval_loss/"): v for k, v in row.items() if k.startswith("eval_loss/")})
    return last


def _save_output(model, tokenizer, out: Path, uses_peft: bool, adapter_cfg, summary: dict) -> None:
    """Write adapter/ (PEFT format) or model/ (full weights) atomically."""
    from attune.adapters import shape
    from attune.models.adapters_io import check_adapter_dir, write_fingerprint

    saver = shape(adapter_cfg.type).save
    target = out / ("adapter" if uses_peft or saver else "model")
    tmp = out / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if saver is not None:
        saver(model, tmp)
    else:
        model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    if target.name == "adapter":
        write_fingerprint(tmp, model, {"stage": summary["stage"], "base_model": summary["base_model"]})
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

    if not getattr(get_objective(stage.objective), "CHANGES_POLICY", True):
        # a reward model scores the policy; the stage after it continues from the weights it started on
        return str(json.loads((stage_dir(run_dir, stage.name) / "summary.json").read_text())["base_model"])
    if state.is_main_process:
        merged_stage_model(run_dir, stage.name)
    state.wait_for_everyone()
    return merged_stage_model(run_dir, stage.name)
