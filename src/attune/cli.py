"""The `attune` command line: one Typer app; each command parses and dispatches, nothing more.

Command groups live next to the code they drive (`attune.<package>.commands`) and are added
here with one line each. Every `AttuneError` becomes a clear message and exit code 1 (or 2 for
usage errors), never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from attune.errors import AttuneError

app = typer.Typer(
    name="attune",
    help="Adapt a pretrained LLM to your task: fine-tune, align, prompt, retrieve, evaluate, compare, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
recipe_app = typer.Typer(help="Validate and show recipes.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")
err = Console(stderr=True)


@app.callback()
def _global_options(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="also show other libraries' warnings and logs (hidden by default)"),
) -> None:
    from attune.bitsandbytes_gate import keep_bitsandbytes_out

    keep_bitsandbytes_out()  # only QLoRA imports it (attune.bitsandbytes_gate)
    if not verbose:
        from attune.quiet import quiet_third_party

        quiet_third_party()


def _register() -> None:
    """Commands that live next to the code they drive."""
    from attune.data.commands import app as data_app
    from attune.evaluate import commands as eval_commands
    from attune.train import commands as train_commands

    app.add_typer(data_app, name="data")
    app.add_typer(__import__("attune.rag.commands", fromlist=["app"]).app, name="rag")
    app.add_typer(__import__("attune.align.commands", fromlist=["app"]).app, name="reward")
    app.command("eval")(eval_commands.eval_command)
    app.command("compare")(eval_commands.compare_command)

    app.command("train")(train_commands.train)
    app.command("export")(train_commands.export)
    app.command("launch-config")(train_commands.launch_config)
    app.command("serve")(__import__("attune.serve.commands", fromlist=["serve"]).serve)
    app.command("advise")(__import__("attune.advise.commands", fromlist=["advise_command"]).advise_command)
    app.command("studio")(__import__("attune.studio.commands", fromlist=["studio"]).studio)


_register()


@recipe_app.command("check")
def recipe_check(file: Path = typer.Argument(..., help="recipe YAML file, or builtin:NAME")) -> None:
    """Validate a recipe and print it resolved, with every default filled in."""
    from attune.recipe import dump_recipe, load_recipe

    print(dump_recipe(load_recipe(file)), end="")


@app.command()
def generate(
    model: str = typer.Option(..., "--model", "-m", help="model reference (builtin:NAME, dir, .gguf, hub id, openai:M@URL)"),
    prompt: str = typer.Option(..., "--prompt", "-p", help="the user message"),
    adapter: Optional[str] = typer.Option(None, "--adapter", "-a", help="PEFT adapter directory"),
    system: Optional[str] = typer.Option(None, "--system", help="system prompt"),
    max_tokens: int = typer.Option(256, "--max-tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy"),
    raw: bool = typer.Option(False, "--raw", help="send the prompt as raw text, without the chat template"),
) -> None:
    """Generate one answer to one prompt."""
    from attune.models import GenerationParams, load_generator

    gen = load_generator(model, adapter)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    params = GenerationParams(max_new_tokens=max_tokens, temperature=temperature)
    print(gen.generate([prompt if raw else messages], params)[0])


@app.command()
def chat(
    model: str = typer.Option("builtin:smollm2-135m-instruct", "--model", "-m", help="model reference"),
    adapter: Optional[str] = typer.Option(None, "--adapter", "-a", help="PEFT adapter directory"),
    system: Optional[str] = typer.Option(None, "--system", help="system prompt"),
    max_tokens: int = typer.Option(256, "--max-tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy"),
) -> None:
    """Chat in the terminal. Commands: /reset, /system TEXT, /exit."""
    from attune.chat import run_chat

    run_chat(model, adapter, system, max_tokens, temperature)


@app.command()
def demo() -> None:
    """Train a LoRA on the builtin ticket data and score it against the base model (what `make demo` runs)."""
    from attune.demo import run_demo

    run_demo()


def main() -> None:
    """Console entry point: run the app and turn AttuneError into a message and exit code 1."""
    try:
        app()
    except AttuneError as exc:
        err.print("[bold red]error:[/bold red]", end=" ")
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
