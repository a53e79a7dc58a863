"""`attune serve` end to end: a real uvicorn on 127.0.0.1 (a free port), driven by the official `openai`
client (and httpx where the raw wire matters), on a tiny random model with LoRA adapters made here.

Every generated text is compared with a reference computed outside the server: `attune generate`'s
path (`load_generator`) for the base and adapters, PEFT's `add_weighted_adapter` for `mix:`, and
`answer_question` with a plain generator for `rag:`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from attune.models import GenerationParams, load_generator
from attune.serve.settings import ServeSettings
from conftest import make_tiny_model
from test_serve_engine import save_lora

USER, ADMIN = "user-key-12345", "admin-key-12345"
GREEDY = {"temperature": 0, "max_tokens": 12}


@contextmanager
def running(settings: ServeSettings):
    """Serve `settings` with uvicorn in a thread; yields (base_url, Server)."""
    import uvicorn

    from attune.serve.app import create_app
    from attune.serve.server import Server

    server = Server(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(create_app(server), log_level="warning"))
    thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not web.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        web.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory, tokenizer):
    """A tiny model dir, two adapters (+ one for runtime loading, one for another base) and a RAG index."""
    root = tmp_path_factory.mktemp("serve")
    base = make_tiny_model(tokenizer)
    model_dir = root / "tiny-model"
    base.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    runtime = root / "runtime"
    save_lora(base, root / "billing", seed=1)
    save_lora(base, root / "legal", seed=2)
    save_lora(base, runtime / "extra", seed=3)
    save_lora(make_tiny_model(tokenizer, hidden=32), runtime / "other-base", seed=4)
    (root / "outside").mkdir()
    save_lora(base, root / "outside" / "x", seed=5)
    docs = root / "docs"
    docs.mkdir()
    (docs / "hub.md").write_text("# Resetting the Northwind hub\nHold the reset button for ten seconds until the light blinks blue.\n")
    (docs / "billing.md").write_text("# Refunds\nRefunds are paid to the original card within five working days.\n")
    from attune.rag import build_index

    build_index([docs], root / "index")
    return root


@pytest.fixture(scope="module")
def served(files):
    settings = ServeSettings(
        model=str(files / "tiny-model"), adapters={"billing": str(files / "billing"), "legal": str(files / "legal")},
        describe={"billing": "invoices, refunds, payments, charges on my credit card",
                  "legal": "contracts, lawsuits, court, terms of service and legal liability"},
        routes={"support": ["billing", "legal"]}, rag={"docs": str(files / "index")},
        api_keys=[USER], admin_keys=[ADMIN], adapter_dirs=[str(files / "runtime")],
        max_batch=4, max_queue=8, max_prompt_tokens=256, max_output_tokens=64,
    )
    with running(settings) as (url, server):
        yield url, server


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0] + "/v1", api_key=USER, max_retries=0)


@pytest.fixture(scope="module")
def reference(files):
    """Completions computed outside the server, the way `attune generate` computes them."""
    gens: dict = {}

    def complete(adapter: str | None, messages, n: int = 12) -> str:
        if adapter not in gens:
            gens[adapter] = load_generator(str(files / "tiny-model"), str(files / adapter) if adapter else None)
        return gens[adapter].generate([messages], GenerationParams(max_new_tokens=n))[0]

    return complete


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello to the team"}]


def test_chat_equals_attune_generate(client, reference, tokenizer):
    resp = client.chat.completions.create(model="tiny-model", messages=MESSAGES, **GREEDY)
    assert resp.choices[0].message.content == reference(None, MESSAGES)
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert resp.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert resp.usage.completion_tokens <= 12 and resp.choices[0].finish_reason in ("stop", "length")
    text = client.completions.create(model="tiny-model", prompt="Once upon a time", **GREEDY)
    assert text.choices[0].text == reference(None, "Once upon a time")


def test_streaming_sse_ends_with_done_and_matches(client, served, reference):
    stream = client.chat.completions.create(model="billing", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True}, **GREEDY)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reference("billing", MESSAGES)
    assert chunks[-1].usage.completion_tokens > 0
    with httpx.stream("POST", served[0] + "/v1/completions", headers={"Authorization": f"Bearer {USER}"},
                      json={"model": "tiny-model", "prompt": "Once upon a time", "stream": True, **GREEDY}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"


def test_adapter_by_name_and_models_list(client, reference):
    billing = client.chat.completions.create(model="billing", messages=MESSAGES, **GREEDY)
    assert billing.choices[0].message.content == reference("billing", MESSAGES)
    assert billing.choices[0].message.content != reference(None, MESSAGES)
    assert billing.model_extra["attune"]["adapter"] == "billing"
    models = {m.id: m for m in client.models.list()}
    assert {"tiny-model", "billing", "legal", "route:support", "rag:docs"} <= set(models)
    assert models["tiny-model"].model_extra["parent"] is None
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=MESSAGES, **GREEDY)


def test_mix_equals_peft_weighted_adapter(client, files, reference, tokenizer):
    from attune.models.adapters_io import load_adapter
    from attune.models.generation import HFGenerator
    from attune.models.loading import load_model

    one = client.chat.completions.create(model="mix:billing=1.0", messages=MESSAGES, **GREEDY)
    assert one.choices[0].message.content == reference("billing", MESSAGES)  # a mix of one adapter at weight 1 is it
    model = load_adapter(load_model(str(files / "tiny-model")).model, files / "billing", name="billing")
    model = load_adapter(model, files / "legal", name="legal")
    for method, kwargs in [("linear", {}), ("ties", {"density": 0.2}), ("svd", {})]:
        name = "mix:billing=0.6,legal=0.4" if method == "linear" else f"mix:{method}:billing=0.6,legal=0.4"
        got = client.chat.completions.create(model=name, messages=MESSAGES, **GREEDY).choices[0].message.content
        model.add_weighted_adapter(["billing", "legal"], [0.6, 0.4], method, combination_type=method, **kwargs)
        model.set_adapter(method)
        expected = HFGenerator(model.eval(), tokenizer, "ref").generate([MESSAGES], GenerationParams(max_new_tokens=12))[0]
        assert got == expected, method
    assert len({client.chat.completions.create(model=f"mix:{m}:billing=0.6,legal=0.4", messages=MESSAGES, **GREEDY)
                .choices[0].message.content for m in ("linear", "ties", "svd")}) > 1  # the methods really differ
    with pytest.raises(openai.NotFoundError, match="unknown adapter"):
        client.chat.completions.create(model="mix:billing=0.5,ghost=0.5", messages=MESSAGES, **GREEDY)


def test_route_picks_the_closest_adapter(client, reference):
    refund = [{"role": "user", "content": "I was charged twice, please refund my payment"}]
    contract = [{"role": "user", "content": "Can I sue them for breaking the contract terms in court?"}]
    for messages, expected in [(refund, "billing"), (contract, "legal")]:
        resp = client.chat.completions.create(model="route:support", messages=messages, **GREEDY)
        info = resp.model_extra["attune"]
        assert info["adapter"] == expected
        assert info["route_scores"][expected] == max(info["route_scores"].values())
        assert resp.choices[0].message.content == reference(expected, messages)


def test_rag_answers_with_citations_like_answer_question(client, files, tokenizer):
    from attune.rag import answer_question, open_index

    question = "How do I reset the Northwind hub?"
    resp = client.chat.completions.create(model="rag:docs", messages=[{"role": "user", "content": question}], **GREEDY)
    generator = load_generator(str(files / "tiny-model"))
    expected = answer_question(open_index(files / "index"), question, generator, k=4, params=GenerationParams(max_new_tokens=12),
                               answer="generative")  # the server's engine generator always generates
    assert not expected.abstained
    assert resp.choices[0].message.content == expected.answer
    assert resp.model_extra["citations"] == [{"index": n, **p.to_dict()} for n, p in zip(expected.citations, expected.sources)]
    assert resp.model_extra["attune"]["retrieved"] == len(expected.passages) > 0
    off_topic = client.chat.completions.create(model="rag:docs", messages=[{"role": "user", "content": "Who won the 1954 World Cup?"}],
                                               **GREEDY)
    assert off_topic.model_extra["attune"]["abstained"] and off_topic.model_extra["citations"] == []


def test_bad_key_is_401(served):
    for key in ["wrong-key-000000", ""]:
        bad = openai.OpenAI(base_url=served[0] + "/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="tiny-model", messages=MESSAGES, **GREEDY)
    assert httpx.get(served[0] + "/v1/models").status_code == 401
    assert httpx.get(served[0] + "/health").status_code == 200  # liveness needs no key


def test_oversized_requests_are_400_naming_the_limit(client, served):
    with pytest.raises(openai.BadRequestError, match="limit of 64 .--max-output-tokens"):
        client.chat.completions.create(model="tiny-model", messages=MESSAGES, temperature=0, max_tokens=65)
    long = [{"role": "user", "content": "word " * 400}]
    with pytest.raises(openai.BadRequestError, match="limit is 256 .--max-prompt-tokens"):
        client.chat.completions.create(model="tiny-model", messages=long, **GREEDY)
    huge = httpx.post(served[0] + "/v1/chat/completions", headers={"Authorization": f"Bearer {USER}"},
                      json={"model": "tiny-model", "messages": [{"role": "user", "content": "x" * 1_100_000}]})
    assert huge.status_code == 413 and "--max-body-bytes" in huge.json()["error"]["message"]
    typo = httpx.post(served[0] + "/v1/chat/completions", headers={"Authorization": f"Bearer {USER}"},
                      json={"model": "tiny-model", "messages": MESSAGES, "max_token": 5})
    assert typo.status_code == 422 and "max_token" in typo.json()["error"]["message"]


def test_admin_endpoints_need_the_admin_key(served, client, reference):
    url = served[0] + "/v1/adapters"
    body = {"name": "extra", "path": "extra"}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {USER}"}).status_code == 403
    admin = {"Authorization": f"Bearer {ADMIN}"}
    added = httpx.post(url, json=body, headers=admin)
    assert added.status_code == 200, added.text
    resp = client.chat.completions.create(model="extra", messages=MESSAGES, **GREEDY)
    assert resp.choices[0].message.content == reference("runtime/extra", MESSAGES)
    assert httpx.post(url, json=body, headers=admin).status_code == 409
    assert httpx.delete(url + "/billing", headers=admin).status_code == 403  # configured at startup
    assert httpx.delete(url + "/extra", headers={"Authorization": f"Bearer {USER}"}).status_code == 403
    assert httpx.delete(url + "/extra", headers=admin).status_code == 200
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="extra", messages=MESSAGES, **GREEDY)


def test_wrong_base_adapter_is_400(served):
    r = httpx.post(served[0] + "/v1/adapters", json={"name": "wrong", "path": "other-base"},
                   headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 400 and "made for another base model" in r.json()["error"]["message"]
    assert "wrong" not in served[1].registry.known


@pytest.mark.parametrize("path", ["../outside/x", "{root}/outside/x", "extra/../../outside/x"])
def test_adapter_path_traversal_is_refused(served, files, path):
    r = httpx.post(served[0] + "/v1/adapters", json={"name": "sneaky", "path": path.format(root=files)},
                   headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 400 and "not inside an allowed adapter directory" in r.json()["error"]["message"]


def test_metrics_show_shared_forward_passes(served, client):
    async def burst():
        aclient = openai.AsyncOpenAI(base_url=served[0] + "/v1", api_key=USER, max_retries=0)
        return await asyncio.gather(*[aclient.chat.completions.create(
            model=m, messages=MESSAGES, temperature=0, max_tokens=20) for m in ["tiny-model", "billing", "legal", "billing"]])

    before = served[1].engine.stats.max_rows
    asyncio.run(burst())
    assert max(before, served[1].engine.stats.max_rows) > 1
    text = httpx.get(served[0] + "/metrics", headers={"Authorization": f"Bearer {USER}"}).text
    assert "attune_decode_batch_rows_bucket" in text and 'attune_requests_total{endpoint="chat",status="200"}' in text


@pytest.fixture(scope="module")
def small(files):
    """A server with a small queue, prompt logging on, no keys (loopback)."""
    settings = ServeSettings(model=str(files / "tiny-model"), max_batch=2, max_queue=2, max_output_tokens=400, log_prompts=True)
    with running(settings) as (url, server):
        server.engine._eos = set()  # random weights may emit EOS at once; these tests need long generations
        yield url, server


def test_load_at_twice_the_queue_limit_gives_only_200_and_429(small):
    url, server = small
    capacity = server.settings.max_batch + server.settings.max_queue

    async def one(http: httpx.AsyncClient):
        return await http.post("/v1/completions", json={"model": "tiny-model", "prompt": "load", "max_tokens": 30, "temperature": 0})

    async def burst():
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            return await asyncio.gather(*[one(http) for _ in range(2 * capacity)])

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429} and codes.count(200) >= capacity and 429 in codes, codes
    assert all(int(r.headers["retry-after"]) >= 1 for r in responses if r.status_code == 429)
    assert httpx.get(url + "/health").json()["status"] == "ok"
    assert httpx.post(url + "/v1/completions", json={"model": "tiny-model", "prompt": "after", "max_tokens": 3}).status_code == 200


def test_client_disconnect_cancels_generation(small):
    url, server = small
    cancelled = server.engine.stats.cancelled
    with httpx.stream("POST", url + "/v1/chat/completions", timeout=60,
                      json={"model": "tiny-model", "messages": MESSAGES, "max_tokens": 400, "stream": True}) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i == 3:
                break  # leave mid-generation: the connection closes
    wait_for_cancel(server, cancelled)
    with server.engine.lock:  # engine paused, so the request cannot finish before its client gives up
        with pytest.raises(httpx.ReadTimeout):  # a non-streaming client that gives up
            httpx.post(url + "/v1/completions", json={"model": "tiny-model", "prompt": "x", "max_tokens": 400}, timeout=1.0)
        time.sleep(1.0)  # the server sees the closed connection while the request is still queued
    wait_for_cancel(server, cancelled + 1)


def wait_for_cancel(server, before: int) -> None:
    deadline = time.monotonic() + 30
    while server.engine.stats.cancelled == before:
        assert time.monotonic() < deadline, "generation was not cancelled"
        time.sleep(0.05)
    while server.engine.active:
        assert time.monotonic() < deadline, "the cancelled row was not dropped"
        time.sleep(0.05)


def test_prompt_text_is_logged_only_with_log_prompts(served, small, client, caplog):
    secret = "purple-elephant-7731"
    messages = [{"role": "user", "content": f"remember {secret}"}]
    with caplog.at_level(logging.INFO, logger="attune.serve"):
        client.chat.completions.create(model="tiny-model", messages=messages, **GREEDY)
    assert "chatcmpl-" in caplog.text and secret not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="attune.serve"):
        httpx.post(small[0] + "/v1/chat/completions", json={"model": "tiny-model", "messages": messages, **GREEDY})
    assert secret in caplog.text


def test_base_is_served_under_the_model_string_as_given(client, files, reference):
    """vLLM's convention: a client sends the `-m` string itself (the short alias works too)."""
    given = str(files / "tiny-model")
    models = {m.id: m for m in client.models.list()}
    assert list(models)[:2] == [given, "tiny-model"]
    assert models["billing"].model_extra["parent"] == given
    resp = client.chat.completions.create(model=given, messages=MESSAGES, **GREEDY)
    assert resp.choices[0].message.content == reference(None, MESSAGES) and resp.model == given


