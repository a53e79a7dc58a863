"""Recipes in the studio: the builtin ones, the ones it saved, and the New-run form.

Text typed in the browser is written to a file and read back with `attune.recipe.load_recipe`,
so it gets exactly the errors `attune recipe check` prints (file:line, field, did-you-mean).
Relative paths in it are resolved against `runs/.studio/recipes/`, where it is saved; the form
fills in absolute paths.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from attune.errors import AttuneError
from attune.recipe import Recipe, load_recipe
from attune.studio.security import NotAllowed, inside
from attune.studio.settings import StudioSettings

DRAFT = "draft.yaml"


def builtin_recipes() -> list[str]:
    from attune.builtin import list_builtins

    return [ref.removesuffix(".yaml") for ref in list_builtins() if ref.startswith("builtin:recipes/")]


def saved_recipes(settings: StudioSettings) -> list[str]:
    d = settings.recipes_dir
    return sorted(p.name for p in d.glob("*.yaml") if p.name != DRAFT) if d.is_dir() else []


def recipe_text(settings: StudioSettings, ref: str) -> str:
    """The text of a builtin recipe (`builtin:recipes/NAME`) or of one the studio saved (its file name)."""
    if ref.startswith("builtin:recipes/"):
        from attune.builtin import resolve_path

        path = resolve_path(ref)
        if not path.is_file():
            raise AttuneError(f"no builtin recipe {ref!r}; known: {', '.join(builtin_recipes())}")
        return path.read_text()
    path = inside(settings.recipes_dir, ref)
    if not path.is_file():
        raise NotAllowed(f"no saved recipe {ref!r}")
    return path.read_text()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_text(settings: StudioSettings, text: str) -> Recipe:
    """Validate recipe text as `attune recipe check` would (raises its `RecipeError`)."""
    draft = settings.recipes_dir / DRAFT
    _write(draft, text)
    return load_recipe(draft)


def save_text(settings: StudioSettings, text: str) -> Path:
    """Validate, then keep the text as runs/.studio/recipes/NAME-TIME.yaml (what the run is started from)."""
    recipe = check_text(settings, text)
    path = settings.recipes_dir / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    n = 1
    while path.exists():
        n += 1
        path = settings.recipes_dir / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}-{n}.yaml"
    _write(path, text)
    load_recipe(path)
    return path


def form_choices() -> dict[str, Any]:
    """What the form's selects offer: every objective and adapter shape registered."""
    from attune.adapters import REGISTRY
    from attune.train.objectives import OBJECTIVES

    return {"objectives": list(OBJECTIVES), "adapters": list(REGISTRY)}


def form_to_yaml(form: dict[str, Any]) -> str:
    """Recipe YAML from the form's fields; empty fields are left out so the defaults apply.

    Keys the chosen adapter shape does not have (r and alpha for IA3, say) are dropped; the
    text is then validated like any other, so the form cannot produce what the CLI would refuse.
    """
    from attune.adapters import REGISTRY

    def num(key: str, cast: type) -> Any:
        value = str(form.get(key) or "").strip()
        if not value:
            return None
        try:
            return cast(value)
        except ValueError:
            raise AttuneError(f"form field {key!r}: {value!r} is not a number") from None

    adapter_type = form.get("adapter") or "lora"
    adapter: dict[str, Any] = {"type": adapter_type}
    fields = REGISTRY[adapter_type].config.model_fields if adapter_type in REGISTRY else {}
    for key in ("r", "alpha"):
        if key in fields and (v := num(key, int)) is not None:
            adapter[key] = v
    train = {k: v for k, v in {"epochs": num("epochs", float), "max_steps": num("max_steps", int), "lr": num("lr", float),
                               "batch_tokens": num("batch_tokens", int), "max_length": num("max_length", int)}.items()
             if v is not None}
    stage: dict[str, Any] = {"objective": form.get("objective") or "sft"}
    if form.get("data"):
        stage["data"] = {"path": str(form["data"])}
    stage["adapter"] = adapter
    if train:
        stage["train"] = train
    recipe = {"name": (form.get("name") or "studio-run").strip(), "model": (form.get("model") or "").strip(), "stages": [stage]}
    return yaml.safe_dump(recipe, sort_keys=False)
