"""Model references, the builtin GGUF cache, generation, chat and clear errors."""

from __future__ import annotations

import io

import pytest

from attune.errors import AttuneError
from attune.models import parse_model_ref
from attune.models.adapters_io import load_adapter, write_fingerprint


def test_reference_kinds(tmp_path, tiny_model_dir):
    assert parse_model_ref("builtin:smollm2-135m-instruct").kind == "builtin"
    assert parse_model_ref(str(tiny_model_dir)).kind == "local"
    assert parse_model_ref("HuggingFaceTB/SmolLM2-135M").kind == "hub"
    api = parse_model_ref("openai:gpt-x@http://127.0.0.1:8000/v1")
    assert (api.kind, api.name, api.base_url, api.has_weights) == ("openai", "gpt-x", "http://127.0.0.1:8000/v1", False)
    with pytest.raises(AttuneError, match="directory has no config.json"):
        parse_model_ref(str(tmp_path))
    with pytest.raises(AttuneError, match="expected openai:MODEL@http://host:port/v1"):
        parse_model_ref("openai:gpt-x")
    with pytest.raises(AttuneError, match="GGUF file not found"):
        parse_model_ref(str(tmp_path / "m.gguf"))


def test_hub_id_without_network_says_how_to_use_a_local_copy(monkeypatch):
    from attune.models import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = r"could not load 'no-such-org/no-such-model' from the Hugging Face hub .* pass the directory instead"
    with pytest.raises(AttuneError, match=expected):
        load_tokenizer("no-such-org/no-such-model")


def test_unknown_builtin_lists_known():
    from attune.models import load_model

    with pytest.raises(AttuneError, match=r"unknown builtin model 'builtin:nope'; known: builtin:smollm2-135m-instruct"):
        load_model("builtin:nope")


def test_api_only_model_refuses_weights():
    from attune.models import load_model

    with pytest.raises(AttuneError, match="is API-only"):
        load_model("openai:m@http://127.0.0.1:1/v1")


def test_generation_and_stop_strings(tiny_model, tokenizer):
    from attune.models import GenerationParams, HFGenerator

    gen = HFGenerator(tiny_model, tokenizer, "tiny", batch_size=2)
    prompts = [[{"role": "user", "content": "hi"}], "raw text", [{"role": "user", "content": "a longer question here"}]]
    outs = gen.generate(prompts, GenerationParams(max_new_tokens=5))
    assert len(outs) == 3 and all(isinstance(o, str) for o in outs)
    assert gen.generate(prompts[:1], GenerationParams(max_new_tokens=5)) == outs[:1]  # batching does not change greedy output
    assert "<|im_start|>assistant" in gen.render(prompts[0])


def _alone(model, tokenizer, ids: list[int], n: int) -> str:
    """`model.generate` on one prompt alone, greedy, decoded as HFGenerator decodes."""
    import torch

    x = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


PROMPTS = ["x", "Hello there, how are you today", "one two", "The quick brown fox jumps over the lazy dog and then",
           "a b c d e f g", "Tell me about adapters", "7", "Once upon a time, in a land far away, there lived"]


def test_hf_generator_equals_generate_alone_with_rows_joining_mid_flight(tiny_model, tokenizer):
    """More prompts than `batch_size`, mixed lengths: each output is `model.generate` on that prompt alone,
    in the caller's order, and the engine really ran rows together and let waiting prompts join."""
    from attune.models import GenerationParams, HFGenerator
    from attune.models.engine import Engine

    model = tiny_model.eval()
    n = 12
    expected = [_alone(model, tokenizer, tokenizer(p, add_special_tokens=False)["input_ids"], n) for p in PROMPTS]
    runs = []
    real = Engine.run

    def spy(engine, requests):
        out = real(engine, requests)
        runs.append(engine.stats)
        return out

    Engine.run = spy
    try:
        got = HFGenerator(model, tokenizer, "tiny", batch_size=3).generate(PROMPTS, GenerationParams(max_new_tokens=n))
    finally:
        Engine.run = real
    assert got == expected
    (stats,) = runs
    assert stats.max_rows == 3 and stats.prefill_passes > 1  # shared decode passes; later prompts prefilled mid-flight
    assert stats.decode_passes < len(PROMPTS) * n


