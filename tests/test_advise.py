"""The method advisor: the issue's situations -> expected top recommendation and reasons; the cost
model against hand-computed values, real parameter counts (transformers, PEFT) and the tensors
autograd really saves; situation files, flags and errors."""

from __future__ import annotations

import json
import weakref

import pytest

from attune.advise import Situation, advise, load_situation, parse_situation
from attune.advise.costs import (
    NF4_BITS,
    TrainSetup,
    activation_values_per_token,
    estimate_memory,
    estimate_time,
    train_flops_per_token,
    trainable_params,
)
from attune.advise.hardware import get_hardware
from attune.advise.shapes import nearest_known, parse_size, shape_from_config
from attune.errors import AttuneError

# (id, situation, expected top method, rules that must be among the top method's reasons)
SITUATIONS = [
    ("api-only", dict(access="api", labelled_examples=200, model_size="70b"), "few-shot", {"api-only", "hundreds-of-labels"}),
    ("volatile-facts-citations", dict(goal="knowledge", unlabelled_tokens=5_000_000, volatility="weekly", citations=True,
                                      model_size="8b", hardware="a100-80gb"), "rag", {"goal", "volatility", "citations"}),
    ("tiny-corpus", dict(goal="knowledge", unlabelled_tokens=30_000, model="builtin:smollm2-135m-instruct"), "rag",
     {"goal", "corpus-size"}),
    ("corpus-of-a-few-pages", dict(goal="knowledge", unlabelled_tokens=1_500, model_size="8b", hardware="l4"), "rag",
     {"corpus-size", "goal"}),
    ("format-tone-500", dict(goal="format", labelled_examples=500, model_size="7b", hardware="l4"), "lora",
     {"hundreds-of-labels", "goal"}),
    ("narrow-task-5k-big-gpu", dict(goal="task", labelled_examples=5000, model_size="1.5b", hardware="h100",
                                    forgetting_tolerance="high"), "full-ft", {"thousands-of-labels", "forgetting"}),
    ("same-but-forgetting-low", dict(goal="task", labelled_examples=5000, model_size="1.5b", hardware="h100",
                                     forgetting_tolerance="low"), "lora", {"thousands-of-labels", "goal"}),
    ("huge-domain-corpus", dict(goal="domain", unlabelled_tokens=2_000_000_000, model="meta-llama/Llama-3.1-8B",
                                hardware="h100", gpu_count=8, budget_gpu_hours=1000), "cpt-replay", {"corpus-size", "goal"}),
    ("preference-pairs", dict(goal="behaviour", preference_pairs=5000, labelled_examples=2000, model_size="3b",
                              hardware="a100-80gb"), "dpo", {"preferences", "goal"}),
    ("latency-bound-big-model", dict(goal="task", labelled_examples=10_000, model_size="70b", hardware="h100", gpu_count=2,
                                     latency_ms=300), "distill", {"latency"}),
    ("many-tenants", dict(goal="task", labelled_examples=20_000, tenants=40, model_size="1b", hardware="l4"), "multi-lora",
     {"tenants", "thousands-of-labels"}),
    ("knowledge-plus-format", dict(goal="knowledge", unlabelled_tokens=2_000_000, labelled_examples=3000, citations=True,
                                   model_size="8b", hardware="a100-80gb"), "rag+lora", {"citations", "goal"}),
    ("no-data", dict(model="builtin:smollm2-135m-instruct"), "zero-shot", {"no-labels"}),
    ("reward-function", dict(goal="task", reward_function=True, prompts=5000, model_size="1.5b", hardware="h100"), "rm-ppo",
     {"reward-function"}),
    ("small-gpu-only-4bit-fits", dict(goal="task", labelled_examples=2000, model_size="8b", hardware="l4", gpu_memory_gb=16),
     "qlora", {"thousands-of-labels"}),
    ("thirty-examples", dict(goal="task", labelled_examples=30, model="builtin:smollm2-135m-instruct"), "few-shot",
     {"few-labels"}),
    ("cpu-ticket-triage", dict(goal="format", labelled_examples=324, tokens_per_example=90,
                               model="builtin:smollm2-135m-instruct"), "lora", {"hundreds-of-labels", "goal"}),
]


