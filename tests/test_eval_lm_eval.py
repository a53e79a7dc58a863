"""attune's `choice` (acc, acc_norm) and `perplexity` scores equal lm-evaluation-harness's on the same data and model.

lm-eval 0.4 runs offline on a local model directory and a local YAML task over the shipped probe
files. The fast test uses a tiny random model (with and without a chat template, and windows
shorter than the texts so rolling log-likelihood is exercised); the slow test uses the builtin
model on half the general-knowledge probe.
"""

from __future__ import annotations

import pytest

from attune.builtin import builtin_path
from attune.evaluate.runner import run_task
from attune.evaluate.tasks import load_task
from attune.prompting import StrategyContext, build_strategy

KNOWLEDGE = builtin_path("probes/data/probe-knowledge.jsonl")
TEXT = builtin_path("probes/data/probe-text.jsonl")


def _lm_eval_task(name: str, data, output_type: str, text: str, target: str, metrics: list[str], extra: str = "") -> str:
    return f"""task: {name}
dataset_path: json
dataset_kwargs: {{data_files: {{test: "{data}"}}}}
test_split: test
output_type: {output_type}
doc_to_text: "{text}"
doc_to_target: "{target}"
metric_list: [{", ".join(f"{{metric: {m}}}" for m in metrics)}]
{extra}"""


def _lm_eval_tasks(folder, chat: bool) -> None:
    # Without a chat template attune renders a question in its plain template (attune.data.render):
    # "User: <question>\nAssistant:"; lm-eval's doc_to_text says the same, and its default target
    # delimiter " " is attune's default.
    question = "{{question}}" if chat else "User: {{question}}\\nAssistant:"
    mc = _lm_eval_task("attune_mc", KNOWLEDGE, "multiple_choice", question, "{{label}}", ["acc", "acc_norm"],
                       'doc_to_choice: "{{choices}}"\n')
    text = _lm_eval_task("attune_text", TEXT, "loglikelihood_rolling", "", "{{text}}",
                         ["word_perplexity", "byte_perplexity", "bits_per_byte"])
    (folder / "mc.yaml").write_text(mc)
    (folder / "text.yaml").write_text(text)


def run_lm_eval(model_dir, folder, tasks: list[str], chat: bool, max_length: int, limit: int | None) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    _lm_eval_tasks(folder, chat)
    return lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32,max_length={max_length}", tasks=tasks,
        task_manager=TaskManager(include_path=str(folder), include_defaults=False), apply_chat_template=chat, log_samples=True,
        batch_size=8, device="cpu", limit=limit,
    )


def run_attune(generator, task_ref: str, limit: int | None, max_length: int | None = None):
    task = load_task(task_ref)
    task.examples = task.examples[:limit] if limit else task.examples
    if max_length:
        task.spec.max_length = max_length
    return run_task(generator, task, build_strategy("zero-shot", {}, StrategyContext()))


def assert_choice_agrees(ours, theirs: dict, samples: list[dict]) -> None:
    samples = sorted(samples, key=lambda s: s["doc_id"])
    assert len(samples) == len(ours.rows)
    for row, sample in zip(ours.rows, samples):
        assert row["logprobs"] == pytest.approx([ll for ll, _ in sample["filtered_resps"]], abs=2e-4)
        assert (row["scores"]["acc"], row["scores"]["acc_norm"]) == (sample["acc"], sample["acc_norm"])
    assert ours.metrics["acc"] == pytest.approx(theirs["acc,none"])
    assert ours.metrics["acc_norm"] == pytest.approx(theirs["acc_norm,none"])


@pytest.mark.parametrize("chat", [True, False], ids=["chat-template", "no-template"])
def test_choice_and_perplexity_agree_with_lm_eval_on_tiny_model(tmp_path, tiny_model, tokenizer, chat):
    from attune.models import load_generator

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    if not chat:
        tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)
        tokenizer.chat_template = None
    tokenizer.save_pretrained(model_dir)
    out = run_lm_eval(model_dir, tmp_path, ["attune_mc", "attune_text"], chat, max_length=64, limit=6)
    generator = load_generator(str(model_dir))
    assert bool(getattr(generator.tokenizer, "chat_template", None)) == chat

    choice = run_attune(generator, "builtin:probe-knowledge", limit=6)
    assert_choice_agrees(choice, out["results"]["attune_mc"], out["samples"]["attune_mc"])

    text = run_attune(generator, "builtin:probe-text", limit=6, max_length=64)  # texts are 100+ tokens: 2-4 windows each
    theirs = out["results"]["attune_text"]
    for name in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert text.metrics[name] == pytest.approx(theirs[f"{name},none"], rel=1e-5), name


@pytest.mark.slow
def test_builtin_model_acc_agrees_with_lm_eval_on_the_knowledge_probe(tmp_path):
    from attune.models import load_generator
    from attune.models.loading import model_dir

    # the first 20 of the 40 questions: every log-likelihood is compared, in half the CPU time
    out = run_lm_eval(model_dir("builtin:smollm2-135m-instruct"), tmp_path, ["attune_mc"], chat=True, max_length=2048, limit=20)
    ours = run_attune(load_generator("builtin:smollm2-135m-instruct"), "builtin:probe-knowledge", limit=20)
    assert_choice_agrees(ours, out["results"]["attune_mc"], out["samples"]["attune_mc"])
    assert ours.metrics["acc"] > 0.4  # well above chance (0.25): the probe measures something this model knows