def test_hf_generator_stop_strings_cut_each_row_as_generate_then_truncate(tiny_model, tokenizer):
    """A stop string ends the rows whose text contains it (cut before it), and only those."""
    from attune.models import GenerationParams, HFGenerator
    from attune.models.generation import truncate_at_stop

    model = tiny_model.eval()
    n = 16
    full = [_alone(model, tokenizer, tokenizer(p, add_special_tokens=False)["input_ids"], n) for p in PROMPTS]
    longest = max(full, key=len)
    stop = longest[len(longest) // 2 : len(longest) // 2 + 3]  # occurs in at least one output, mid-text
    assert stop.strip()
    params = GenerationParams(max_new_tokens=n, stop=[stop, "never-generated-stop"])
    got = HFGenerator(model, tokenizer, "tiny", batch_size=3).generate(PROMPTS, params)
    assert got == [truncate_at_stop(t, [stop]) for t in full]
    assert any(g != t for g, t in zip(got, full))  # the stop string did cut something


def test_hf_generator_with_an_active_lora_equals_generate(tiny_model, tokenizer, tmp_path):
    """A loaded adapter runs as the model's active adapter (no `adapter_names`): generate's output, not the base's."""
    from attune.models import GenerationParams, HFGenerator
    from test_serve_engine import save_lora

    base = {p: _alone(tiny_model.eval(), tokenizer, tokenizer(p, add_special_tokens=False)["input_ids"], 10) for p in PROMPTS}
    model = load_adapter(tiny_model, save_lora(tiny_model, tmp_path / "a", seed=3)).eval()
    expected = [_alone(model, tokenizer, tokenizer(p, add_special_tokens=False)["input_ids"], 10) for p in PROMPTS]
    got = HFGenerator(model, tokenizer, "tiny+a", batch_size=4).generate(PROMPTS, GenerationParams(max_new_tokens=10))
    assert got == expected and got != [base[p] for p in PROMPTS]


def test_hf_generator_prefix_tuning_falls_back_to_peft_generate(tiny_model, tokenizer):
    """Prefix tuning adds virtual tokens inside PEFT's forward; the engine refuses it and PEFT's generate runs."""
    from peft import PrefixTuningConfig, get_peft_model

    from attune.models import GenerationParams, HFGenerator
    from attune.models.engine import supports

    model = get_peft_model(tiny_model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    assert not supports(model) and supports(tiny_model)
    expected = [_alone(model, tokenizer, tokenizer(p, add_special_tokens=False)["input_ids"], 6) for p in PROMPTS[:3]]
    assert HFGenerator(model, tokenizer, "prefix").generate(PROMPTS[:3], GenerationParams(max_new_tokens=6)) == expected


def test_hf_generator_sampling_is_seeded_per_row(tiny_model, tokenizer):
    """temperature > 0: the same seed gives the same texts; prompt i samples with seed + i, so two equal
    prompts get different draws; without a seed, torch.manual_seed makes the run repeatable."""
    import torch

    from attune.models import GenerationParams, HFGenerator

    gen = HFGenerator(tiny_model, tokenizer, "tiny", batch_size=2)
    params = GenerationParams(max_new_tokens=12, temperature=1.5, seed=7)
    prompts = ["same prompt"] * 3 + ["another"]
    first = gen.generate(prompts, params)
    assert gen.generate(prompts, params) == first
    assert len(set(first[:3])) > 1
    assert gen.generate(["same prompt"], GenerationParams(max_new_tokens=12, temperature=1.5, seed=8)) == first[1:2]
    unseeded = GenerationParams(max_new_tokens=12, temperature=1.5)
    torch.manual_seed(0)
    a = gen.generate(prompts, unseeded)
    torch.manual_seed(0)
    assert gen.generate(prompts, unseeded) == a


def test_hf_generator_stream_equals_generate(tiny_model, tokenizer):
    from attune.models import GenerationParams, HFGenerator

    gen = HFGenerator(tiny_model, tokenizer, "tiny")
    prompt = [{"role": "user", "content": "say something"}]
    params = GenerationParams(max_new_tokens=12)
    pieces = list(gen.stream(prompt, params))
    assert len(pieces) > 1 and "".join(pieces) == gen.generate([prompt], params)[0]


def test_wrong_base_adapter_is_refused(tmp_path, tiny_model, tokenizer):
    from peft import LoraConfig, get_peft_model

    from conftest import make_tiny_model

    other = make_tiny_model(tokenizer, hidden=32)
    peft_model = get_peft_model(other, LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "a")
    write_fingerprint(tmp_path / "a", other)
    with pytest.raises(AttuneError, match=r"was made for another base model \(hidden_size: adapter 32 vs model 64"):
        load_adapter(tiny_model, tmp_path / "a")
    (tmp_path / "a" / "attune_adapter.json").unlink()  # a plain PEFT adapter: PEFT's shape check, as a clear error
    with pytest.raises(AttuneError, match="does not fit this base model"):
        load_adapter(make_tiny_model(tokenizer), tmp_path / "a")


def test_chat_session_commands(tiny_model_dir):
    from rich.console import Console

    from attune.chat import run_chat

    out = io.StringIO()
    run_chat(str(tiny_model_dir), None, None, 4, 0.0, stdin=io.StringIO("hello\n/system be brief\n/reset\nhi\n/exit\nnever\n"),
             out=Console(file=out, width=200))
    text = out.getvalue()
    assert text.count("bot>") == 2 and "(system prompt set; conversation reset)" in text and "never" not in text


@pytest.mark.slow
def test_builtin_model_answers_and_cache_is_fast():
    """The builtin model answers a simple question sensibly; a cached load takes well under a second or two."""
    import time

    from attune.models import GenerationParams, load_generator, load_model

    t = time.perf_counter()
    load_model("builtin:smollm2-135m-instruct")
    assert time.perf_counter() - t < 5  # cache hit (the one-time GGUF dequantization takes ~17 s)
    gen = load_generator("builtin:smollm2-135m-instruct")
    answer = gen.generate([[{"role": "user", "content": "What is the capital of France?"}]], GenerationParams(max_new_tokens=16))[0]
    assert "Paris" in answer
