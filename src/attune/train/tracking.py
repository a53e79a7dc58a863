"""Experiment trackers for `train.report_to`: TensorBoard, MLflow, Weights & Biases.

metrics.jsonl is always written by the loop; the trackers named in `report_to` receive the same
rows, through Accelerate's tracker classes (the ones `Accelerator(log_with=...)` uses), so their
setup follows each tool's usual environment variables: `MLFLOW_TRACKING_URI`,
`MLFLOW_EXPERIMENT_NAME`, `WANDB_MODE=offline`, `WANDB_PROJECT`, ... Each stage is one tracker run
(experiment / project = the recipe's name, run = `<run time>/<stage>`); the stage's resolved
config and the library versions are its params, and the run's `recipe.yaml` and
`provenance.json` its artifacts. Only the main process reports.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

from attune.errors import AttuneError

Reporter = Literal["tensorboard", "mlflow", "wandb"]
INSTALL = {
    "tensorboard": "pip install tensorboard",
    "mlflow": "pip install 'attune-llm[trackers]' (or mlflow)",
    "wandb": "pip install 'attune-llm[trackers]' (or wandb)",
}


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: trackers take flat params of scalars (lists become JSON)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value, default=str)
        else:
            out[name] = value
    return out


def _tensorboard(project: str, run_name: str, out_dir: Path):
    from accelerate.tracking import TensorBoardTracker

    return TensorBoardTracker("tb", out_dir)  # out_dir/tb, where the runs layout says it is


def _mlflow(project: str, run_name: str, out_dir: Path):
    from accelerate.tracking import MLflowTracker

    return MLflowTracker(experiment_name=project, run_name=run_name, tags={"attune.stage_dir": str(out_dir)})


def _wandb(project: str, run_name: str, out_dir: Path):
    from accelerate.tracking import WandBTracker

    return WandBTracker(project, name=run_name, dir=str(out_dir))


BUILDERS = {"tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}


def _attach(name: str, tracker, path: Path) -> None:
    """Keep a file with the tracker's run: an artifact (MLflow), a saved file (W&B), a text panel (TensorBoard)."""
    if name == "mlflow":
        tracker.log_artifact(str(path))
    elif name == "wandb":
        tracker.run.save(str(path), base_path=str(path.parent), policy="now")
    else:
        tracker.writer.add_text(path.name, "    " + path.read_text().replace("\n", "\n    "))


class Trackers:
    """The trackers of one stage: `log(row)` after each logged step, `close()` at the end."""

    def __init__(self, trackers: dict[str, Any]) -> None:
        self.trackers = trackers

    def log(self, row: dict[str, Any]) -> None:
        values = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        for tracker in self.trackers.values():
            tracker.log(values, step=int(row["step"]))

    def close(self) -> None:
        for tracker in self.trackers.values():
            tracker.finish()


def start_trackers(report_to: list[str], out_dir: Path, *, project: str, run_name: str,
                   params: dict[str, Any], artifacts: list[Path]) -> Trackers:
    """Start the named trackers for one stage, with its params and artifacts; a missing package is an error."""
    missing = [n for n in report_to if importlib.util.find_spec(n) is None]
    if missing:
        raise AttuneError("train.report_to: " + "; ".join(f"{n} is not installed ({INSTALL[n]})" for n in missing))
    started: dict[str, Any] = {}
    try:
        for name in dict.fromkeys(report_to):
            tracker = BUILDERS[name](project, run_name, out_dir)
            try:
                tracker.start()
            except Exception as exc:  # a tracker's own configuration (URI, login) is the user's to fix
                raise AttuneError(f"train.report_to: {name} could not start: {exc}") from exc
            started[name] = tracker
            tracker.store_init_configuration(params)
            for path in artifacts:
                if path.is_file():
                    _attach(name, tracker, path)
    except BaseException:
        Trackers(started).close()
        raise
    return Trackers(started)


def stage_trackers(context, out_dir: Path) -> Trackers:
    """The trackers `context.options.report_to` names for the stage trained into `out_dir`."""
    report_to = list(getattr(context.options, "report_to", []) or [])
    if not report_to:
        return Trackers({})
    recipe, run_dir, stage = context.state.get("recipe"), context.state.get("run_dir"), context.stage
    params: dict[str, Any] = {}
    if recipe is not None:
        params.update({"recipe.name": recipe.name, "recipe.model": recipe.model})
    if stage is not None:
        params.update(flatten(stage.model_dump(mode="json", exclude_none=True), "stage."))
    artifacts: list[Path] = []
    if run_dir is not None:
        artifacts = [Path(run_dir) / "recipe.yaml", Path(run_dir) / "provenance.json"]
        prov = artifacts[1]
        if prov.is_file():
            params.update(flatten(json.loads(prov.read_text()).get("versions", {}), "version."))
    project = recipe.name if recipe is not None else out_dir.name
    run_name = f"{Path(run_dir).name}/{out_dir.name}" if run_dir is not None else out_dir.name
    return start_trackers(report_to, out_dir, project=project, run_name=run_name, params=params, artifacts=artifacts)
