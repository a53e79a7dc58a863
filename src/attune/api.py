"""attune's Python API: what the CLI does, callable from a notebook, returning typed results.

    from attune import api

    run = api.train("builtin:recipes/demo")                 # -> TrainResult (run dir, stages, losses)
    scores = api.evaluate("builtin:tickets", adapter=run.adapter)   # -> EvalResult
    table = api.compare("builtin:recipes/demo", run=run)   # -> CompareResult
    api.rag_index(["docs/"], "my-index"); api.rag_ask("my-index", "how do I reset the hub?")
    with api.serve("builtin:smollm2-135m-instruct") as server: ...   # OpenAI-compatible, in-process
    advice = api.advise({"goal": "task", "examples": 2000})  # -> Advice, ranked with reasons

The CLI commands are thin layers over these functions, so bad input raises the same
`AttuneError` (same message) here as it prints there. Each function imports what it needs when
called: `import attune.api` loads no torch.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attune.errors import AttuneError

if TYPE_CHECKING:
    from attune.advise import Advice, Situation
    from attune.evaluate.compare import CompareResult
    from attune.evaluate.runner import TaskResult
    from attune.models.generation import GenerationParams
    from attune.rag import BuildReport, GroundedAnswer
    from attune.recipe import Recipe
    from attune.serve.server import Server

BUILTIN_MODEL = "builtin:smollm2-135m-instruct"


def _recipe(recipe: Recipe | str | Path) -> Recipe:
    from attune.recipe import Recipe, load_recipe

    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


@dataclass(frozen=True)
class StageResult:
    """One trained stage of a run: where its weights are and how training went."""

    name: str
    objective: str
    dir: Path
    adapter: Path | None
    """The PEFT-format adapter directory (adapter shapes); None when the stage wrote full weights."""
    model: Path | None
    """Full weights (full / freeze-tuning); None for adapters."""
    base_model: str
    """The model the adapter was trained on (serve / evaluate it on this one)."""
    summary: dict[str, Any]

    @property
    def final_loss(self) -> float | None:
        return self.summary.get("final_loss")

    @property
    def eval_loss(self) -> float | None:
        return self.summary.get("eval_loss")

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The logged rows of metrics.jsonl (one per logged step)."""
        path = self.dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


@dataclass(frozen=True)
class TrainResult:
    """A finished (or resumed) run: `runs/<name>/<time>/` and its stages in recipe order."""

    run_dir: Path
    recipe: str
    stages: list[StageResult]

    @property
    def last(self) -> StageResult:
        if not self.stages:
            raise AttuneError(f"run {self.run_dir} has no finished stage")
        return self.stages[-1]

    @property
    def adapter(self) -> Path | None:
        """The last stage's adapter (what `attune serve -a` or `evaluate(adapter=...)` takes)."""
        return self.last.adapter

    @property
    def base_model(self) -> str:
        return self.last.base_model

    def stage(self, name: str) -> StageResult:
        for s in self.stages:
            if s.name == name:
                return s
        raise AttuneError(f"run {self.run_dir} has no stage {name!r}; stages: {', '.join(s.name for s in self.stages)}")


def load_run(run_dir: str | Path) -> TrainResult:
    """A run directory (as `train` returns it, or `runs/NAME/latest`) as a `TrainResult`."""
    import yaml

    from attune.runs import StageOutput, stage_dir

    run = Path(run_dir).resolve()
    recipe_file = run / "recipe.yaml"
    if not recipe_file.is_file():
        raise AttuneError(f"{run}: not a run directory (no recipe.yaml)")
    data = yaml.safe_load(recipe_file.read_text()) or {}
    stages = []
    for s in data.get("stages", []):
        name = s.get("name") or s["objective"]
        out = StageOutput(stage_dir(run, name))
        if out.adapter is None and out.model is None:
            continue  # not trained (yet): `--stage` ran others
        summary = out.summary
        stages.append(StageResult(name, s["objective"], out.dir, out.adapter, out.model, summary.get("base_model", data.get("model", "")),
                                  summary))
    return TrainResult(run, data.get("name", run.parent.name), stages)


