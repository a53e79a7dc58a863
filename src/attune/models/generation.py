"""Text generation behind one small interface, for local weights and API-only models alike.

Evaluation, prompting strategies, RAG, distillation teachers and `attune chat` all talk to a
`Generator`; none of them cares whether tokens come from transformers on this CPU or from an
OpenAI-compatible endpoint.

A prompt is either raw text (sent as is, after the tokenizer's BOS if it uses one) or a list of
chat messages (`[{"role": "user", "content": "..."}]`, rendered by `data.render.render_chat`: the
model's chat template, or attune's plain template for a model without one, exactly as training
renders them).

`HFGenerator` decodes through the continuous-batching engine (`models/engine.py`, the one `attune
serve` runs): every prompt is queued at once, at most `batch_size` rows decode together, and a
finished row's slot goes to the next prompt at the following step. Greedy output equals
`model.generate` on each prompt alone (tests/test_models.py, tests/test_arch_matrix.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, Union

from attune.errors import AttuneError
from attune.models.sampling import GenerationParams

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Message = dict[str, str]
Prompt = Union[str, list[Message]]


class Generator(Protocol):
    """Anything that turns prompts into completions."""

    name: str

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]: ...


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut `text` at the first occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


BATCH_SIZE = 16  # rows decoding together; measured in docs/evaluation.md ("Generation speed")


class HFGenerator:
    """Generation with a transformers model (optionally wrapped by PEFT), through the batching engine."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str, batch_size: int = BATCH_SIZE
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size

    def render(self, prompt: Prompt) -> str:
        """The exact text the model sees for `prompt` (chat template applied for messages)."""
        from attune.data.render import render_chat

        return prompt if isinstance(prompt, str) else render_chat(self.tokenizer, prompt, add_generation_prompt=True)

    def encode(self, prompt: Prompt) -> list[int]:
        """The prompt's token ids, as training tokenizes the start of a document."""
        from attune.data.render import document_ids

        return document_ids(self.tokenizer, self.render(prompt))

    def stops(self, prompt: Prompt, params: GenerationParams) -> list[str]:
        """The caller's stop strings, plus the plain chat template's turn marker for a chat prompt."""
        from attune.data.render import chat_stop

        return list(params.stop) + ([] if isinstance(prompt, str) else chat_stop(self.tokenizer))

    def reply(self, text: str, prompt: Prompt) -> str:
        """A plain-template chat reply without the space that follows "Assistant:" (part of the reply's first token)."""
        from attune.data.render import has_template

        return text.lstrip(" ") if not isinstance(prompt, str) and not has_template(self.tokenizer) else text

    def _request(self, prompt: Prompt, params: GenerationParams, i: int):
        """The engine request for the caller's `i`-th prompt: its stop strings, and for sampling its own seed
        (`seed + i`, or drawn from torch's global generator when no seed is given, so `torch.manual_seed`
        still makes a run repeatable)."""
        import torch

        from attune.models.engine import Request

        seed = params.seed
        if params.temperature > 0:
            seed = (seed + i) % 2**64 if seed is not None else int(torch.randint(0, 2**63 - 1, ()))
        row = dataclasses.replace(params, stop=self.stops(prompt, params), seed=seed)
        return Request(self.encode(prompt), row, adapter=None)  # None: the model's active adapter, whatever its shape

    @contextmanager
    def _eval(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        from attune.models.engine import Engine, supports

        if not supports(self.model):
            return self._generate_virtual_tokens(prompts, params)
        requests = [self._request(p, params, i) for i, p in enumerate(prompts)]
        # Shortest first: prompts that start together have similar lengths, so the shared cache pads little.
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].prompt_ids))
        with self._eval():
            done = Engine(self.model, self.tokenizer, max_batch=self.batch_size).run([requests[i] for i in order])
        outputs: list[str] = [""] * len(requests)
        for i, completion in zip(order, done):
            if completion.finished.reason == "error":
                raise RuntimeError(f"{self.name}: generation failed for prompt {i}: {completion.finished.error}")
            outputs[i] = self.reply(completion.text, prompts[i])
        return outputs

    def stream(self, prompt: Prompt, params: GenerationParams) -> Iterator[str]:
        """Yield text pieces as they are generated (for `attune chat`)."""
        from attune.models.engine import Delta, Engine, Finished, supports

        if not supports(self.model):
            yield self.generate([prompt], params)[0]
            return
        events: list = []
        request = dataclasses.replace(self._request(prompt, params, 0), sink=events.append)
        emitted = ""
        with self._eval():
            for _ in Engine(self.model, self.tokenizer, max_batch=1).steps([request]):
                for event in events:
                    if isinstance(event, Finished) and event.reason == "error":
                        raise RuntimeError(f"{self.name}: generation failed: {event.error}")
                    if isinstance(event, Delta):
                        piece = event.text if emitted else self.reply(event.text, prompt)
                        emitted += piece
                        if piece:
                            yield piece
                events.clear()

    def _generate_virtual_tokens(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        """Prefix and prompt tuning: PEFT's `generate` in length-sorted batches of `batch_size` (the engine
        cannot replay the virtual tokens PEFT adds inside its forward; `engine.supports`)."""
        import torch

        if params.seed is not None:
            torch.manual_seed(params.seed)
        ids = [self.encode(p) for p in prompts]
        stops = [self.stops(p, params) for p in prompts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        outputs: list[str] = [""] * len(ids)
        kwargs: dict = {"max_new_tokens": params.max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        side, self.tokenizer.padding_side = self.tokenizer.padding_side, "left"
        try:
            with self._eval(), torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    enc = self.tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt").to(self.model.device)
                    shared = {tuple(s for s in stops[i] if s) for i in idx}  # stop early only on stops every row has
                    stop = list(shared.pop()) if len(shared) == 1 else []
                    extra = {"stop_strings": stop, "tokenizer": self.tokenizer} if stop else {}
                    out = self.model.generate(**enc, **kwargs, **extra)
                    for i, row in zip(idx, out[:, enc["input_ids"].shape[1] :]):
                        text = self.tokenizer.decode(row, skip_special_tokens=True)
                        outputs[i] = self.reply(truncate_at_stop(text, stops[i]), prompts[i])
        finally:
            self.tokenizer.padding_side = side
        return outputs


class OpenAIGenerator:
    """Generation through an OpenAI-compatible endpoint (API-only models; attune's own server)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}@{self.base_url}"
        self.api_key = api_key
        self.timeout = timeout

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)

    def _one(self, client, prompt: Prompt, params: GenerationParams) -> str:
        body: dict = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            body["stop"] = params.stop
        if params.seed is not None:
            body["seed"] = params.seed
        if isinstance(prompt, str):
            resp = client.post("/completions", json={**body, "prompt": prompt})
            key = "text"
        else:
            resp = client.post("/chat/completions", json={**body, "messages": prompt})
            key = "message"
        if resp.status_code != 200:
            raise AttuneError(f"{self.name}: HTTP {resp.status_code}: {resp.text[:300]}")
        choice = resp.json()["choices"][0]
        return choice["text"] if key == "text" else choice["message"]["content"]

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            with httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout) as client:
                return [self._one(client, p, params) for p in prompts]
        except httpx.HTTPError as exc:
            raise AttuneError(f"{self.name}: could not reach the endpoint ({exc})") from exc


def load_generator(model: str, adapter: str | None = None, batch_size: int = BATCH_SIZE) -> Generator:
    """A generator for a model reference, with an optional PEFT adapter directory on top."""
    import os

    from attune.models.loading import as_ref, load_model

    ref = as_ref(model)
    if ref.kind == "openai":
        if adapter:
            raise AttuneError("an adapter cannot be applied to an API-only model")
        assert ref.base_url is not None
        return OpenAIGenerator(ref.base_url, ref.name, os.environ.get("OPENAI_API_KEY"))
    loaded = load_model(ref)
    net = loaded.model
    name = ref.raw
    if adapter:
        from attune.models.adapters_io import load_adapter

        net = load_adapter(net, adapter)
        name = f"{ref.raw}+{adapter}"
    return HFGenerator(net, loaded.tokenizer, name, batch_size=batch_size)