@pytest.mark.parametrize("case,situation,top,rules", SITUATIONS, ids=[s[0] for s in SITUATIONS])
def test_situation_top_recommendation(case, situation, top, rules):
    advice = advise(Situation(**{"calibrate": "off", **situation}))  # the fixed profiles: rankings must not depend on load
    ranked = [(o.method.id, round(o.score, 1)) for o in advice.ranked]
    assert advice.top.method.id == top, ranked
    assert rules <= advice.top.rules, advice.top.reasons
    assert all(r.text for r in advice.top.reasons)
    assert all(o.blockers for o in advice.blocked) and all(not o.blockers for o in advice.ranked)


def test_blockers_name_the_missing_thing():
    api = advise(Situation(access="api", labelled_examples=200, model_size="70b"))
    assert "API-only access: there are no weights to train" in api.option("lora").blockers
    assert api.option("rag").blockers == ["no documents to retrieve from"]
    small = advise(Situation(goal="task", labelled_examples=2000, model_size="8b", hardware="l4", gpu_memory_gb=16))
    assert "even with gradient checkpointing" in small.option("lora").blockers[0]
    assert small.option("qlora").cost.setup.gradient_checkpointing  # fits only with checkpointing: said so
    assert "memory" in small.option("qlora").rules
    budget = advise(Situation(goal="domain", unlabelled_tokens=2_000_000_000, model_size="8b", hardware="h100",
                              budget_gpu_hours=10))
    assert "device-hours; the budget is 10.0" in budget.option("cpt-replay").blockers[0]


def test_costs_attached_to_the_recommendation():
    advice = advise(Situation(goal="format", labelled_examples=500, model_size="7b", hardware="l4"))
    cost = advice.top.cost
    assert cost.memory.total_gb <= 24 and cost.memory.setup.adapter == "lora"
    assert cost.time.tokens == 500 * 300 * 3
    few = advice.option("few-shot").cost.query
    assert few.added_tokens == 4 * 300 and few.prompt_tokens == 200 + 4 * 300


# ---- shapes: counts against transformers and PEFT ------------------------------------------------


def test_shape_counts_match_the_real_model_and_peft(tokenizer):
    from tests.conftest import make_tiny_model

    from attune.adapters import apply_adapter, count_parameters, parse_adapter

    model = make_tiny_model(tokenizer)
    shape = shape_from_config(model.config, "tiny")
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert (shape.layers, shape.hidden, shape.intermediate, shape.kv_dim) == (2, 64, 128, 32)
    assert shape.head_params == 0 and shape.embedding_params == len(tokenizer) * 64
    lora, _ = count_parameters(apply_adapter(make_tiny_model(tokenizer), parse_adapter({"type": "lora", "r": 8})))
    assert shape.lora_params(8) == lora
    ia3, _ = count_parameters(apply_adapter(make_tiny_model(tokenizer), parse_adapter({"type": "ia3"})))
    assert trainable_params(shape, TrainSetup(adapter="ia3")) == ia3


def test_known_shapes_match_published_parameter_counts():
    # published sizes: Llama-3.1-8B 8.03B, Mistral-7B 7.24B, Llama-3.1-70B 70.6B, Qwen2.5-0.5B 0.49B
    assert nearest_known(8e9).params == pytest.approx(8.03e9, rel=0.005)
    assert nearest_known(7.2e9).params == pytest.approx(7.24e9, rel=0.005)
    assert nearest_known(70e9).params == pytest.approx(70.55e9, rel=0.005)
    assert nearest_known(0.5e9).params == pytest.approx(0.494e9, rel=0.01)
    assert parse_size("1.5B") == 1.5e9 and parse_size("135m") == 135e6
    with pytest.raises(AttuneError, match="expected a number with M or B"):
        parse_size("big")


# ---- memory and time: hand-computed -------------------------------------------------------------


@pytest.fixture
def tiny_shape(tokenizer):
    from tests.conftest import make_tiny_model

    return shape_from_config(make_tiny_model(tokenizer).config, "tiny")


