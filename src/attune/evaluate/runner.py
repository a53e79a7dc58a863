"""Run tasks against a generator (optionally through a prompting strategy), keeping every example.

generate: greedy batched generation -> extraction -> metrics.
choice: log-likelihood of each option after the context, `acc` and `acc_norm` (normalised by
the option's byte length), as lm-evaluation-harness scores multiple choice.
perplexity: token loss over raw text -> loss, perplexity and bits per byte.
"""

from __future__ import annotations

import math
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
    outputs = generator.generate([b.prompt for b in built], params)
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


@torch.no_grad()
def _continuation_logprob(model, tokenizer, context: str, continuation: str) -> float:
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    # lm-eval splits at the context's token boundary the same way: the continuation is what whole adds
    cont = whole[len(ctx) :] if whole[: len(ctx)] == ctx else tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont], device=model.device)
    logits = model(input_ids=ids).logits[0, len(ctx) - 1 : -1].float()
    return float(torch.log_softmax(logits, -1).gather(1, torch.tensor(cont, device=model.device)[:, None]).sum())


def run_choice(generator: Generator, task: Task, strategy: Strategy) -> TaskResult:
    model, tokenizer = _hf(generator, "choice")
    render = generator.render
    start = time.perf_counter()
    rows, acc, acc_norm = [], 0.0, 0.0
    was_training = model.training
    model.eval()
    for ex in task.examples:
        prompt = strategy.build(ex["query"], ex).prompt
        context = render(prompt)
        logps = [_continuation_logprob(model, tokenizer, context, task.spec.choice_prefix + c) for c in ex["choices"]]
        norms = [lp / max(1, len((task.spec.choice_prefix + c).encode())) for lp, c in zip(logps, ex["choices"])]
        pick, pick_norm = int(max(range(len(logps)), key=logps.__getitem__)), int(max(range(len(norms)), key=norms.__getitem__))
        acc += pick == ex["label"]
        acc_norm += pick_norm == ex["label"]
        rows.append({"sent": context, "prediction": ex["choices"][pick], "reference": ex["reference"],
                     "scores": {"acc": float(pick == ex["label"]), "acc_norm": float(pick_norm == ex["label"])},
                     "logprobs": logps})
    model.train(was_training)
    n = len(rows)
    seconds = time.perf_counter() - start
    return TaskResult(task.name, "choice", {"acc": acc / n, "acc_norm": acc_norm / n}, rows, seconds, 0.0, seconds / n)


@torch.no_grad()
def run_perplexity(generator: Generator, task: Task, max_length: int = 1024) -> TaskResult:
    model, tokenizer = _hf(generator, "perplexity")
    start = time.perf_counter()
    nll, tokens, nbytes = 0.0, 0, 0
    rows = []
    for ex in task.examples:
        ids = tokenizer(ex["text"], add_special_tokens=False)["input_ids"][:max_length]
        if len(ids) < 2:
            continue
        t = torch.tensor([ids], device=model.device)
        logits = model(input_ids=t).logits[0, :-1].float()
        loss = float(torch.nn.functional.cross_entropy(logits, t[0, 1:], reduction="sum"))
        nll += loss
        tokens += len(ids) - 1
        nbytes += len(tokenizer.decode(ids[1:]).encode())
        rows.append({"prediction": "", "reference": ex["text"][:200], "scores": {"loss": loss / (len(ids) - 1)}})
    if tokens == 0:
        raise AttuneError(f"task {task.name!r}: no text long enough to score")
    loss = nll / tokens
    metrics = {"loss": loss, "perplexity": math.exp(loss), "bits_per_byte": nll / (math.log(2) * nbytes)}
    return TaskResult(task.name, "perplexity", metrics, rows, time.perf_counter() - start)


def run_task(generator: Generator, task: Task, strategy: Strategy, seed: int = 0) -> TaskResult:
    if task.spec.kind == "generate":
        return run_generate(generator, task, strategy, seed)
    if task.spec.kind == "choice":
        return run_choice(generator, task, strategy)
    return run_perplexity(generator, task)
