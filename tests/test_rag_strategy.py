"""The `rag` strategy inside `attune eval`: index from documents (cached, incremental), prompts, and RAG vs zero-shot."""

from __future__ import annotations

import pytest

from attune.errors import AttuneError
from attune.evaluate.runner import run_task
from attune.evaluate.tasks import load_task
from attune.models.generation import HFGenerator
from attune.prompting import StrategyContext, build_strategy


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_documents_are_indexed_once_into_the_cache(cache):
    strategy = build_strategy("rag", {"index": "builtin:corpora/northwind", "k": 2}, StrategyContext())
    (built,) = (cache / "rag").iterdir()
    version = (built / "CURRENT").read_text()
    again = build_strategy("rag", {"index": "builtin:corpora/northwind", "k": 3}, StrategyContext())
    assert (built / "CURRENT").read_text() == version  # unchanged corpus: nothing re-embedded or rewritten
    assert len(strategy.index) == len(again.index) > 7


def test_prompt_has_numbered_passages_before_the_templated_question(cache):
    context = StrategyContext(template="Question from a customer: {input}", system="Be brief.")
    strategy = build_strategy("rag", {"index": "builtin:corpora/northwind", "k": 2}, context)
    example = {"input": "Which coin cell does the Door Sensor D3 use?", "query": "Which coin cell does the Door Sensor D3 use?"}
    built = strategy.build(example["query"], example)
    system, user = built.prompt
    assert system == {"role": "system", "content": "Be brief."}
    assert user["content"].startswith("Passages:\n[1] Door Sensor D3")
    assert user["content"].endswith("Question: Question from a customer: Which coin cell does the Door Sensor D3 use?")
    assert len(built.meta["passages"]) == 2 and built.meta["docs"][0] == "door-sensor-d3.md"
    assert strategy.extract("CR2477 [1].") == "CR2477."


def test_rag_needs_an_index(cache, tmp_path):
    with pytest.raises(AttuneError, match="needs `index`"):
        build_strategy("rag", {}, StrategyContext())
    with pytest.raises(AttuneError, match="neither an index directory nor documents"):
        build_strategy("rag", {"index": str(tmp_path / "nowhere")}, StrategyContext())


def test_rag_runs_through_the_eval_runner(cache, tiny_model, tokenizer):
    task = load_task("builtin:northwind-qa")
    task.examples = task.examples[:3]
    strategy = build_strategy("rag", {"index": "builtin:corpora/northwind", "k": 2}, StrategyContext(template=task.spec.template))
    result = run_task(HFGenerator(tiny_model, tokenizer, "tiny"), task, strategy)
    assert len(result.rows) == 3
    for row, ex in zip(result.rows, task.examples):
        assert "[1] " in row["sent"] and "[2] " in row["sent"] and ex["query"] in row["sent"]
        assert len(row["meta"]["passages"]) == 2


@pytest.mark.slow
def test_rag_beats_zero_shot_on_northwind_with_the_builtin_model(cache):
    """The done-when claim: answers only the documents hold, found by retrieval, scored by `contains`."""
    from attune.models import load_generator

    task = load_task("builtin:northwind-qa")
    task.examples = task.examples[::2]  # 11 of the 22 questions: two minutes of CPU generation become one
    generator = load_generator("builtin:smollm2-135m-instruct")
    zero = run_task(generator, task, build_strategy("zero-shot", {}, StrategyContext(template=task.spec.template)))
    rag = run_task(generator, task, build_strategy("rag", {"index": "builtin:corpora/northwind", "k": 4},
                                                   StrategyContext(template=task.spec.template)))
    assert rag.metrics["contains"] >= zero.metrics["contains"] + 0.3, (rag.metrics, zero.metrics)
