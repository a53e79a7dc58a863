"""Recipes in the studio: the builtin ones, the ones it saved, and the New-run form.

Text typed in the browser is written to a file and read back with `attune.recipe.load_recipe`,
so it gets exactly the errors `attune recipe check` prints (file:line, field, did-you-mean).
A picked builtin or local recipe that was not edited starts from its own file (so its relative
paths mean what they meant); edited text is saved under `runs/.studio/recipes/` and its relative
paths resolve there. The form fills in absolute paths.
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


def local_recipes(settings: StudioSettings, limit: int = 200) -> list[str]:
    """YAML files under the data root that look like recipes (a mapping with `model` and `stages`), as `local:PATH`."""
    out = []
    for p in sorted(settings.data.rglob("*.y*ml")) if settings.data.is_dir() else []:
        rel = p.relative_to(settings.data)
        if any(part.startswith(".") for part in rel.parts) or p.stat().st_size > 200_000:
            continue
        try:
            data = yaml.safe_load(p.read_text())
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and "model" in data and "stages" in data:
            out.append(f"local:{rel}")
            if len(out) >= limit:
                break
    return out


def recipe_file(settings: StudioSettings, ref: str) -> Path:
    """The file behind a pick: `builtin:recipes/NAME`, `local:PATH` (under the data root) or a saved file name."""
    if ref.startswith("builtin:recipes/"):
        from attune.builtin import resolve_path

        path = resolve_path(ref)
        if not path.is_file():
            raise AttuneError(f"no builtin recipe {ref!r}; known: {', '.join(builtin_recipes())}")
        return path
    path = inside(settings.data, ref.removeprefix("local:")) if ref.startswith("local:") else inside(settings.recipes_dir, ref)
    if not path.is_file():
        raise NotAllowed(f"no recipe {ref!r}")
    return path


def recipe_text(settings: StudioSettings, ref: str) -> str:
    return recipe_file(settings, ref).read_text()


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
