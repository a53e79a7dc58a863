"""`attune train` and `attune export`: parse, then call the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console()


def train(
    recipe: str = typer.Argument(..., help="recipe YAML file, or builtin:NAME"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue this run dir from its last checkpoint"),
    stage: Optional[list[str]] = typer.Option(None, "--stage", help="train only these stages (repeatable)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar (logs still go to metrics.jsonl)"),
) -> None:
    """Train every stage of a recipe. Under `accelerate launch` / `torchrun` it trains with many processes."""
    from attune.api import train as train_recipe

    result = train_recipe(recipe, resume=resume, stages=stage, progress=not no_progress)
    console.print(f"run written to [bold]{result.run_dir}[/bold]")


def export(
    run: Path = typer.Argument(..., help="a run directory (runs/NAME/TIME or runs/NAME/latest)"),
    stage: Optional[str] = typer.Option(None, "--stage", help="which stage (default: the last one)"),
    merge: bool = typer.Option(True, "--merge/--no-merge", help="merge the adapter into the base weights"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output dir (default: RUN/export/STAGE)"),
    gguf: bool = typer.Option(False, "--gguf", help="also write OUT/model.gguf for llama.cpp / Ollama (Llama family)"),
    gguf_dtype: str = typer.Option("f32", "--gguf-dtype", help="GGUF tensor type: f32 or f16"),
) -> None:
    """Write a merged, standalone model (safetensors + tokenizer + chat template), verified against base+adapter."""
    import json

    from attune.errors import AttuneError
    from attune.runs import stage_output
    from attune.train.export import TOLERANCE, merge_adapter

    run = run.resolve()
    recipe_file = run / "recipe.yaml"
    if not recipe_file.is_file():
        raise AttuneError(f"{run}: not a run directory (no recipe.yaml)")
    import yaml

    stages = [s.get("name") or s["objective"] for s in yaml.safe_load(recipe_file.read_text()).get("stages", [])]
    name = stage or (stages[-1] if stages else None)
    if name is None:
        raise AttuneError(f"{run}: the recipe has no stages to export")
    output = stage_output(run, name)
    target = out or run / "export" / name
    if output.adapter is None:
        console.print(f"stage {name!r} trained full weights: {output.model} is already a standalone model")
        if gguf:
            _write_gguf(Path(output.model), target / "model.gguf", gguf_dtype)
        return
    if not merge:
        raise AttuneError("--no-merge: the adapter is already in PEFT format at " + str(output.adapter))
    diff = merge_adapter(output.summary["base_model"], str(output.adapter), target, verify=True)
    (target / "attune_export.json").write_text(json.dumps({"run": str(run), "stage": name, "max_logit_diff": diff}))
    console.print(f"merged model written to [bold]{target}[/bold] (max |logit diff| vs base+adapter {diff:.2e} <= {TOLERANCE:.0e})")
    if gguf:
        _write_gguf(target, target / "model.gguf", gguf_dtype)


def _write_gguf(model_dir: Path, path: Path, dtype: str) -> None:
    """Load a standalone model directory on CPU (fp32) and write it as GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from attune.train.gguf_export import write_gguf

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_gguf(model, tokenizer, path, dtype=dtype, name=model_dir.name)
    console.print(f"GGUF ({dtype}) written to [bold]{path}[/bold]")
