"""Checkpoints are safe to read (issue 22, finding 3): reading one never runs code, a corrupt or partial
one is named and `--resume` falls back to the newest intact one, and resuming a missing run is an error."""

from __future__ import annotations

import os
import pickle
import re
import shutil

import pytest
import torch

from attune.errors import AttuneError
from attune.train.checkpoint import list_checkpoints
from attune.train.loop import train_loop
from conftest import make_tiny_model
from test_train_loop import _context, _examples, _lora


class _Payload:
    """A pickle that runs a shell command when it is unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _train(tokenizer, out, resume: bool = False, stop_after: int | None = None) -> dict[str, torch.Tensor]:
    """4 steps with a checkpoint after each; `stop_after=N` dies right after the step-N checkpoint."""
    import attune.train.loop as loop_module

    torch.manual_seed(0)
    model = _lora(make_tiny_model(tokenizer))
    objective = _context(tokenizer, max_steps=4, save_every=1, keep_checkpoints=3)
    save = loop_module.Checkpoints.save

    def save_then_die(self, state):
        save(self, state)
        if state.step == stop_after:
            raise KeyboardInterrupt

    loop_module.Checkpoints.save = save_then_die
    try:
        train_loop(model, objective, _examples(16), [], out, resume=resume, show_progress=False)
    except KeyboardInterrupt:
        pass
    finally:
        loop_module.Checkpoints.save = save
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def uninterrupted(tokenizer, tmp_path_factory):
    return _train(tokenizer, tmp_path_factory.mktemp("full"))


@pytest.fixture(scope="module")
def cut_run(tokenizer, tmp_path_factory):
    """A run killed right after its step-3 checkpoint (checkpoints of steps 1, 2, 3 on disk)."""
    run = tmp_path_factory.mktemp("cut") / "run"
    _train(tokenizer, run, stop_after=3)
    assert [c.name for c in list_checkpoints(run / "checkpoints")] == [f"step-0000000{i}" for i in (1, 2, 3)]
    return run


def _non_json_files(ckpt):
    return [f for f in ckpt.iterdir() if f.suffix != ".json"]


@pytest.mark.parametrize("damage", ["pickle-payload", "garbage", "empty", "half-written"])
def test_resume_skips_a_damaged_checkpoint_by_name_and_never_runs_its_code(tokenizer, tmp_path, uninterrupted, cut_run,
                                                                           damage, capfd):
    run = tmp_path / "run"
    shutil.copytree(cut_run, run)
    newest = list_checkpoints(run / "checkpoints")[-1]
    marker = tmp_path / "pwned"
    for f in _non_json_files(newest):  # every file that is not JSON: the weights and the trainer state
        if damage == "pickle-payload":
            f.write_bytes(pickle.dumps({"state": _Payload(str(marker))}))
        elif damage == "garbage":
            f.write_bytes(os.urandom(300))
        elif damage == "empty":
            f.write_bytes(b"")
        else:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    capfd.readouterr()
    resumed = _train(tokenizer, run, resume=True)
    err = capfd.readouterr().err
    assert not marker.exists(), "reading a checkpoint ran code from it"
    assert re.search(rf"skipping checkpoint {newest.name}\b", err), err
    assert "step-00000002" in err  # where it resumed from instead
    for name, value in uninterrupted.items():  # resumed from step 2: the same weights as never stopping
        assert torch.allclose(value, resumed[name], atol=1e-6), name


def test_resume_with_no_intact_checkpoint_is_an_error_naming_each(tokenizer, tmp_path, cut_run):
    run = tmp_path / "run"
    shutil.copytree(cut_run, run)
    for ckpt in list_checkpoints(run / "checkpoints"):
        for f in _non_json_files(ckpt):
            f.write_bytes(b"not a checkpoint")
    with pytest.raises(AttuneError, match=r"no intact checkpoint") as info:
        _train(tokenizer, run, resume=True)
    assert all(f"step-0000000{i}" in str(info.value) for i in (1, 2, 3))


def test_checkpoint_files_hold_no_pickled_objects(cut_run):
    """Weights are safetensors; everything else loads with weights_only=True or is JSON."""
    from safetensors.torch import load_file

    ckpt = list_checkpoints(cut_run / "checkpoints")[-1]
    weights = [f for f in ckpt.iterdir() if f.suffix == ".safetensors"]
    assert len(weights) == 1 and load_file(weights[0])
    for f in _non_json_files(ckpt):
        if f.suffix != ".safetensors":
            torch.load(f, weights_only=True)


def test_resume_of_a_missing_run_dir_is_an_error(tmp_path, tiny_model_dir):
    from attune.recipe import load_recipe
    from attune.train.pipeline import run_recipe
    from test_train_pipeline import _recipe

    recipe = load_recipe(_recipe(tmp_path, tiny_model_dir, max_steps=1))
    with pytest.raises(AttuneError, match="no-such-run.*does not exist"):
        run_recipe(recipe, tmp_path / "no-such-run", resume=True, show_progress=False)
    assert not (tmp_path / "no-such-run").exists()
