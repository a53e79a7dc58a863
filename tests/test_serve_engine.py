"""The serving engine and its parts, without HTTP: continuous batching against `model.generate`
one request at a time, per-row sampling, stop strings, `mix:` parsing, auth, adapter paths, vLLM argv."""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import pytest
import torch

from attune.errors import AttuneError
from attune.models.engine import BASE, Delta, Engine, Finished, QueueFull, Request
from attune.models.generation import GenerationParams
from conftest import make_tiny_model


def save_lora(base_model, path, seed: int, targets=("q_proj", "v_proj", "o_proj"), r: int = 8):
    """A random (non-zero) LoRA on `base_model`, saved in PEFT format with attune's base fingerprint."""
    import copy

    from peft import LoraConfig, get_peft_model

    from attune.models.adapters_io import write_fingerprint

    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets), init_lora_weights=False)
    model = get_peft_model(copy.deepcopy(base_model), config)
    model.save_pretrained(str(path))
    write_fingerprint(path, base_model)
    return path


def collect(sink: queue.Queue) -> tuple[str, Finished]:
    text = ""
    while not isinstance(event := sink.get(timeout=60), Finished):
        assert isinstance(event, Delta)
        text += event.text
    return text, event


@pytest.fixture
def peft_model(tiny_model, tmp_path):
    """The tiny model with two different LoRA adapters loaded (as the registry names them)."""
    from attune.models.adapters_io import load_adapter

    a = save_lora(tiny_model, tmp_path / "a", seed=1)
    b = save_lora(tiny_model, tmp_path / "b", seed=2, targets=("q_proj", "gate_proj"))
    model = load_adapter(tiny_model, a, name="adapter-a")
    model = load_adapter(model, b, name="adapter-b")
    return model.eval()


