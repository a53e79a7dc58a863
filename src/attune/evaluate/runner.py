"""Run tasks against a generator (optionally through a prompting strategy), keeping every example.

generate: greedy batched generation -> extraction -> metrics. A strategy that answers by other
means than generating (RAG's extractive answers) has `respond(generator, built, params)`, which
the runner calls instead of `generator.generate`.
choice: log-likelihood of each option after the context, `acc` and `acc_norm` (normalised by
the option's length in characters), as lm-evaluation-harness 0.4 scores multiple choice.
perplexity: log-likelihood of every token of raw text (rolling windows) -> loss, token / word /
byte perplexity and bits per byte, as lm-evaluation-harness computes them.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from attune.errors import AttuneError
from attune.evaluate.metrics import get_metric
from attune.evaluate.tasks import Task
from attune.models.generation import GenerationParams, Generator
from attune.prompting.base import Strategy
from attune.prompting.extraction import extract


@dataclass
class TaskResult:
    task: str
    kind: str
    metrics: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    prompt_tokens_per_query: float = 0.0
    latency_per_query: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _count_tokens(generator: Generator, text: str) -> int:
    tokenizer = getattr(generator, "tokenizer", None)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer is not None else len(text.split())


def run_generate(generator: Generator, task: Task, strategy: Strategy, seed: int = 0) -> TaskResult:
    spec = task.spec
    built = [strategy.build(ex["query"], ex) for ex in task.examples]
    params = GenerationParams(max_new_tokens=spec.max_new_tokens, seed=seed)
    if strategy.name == "cot":
        params.max_new_tokens = max(params.max_new_tokens, 192)
    start = time.perf_counter()
    respond = getattr(strategy, "respond", None)
    outputs = respond(generator, built, params) if respond else generator.generate([b.prompt for b in built], params)
    seconds = time.perf_counter() - start
    render = getattr(generator, "render", lambda p: str(p))
    rows, sums = [], {m: 0.0 for m in spec.metrics}
    prompt_tokens = 0
    for ex, b, out in zip(task.examples, built, outputs):
        answer = extract(strategy.extract(out), spec.extract, spec.pattern)
        scores = {}
        for name in spec.metrics:
            kwargs = {"pattern": spec.pattern} if name == "regex" else {"schema": spec.schema_} if name == "json_schema" else {}
            scores[name] = get_metric(name)(answer, ex["reference"], **kwargs)
            sums[name] += scores[name]
        sent = render(b.prompt)
        prompt_tokens += _count_tokens(generator, sent)
        rows.append({"sent": sent, "output": out, "prediction": answer, "reference": ex["reference"], "scores": scores, "meta": b.meta})
    n = len(rows)
    return TaskResult(
        task.name, "generate", {m: s / n for m, s in sums.items()}, rows, seconds, prompt_tokens / n, seconds / n
    )


def _hf(generator: Generator, kind: str):
    model, tokenizer = getattr(generator, "model", None), getattr(generator, "tokenizer", None)
    if model is None or tokenizer is None:
        raise AttuneError(f"{kind} tasks score token log-likelihoods and need local weights; {generator.name} is API-only")
    return model, tokenizer


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _encode_start(tokenizer, text: str) -> list[int]:
    """A context starts a document: it gets the tokenizer's BOS if it uses one (lm-eval does the same for Gemma)."""
    from attune.data.render import document_ids

    return document_ids(tokenizer, text)


def prefix_token(tokenizer) -> int:
    """The token a text is conditioned on when nothing precedes it: BOS, else EOS (lm-eval's rule)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation), split the way lm-evaluation-harness splits them.

    Trailing whitespace of the context moves to the continuation (a tokenizer glues a space to
    the next word, so " Paris" must be scored as the model would write it); the whole text is
    tokenized once and cut at the context's length, so the continuation's tokens are the ones
    the model would produce after that context. An empty context becomes the prefix token.
    """
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    if not context:
        return [prefix_token(tokenizer)], _encode(tokenizer, continuation)
    ctx = _encode_start(tokenizer, context)
    return ctx, _encode_start(tokenizer, context + continuation)[len(ctx) :]


@torch.no_grad()
def continuation_logprobs(model, tokenizer, context: str, continuations: list[str]) -> list[float]:
    """Sum of log P(continuation tokens | context) for each continuation, in one right-padded batch."""
    pairs = [encode_pair(tokenizer, context, c) for c in continuations]
    seqs = [ctx + cont for ctx, cont in pairs]
    width = max(map(len, seqs)) - 1
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([s[:-1] + [pad] * (width - len(s) + 1) for s in seqs], device=model.device)  # (B, T)
    mask = torch.tensor([[1] * (len(s) - 1) + [0] * (width - len(s) + 1) for s in seqs], device=model.device)
    logps = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)  # (B, T, V)
    out = []
    for row, (ctx, cont) in enumerate(pairs):
        positions = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(cont), device=model.device)
        out.append(float(logps[row, positions, torch.tensor(cont, device=model.device)].sum()))
    return out


