"""Grounded answers: the prompt sent, citations mapped to sources, abstention, and the threshold measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attune.models.generation import GenerationParams, HFGenerator
from attune.rag import answer_question, build_index, open_index
from attune.rag.answer import DEFAULT_COVERAGE, DEFAULT_THRESHOLD, IDK

ROOT = Path(__file__).parents[1] / "src/attune/builtin"
QUESTIONS = [json.loads(line) for line in (ROOT / "data/northwind-questions.jsonl").read_text().splitlines()]
UNRELATED = ["What is the capital of France?", "Who wrote Hamlet?", "How do I bake sourdough bread?", "What is 17 times 23?"]


class ScriptedGenerator:
    """Answers with a fixed text and records the prompts, so the post-processing can be checked exactly."""

    name = "scripted"

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.prompts: list = []

    def generate(self, prompts, params):
        self.prompts += list(prompts)
        return [self.reply for _ in prompts]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rag") / "index"
    build_index([ROOT / "corpora/northwind"], folder)
    return open_index(folder)


def test_prompt_numbers_passages_and_sources_follow_citations(index):
    gen = ScriptedGenerator("It lasts 9 hours [2], not 12 [1][6].")
    result = answer_question(index, "How long does the Hub X2's backup battery last during a power cut?", gen, k=3)
    assert gen.prompts == [result.prompt]
    content = result.prompt[-1]["content"]
    for n, p in enumerate(result.passages, 1):
        assert f"[{n}] {p.text}" in content
    assert content.endswith("Question: How long does the Hub X2's backup battery last during a power cut?")
    assert result.answer == "It lasts 9 hours [2], not 12 [1]."
    assert result.citations == [1, 2] and result.sources == result.passages[:2]
    assert result.dropped_citations == 1 and not result.abstained


def test_unrelated_question_abstains_without_asking_the_model(index):
    gen = ScriptedGenerator("Paris [1].")
    result = answer_question(index, "What is the capital of France?", gen)
    assert result.abstained and result.answer == IDK and result.prompt is None and gen.prompts == []
    assert result.sources == [] and result.relevance < DEFAULT_THRESHOLD


def test_model_saying_it_does_not_know_is_an_abstention(index):
    result = answer_question(index, "How many devices can the Northwind Hub X2 connect?", ScriptedGenerator("I don't know [1]."))
    assert result.abstained and result.sources == [] and result.prompt is not None


def test_threshold_separates_corpus_questions_from_unrelated_ones(index):
    inside = [index.relevance(q["question"]) for q in QUESTIONS]
    outside = [index.relevance(q) for q in UNRELATED]
    assert min(inside) > DEFAULT_THRESHOLD + 0.15
    assert max(outside) < DEFAULT_THRESHOLD - 0.1
    # keyword coverage of unrelated questions (the other half of the abstention rule) stays well below its bar
    coverage = [index.keyword_coverage(q, index.search(q, 5)) for q in [*UNRELATED, "What is the price of a Tesla battery?"]]
    assert max(coverage) < DEFAULT_COVERAGE - 0.2


def test_answer_with_a_real_transformers_generator(index, tiny_model, tokenizer):
    gen = HFGenerator(tiny_model, tokenizer, "tiny")
    result = answer_question(
        index, "Which coin cell does the Door Sensor D3 use?", gen, k=2, params=GenerationParams(max_new_tokens=8), answer="generative"
    )
    assert len(result.passages) == 2 and result.passages[0].doc == "door-sensor-d3.md"
    assert "[1] " in gen.render(result.prompt) and isinstance(result.answer, str)
