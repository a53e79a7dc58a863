"""`attune train` and `attune export`: parse, then call the pipeline."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console()


class GgufDtype(str, Enum):
    f32 = "f32"
    f16 = "f16"


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
    gguf: bool = typer.Option(False, "--gguf", help="also write OUT/model.gguf for llama.cpp / Ollama (Llama, Gemma 3)"),
    gguf_adapter: bool = typer.Option(
        False, "--gguf-adapter",
        help="instead of merging: OUT/base.gguf + OUT/adapter.gguf (llama.cpp LoRA adapter) + OUT/Modelfile (Ollama)"),
    gguf_dtype: GgufDtype = typer.Option(GgufDtype.f32, "--gguf-dtype", help="GGUF tensor type"),
) -> None:
    """Write a merged, standalone model (safetensors + tokenizer + chat template), verified against base+adapter;
    or, with --gguf-adapter, the base and the LoRA as GGUF files for llama.cpp / Ollama."""
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
        if gguf or gguf_adapter:
            _write_gguf(Path(output.model), target / "model.gguf", GgufDtype(gguf_dtype).value)
        return
    if gguf_adapter:
        _write_gguf_adapter(output, target, GgufDtype(gguf_dtype).value)
        return
    if not merge:
        raise AttuneError("--no-merge: the adapter is already in PEFT format at " + str(output.adapter))
    diff = merge_adapter(output.summary["base_model"], str(output.adapter), target, verify=True)
    (target / "attune_export.json").write_text(json.dumps({"run": str(run), "stage": name, "max_logit_diff": diff}))
    console.print(f"merged model written to [bold]{target}[/bold] (max |logit diff| vs base+adapter {diff:.2e} <= {TOLERANCE:.0e})")
    if gguf:
        _write_gguf(target, target / "model.gguf", GgufDtype(gguf_dtype).value)


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


def _write_gguf_adapter(output, target: Path, dtype: str) -> None:
    """base.gguf (the model the adapter was trained on), adapter.gguf (its LoRA) and an Ollama Modelfile, in `target`."""
    from attune.models import load_model
    from attune.train.gguf_export import write_gguf, write_lora_gguf
    from attune.train.ollama import modelfile

    loaded = load_model(output.summary["base_model"])
    model, tokenizer = loaded.model.float(), loaded.tokenizer
    target.mkdir(parents=True, exist_ok=True)
    write_lora_gguf(output.adapter, model.config, target / "adapter.gguf", dtype=dtype, name=output.dir.name)
    text = modelfile(tokenizer, "./base.gguf", "./adapter.gguf")  # checked before the base is written
    write_gguf(model, tokenizer, target / "base.gguf", dtype=dtype, name=Path(output.summary["base_model"]).name)
    (target / "Modelfile").write_text(text)
    console.print(f"llama.cpp / Ollama files ({dtype}) written to [bold]{target}[/bold]: base.gguf, adapter.gguf, Modelfile\n"
                  f"  llama-cli -m {target / 'base.gguf'} --lora {target / 'adapter.gguf'}\n"
                  f"  cd {target} && ollama create NAME -f Modelfile")


LAUNCH_CONFIGS = ("ddp", "zero2", "zero3", "fsdp")


def launch_config(
    name: str = typer.Argument(..., help=f"one of: {', '.join(LAUNCH_CONFIGS)}"),
) -> None:
    """Print the path of a shipped accelerate launch config, for
    `accelerate launch --config_file $(attune launch-config zero3) --num_processes N -m attune train RECIPE`."""
    from attune.builtin import builtin_path
    from attune.errors import AttuneError

    key = name.removeprefix("builtin:").removeprefix("accelerate/").removesuffix(".yaml")
    if key not in LAUNCH_CONFIGS:
        raise AttuneError(f"no launch config {name!r}; choose one of: {', '.join(LAUNCH_CONFIGS)}")
    print(builtin_path(f"accelerate/{key}.yaml"))