def test_served_model_name_overrides(files):
    from attune.serve.errors import ServeError
    from attune.serve.server import Server

    server = Server(ServeSettings(model=str(files / "tiny-model"), served_model_name=["support-bot", "sb"]))
    assert [e["id"] for e in server.model_names()] == ["support-bot", "sb"]
    assert server.resolve("sb", "").kind == "base" and server.name == "support-bot"
    with pytest.raises(ServeError, match="does not exist"):
        server.resolve("tiny-model", "")
    assert ServeSettings(model="builtin:smollm2-135m-instruct").base_names == ["builtin:smollm2-135m-instruct", "smollm2-135m-instruct"]


def test_refuses_non_loopback_without_key(files):
    from attune.errors import AttuneError
    from attune.serve.server import Server

    with pytest.raises(AttuneError, match="non-loopback"):
        Server(ServeSettings(model=str(files / "tiny-model"), host="0.0.0.0"))
    with pytest.raises(AttuneError, match="made for another base model"):
        Server(ServeSettings(model=str(files / "tiny-model"), adapters={"w": str(Path(files) / "runtime" / "other-base")}))


def test_lru_keeps_at_most_max_adapters_and_never_evicts_a_pinned_one(files, reference, tmp_path):
    from attune.serve.errors import ServeError

    data = {"billing": ["My invoice shows a double charge", "How long does a refund take?"],
            "legal": ["Is this clause in the contract enforceable?", "Can they sue me over the terms of service?"]}
    for name, prompts in data.items():  # route profiles from training data (@file), not descriptions
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "ok"}]}) + "\n"
            for p in prompts))
    settings = ServeSettings(
        model=str(files / "tiny-model"), max_adapters=2,
        adapters={"billing": str(files / "billing"), "legal": str(files / "legal"), "extra": str(files / "runtime" / "extra")},
        describe={n: f"@{tmp_path / f'{n}.jsonl'}" for n in data}, routes={"support": ["billing", "legal"]})
    with running(settings) as (url, server):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        for name in ["billing", "extra", "legal", "billing", "extra"]:
            out = client.chat.completions.create(model=name, messages=MESSAGES, **GREEDY).choices[0].message.content
            assert out == reference(name if name != "extra" else "runtime/extra", MESSAGES)
            assert len(server.registry.resident) <= 2
        assert server.registry.evictions >= 4
        routed = client.chat.completions.create(model="route:support", messages=[{"role": "user", "content": "refund my charge"}],
                                                **GREEDY)
        assert routed.model_extra["attune"]["adapter"] == "billing"
        pinned = [server.registry.acquire("billing"), server.registry.acquire("legal")]
        with pytest.raises(ServeError, match="adapter slots") as info:
            server.registry.acquire("extra")
        assert info.value.status == 429
        for p in pinned:
            server.registry.release(p)
        server.registry.release(server.registry.acquire("extra"))