def test_memory_full_finetuning_by_hand(tiny_shape):
    hw = get_hardware("cpu")
    s, N, V, h, i, L = tiny_shape, tiny_shape.params, tiny_shape.vocab, 64, 128, 2
    mem = estimate_memory(s, hw, TrainSetup(adapter="full", seq_len=128, batch_size=2))
    tokens = 256
    assert mem.parts["weights"] == pytest.approx(N * 4 / 1e9)
    assert mem.parts["gradients"] == pytest.approx(N * 4 / 1e9)
    assert mem.parts["optimizer"] == pytest.approx(N * 8 / 1e9)  # AdamW: two fp32 moments (ZeRO's K for fp32)
    assert mem.parts["activations"] == pytest.approx((L * (11 * h + 4 * i) + 3 * h) * tokens * 4 / 1e9)
    assert mem.parts["loss head"] == pytest.approx((2 * tokens * V * 4 + tokens * h * 4 + V * h * 4) / 1e9)
    assert mem.parts["runtime"] == hw.runtime_gb
    # one micro-batch per step: gradients are written as activations are freed -> the larger of the two
    peak = mem.parts["weights"] + mem.parts["optimizer"] + mem.parts["runtime"]
    assert mem.total_gb == pytest.approx(peak + max(mem.parts["activations"] + mem.parts["loss head"], mem.parts["gradients"]))
    accum = estimate_memory(s, hw, TrainSetup(adapter="full", seq_len=128, batch_size=2, grad_accum=2))
    assert accum.total_gb == pytest.approx(sum(accum.parts.values()))


def test_memory_qlora_and_gpu_precision_by_hand(tiny_shape):
    s = tiny_shape
    hw = get_hardware("h100")
    lora = s.lora_params(16)
    mem = estimate_memory(s, hw, TrainSetup(adapter="qlora", seq_len=100, batch_size=1))
    quantized = s.linear_params
    assert mem.parts["weights"] == pytest.approx((quantized * NF4_BITS / 8 + (s.params - quantized) * 4 + lora * 4) / 1e9)
    assert mem.parts["gradients"] == pytest.approx(lora * 4 / 1e9)
    full = estimate_memory(s, hw, TrainSetup(adapter="full", seq_len=100))
    assert full.parts["weights"] == pytest.approx(s.params * 2 / 1e9)  # bf16 on GPUs
    assert full.parts["optimizer"] == pytest.approx(s.params * 4 / 1e9)  # AdamW moments in the param dtype
    gc = activation_values_per_token(s, TrainSetup(adapter="full", gradient_checkpointing=True))
    assert gc == 2 * 64 + (11 * 64 + 4 * 128) + 3 * 64


def test_activation_formula_matches_what_autograd_saves(tokenizer):
    """The values counted per token equal the tensors autograd really keeps (hooked), full FT and LoRA."""
    import torch
    from tests.conftest import make_tiny_model

    from attune.adapters import apply_adapter, parse_adapter
    from attune.train.attention import packed_attention
    from attune.train.logprobs import lm_loss_sum

    B, T = 2, 128
    for adapter in ("full", "lora"):
        model = make_tiny_model(tokenizer)
        shape = shape_from_config(model.config, "tiny")
        if adapter == "lora":
            model = apply_adapter(model, parse_adapter({"type": "lora"}))
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        saved: list[weakref.ref] = []

        def pack(t, saved=saved):
            saved.append(weakref.ref(t))
            return t

        ids = torch.randint(0, 1000, (B, T))
        with packed_attention(model), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = lm_loss_sum(model, ids, ids, position_ids=torch.arange(T).repeat(B, 1))
        # what the graph still holds once the forward is done: tensors freed on the way (the fused
        # head's per-chunk graphs) are dead, so a freed address reused later cannot double-count
        alive = {s.untyped_storage().data_ptr(): s.untyped_storage().nbytes() for r in saved if (s := r()) is not None}
        kept = sum(n for ptr, n in alive.items() if ptr not in params)
        del loss
        # the fused LM head keeps the hidden-state gradient, and (full FT) an fp32 head gradient
        head = B * T * shape.hidden * 4 + (shape.vocab * shape.hidden * 4 if adapter == "full" else 0)
        estimate = activation_values_per_token(shape, TrainSetup(adapter=adapter)) * B * T * 4 + head
        assert estimate == pytest.approx(kept, rel=0.15), adapter