def train(
    recipe: Recipe | str | Path,
    *,
    resume: str | Path | None = None,
    stages: list[str] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train every stage of `recipe` (a `Recipe`, a YAML path or `builtin:NAME`).

    Args:
        resume: a run directory to continue from its last checkpoint (finished stages are kept).
        stages: train only these stages (by name).
        progress: show progress (a bar in a terminal, one plain line every few seconds elsewhere).
    """
    from attune.train.pipeline import run_recipe

    rec = _recipe(recipe)
    run_dir = run_recipe(rec, Path(resume) if resume else None, resume=resume is not None, only=stages, show_progress=progress)
    return load_run(run_dir)


@dataclass(frozen=True)
class EvalResult:
    """Scores of one model (+ adapter, + prompting strategy) on some tasks."""

    model: str
    adapter: str | None
    strategy: str
    tasks: list[TaskResult] = field(default_factory=list)

    @property
    def scores(self) -> dict[str, dict[str, float]]:
        """task -> metric -> value."""
        return {t.task: dict(t.metrics) for t in self.tasks}

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "adapter": self.adapter, "strategy": self.strategy, "results": [t.to_dict() for t in self.tasks]}


def evaluate(
    tasks: str | Path | list[str | Path],
    *,
    model: str = BUILTIN_MODEL,
    adapter: str | Path | None = None,
    strategy: str = "zero-shot",
    limit: int | None = None,
    options: dict[str, Any] | None = None,
) -> EvalResult:
    """Score a model on eval tasks (task YAMLs or `builtin:NAME`), validated before the model loads.

    Args:
        strategy: `zero-shot`, `few-shot`, `cot` or `rag`.
        limit: the first N examples of each task (quick looks).
        options: the strategy's options, as on the CLI: `k`, `selection`, `pool`, `index`, `system`, `answer`
            (rag: generative | extractive | auto; default: the task's `answer:`, else auto).
    """
    from attune.evaluate.pools import pool_from_path
    from attune.evaluate.runner import run_task
    from attune.evaluate.tasks import load_task
    from attune.models import load_generator
    from attune.prompting import StrategyContext, build_strategy

    opts = {"k": 4, "selection": "similarity", "index": None, "system": None, "pool": None, "answer": None, **(options or {})}
    unknown = sorted(set(opts) - {"k", "selection", "index", "system", "pool", "answer"})
    if unknown:
        raise AttuneError(f"evaluate: unknown option(s) {', '.join(unknown)}; valid: k, selection, pool, index, system, answer")
    loaded = [load_task(str(t)) for t in ([tasks] if isinstance(tasks, (str, Path)) else tasks)]
    for task in loaded:
        if limit:
            task.examples = task.examples[:limit]
    pool_ref = opts.pop("pool")
    pool = pool_from_path(pool_ref) if pool_ref else None
    generator = load_generator(model, str(adapter) if adapter else None)
    results = []
    for task in loaded:
        context = StrategyContext(pool=pool, base_dir=Path("."), system=opts["system"] or task.spec.system, template=task.spec.template)
        task_opts = {**opts, "answer": opts["answer"] or task.spec.answer}
        results.append(run_task(generator, task, build_strategy(strategy, task_opts, context)))
    return EvalResult(model, str(adapter) if adapter else None, strategy, results)


def compare(recipe: Recipe | str | Path, *, run: TrainResult | str | Path | None = None) -> CompareResult:
    """Score every `compare:` candidate of `recipe` on the same tasks; writes compare.json and the report.

    Without `run`, the recipe's stages are trained first (a new run).
    """
    from attune.evaluate.compare import run_compare

    run_dir = run.run_dir if isinstance(run, TrainResult) else (Path(run) if run is not None else None)
    return run_compare(_recipe(recipe), run_dir)


def rag_index(paths: list[str | Path], index_dir: str | Path, **kwargs: Any) -> BuildReport:
    """Index documents (files or folders) into `index_dir`, incrementally; see `attune.rag.build_index`."""
    from attune.rag import build_index

    return build_index(list(paths), index_dir, **kwargs)


def rag_ask(
    index: str | Path,
    question: str,
    *,
    model: str = BUILTIN_MODEL,
    adapter: str | Path | None = None,
    k: int = 4,
    params: GenerationParams | None = None,
    answer: str = "auto",
) -> GroundedAnswer:
    """Answer `question` from a RAG index with numbered citations (or abstain when the evidence is weak).

    `answer`: generative (the model writes), extractive (quote the best sentence of a passage) or auto.
    """
    from attune.models import load_generator
    from attune.rag import answer_question, open_index

    generator = load_generator(model, str(adapter) if adapter else None)
    return answer_question(open_index(index), question, generator, k, params, answer=answer)


class Served:
    """A server running in this process (a background thread); use as a context manager or `close()`.

    `base_url` is what an OpenAI client takes; `names` what it may send as `model` for the base.
    """

    def __init__(self, server: Server, port: int | None) -> None:
        import uvicorn

        from attune.serve.app import create_app

        self.server = server
        self._sock = socket.socket()
        self._sock.bind((server.settings.host, port or 0))
        self.url = f"http://{server.settings.host}:{self._sock.getsockname()[1]}"
        self._web = uvicorn.Server(uvicorn.Config(create_app(server), log_level="warning"))
        self._thread = threading.Thread(target=self._web.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 120
        while not self._web.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.close()
                raise AttuneError("serve: the in-process server did not start")
            time.sleep(0.05)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def names(self) -> list[str]:
        return list(self.server.names)

    def close(self) -> None:
        self._web.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(model: str = BUILTIN_MODEL, *, adapters: dict[str, str | Path] | None = None, port: int | None = None,
          **settings: Any) -> Served:
    """Serve `model` (and `adapters`: name -> directory) behind the OpenAI-compatible API, in this process.

    `settings` are `attune.serve.settings.ServeSettings` fields (api_keys, max_batch, rag, routes, ...).
    Loopback only unless API keys are given; `port=None` picks a free one.
    """
    from pydantic import ValidationError

    from attune.serve.server import Server
    from attune.serve.settings import ServeSettings

    try:
        config = ServeSettings(model=model, adapters={k: str(v) for k, v in (adapters or {}).items()}, port=port or 0, **settings)
    except ValidationError as exc:
        raise AttuneError("serve: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc
    return Served(Server(config), port)


def advise(situation: Situation | dict[str, Any] | str | Path) -> Advice:
    """Rank the adaptation methods for a situation (a `Situation`, a dict of its fields, or a YAML path)."""
    from attune.advise import Situation, load_situation, parse_situation, rank

    if isinstance(situation, Situation):
        sit = situation
    elif isinstance(situation, dict):
        sit = parse_situation(situation, "advise()")
    else:
        sit = load_situation(situation)
    return rank(sit)


__all__ = [
    "EvalResult", "Served", "StageResult", "TrainResult", "advise", "compare", "evaluate", "load_run", "rag_ask", "rag_index",
    "serve", "train",
]
