"""Training progress: a rich bar in a terminal; elsewhere (CI logs, nohup, pipes) one plain line
every `every_steps` steps or `every_seconds` seconds, whichever comes first, and at the last step:

    train step 40/200  loss 1.2345  eval 1.3010  812 tok/s  ETA 3m12s
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class PlainProgress:
    """Plain lines for logs that are not a terminal."""

    def __init__(self, total: int, start: int, stream: TextIO, every_steps: int = 10, every_seconds: float = 30.0) -> None:
        self.total, self.start, self.stream = total, start, stream
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.t0 = self.last = time.monotonic()
        self.last_step = start

    def line(self, step: int, row: dict[str, Any]) -> str:
        rate = (time.monotonic() - self.t0) / max(step - self.start, 1)
        text = f"train step {step}/{self.total}  loss {row['loss']:.4f}"
        if "eval_loss" in row:
            text += f"  eval {row['eval_loss']:.4f}"
        return text + f"  {row['tokens_per_s']:.0f} tok/s  ETA {_duration(rate * (self.total - step))}"

    def update(self, row: dict[str, Any]) -> None:
        step = row["step"]
        now = time.monotonic()
        if step - self.last_step >= self.every_steps or now - self.last >= self.every_seconds or step == self.total:
            print(self.line(step, row), file=self.stream, flush=True)
            self.last, self.last_step = now, step

    def close(self) -> None:
        pass


class BarProgress:
    """A rich progress bar with ETA and the latest loss."""

    def __init__(self, total: int, start: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("[bold]train[/bold] step {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.task = self.bar.add_task("train", total=total, completed=start, info="")
        self.bar.start()

    def update(self, row: dict[str, Any]) -> None:
        step = row["step"]
        info = f"loss {row['loss']:.4f}  {row['tokens_per_s']:.0f} tok/s"
        if "eval_loss" in row:
            info += f"  eval {row['eval_loss']:.4f}"
        self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        self.bar.stop()


class NoProgress:
    def update(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def progress(enabled: bool, total: int, start: int, stream: TextIO | None = None):
    """The progress display for this process: a bar on a terminal, plain lines elsewhere, nothing when disabled."""
    stream = stream or sys.stderr
    if not enabled:
        return NoProgress()
    return BarProgress(total, start) if stream.isatty() else PlainProgress(total, start, stream)
