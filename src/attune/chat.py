"""`attune chat`: an interactive terminal chat that streams tokens.

Commands typed at the prompt: `/reset` forgets the conversation, `/system TEXT` sets the
system prompt (and resets), `/exit` (or Ctrl-D) quits. Input can also be piped in, one user
message per line, which is how `make demo` and the tests drive it.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console


def run_chat(
    model: str,
    adapter: str | None,
    system: str | None,
    max_tokens: int,
    temperature: float,
    stdin: TextIO | None = None,
    out: Console | None = None,
) -> None:
    from attune.models import GenerationParams, load_generator

    stdin = stdin or sys.stdin
    console = out or Console()
    interactive = stdin.isatty()
    with console.status(f"loading {model} ..."):
        gen = load_generator(model, adapter)
    stream = getattr(gen, "stream", None)
    params = GenerationParams(max_new_tokens=max_tokens, temperature=temperature)
    console.print(f"[dim]attune chat with {gen.name}. /reset, /system TEXT, /exit[/dim]")
    history: list[dict[str, str]] = []

    def start() -> list[dict[str, str]]:
        return [{"role": "system", "content": system}] if system else []

    history = start()
    while True:
        if interactive:
            console.print("[bold cyan]you>[/bold cyan] ", end="")
        line = stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if not interactive:
            console.print(f"[bold cyan]you>[/bold cyan] {text}", highlight=False)
        if text == "/exit":
            break
        if text == "/reset":
            history = start()
            console.print("[dim](conversation reset)[/dim]")
            continue
        if text.startswith("/system"):
            system = text.removeprefix("/system").strip() or None
            history = start()
            console.print("[dim](system prompt set; conversation reset)[/dim]")
            continue
        history.append({"role": "user", "content": text})
        console.print("[bold green]bot>[/bold green] ", end="")
        if stream is not None:
            answer = ""
            for piece in stream(history, params):
                answer += piece
                console.print(piece, end="", markup=False, highlight=False)
                console.file.flush()
            console.print()
        else:
            answer = gen.generate([history], params)[0]
            console.print(answer, markup=False, highlight=False)
        history.append({"role": "assistant", "content": answer})