def reference(model, tokenizer, prompt_ids: list[int], adapter: str, n: int) -> str:
    """`model.generate` on one request alone, with only its adapter active."""
    ids = torch.tensor([prompt_ids])
    kwargs = dict(max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.inference_mode():
        if adapter == BASE:
            with model.disable_adapter():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        else:
            model.set_adapter(adapter)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_batched_greedy_equals_generate_one_at_a_time_with_mixed_adapters(peft_model, tokenizer):
    """Rows with different adapters and lengths, joining mid-flight, queueing beyond max_batch:
    each completion equals the request run alone."""
    prompts = ["Hello there, how are you", "x", "The quick brown fox jumps over the lazy dog and then", "one two",
               "Tell me about adapters", "a b c d e f g"]
    adapters = ["adapter-a", BASE, "adapter-b", "adapter-a", "adapter-b", BASE]
    lengths = [9, 14, 20, 6, 11, 16]
    engine = Engine(peft_model, tokenizer, max_batch=3, max_queue=10)
    results: dict[int, tuple[str, Finished]] = {}
    sinks = [queue.Queue() for _ in prompts]

    def submit(i: int) -> None:
        ids = tokenizer(prompts[i], add_special_tokens=False)["input_ids"]
        engine.submit(Request(ids, GenerationParams(max_new_tokens=lengths[i]), sinks[i].put, adapters[i]))

    def client(i: int) -> None:
        if i >= 3:
            time.sleep(0.03 * i)  # staggered: later requests join a running batch
            submit(i)
        results[i] = collect(sinks[i])

    for i in range(3):  # queued before the engine starts, so its first pass admits a full batch of 3
        submit(i)
    engine.start()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    engine.stop()
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        text, done = results[i]
        assert text == reference(peft_model, tokenizer, ids, adapters[i], lengths[i]), i
        assert done.prompt_tokens == len(ids) and done.reason in ("length", "stop")
    assert engine.stats.max_rows == 3  # forward passes were shared
    assert engine.stats.mixed_passes > 0  # and mixed adapters in one pass
    assert engine.stats.decode_passes < sum(lengths)


def test_cancelled_request_stops_and_frees_its_row(tiny_model, tokenizer):
    engine = Engine(tiny_model.eval(), tokenizer, max_batch=2, max_queue=0)
    engine._eos = set()  # a random model may emit EOS early; this test needs a long generation
    engine.start()
    sink: queue.Queue = queue.Queue()
    req = Request([1, 2, 3], GenerationParams(max_new_tokens=400), sink.put)
    engine.submit(req)
    sink.get(timeout=30)
    req.cancel()
    text, done = collect(sink)
    engine.stop()
    assert done.reason == "cancelled" and done.completion_tokens < 400
    assert engine.stats.cancelled == 1 and engine.active == 0


def test_run_in_the_callers_thread_queues_beyond_max_batch_and_mixes_adapters(peft_model, tokenizer):
    """`Engine.run`: no thread; 7 requests through 2 rows, each equal to the request run alone, in order."""
    prompts = ["Hello there", "x", "The quick brown fox jumps over", "one two", "adapters", "a b c d", "zz top"]
    adapters = ["adapter-a", BASE, "adapter-b", BASE, "adapter-a", "adapter-b", BASE]
    lengths = [5, 9, 7, 3, 8, 6, 4]
    seen: list = []
    engine = Engine(peft_model, tokenizer, max_batch=2, max_queue=0)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    requests = [Request(i, GenerationParams(max_new_tokens=n), seen.append, a) for i, n, a in zip(ids, lengths, adapters)]
    done = engine.run(requests)
    assert [c.text for c in done] == [reference(peft_model, tokenizer, i, a, n) for i, a, n in zip(ids, adapters, lengths)]
    assert [c.finished.prompt_tokens for c in done] == [len(i) for i in ids]
    assert sum(isinstance(e, Finished) for e in seen) == len(prompts)  # the callers' sinks saw every event too
    assert engine.stats.max_rows == 2 and engine.stats.prefill_passes > 2 and engine.stats.mixed_passes > 0
    assert engine._thread is None and engine.active == 0 and engine.waiting == 0


def test_closing_steps_early_cancels_the_rest(tiny_model, tokenizer):
    engine = Engine(tiny_model.eval(), tokenizer, max_batch=1)
    engine._eos = set()
    events: list = []
    requests = [Request([1, 2, 3], GenerationParams(max_new_tokens=50), events.append) for _ in range(3)]
    steps = engine.steps(requests)
    for _ in range(4):
        next(steps)
    steps.close()
    ends = [e for e in events if isinstance(e, Finished)]
    assert [e.reason for e in ends] == ["cancelled"] * 3 and ends[0].completion_tokens == 4
    assert engine.active == 0 and engine.waiting == 0
    assert [c.finished.reason for c in engine.run(requests[:1])] == ["length"]  # usable again afterwards


def test_queue_limit_raises_queue_full(tiny_model, tokenizer):
    engine = Engine(tiny_model.eval(), tokenizer, max_batch=1, max_queue=1)  # not started: nothing drains
    engine.submit(Request([1], GenerationParams(), lambda e: None))  # takes the free batch slot
    engine.submit(Request([1], GenerationParams(), lambda e: None))  # waits
    with pytest.raises(QueueFull) as info:
        engine.submit(Request([1], GenerationParams(), lambda e: None))
    assert info.value.retry_after >= 1


def test_nucleus_probs_hand_computed():
    from attune.models.sampling import nucleus_probs

    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    assert torch.allclose(nucleus_probs(logits, 1.0, 1.0), torch.tensor([0.5, 0.3, 0.2]))
    # top_p 0.6: 0.5 alone does not reach it, 0.5 + 0.3 does -> {0, 1} renormalized
    assert torch.allclose(nucleus_probs(logits, 1.0, 0.6), torch.tensor([0.625, 0.375, 0.0]))
    assert torch.allclose(nucleus_probs(logits, 1.0, 0.1), torch.tensor([1.0, 0.0, 0.0]))
    # temperature 2: softmax(log p / 2) = sqrt(p) / sum(sqrt(p))
    sqrt = torch.tensor([0.5, 0.3, 0.2]).sqrt()
    assert torch.allclose(nucleus_probs(logits, 2.0, 1.0), sqrt / sqrt.sum())


def test_seeded_sampling_is_reproducible_and_rows_independent():
    from attune.models.sampling import next_tokens

    logits = torch.zeros(3, 1000)

    def draw(seed_a: int, seed_c: int):
        settings = [(1.0, 1.0, torch.Generator().manual_seed(seed_a)), (0.0, 1.0, None),
                    (1.0, 1.0, torch.Generator().manual_seed(seed_c))]
        return [next_tokens(logits.clone(), settings).tolist() for _ in range(1)][0]

    assert draw(1, 2) == draw(1, 2)
    assert draw(1, 2)[0] == draw(1, 3)[0]  # row 0 does not depend on row 2's seed
    assert draw(1, 2)[1] == 0  # greedy row: argmax of equal logits = the first


def test_text_stream_holds_back_a_possible_stop_string(tokenizer):
    from attune.models.sampling import TextStream

    ids = tokenizer("Hello wor ENDING now", add_special_tokens=False)["input_ids"]
    stream = TextStream(tokenizer, ["END"])
    pieces, stopped = [], False
    for t in ids:
        piece, stopped = stream.add(t)
        pieces.append(piece)
        if stopped:
            break
    assert stopped and "".join(pieces) == "Hello wor "
    assert all("E" not in p for p in pieces)
    plain = TextStream(tokenizer, [])
    assert "".join(plain.add(t)[0] for t in ids) + plain.flush() == "Hello wor ENDING now"


def test_text_stream_never_splits_a_character(tokenizer):
    from attune.models.sampling import TextStream

    ids = tokenizer("naïve café 東京", add_special_tokens=False)["input_ids"]
    stream = TextStream(tokenizer, [])
    pieces = [stream.add(t)[0] for t in ids]
    assert all("\ufffd" not in p for p in pieces) and "".join(pieces) == "naïve café 東京"


def test_parse_mix():
    from attune.serve.combine import parse_mix

    spec = parse_mix("mix:support=0.7,legal=0.3")
    assert spec.method == "linear" and spec.parts == (("support", 0.7), ("legal", 0.3))
    assert parse_mix("mix:ties:a=.5,b=0.5").method == "ties"
    assert parse_mix("mix:b=0.50,a=0.5").peft_name == parse_mix("mix:a=.5,b=0.5").peft_name
    for bad, words in [("mix:", "no adapters"), ("mix:a", "NAME=WEIGHT"), ("mix:a=x", "NAME=WEIGHT"),
                       ("mix:cat:a=1", "unknown mix method"), ("mix:a=1,a=2", "twice"), ("mix:a=nan", "NAME=WEIGHT")]:
        with pytest.raises(AttuneError, match=words):
            parse_mix(bad)


def test_auth_rules():
    from attune.serve.auth import Auth
    from attune.serve.errors import ServeError

    with pytest.raises(AttuneError, match="non-loopback"):
        Auth([], [], loopback=False)
    open_auth = Auth([], [], loopback=True)
    open_auth.check(None)
    with pytest.raises(ServeError) as e:
        open_auth.check(None, admin=True)
    assert e.value.status == 403
    auth = Auth(["user-key-1"], ["admin-key-1"], loopback=False)
    auth.check("Bearer user-key-1")
    auth.check("Bearer admin-key-1", admin=True)
    for header, admin, status in [(None, False, 401), ("Bearer nope-nope", False, 401), ("user-key-1", False, 401),
                                  ("Bearer user-key-1", True, 403)]:
        with pytest.raises(ServeError) as e:
            auth.check(header, admin=admin)
        assert e.value.status == status


def test_keys_file(tmp_path):
    from attune.serve.auth import read_keys_file

    f = tmp_path / "keys"
    f.write_text("# comment\nuser-key-1\n\nadmin:admin-key-1\n")
    assert read_keys_file(f) == (["user-key-1"], ["admin-key-1"])
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(AttuneError, match="no keys"):
        read_keys_file(tmp_path / "empty")


def test_runtime_adapter_paths_stay_inside_allowed_dirs(tmp_path):
    from attune.serve.errors import ServeError
    from attune.serve.registry import inside

    root = tmp_path / "adapters"
    (root / "good").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "link").symlink_to(tmp_path / "secret")
    assert inside(Path("good"), [root]) == (root / "good").resolve()
    for bad in ["../secret", str(tmp_path / "secret"), "link", "good/../../secret"]:
        with pytest.raises(ServeError, match="not inside an allowed adapter directory"):
            inside(Path(bad), [root])


