"""The arena: one prompt, two candidates side by side; a vote becomes a preference pair.

Candidates are names the serve layer answers (`attune.serve.server.Server`: the base, any
adapter, `mix:a=0.5,b=0.5`, `route:NAME`, `rag:NAME`), each with a prompting strategy from
`attune.prompting` (zero-shot, few-shot with a pool, cot). Both answers stream from the server's
batching engine. A vote for one side appends `{"prompt", "chosen", "rejected"}` to the preference
file — the `preference` format that `attune.data.formats` reads and a `dpo` / `reward` stage
trains on as it is; every vote (ties too) goes to `<file stem>.votes.jsonl`, from which the
win-rate table is counted, with Wilson score intervals.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attune.errors import AttuneError

STRATEGIES = ("zero-shot", "few-shot", "cot")


@dataclass
class Candidate:
    model: str
    strategy: str = "zero-shot"
    k: int = 3
    pool: str | None = None  # few-shot: a data file (under the data root) or builtin:NAME
    system: str | None = None

    @property
    def label(self) -> str:
        extra = f" k={self.k}" if self.strategy == "few-shot" else ""
        return f"{self.model} · {self.strategy}{extra}"


@dataclass
class Round:
    id: str
    prompt: str
    candidates: dict[str, Candidate]  # "a", "b"
    answers: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    voted: bool = False


def wilson(wins: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion wins/n (Wilson 1927); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = wins / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def win_table(votes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per unordered candidate pair: wins of each, ties, and the first's win rate over decided votes.

    Ties are counted and shown but left out of the rate (a tie says neither is better); the
    interval is Wilson's at 95 %.
    """
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for v in votes:
        first, second = sorted((v["a"], v["b"]))
        row = pairs.setdefault((first, second), {"first": first, "second": second, "first_wins": 0, "second_wins": 0, "ties": 0})
        if v["choice"] == "tie":
            row["ties"] += 1
        else:
            winner = v["a"] if v["choice"] == "a" else v["b"]
            row["first_wins" if winner == first else "second_wins"] += 1
    out = []
    for row in pairs.values():
        decided = row["first_wins"] + row["second_wins"]
        lo, hi = wilson(row["first_wins"], decided)
        out.append({**row, "votes": decided + row["ties"], "first_rate": row["first_wins"] / decided if decided else None,
                    "low": lo, "high": hi})
    return sorted(out, key=lambda r: -r["votes"])


