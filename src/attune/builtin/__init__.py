"""Shipped recipes, datasets and eval tasks (small, plain text), addressed as `builtin:NAME`.

`builtin:general-text` -> builtin/data/general-text.*; `builtin:recipes/demo` -> builtin/recipes/demo.yaml.
A name is looked up under data/, tasks/, recipes/ and probes/ with any extension, so recipes can say
`builtin:NAME` without knowing the file layout.
"""

from __future__ import annotations

from pathlib import Path

from attune.errors import AttuneError

ROOT = Path(__file__).parent
_FOLDERS = ("data", "tasks", "recipes", "probes", "corpora", "")


def builtin_path(ref: str) -> Path:
    """Resolve `builtin:NAME` (or a bare NAME) to a shipped file or folder."""
    name = ref.removeprefix("builtin:")
    for folder in _FOLDERS:
        base = ROOT / folder
        exact = base / name
        if exact.exists():
            return exact
        matches = sorted(p for p in base.glob(name + ".*") if p.suffix != ".py")
        if matches:
            return matches[0]
    raise AttuneError(f"no builtin file named {ref!r}; see `attune builtin list`")


def list_builtins() -> list[str]:
    """Every shipped file as a `builtin:` reference."""
    out = []
    for folder in _FOLDERS[:-1]:
        for p in sorted((ROOT / folder).glob("*")):
            if p.suffix in (".py",) or p.name.startswith("_"):
                continue
            out.append(f"builtin:{folder}/{p.name}")
    return out


def resolve_path(path: str, base_dir: Path | None = None) -> Path:
    """A recipe path: `builtin:NAME`, absolute, or relative to the recipe file's folder."""
    if path.startswith("builtin:"):
        return builtin_path(path)
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p
