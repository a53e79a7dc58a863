"""GGUF export: the tiny Llama written as GGUF loads back in transformers with the same logits and tokenizer."""

from __future__ import annotations

import pytest
import torch

SAMPLE = "Triage this ticket: my invoice was charged twice! <|im_start|>user\nhi 12345<|im_end|>"


def test_gguf_roundtrip_logits_and_tokenizer(tmp_path, tiny_model, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from attune.train.gguf_export import write_gguf

    path = write_gguf(tiny_model, tokenizer, tmp_path / "model.gguf")
    assert path.is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    ids = torch.tensor([tokenizer(SAMPLE)["input_ids"]])
    with torch.no_grad():
        want = tiny_model.eval()(input_ids=ids).logits
        got = loaded.eval()(input_ids=ids).logits
    assert float((want - got).abs().max()) <= 1e-4
    gguf_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    assert gguf_tok(SAMPLE)["input_ids"] == tokenizer(SAMPLE)["input_ids"]
    assert gguf_tok.eos_token_id == tokenizer.eos_token_id


def test_gguf_metadata_mirrors_llama_family(tmp_path, tiny_model, tokenizer):
    import gguf

    from attune.train.gguf_export import write_gguf

    path = write_gguf(tiny_model, tokenizer, tmp_path / "m.gguf", dtype="f16")
    reader = gguf.GGUFReader(str(path))
    fields = reader.fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["llama.block_count"].contents() == 2 and fields["llama.attention.head_count_kv"].contents() == 2
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.chat_template"].contents() == tokenizer.chat_template
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output_norm.weight", "blk.1.attn_q.weight", "blk.0.ffn_down.weight"} <= names


def test_gguf_unsupported_architecture_is_a_clear_error(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    from attune.errors import AttuneError
    from attune.train.gguf_export import write_gguf

    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(AttuneError, match="gpt2"):
        write_gguf(model, tokenizer, tmp_path / "x.gguf")
    assert list(tmp_path.iterdir()) == []


def test_export_command_with_gguf_writes_merged_gguf(tmp_path, tiny_model_dir):
    """`attune export RUN --gguf`: the GGUF beside the merged dir has the merged model's logits."""
    from transformers import AutoModelForCausalLM

    from attune.recipe import load_recipe
    from attune.train.commands import export
    from attune.train.pipeline import run_recipe
    from test_train_pipeline import _recipe

    run = run_recipe(load_recipe(_recipe(tmp_path, tiny_model_dir, max_steps=2)), show_progress=False)
    target = tmp_path / "exported"
    export(run=run, stage=None, merge=True, out=target, gguf=True, gguf_adapter=False, gguf_dtype="f32")
    merged = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    loaded = AutoModelForCausalLM.from_pretrained(target, gguf_file="model.gguf", dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 200, 3000]])
    with torch.no_grad():
        assert float((merged(input_ids=ids).logits - loaded(input_ids=ids).logits).abs().max()) <= 1e-4