def test_time_from_flops_by_hand(tiny_shape):
    s = tiny_shape
    hw = get_hardware("a100-80gb", count=4)
    setup = TrainSetup(adapter="full", seq_len=512)
    per_token = 6 * s.compute_params + 6 * s.layers * 512 * s.hidden
    assert train_flops_per_token(s, setup) == per_token
    lora = train_flops_per_token(s, TrainSetup(adapter="lora", seq_len=512))
    assert lora == 4 * s.compute_params + 6 * s.layers * 512 * s.hidden
    t = estimate_time(s, hw, setup, 1e9)
    assert t.seconds == pytest.approx(1e9 * per_token / (312e12 * 0.35 * 4))
    assert t.device_hours == pytest.approx(t.seconds * 4 / 3600)


# ---- situations: files, flags, errors ------------------------------------------------------------


def test_situation_file_errors_name_line_and_field(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("goal: format\nlabeled_examples: 10\nhardware: tpu\n")
    with pytest.raises(AttuneError) as e:
        load_situation(f)
    msg = str(e.value)
    assert f"{f}:2: labeled_examples: unknown key 'labeled_examples' (did you mean 'labelled_examples'?)" in msg
    assert f"{f}:3: hardware: unknown hardware 'tpu'" in msg
    with pytest.raises(AttuneError, match="situation file not found"):
        load_situation(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(AttuneError, match="a situation is a YAML mapping"):
        load_situation(tmp_path / "list.yaml")
    with pytest.raises(AttuneError, match="labelled_examples: Input should be greater than or equal to 0"):
        parse_situation({"labelled_examples": -1})


def test_unreadable_hub_model_is_a_clear_error():
    with pytest.raises(AttuneError, match="not in the local Hugging Face cache.*model_size"):
        advise(Situation(model="someone/unknown-model-xyz", labelled_examples=10))


def test_builtin_scenarios_load_and_rank():
    from attune.builtin import ROOT

    files = sorted((ROOT / "scenarios").glob("*.yaml"))
    assert len(files) >= 3
    for f in files:
        advice = advise(load_situation(f"builtin:scenarios/{f.stem}"))
        assert advice.ranked, f


def test_cli_flags_override_the_file_and_print_json(tmp_path):
    from typer.testing import CliRunner

    from attune.cli import app

    f = tmp_path / "s.yaml"
    f.write_text("goal: format\nlabelled_examples: 30\nmodel_size: 1b\n")
    runner = CliRunner()
    res = runner.invoke(app, ["advise", "--situation", str(f), "--labelled-examples", "500", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["situation"]["labelled_examples"] == 500 and out["situation"]["goal"] == "format"
    assert out["ranked"][0]["method"] == "lora" and out["ranked"][0]["memory_gb"] > 0
    res = runner.invoke(app, ["advise", "--labelled-examples", "30", "--citations"])
    assert res.exit_code == 0 and "Few-shot prompting" in res.output and "## Ruled out" in res.output


def test_interactive_questions_build_a_situation(monkeypatch):
    """On a terminal with no flags the advisor asks; empty answers keep the defaults."""
    import io

    from rich.console import Console

    from attune.advise.commands import QUESTIONS, ask

    answers = {"goal": "format", "labelled_examples": "500", "model_size": "7b", "hardware": "l4", "citations": "n"}
    feed = iter(answers.get(name, "") for name, _ in QUESTIONS)
    monkeypatch.setattr("builtins.input", lambda *a, **k: next(feed))
    got = ask(Console(file=io.StringIO(), force_terminal=False))
    situation = parse_situation(got)
    assert (situation.goal, situation.labelled_examples, situation.model_size, situation.hardware) == ("format", 500, "7b", "l4")
    assert situation.access == "weights" and situation.citations is False
    assert advise(situation).top.method.id == "lora"
