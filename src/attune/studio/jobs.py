"""Training and compare run as separate `python -m attune ...` processes.

They start in their own session, so closing the browser or stopping the studio does not stop
them. Stop sends SIGTERM, which the training loop turns into a checkpoint at the next step
boundary (`attune.train.loop`); resume is `attune train RECIPE --resume RUN`. A run dir that a
process is training is refused with `attune.runs`' own message, whoever started that process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from attune.errors import AttuneError
from attune.recipe import dump_recipe, load_recipe
from attune.runs import busy_error, check_not_training, new_run_dir, training_pid
from attune.studio.runs_view import JOB_FILE, read_job
from attune.studio.settings import StudioSettings


@dataclass
class Job:
    run: Path
    kind: str  # "train" | "compare"
    proc: subprocess.Popen


class Jobs:
    """The processes this studio started, by run dir; a watcher records each one's exit code."""

    def __init__(self, settings: StudioSettings) -> None:
        self.settings = settings
        self.jobs: dict[Path, Job] = {}
        self.lock = threading.Lock()

    def live(self, kind: str | None = None) -> dict[Path, int]:
        """Run dir -> pid of this studio's jobs still running (of one kind, or any)."""
        with self.lock:
            return {run: job.proc.pid for run, job in self.jobs.items()
                    if job.proc.poll() is None and kind in (None, job.kind)}

    def _refuse_busy(self, run: Path) -> None:
        check_not_training(run)
        if (pid := self.live().get(run.resolve())) is not None:
            raise busy_error(run, pid)

    def start_training(self, recipe_file: Path) -> Path:
        """Validate the recipe, make its run dir under the runs root, start training it."""
        recipe = load_recipe(recipe_file)
        run = new_run_dir(self.settings.runs, recipe.name)
        (run / "recipe.yaml").write_text(dump_recipe(recipe))  # the run lists at once; training rewrites the same text
        self._launch(run, "train", ["train", str(recipe_file), "--resume", str(run), "--no-progress"], recipe_file)
        return run

    def resume(self, run: Path) -> None:
        """Continue a stopped run from its last checkpoint (refused while anything trains it)."""
        self._refuse_busy(run)
        recipe_file = Path(read_job(run).get("recipe") or run / "recipe.yaml")
        load_recipe(recipe_file)  # the recipe it was started from still validates
        self._launch(run, "train", ["train", str(recipe_file), "--resume", str(run), "--no-progress"], recipe_file)

    def compare(self, run: Path) -> None:
        """`attune compare RECIPE --run RUN`: scores the recipe's candidates, writes RUN/report.html."""
        self._refuse_busy(run)
        recipe_file = Path(read_job(run).get("recipe") or run / "recipe.yaml")
        recipe = load_recipe(recipe_file)
        if not recipe.compare or recipe.evaluate is None or not recipe.evaluate.tasks:
            raise AttuneError(f"recipe {recipe.name!r} has no `compare:` candidates and `evaluate: tasks` to score them on")
        self._launch(run, "compare", ["compare", str(recipe_file), "--run", str(run)], recipe_file)

    def stop(self, run: Path) -> int:
        """SIGTERM the process training `run`: it checkpoints at the next step and exits."""
        pid = training_pid(run) or self.live("train").get(run.resolve())
        if pid is None:
            raise AttuneError(f"{run} is not being trained; nothing to stop")
        self._update(run, stop_requested=True)
        os.kill(pid, signal.SIGTERM)
        return pid

    def _launch(self, run: Path, kind: str, args: list[str], recipe_file: Path) -> None:
        log = run / f"studio-{kind}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen([self.settings.python, "-m", "attune", *args], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(self.settings.runs.parent))
        with self.lock:
            self.jobs[run.resolve()] = Job(run, kind, proc)
        self._write(run, {"kind": kind, "pid": proc.pid, "recipe": str(recipe_file), "log": log.name,
                          "started": time.time(), "exit_code": None, "stop_requested": False})
        threading.Thread(target=self._watch, args=(run, proc), daemon=True).start()

    def _watch(self, run: Path, proc: subprocess.Popen) -> None:
        self._update(run, exit_code=proc.wait(), ended=time.time())

    def _update(self, run: Path, **fields) -> None:
        with self.lock:
            self._write(run, {**read_job(run), **fields})

    @staticmethod
    def _write(run: Path, job: dict) -> None:
        tmp = run / f".{JOB_FILE}.tmp"
        tmp.write_text(json.dumps(job))
        os.replace(tmp, run / JOB_FILE)


def log_tail(run: Path, kind: str = "train", chars: int = 4000) -> str:
    """The end of a job's log (what the process printed: its error, if it failed)."""
    p = run / f"studio-{kind}.log"
    if not p.is_file():
        return ""
    with p.open("rb") as f:
        f.seek(max(0, p.stat().st_size - chars))
        return f.read().decode(errors="replace")
