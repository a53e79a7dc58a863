"""Fuzz `attune serve` from its own OpenAPI schema (issue 22): zero 5xx, zero hangs, and well-formed streams
running beside the fuzzer stay exactly what they are alone.

Bodies are drawn from the schema's request models (`_from_schema`: the JSON Schema subset pydantic
emits, as Hypothesis strategies), then are mutated: a field set to any
JSON value, the model name swapped for a served one (so generation really runs), the whole body replaced
by arbitrary JSON or bytes; headers carry no key, a wrong key, the user key or the admin key. Bounded in
count and time, on loopback, derandomized (the same requests every run). The figures in docs/serving.md
come from:  python -m pytest -q -s tests/test_serve_fuzz.py
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from attune.serve.settings import ServeSettings
from conftest import make_tiny_model
from test_serve import running
from test_serve_engine import save_lora

MAX_REQUESTS = 300
BUDGET_SECONDS = 40
USER, ADMIN = "user-key-12345", "admin-key-12345"
HEADERS = [{}, {"Authorization": "Bearer wrong-key-0000"}, {"Authorization": f"Bearer {USER}"},
           {"Authorization": f"Bearer {ADMIN}"}, {"Authorization": f"Bearer {USER}", "Content-Type": "text/plain"}]
MODELS = ["tiny-model", "good", "mix:good=0.5", "mix:ties:good=1,good2=1", "route:x", "rag:x", "nope"]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _from_schema(node: dict, components: dict):
    """A strategy for values valid under `node` (the JSON Schema subset pydantic emits)."""
    if "$ref" in node:
        return _from_schema(components[node["$ref"].rsplit("/", 1)[1]], components)
    if "anyOf" in node:
        return st.one_of([_from_schema(n, components) for n in node["anyOf"]])
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "string":
        return st.text(min_size=node.get("minLength", 0), max_size=node.get("maxLength", 40))
    if kind == "integer":
        low = node.get("minimum", node.get("exclusiveMinimum", -1 - 2**70) + 1)
        return st.integers(min_value=low, max_value=node.get("maximum"))
    if kind == "number":
        return st.floats(min_value=node.get("minimum", node.get("exclusiveMinimum")), max_value=node.get("maximum"),
                         exclude_min="exclusiveMinimum" in node, allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(_from_schema(node.get("items", {}), components), min_size=node.get("minItems", 0),
                        max_size=min(node.get("maxItems", 4), 4))
    if kind == "object":
        props = node.get("properties", {})
        required = set(node.get("required", []))
        if not props:
            return st.dictionaries(st.text(max_size=10), JSON, max_size=4)
        return st.fixed_dictionaries({k: _from_schema(v, components) for k, v in props.items() if k in required},
                                     optional={k: _from_schema(v, components) for k, v in props.items() if k not in required})
    return JSON


def _body_strategy(schema: dict, operation: dict):
    ref = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if ref is None:
        return st.none()
    valid = _from_schema(ref, schema["components"]["schemas"])

    def mutate(body: dict, data) -> dict:
        body = dict(body)
        if "model" in body and data.draw(st.booleans()):
            body["model"] = data.draw(st.sampled_from(MODELS))
        if "path" in body and data.draw(st.booleans()):
            body["path"] = data.draw(st.sampled_from(["good", "good2", "../good", "/etc", "good/adapter_config.json"]))
        if body and data.draw(st.booleans()):
            body[data.draw(st.sampled_from(sorted(body)))] = data.draw(JSON)
        return body

    return st.one_of(
        st.tuples(valid, st.data()).map(lambda pair: mutate(pair[0], pair[1])),
        valid,
        JSON,
        st.binary(max_size=64),
    )


def test_fuzz_from_openapi_no_5xx_no_hangs_streams_untouched(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("fuzz")
    base = make_tiny_model(tokenizer)
    base.save_pretrained(root / "tiny-model")
    tokenizer.save_pretrained(root / "tiny-model")
    save_lora(base, root / "adapters" / "good", seed=1)
    save_lora(base, root / "adapters" / "good2", seed=2)
    settings_ = ServeSettings(model=str(root / "tiny-model"), api_keys=[USER], admin_keys=[ADMIN],
                              adapters={"good": str(root / "adapters" / "good"), "good2": str(root / "adapters" / "good2")},
                              adapter_dirs=[str(root / "adapters")], max_batch=4, max_queue=8, max_adapters=4,
                              max_prompt_tokens=64, max_output_tokens=32, max_body_bytes=4096)
    stream_body = {"model": "good", "prompt": "A well-formed request", "max_tokens": 32, "temperature": 0, "stream": True}
    with running(settings_) as (url, server):
        schema = httpx.get(url + "/openapi.json", headers=HEADERS[2]).json()
        operations = [(method.upper(), path, _body_strategy(schema, op))
                      for path, item in schema["paths"].items() for method, op in item.items()]
        alone = _stream(url, stream_body)
        statuses: Counter[int] = Counter()
        hangs: list[str] = []
        done = threading.Event()
        streams: list[str] = []

        def beside() -> None:  # well-formed streams, one after another, for as long as the fuzzer runs
            while not done.is_set():
                streams.append(_stream(url, stream_body))

        worker = threading.Thread(target=beside)
        started = time.monotonic()
        worker.start()
        with httpx.Client(base_url=url, timeout=30) as http:

            @settings(max_examples=MAX_REQUESTS, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(st.data())
            def fuzz(data) -> None:
                method, path, bodies = data.draw(st.sampled_from(operations))
                if "{" in path:
                    path = path.replace("{name}", quote(data.draw(st.text(min_size=1, max_size=30)), safe=""))
                body = data.draw(bodies)
                headers = data.draw(st.sampled_from(HEADERS))
                content = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
                if time.monotonic() - started > BUDGET_SECONDS:  # drawn all the same, so a replay draws alike
                    return
                try:
                    r = http.request(method, path, content=content, headers=headers)
                except httpx.TimeoutException:
                    hangs.append(f"{method} {path} {content!r:.200}")
                    return
                statuses[r.status_code] += 1
                assert r.status_code < 500, f"{method} {path} {content!r:.300} -> {r.status_code} {r.text[:300]}"

            fuzz()
        seconds = time.monotonic() - started
        done.set()
        worker.join(timeout=120)
        health = httpx.get(url + "/health").json()
    sent = sum(statuses.values()) + len(hangs)
    print(f"\nfuzz: {sent} requests in {seconds:.1f} s over {len(operations)} operations; statuses "
          f"{dict(sorted(statuses.items()))}; 5xx: {sum(n for s, n in statuses.items() if s >= 500)}; hangs: {len(hangs)}; "
          f"concurrent streams intact: {sum(s == alone for s in streams)}/{len(streams)}")
    assert not hangs, hangs[:3]
    assert sent >= 50 and len(statuses) > 3  # it really exercised the API
    assert streams and all(s == alone for s in streams)
    assert health["status"] == "ok" and health["restarts"] == 0


def _stream(url: str, body: dict) -> str:
    """The text of one SSE completion, or a description of what went wrong with it."""
    text = ""
    with httpx.stream("POST", url + "/v1/completions", json=body, headers=HEADERS[2], timeout=60) as r:
        if r.status_code != 200:
            return f"status {r.status_code}"
        lines = [line for line in r.iter_lines() if line]
    if lines[-1] != "data: [DONE]":
        return f"no [DONE]: {lines[-1]}"
    for line in lines[:-1]:
        obj = json.loads(line.removeprefix("data: "))
        if "choices" not in obj:
            return f"error chunk: {obj}"
        text += obj["choices"][0]["text"]
    return text
