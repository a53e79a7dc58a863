"""`train.report_to`: every logged row reaches TensorBoard, MLflow (a local sqlite store) and W&B (offline),
with the stage's config and library versions as params and the recipe + provenance as artifacts."""

from __future__ import annotations

import json

import pytest

from attune.errors import AttuneError
from attune.recipe import load_recipe
from attune.runs import stage_output
from attune.train.pipeline import run_recipe
from test_train_pipeline import _recipe


def test_report_to_mlflow_tensorboard_wandb(tmp_path, tiny_model_dir, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # mlflow's artifact store defaults to the working directory
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    recipe = _recipe(tmp_path, tiny_model_dir, max_steps=3, report_to=["tensorboard", "mlflow", "wandb"])
    run = run_recipe(load_recipe(recipe), show_progress=False)
    out = stage_output(run, "sft")
    rows = [json.loads(line) for line in out.metrics_file.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]

    client = MlflowClient(uri)
    (found,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert found.info.run_name == f"{run.name}/sft" and found.info.status == "FINISHED"
    history = client.get_metric_history(found.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(r["step"], r["loss"]) for r in rows]
    assert found.data.params["stage.train.lr"] == "0.01" and found.data.params["stage.adapter.r"] == "4"
    assert found.data.params["version.torch"] == json.loads((run / "provenance.json").read_text())["versions"]["torch"]
    assert {a.path for a in client.list_artifacts(found.info.run_id)} == {"recipe.yaml", "provenance.json"}

    events = EventAccumulator(str(out.dir / "tb"))
    events.Reload()
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("loss")] == [(r["step"], round(r["loss"], 4)) for r in rows]

    (wandb_run,) = (out.dir / "wandb").glob("offline-run-*")
    assert (wandb_run / "files" / "recipe.yaml").read_text() == (run / "recipe.yaml").read_text()
    record = next(wandb_run.glob("run-*.wandb")).read_bytes()  # W&B's own binary log: each logged value is in it
    assert all(json.dumps(r["loss"]).encode() in record for r in rows)


def test_report_to_rejects_unknown_and_says_how_to_install(tmp_path, tiny_model_dir, monkeypatch):
    with pytest.raises(AttuneError, match="report_to"):
        load_recipe(_recipe(tmp_path, tiny_model_dir, report_to=["comet"]))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    from attune.train.tracking import start_trackers

    with pytest.raises(AttuneError, match=r"wandb is not installed \(pip install 'attune-llm\[trackers\]'"):
        start_trackers(["wandb"], tmp_path, project="p", run_name="r", params={}, artifacts=[])
