"""Abstention on fused evidence, and extractive answers: candidates, scorers and citations."""

from __future__ import annotations

import math

import pytest
import torch

from attune.models.generation import HFGenerator
from attune.rag import answer_question, build_index, open_index
from attune.rag.answer import DEFAULT_COVERAGE, DEFAULT_THRESHOLD, IDK, answer_mode
from attune.rag.extractive import QUESTION_PROMPT, LikelihoodScorer, candidates, extract_answer
from attune.rag.passage import Passage

DOCS = {
    "returns.md": "# Returns policy\nRefunds are issued within 14 days. Keep the receipt, the packaging and the label "
                  "with the serial number (letters KX, then digits).\n",
    "shipping.md": "# Shipping\nParcels leave the warehouse in Leeds within two working days. Express delivery costs 9 pounds.\n",
    "garden.md": "# Garden care\nWater tomatoes in the morning. Prune roses in late winter before new growth starts.\n",
}
QUESTION = "What letters does the serial number start with?"


class ScriptedGenerator:
    name = "scripted"

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.prompts: list = []

    def generate(self, prompts, params):
        self.prompts += list(prompts)
        return [self.reply for _ in prompts]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    for name, text in DOCS.items():
        (root / name).write_text(text)
    build_index([root], root / "index")
    return open_index(root / "index")


def test_passage_bm25_finds_is_answered_though_dense_similarity_is_low(index):
    hits = index.search(QUESTION, 3)
    assert hits[0].doc == "returns.md" and "bm25" in hits[0].scores
    assert max(p.scores["dense"] for p in hits) < DEFAULT_THRESHOLD  # the embedder alone would abstain
    gen = ScriptedGenerator("They start with KX [1].")
    result = answer_question(index, QUESTION, gen, k=3, answer="generative")
    assert not result.abstained and result.coverage >= DEFAULT_COVERAGE and gen.prompts
    assert result.sources[0].doc == "returns.md"


def test_weak_evidence_from_both_retrievers_still_abstains(index):
    result = answer_question(index, "Who wrote Hamlet?", ScriptedGenerator("Shakespeare [1]."), k=3, answer="generative")
    assert result.abstained and result.answer == IDK and result.prompt is None
    assert result.relevance < DEFAULT_THRESHOLD and result.coverage < DEFAULT_COVERAGE


def test_keyword_coverage_by_hand(index):
    """Keywords {letters, serial, number, start}; the returns passage holds all but `start`, which no chunk has."""
    n = len(index.chunks)

    def idf(df: int) -> float:
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    starts = sum("starts" in c.text for c in index.chunks)
    assert starts == 1  # "starts" is not "start": no stemming, so `start` has df 0
    expected = 3 * idf(1) / (3 * idf(1) + idf(0))
    assert index.keyword_coverage(QUESTION, index.search(QUESTION, 1)) == pytest.approx(expected)
    assert index.keyword_coverage("the of and", index.search(QUESTION, 1)) == 0.0


def test_candidates_are_sentences_without_the_section_line():
    text = "Hub > Power\nIt runs on USB-C. The battery lasts 9 hours.\n- Ring glows amber."
    p = Passage("a#0", "a.md", text, metadata={"section": "Hub > Power"})
    found = candidates([Passage("b#0", "b.md", "Unrelated text here."), p])
    assert [(s.passage, s.text) for s in found] == [
        (1, "Unrelated text here."), (2, "It runs on USB-C."), (2, "The battery lasts 9 hours."), (2, "Ring glows amber."),
    ]
    assert found[2].context == "Hub > Power: The battery lasts 9 hours."


def test_extractive_answer_quotes_the_best_sentence_with_its_citation(index):
    def scorer(question, contexts):
        return [float("KX" in c) for c in contexts]

    ranked = extract_answer(QUESTION, index.search(QUESTION, 3), scorer)
    assert "letters KX" in ranked[0].text and ranked[0].passage == 1


def test_likelihood_scorer_equals_the_models_own_logprobs(tiny_model, tokenizer):
    contexts = ["Shipping: Parcels leave Leeds.", "Returns policy: Refunds are issued within 14 days of the parcel arriving."]
    scores = LikelihoodScorer(tiny_model, tokenizer)("When are refunds issued?", contexts)
    for context, score in zip(contexts, scores):
        prefix = tokenizer(QUESTION_PROMPT.format(context=context), add_special_tokens=False)["input_ids"]
        target = tokenizer(" When are refunds issued?", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = tiny_model(input_ids=torch.tensor([prefix + target])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        expected = sum(float(logp[len(prefix) - 1 + i, t]) for i, t in enumerate(target))
        assert score == pytest.approx(expected, abs=1e-4)


def test_auto_mode_quotes_for_small_local_readers_only(tiny_model, tokenizer):
    assert answer_mode("auto", HFGenerator(tiny_model, tokenizer, "tiny")) == "extractive"
    assert answer_mode("auto", ScriptedGenerator("x")) == "generative"
    assert answer_mode("generative", HFGenerator(tiny_model, tokenizer, "tiny")) == "generative"
    with pytest.raises(Exception, match=r"unknown answer mode 'quote'"):
        answer_mode("quote", ScriptedGenerator("x"))


def test_extractive_answer_with_a_real_model_cites_a_retrieved_passage(index, tiny_model, tokenizer):
    gen = HFGenerator(tiny_model, tokenizer, "tiny")
    result = answer_question(index, QUESTION, gen, k=2, answer="extractive")
    assert result.mode == "extractive" and result.prompt is None and not result.abstained
    assert result.citations and result.sources == [result.passages[result.citations[0] - 1]]
    quoted = result.answer.rsplit(" [", 1)[0]
    assert quoted in result.sources[0].text


def test_extractive_needs_local_weights_or_a_reranker(index):
    with pytest.raises(Exception, match="API-only"):
        answer_question(index, QUESTION, ScriptedGenerator("x"), k=2, answer="extractive")


def test_extractive_rag_strategy_runs_through_the_eval_runner(index, tiny_model, tokenizer, tmp_path):
    import json

    from attune.evaluate.runner import run_task
    from attune.evaluate.tasks import load_task
    from attune.prompting import StrategyContext, build_strategy

    (tmp_path / "q.jsonl").write_text(json.dumps({"question": QUESTION, "answer": "KX"}) + "\n")
    (tmp_path / "t.yaml").write_text(json.dumps({"name": "q", "data": "q.jsonl", "input": "question", "reference": "answer",
                                                 "metrics": ["contains"], "answer": "extractive"}))
    task = load_task(tmp_path / "t.yaml")
    strategy = build_strategy("rag", {"index": str(index.path), "k": 2, "answer": task.spec.answer}, StrategyContext())
    row = run_task(HFGenerator(tiny_model, tokenizer, "tiny"), task, strategy).rows[0]
    assert row["meta"]["answer"] == "extractive" and row["output"].endswith(f"[{row['meta']['cited'][0]}]")
    cited = index.search(QUESTION, 2)[row["meta"]["cited"][0] - 1]
    assert row["prediction"] in cited.text and "[" not in row["prediction"]