def run_choice(generator: Generator, task: Task, strategy: Strategy) -> TaskResult:
    """Pick the option with the highest log-likelihood (`acc`) or per-character log-likelihood (`acc_norm`).

    Both follow lm-evaluation-harness 0.4: `acc_norm` divides by the option's length in
    characters, and the text between context and option is `choice_prefix` (" " by default, ""
    when the prompt is a chat rendered with the model's chat template, as lm-eval does).
    """
    model, tokenizer = _hf(generator, "choice")
    render = generator.render
    start = time.perf_counter()
    rows, acc, acc_norm = [], 0.0, 0.0
    was_training = model.training
    model.eval()
    for ex in task.examples:
        prompt = strategy.build(ex["query"], ex).prompt
        context = render(prompt)
        delimiter = task.spec.choice_prefix
        if delimiter is None:
            delimiter = "" if isinstance(prompt, list) and getattr(tokenizer, "chat_template", None) else " "
        logps = continuation_logprobs(model, tokenizer, context, [delimiter + c for c in ex["choices"]])
        norms = [lp / max(1, len(c)) for lp, c in zip(logps, ex["choices"])]
        pick, pick_norm = _argmax(logps), _argmax(norms)
        acc += pick == ex["label"]
        acc_norm += pick_norm == ex["label"]
        rows.append({"sent": context, "prediction": ex["choices"][pick], "reference": ex["reference"],
                     "scores": {"acc": float(pick == ex["label"]), "acc_norm": float(pick_norm == ex["label"])},
                     "logprobs": logps})
    model.train(was_training)
    n = len(rows)
    seconds = time.perf_counter() - start
    return TaskResult(task.name, "choice", {"acc": acc / n, "acc_norm": acc_norm / n}, rows, seconds, 0.0, seconds / n)


def _argmax(values: list[float]) -> int:
    """Index of the largest value; the first one on ties (numpy's argmax, which lm-eval uses)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def rolling_windows(ids: list[int], prefix: int, max_length: int) -> list[tuple[list[int], list[int]]]:
    """(model input, tokens predicted by its last positions) pairs that score every token of `ids` once.

    The first window predicts the first token from `prefix`; each later window predicts the next
    up-to-`max_length` tokens with as much preceding text as fits (lm-eval's rolling
    log-likelihood with context_len=1), so long texts are scored with full context, not cut off.
    """
    full = [prefix, *ids]
    out, done = [], 0
    while done < len(ids):
        end = min(len(ids), done + max_length)
        out.append((full[max(0, end - max_length) : end], ids[done:end]))
        done = end
    return out


@torch.no_grad()
def run_perplexity(generator: Generator, task: Task) -> TaskResult:
    """Log-likelihood of every token of each text: loss, token / word / byte perplexity, bits per byte.

    Word and byte counts are lm-eval's (words = pieces between whitespace runs, bytes = UTF-8), so
    `word_perplexity`, `byte_perplexity` and `bits_per_byte` are comparable with its numbers.
    """
    model, tokenizer = _hf(generator, "perplexity")
    start = time.perf_counter()
    nll, tokens, nbytes, nwords = 0.0, 0, 0, 0
    rows = []
    was_training = model.training
    model.eval()
    for ex in task.examples:
        ids = _encode(tokenizer, ex["text"])
        if not ids:
            continue
        text_nll = 0.0
        for window, targets in rolling_windows(ids, prefix_token(tokenizer), task.spec.max_length):
            logits = model(input_ids=torch.tensor([window], device=model.device)).logits[0, -len(targets) :].float()
            target = torch.tensor(targets, device=model.device)
            text_nll += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
        nll += text_nll
        tokens += len(ids)
        nbytes += len(ex["text"].encode("utf-8"))
        nwords += len(re.split(r"\s+", ex["text"]))
        rows.append({"prediction": "", "reference": ex["text"][:200], "scores": {"loss": text_nll / len(ids)}})
    model.train(was_training)
    if tokens == 0:
        raise AttuneError(f"task {task.name!r}: every text is empty")
    metrics = {
        "loss": nll / tokens,
        "perplexity": math.exp(nll / tokens),
        "word_perplexity": math.exp(nll / nwords),
        "byte_perplexity": math.exp(nll / nbytes),
        "bits_per_byte": nll / (math.log(2) * nbytes),
    }
    return TaskResult(task.name, "perplexity", metrics, rows, time.perf_counter() - start)


def run_task(generator: Generator, task: Task, strategy: Strategy, seed: int = 0) -> TaskResult:
    if task.spec.kind == "generate":
        return run_generate(generator, task, strategy, seed)
    if task.spec.kind == "choice":
        return run_choice(generator, task, strategy)
    return run_perplexity(generator, task)