def test_only_plain_lora_is_served(tokenizer, tmp_path):
    from peft import IA3Config, LoraConfig, get_peft_model

    from attune.serve.errors import ServeError
    from attune.serve.registry import lora_rank

    assert lora_rank(save_lora(make_tiny_model(tokenizer), tmp_path / "lora", seed=0, r=4)) == 4
    dora = LoraConfig(r=4, target_modules=["q_proj"], use_dora=True)
    get_peft_model(make_tiny_model(tokenizer), dora).save_pretrained(str(tmp_path / "dora"))
    with pytest.raises(ServeError, match="DoRA adapter.*attune export"):
        lora_rank(tmp_path / "dora")
    ia3 = IA3Config(target_modules=["q_proj"], feedforward_modules=[])
    get_peft_model(make_tiny_model(tokenizer), ia3).save_pretrained(str(tmp_path / "ia3"))
    with pytest.raises(ServeError, match="IA3 adapter"):
        lora_rank(tmp_path / "ia3")


def test_vllm_command(tiny_model, tiny_model_dir, tmp_path):
    from attune.serve.settings import ServeSettings
    from attune.serve.vllm import exec_vllm, vllm_command

    a = save_lora(tiny_model, tmp_path / "a", seed=0, r=8)
    b = save_lora(tiny_model, tmp_path / "b", seed=1, r=12)
    settings = ServeSettings(model=str(tiny_model_dir), adapters={"billing": str(a), "legal": str(b)}, port=9000,
                             api_keys=["secret-key-1"], max_batch=32)
    cmd = vllm_command(settings, "/models/tiny")
    assert cmd[:3] == ["vllm", "serve", "/models/tiny"]
    flags = dict(zip(cmd[3::2], cmd[4::2]))
    assert flags["--port"] == "9000" and flags["--max-num-seqs"] == "32"
    names = cmd.index("--served-model-name")
    assert cmd[names + 1: names + 3] == [str(tiny_model_dir), "tiny-model"]  # the -m string as given, then the alias
    assert "--enable-lora" in cmd and cmd[cmd.index("--max-lora-rank") + 1] == "16"  # rank 12 rounded up to vLLM's 16
    lora = cmd[cmd.index("--lora-modules") + 1: cmd.index("--lora-modules") + 3]
    assert lora == [f"billing={a.resolve()}", f"legal={b.resolve()}"]
    assert cmd[-2:] == ["--api-key", "secret-key-1"]
    with pytest.raises(AttuneError, match="does not support --route"):
        vllm_command(settings.model_copy(update={"routes": {"r": ["billing", "legal"]}}), "/m")
    assert exec_vllm(settings, dry_run=True)[2] == str(tiny_model_dir)
    if __import__("shutil").which("vllm") is None:
        with pytest.raises(AttuneError, match="vLLM is not installed here"):
            exec_vllm(settings)


def test_cli_vllm_dry_run_prints_the_command(tiny_model_dir, tiny_model, tmp_path):
    from typer.testing import CliRunner

    from attune.cli import app

    a = save_lora(tiny_model, tmp_path / "a", seed=0)
    result = CliRunner().invoke(app, ["serve", "-m", str(tiny_model_dir), "-a", f"x={a}", "--backend", "vllm", "--dry-run"])
    assert result.exit_code == 0, result.output
    cmd = json.loads(result.output.strip().splitlines()[-1])
    assert cmd[:2] == ["vllm", "serve"] and f"x={a.resolve()}" in cmd
    bad = CliRunner().invoke(app, ["serve", "-m", str(tiny_model_dir), "-a", "x"])
    assert bad.exit_code != 0 and "expected NAME=DIR" in str(bad.exception)
