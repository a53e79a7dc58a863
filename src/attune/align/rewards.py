"""Where PPO and GRPO get rewards from: Python functions named in a recipe, or a trained reward model.

A reward function takes keyword arguments and returns one float per completion, the calling
convention of TRL's GRPOTrainer (so functions written for TRL work here):

    def my_reward(prompts: list[str], completions: list[str], **kwargs) -> list[float]

`kwargs` holds `completion_ids` (token ids of each completion) and `answer` (the prompt record's
reference answer, or None). A recipe names it as `module:function` (importable) or
`path/to/file.py:function` (relative to the recipe). The functions below ship with attune.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attune.errors import AttuneError

RewardFunction = Callable[..., list[float]]
HOUSE_OPENING = "Thanks for reaching out"
HOUSE_MAX_WORDS = 60


def follows_house_style(reply: str) -> bool:
    """The rule the builtin preference data is built on: open with the house greeting, stay under 60 words.

    Every chosen reply of `builtin:support-prefs` follows it and every rejected one breaks it
    (scripts/make_builtin_data.py), so it judges generated replies without a model.
    """
    text = reply.strip()
    return text.startswith(HOUSE_OPENING) and len(text.split()) < HOUSE_MAX_WORDS


def house_style(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """1 for a reply that follows the house style, with partial credit so a policy can climb towards it.

    0.5 for thanking the customer within the first five words, 0.25 for staying under the length
    limit; the full rule is worth 1.
    """
    out = []
    for reply in completions:
        words = reply.strip().split()
        if follows_house_style(reply):
            out.append(1.0)
            continue
        thanks = any(w.lower().startswith("thank") for w in words[:5])
        out.append(0.5 * thanks + 0.25 * (0 < len(words) < HOUSE_MAX_WORDS))
    return out


def exact_answer(prompts: list[str], completions: list[str], answer: list[str | None], **_: Any) -> list[float]:
    """1 where the completion's last number (or, failing that, its whole text) equals the reference answer."""
    out = []
    for reply, ref in zip(completions, answer):
        if ref is None:
            raise AttuneError("exact_answer needs prompt records with an `answer` field")
        numbers = re.findall(r"-?\d+(?:\.\d+)?", reply)
        got = numbers[-1] if numbers and re.fullmatch(r"-?\d+(?:\.\d+)?", ref.strip()) else reply.strip()
        out.append(float(got.strip().lower() == ref.strip().lower()))
    return out


def json_format(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """1 for a completion that is one JSON object and nothing else (a format check for verifiable rewards)."""
    out = []
    for reply in completions:
        try:
            out.append(float(isinstance(json.loads(reply.strip()), dict)))
        except ValueError:
            out.append(0.0)
    return out


def load_reward_function(spec: str, base_dir: Path | None = None) -> RewardFunction:
    """Resolve `module:function` or `file.py:function` (relative to `base_dir`) to a callable."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise AttuneError(f"reward_function {spec!r}: write it as module:function or path/to/file.py:function")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise AttuneError(f"reward_function {spec!r}: {path} not found")
        loader_spec = importlib.util.spec_from_file_location(f"attune_reward_{path.stem}", path)
        assert loader_spec is not None and loader_spec.loader is not None
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise AttuneError(f"reward_function {spec!r}: cannot import {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise AttuneError(f"reward_function {spec!r}: {module_name} has no function {attr!r}")
    return fn


def call_reward_function(fn: RewardFunction, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    """Call `fn` and check it returned one finite number per completion."""
    import math

    values = fn(prompts=prompts, completions=completions, **kwargs)
    values = list(values) if values is not None else []
    if len(values) != len(completions):
        raise AttuneError(f"reward function {getattr(fn, '__name__', fn)} returned {len(values)} values for {len(completions)} completions")
    out = [float(v) for v in values]
    if not all(math.isfinite(v) for v in out):
        raise AttuneError(f"reward function {getattr(fn, '__name__', fn)} returned a non-finite value")
    return out


def reward_source(
    reward_model: Path | None, reward_function: str | None, base_dir: Path | None = None, device: str = "cpu"
) -> Callable[[Any], list[float]]:
    """What scores a rollout: a reward model directory (a reward stage's output) or a `reward_function`.

    Returns a callable taking an `attune.align.rollout.Rollout`. Exactly one source must be set
    (the recipe checks this when it loads; the pipeline turns a stage name into its directory).
    """
    if (reward_model is None) == (reward_function is None):
        raise AttuneError("set exactly one of `reward_model:` (a reward stage or dir) and `train.reward_function:` (module:function)")
    if reward_function:
        fn = load_reward_function(reward_function, base_dir)

        def by_function(rollout: Any) -> list[float]:
            ids = [r[m.bool()].tolist() for r, m in zip(rollout.response, rollout.response_mask)]
            return call_reward_function(fn, rollout.prompts, rollout.completions, completion_ids=ids, answer=rollout.answers)

        return by_function
    from attune.align.reward_model import INFO_FILE, load_reward_model

    assert reward_model is not None
    if not (reward_model / INFO_FILE).is_file():
        raise AttuneError(f"reward_model {str(reward_model)!r}: neither a reward stage of this recipe (trained before this one) "
                          f"nor a reward model directory (no {INFO_FILE})")
    rm = load_reward_model(reward_model, device=device)

    def by_model(rollout: Any) -> list[float]:
        return rm.score(rollout.messages, rollout.completions)

    return by_model
