"""Text generation behind one small interface, for local weights and API-only models alike.

Evaluation, prompting strategies, RAG, distillation teachers and `attune chat` all talk to a
`Generator`; none of them cares whether tokens come from transformers on this CPU or from an
OpenAI-compatible endpoint.

A prompt is either raw text (sent as is, after the tokenizer's BOS if it uses one) or a list of
chat messages (`[{"role": "user", "content": "..."}]`, rendered by `data.render.render_chat`: the
model's chat template, or attune's plain template for a model without one, exactly as training
renders them).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Union

from attune.errors import AttuneError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Message = dict[str, str]
Prompt = Union[str, list[Message]]


@dataclass
class GenerationParams:
    """Decoding settings. temperature 0 means greedy (the default, for reproducible evals)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


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


class HFGenerator:
    """Batched generation with a transformers model (optionally wrapped by PEFT)."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str, batch_size: int = 8
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

    def _generate_kwargs(self, params: GenerationParams, stop: Sequence[str] = ()) -> dict:
        kwargs = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        stop = [s for s in stop if s]
        if stop:  # end each row at its stop string instead of running to max_new_tokens
            kwargs.update(stop_strings=stop, tokenizer=self.tokenizer)
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        import torch

        if params.seed is not None:
            torch.manual_seed(params.seed)
        ids = [self.encode(p) for p in prompts]
        stops = [self.stops(p, params) for p in prompts]
        # Sort by length so each batch pads little; restore the caller's order at the end.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        outputs: list[str] = [""] * len(ids)
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = self.tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt").to(self.model.device)
                shared = {tuple(stops[i]) for i in idx}  # stop early only on stop strings every row of the batch has
                with torch.inference_mode():
                    out = self.model.generate(**enc, **self._generate_kwargs(params, shared.pop() if len(shared) == 1 else ()))
                new = out[:, enc["input_ids"].shape[1] :]
                for i, row in zip(idx, new):
                    text = self.tokenizer.decode(row, skip_special_tokens=True)
                    outputs[i] = self.reply(truncate_at_stop(text, stops[i]), prompts[i])
        finally:
            self.tokenizer.padding_side = side
            self.model.train(was_training)
        return outputs

    def stream(self, prompt: Prompt, params: GenerationParams) -> Iterator[str]:
        """Yield text pieces as they are generated (for `attune chat`)."""
        import torch
        from transformers import TextIteratorStreamer

        input_ids = torch.tensor([self.encode(prompt)], device=self.model.device)
        stop = self.stops(prompt, params)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run() -> None:
            with torch.inference_mode():
                self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
                                    **self._generate_kwargs(params, stop))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        emitted = ""
        for piece in streamer:
            if not emitted:
                piece = self.reply(piece, prompt)
            emitted += piece
            if any(s and s in emitted for s in stop):
                yield truncate_at_stop(emitted, stop)[len(emitted) - len(piece) :]
                break
            yield piece
        thread.join()


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


def load_generator(model: str, adapter: str | None = None, batch_size: int = 8) -> Generator:
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