def _append(path: Path, row: dict[str, Any]) -> None:
    """One JSON line appended in one write and flushed to disk: earlier lines are never rewritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def votes_file(pairs_file: Path) -> Path:
    return pairs_file.with_name(pairs_file.stem + ".votes.jsonl")


def read_votes(pairs_file: Path) -> list[dict[str, Any]]:
    p = votes_file(pairs_file)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []


class Arena:
    """One loaded serve `Server` (base + adapters + rag indexes) and the rounds played on it."""

    def __init__(self) -> None:
        self.server = None
        self.config: dict[str, Any] = {}
        self.rounds: dict[str, Round] = {}
        self.lock = threading.Lock()

    def load(self, model: str, adapters: dict[str, str], rag: dict[str, str], routes: dict[str, list[str]],
             describe: dict[str, str]) -> list[str]:
        """(Re)load the serve layer with these names; returns the names a candidate may use."""
        from attune.serve.server import Server
        from attune.serve.settings import ServeSettings

        settings = ServeSettings(model=model, adapters=adapters, rag=rag, routes=routes, describe=describe, max_batch=4)
        server = Server(settings)
        server.start()
        with self.lock:
            old, self.server = self.server, server
            self.config = {"model": model, "adapters": adapters, "rag": rag, "routes": routes}
            self.rounds.clear()
        if old is not None:
            old.stop()
        return self.names()

    def names(self) -> list[str]:
        return [e["id"] for e in self.server.model_names()] if self.server else []

    def new_round(self, prompt: str, a: Candidate, b: Candidate) -> Round:
        if self.server is None:
            raise AttuneError("load a model first (base model and adapters)")
        if not prompt.strip():
            raise AttuneError("the prompt is empty")
        for c in (a, b):
            if c.strategy not in STRATEGIES:
                raise AttuneError(f"unknown strategy {c.strategy!r}; the arena offers {', '.join(STRATEGIES)}")
            if not (c.model in self.names() or c.model.startswith("mix:")):
                raise AttuneError(f"{c.model!r} is not served; loaded: {', '.join(self.names())} (or a mix:NAME=W,... of them)")
        rnd = Round(uuid.uuid4().hex[:12], prompt, {"a": a, "b": b})
        self.rounds[rnd.id] = rnd
        return rnd

    def _prompt(self, c: Candidate, text: str):
        from attune.prompting import StrategyContext, build_strategy

        pool = None
        if c.strategy == "few-shot":
            if not c.pool:
                raise AttuneError("few-shot needs a pool: a data file of solved examples")
            from attune.evaluate.pools import pool_from_path

            pool = pool_from_path(c.pool)
        options = {"k": c.k, "selection": "random", "system": c.system}
        strategy = build_strategy(c.strategy, options, StrategyContext(pool=pool, system=c.system, seed=random.randrange(1 << 30)))
        return strategy.build(text, {"input": text, "reference": None, "raw": {}}).prompt

    async def stream(self, round_id: str, side: str, max_tokens: int = 128, temperature: float = 0.0) -> AsyncIterator[str]:
        """The side's answer as text pieces, from the serve engine (a `rag:` answer comes whole).

        With temperature 0 (greedy) both sides are reproducible; above it they sample, as a chat would.
        """
        from starlette.concurrency import run_in_threadpool

        from attune.models.engine import Delta, Finished
        from attune.models.generation import GenerationParams

        rnd = self.rounds.get(round_id)
        if rnd is None or side not in rnd.candidates:
            raise AttuneError("no such arena round (the model was reloaded?)")
        server, c = self.server, rnd.candidates[side]
        text = ""
        try:
            prompt = await run_in_threadpool(self._prompt, c, rnd.prompt)
            target = await run_in_threadpool(server.resolve, c.model, rnd.prompt)
            params = GenerationParams(max_new_tokens=max_tokens, temperature=temperature)
            if target.kind == "rag":
                server.prepare(prompt, max_tokens, params, target)
                result, _ = await run_in_threadpool(server.grounded, target.info["index"], rnd.prompt, params)
                text = result.answer
                yield text
            else:
                prepared = await run_in_threadpool(server.prepare, prompt, max_tokens, params, target)
                running = await server.submit(prepared)
                async for event in running.events():
                    if isinstance(event, Delta):
                        text += event.text
                        yield event.text
                    elif isinstance(event, Finished) and event.reason == "error":
                        raise AttuneError(f"generation failed: {event.error}")
        except Exception as exc:  # shown on the page; the round cannot be voted on
            rnd.errors[side] = str(exc)
            raise
        rnd.answers[side] = text

    def vote(self, round_id: str, choice: str, pairs_file: Path) -> dict[str, Any]:
        """Record a vote; a win appends one preference pair. Returns what was written."""
        from attune.data.formats import convert

        rnd = self.rounds.get(round_id)
        if rnd is None:
            raise AttuneError("no such arena round (the model was reloaded?)")
        if choice not in ("a", "b", "tie"):
            raise AttuneError(f"a vote is 'a', 'b' or 'tie', not {choice!r}")
        if rnd.voted:
            raise AttuneError("this round was already voted on")
        if set(rnd.answers) != {"a", "b"}:
            raise AttuneError("both answers must finish before a vote")
        pair = None
        if choice != "tie":
            loser = "b" if choice == "a" else "a"
            pair = {"prompt": rnd.prompt, "chosen": rnd.answers[choice], "rejected": rnd.answers[loser]}
            record, problems = convert(pair, "preference", str(pairs_file))
            if record is None:  # identical or empty answers teach nothing: say so instead of writing them
                raise AttuneError("not a usable preference pair: " + "; ".join(p.message for p in problems) + " (vote tie instead)")
        with self.lock:
            if pair is not None:
                _append(pairs_file, pair)
            _append(votes_file(pairs_file), {"time": time.time(), "round": rnd.id, "prompt": rnd.prompt, "choice": choice,
                                             "a": rnd.candidates["a"].label, "b": rnd.candidates["b"].label})
            rnd.voted = True
        return {"pair": pair, "choice": choice}
