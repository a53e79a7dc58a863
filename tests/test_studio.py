"""`attune studio` without a browser: security (roots, symlinks, token, host), errors, win rates, the form.

The app is driven through FastAPI's TestClient on a loopback base URL; the browser test
(tests/test_studio_browser.py) drives the same endpoints through Chromium.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml
from fastapi.testclient import TestClient

from attune.errors import AttuneError
from attune.studio.app import create_app
from attune.studio.arena import wilson, win_table
from attune.studio.settings import StudioSettings

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture
def roots(tmp_path):
    runs, data = tmp_path / "runs", tmp_path / "data"
    run = runs / "demo" / "20260101-000000"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"name": "demo", "model": "m", "stages": []}))
    (run / "report.html").write_text("<html>report</html>")
    data.mkdir()
    (data / "ok.jsonl").write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    (data / "link.txt").symlink_to(secret)  # a symlink inside the root pointing outside it
    (data / "linkdir").symlink_to(tmp_path)
    return runs, data, secret


def _client(runs, data, token=None, host="127.0.0.1"):
    return TestClient(create_app(StudioSettings(runs=runs, data=data, host=host, token=token)), base_url="http://127.0.0.1")


def test_wilson_interval_matches_scipy():
    from scipy.stats import binomtest

    for k, n in [(0, 1), (1, 1), (3, 10), (50, 100), (7, 9), (0, 25)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = wilson(k, n)
        assert lo == pytest.approx(ci.low, abs=2e-4) and hi == pytest.approx(ci.high, abs=2e-4), (k, n)
    assert wilson(0, 0) == (0.0, 1.0)


def test_win_table_counts_pairs_in_either_order_and_keeps_ties_out_of_the_rate():
    votes = [{"a": "base", "b": "tuned", "choice": "b"}, {"a": "tuned", "b": "base", "choice": "a"},
             {"a": "base", "b": "tuned", "choice": "a"}, {"a": "base", "b": "tuned", "choice": "tie"},
             {"a": "base", "b": "mix", "choice": "tie"}]
    table = {(r["first"], r["second"]): r for r in win_table(votes)}
    row = table[("base", "tuned")]
    assert (row["first_wins"], row["second_wins"], row["ties"], row["votes"]) == (1, 2, 1, 4)
    assert row["first_rate"] == pytest.approx(1 / 3) and (row["low"], row["high"]) == pytest.approx(wilson(1, 3))
    assert table[("base", "mix")]["first_rate"] is None


def test_no_endpoint_serves_or_opens_a_file_outside_the_roots(roots):
    runs, data, secret = roots
    c = _client(runs, data)
    assert c.get("/files/runs/demo/20260101-000000/report.html").text == "<html>report</html>"
    assert c.get("/files/data/ok.jsonl").status_code == 200
    attempts = [
        "/files/data/link.txt", "/files/data/linkdir/secret.txt", "/files/data/../secret.txt", "/files/data/%2e%2e/secret.txt",
        "/files/runs/..%2Fsecret.txt", "/files/runs/demo/../../secret.txt", f"/files/data/{secret}",
        f"/api/data/check?path={secret}", "/api/data/check?path=../secret.txt", "/api/data/check?path=link.txt",
        "/api/data/inspect?path=linkdir/secret.txt&model=x", "/api/recipe?ref=../../secret.txt",
        "/api/arena/table?pairs=../secret.txt", "/api/run/../secret.txt/metrics", "/api/run/..%2F..%2Fsecret.txt/log",
    ]
    for url in attempts:
        r = c.get(url)
        assert r.status_code in (400, 404), (url, r.status_code)
        assert "TOP SECRET" not in r.text, url
    r = c.post("/api/arena/vote", json={"round": "x", "choice": "a", "pairs": str(secret)})
    assert r.status_code == 404 and secret.read_text() == "TOP SECRET"
    r = c.post("/api/arena/load", json={"model": "m", "adapters": f"x={secret.parent}"})
    assert r.status_code == 404
    assert c.get("/api/data/check?path=builtin:tickets-train").json()["ok"]  # packaged data is allowed


def test_token_and_loopback_host(roots):
    from attune.studio.security import check_bind

    runs, data, _ = roots
    with pytest.raises(AttuneError, match="needs --token"):
        check_bind(StudioSettings(runs=runs, data=data, host="0.0.0.0"))
    with pytest.raises(AttuneError, match="at least 12"):
        check_bind(StudioSettings(runs=runs, data=data, host="0.0.0.0", token="short"))
    c = _client(runs, data, token="a-long-studio-token", host="0.0.0.0")
    assert c.get("/").status_code == 401 and c.get("/api/runs").status_code == 401
    assert c.get("/files/runs/demo/20260101-000000/report.html").status_code == 401
    assert c.get("/?token=wrong-token-value").status_code == 401
    r = c.get("/?token=a-long-studio-token", follow_redirects=False)
    assert r.status_code == 303 and "token" not in r.headers["location"]
    assert c.get("/api/runs").status_code == 200  # the cookie set by the redirect
    fresh = _client(runs, data, token="a-long-studio-token", host="0.0.0.0")
    assert fresh.get("/api/runs", headers={"Authorization": "Bearer a-long-studio-token"}).status_code == 200
    loop = _client(runs, data)
    assert loop.get("/api/runs").status_code == 200
    assert loop.get("/api/runs", headers={"Host": "attacker.example:7860"}).status_code == 403  # DNS rebinding


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "attune", "studio", "--runs", str(tmp_path / "runs"), "--data", str(tmp_path),
                              "--port", str(port)], env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr and "Traceback" not in out.stderr


def test_recipe_text_gets_the_errors_recipe_check_gives(roots, tmp_path):
    from attune.recipe import load_recipe

    runs, data, _ = roots
    text = "name: x\nmodel: m\nstages:\n  - objective: sft\n    train: {lrr: 0.1}\n"
    r = _client(runs, data).post("/api/recipe/check", json={"text": text})
    assert r.status_code == 400
    (tmp_path / "same.yaml").write_text(text)
    with pytest.raises(AttuneError) as cli:
        load_recipe(tmp_path / "same.yaml")
    draft = runs / ".studio" / "recipes" / "draft.yaml"
    assert r.json()["error"] == str(cli.value).replace(str(tmp_path / "same.yaml"), str(draft))
    assert f"{draft}:5: stages[0].train.lrr: unknown key 'lrr' (did you mean 'lr'?)" in r.json()["error"]
    started = _client(runs, data).post("/api/runs/start", json={"text": text})
    assert started.status_code == 400 and not (runs / "x").exists()  # nothing started, no run dir


def test_form_builds_a_recipe_that_validates_and_drops_keys_the_shape_lacks(roots):
    runs, data, _ = roots
    c = _client(runs, data)
    form = {"name": "f", "model": "builtin:smollm2-135m-instruct", "data": "ok.jsonl", "objective": "sft", "adapter": "ia3",
            "r": "8", "alpha": "16", "epochs": "2", "lr": "1e-3", "max_steps": ""}
    text = c.post("/api/recipe/form", json=form).json()["text"]
    recipe = yaml.safe_load(text)
    assert recipe["stages"][0]["adapter"] == {"type": "ia3"} and recipe["stages"][0]["train"] == {"epochs": 2.0, "lr": 1e-3}
    assert recipe["stages"][0]["data"]["path"] == str(data / "ok.jsonl")
    assert c.post("/api/recipe/check", json={"text": text}).json()["ok"]
    bad = c.post("/api/recipe/form", json={**form, "lr": "fast"})
    assert bad.status_code == 400 and "'lr'" in bad.json()["error"]


def test_data_check_names_each_bad_line_and_shows_it(roots):
    runs, data, _ = roots
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    (data / "bad.jsonl").write_text(json.dumps(good) + "\n" + '{"messages": [\n' + json.dumps({"messages": [{"role": "bot"}]}) + "\n")
    r = _client(runs, data).get("/api/data/check?path=bad.jsonl").json()
    assert r["counts"] == {"chat": 1} and not r["ok"]
    lines = {p["line"]: p for p in r["problems"]}
    assert set(lines) == {2, 3}
    assert "malformed JSON" in lines[2]["text"] and lines[2]["raw"] == '{"messages": ['
    assert lines[2]["text"].startswith(f"{data / 'bad.jsonl'}:2")


def test_advise_form_ranks_and_a_method_becomes_a_recipe_that_validates(roots):
    runs, data, _ = roots
    c = _client(runs, data)
    form = {"goal": "task", "labelled_examples": "2000", "citations": False, "hardware": "cpu"}
    advice = c.post("/api/advise", json=form).json()
    assert advice["ranked"] and all(o["reasons"] for o in advice["ranked"][:3])
    assert c.post("/api/advise", json={**form, "labelled_exampels": "1"}).status_code == 400
    method = advice["ranked"][0]["method"]
    text = c.post("/api/advise/recipe", json={"method": method, "form": form}).json()["text"]
    text = text.replace("PATH/TO/YOUR/DATA.jsonl", str(data / "ok.jsonl")).replace("PATH/TO/HELDOUT-TASK.yaml", "builtin:tickets")
    assert c.post("/api/recipe/check", json={"text": text}).json()["ok"]


def test_local_recipes_are_listed_and_read_from_the_data_root_only(roots):
    from attune.studio import recipes

    runs, data, secret = roots
    (data / "sub").mkdir()
    (data / "sub" / "r.yaml").write_text("name: r\nmodel: m\nstages: [{objective: sft, data: ../ok.jsonl}]\n")
    (data / "task.yaml").write_text("name: t\nkind: generate\n")  # not a recipe
    settings = StudioSettings(runs=runs, data=data)
    assert recipes.local_recipes(settings) == ["local:sub/r.yaml"]
    c = _client(runs, data)
    assert c.get("/api/recipe?ref=local:sub/r.yaml").json()["text"].startswith("name: r")
    assert recipes.recipe_file(settings, "local:sub/r.yaml") == data / "sub" / "r.yaml"
    assert c.get(f"/api/recipe?ref=local:../{secret.name}").status_code == 404
    assert c.get("/api/recipe?ref=builtin:recipes/demo").json()["text"].startswith("# The `make demo` recipe")
