"""Load a saved adapter onto a base model, refusing adapters made for another base.

Adapters are stored in plain PEFT format (what vLLM and LoRAX load), or in a shape's own format
(bottleneck); the shape whose marker file the directory holds loads it. attune adds one small file,
`attune_adapter.json`, with the base model's architecture fingerprint, so a wrong-base adapter
is refused with a clear message instead of PEFT's shape-mismatch traceback. Adapters made
elsewhere (no fingerprint) are still checked, through PEFT's own size checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attune.errors import AttuneError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

FINGERPRINT_FILE = "attune_adapter.json"
_FINGERPRINT_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size")


def base_fingerprint(model: PreTrainedModel) -> dict[str, Any]:
    """The architecture facts an adapter depends on."""
    config = getattr(model, "config", None)
    return {k: getattr(config, k, None) for k in _FINGERPRINT_KEYS}


def write_fingerprint(adapter_dir: str | Path, model: PreTrainedModel, extra: dict[str, Any] | None = None) -> None:
    """Record the base model's fingerprint (and provenance) next to a saved adapter."""
    data = {"base": base_fingerprint(model), **(extra or {})}
    Path(adapter_dir, FINGERPRINT_FILE).write_text(json.dumps(data, indent=2, default=str))


def check_adapter_dir(path: str | Path) -> Path:
    """Validate that `path` is an adapter directory (of any registered shape) with non-empty weights."""
    from attune.adapters import shape_of_dir

    path = Path(path)
    weights = list(path.glob(shape_of_dir(path).weights))
    if not weights or all(not p.is_file() or p.stat().st_size == 0 for p in weights):
        raise AttuneError(f"{path}: adapter has no weights file ({shape_of_dir(path).weights})")
    return path


def check_adapter_matches(model: PreTrainedModel, path: str | Path) -> None:
    """Raise if the adapter at `path` was trained on a different base architecture."""
    meta_file = Path(path) / FINGERPRINT_FILE
    if not meta_file.is_file():
        return
    saved = json.loads(meta_file.read_text()).get("base", {})
    ours = base_fingerprint(model)
    diff = {k: (saved.get(k), ours.get(k)) for k in _FINGERPRINT_KEYS if saved.get(k) != ours.get(k)}
    if diff:
        detail = ", ".join(f"{k}: adapter {a} vs model {b}" for k, (a, b) in diff.items())
        raise AttuneError(f"adapter {path} was made for another base model ({detail})")


def load_adapter(model: PreTrainedModel, path: str | Path, name: str = "default", trainable: bool = False):
    """`model` with the adapter at `path` on (added as `name` beside a PeftModel's others), by the adapter's own shape."""
    from attune.adapters import shape_of_dir

    path = check_adapter_dir(path)
    check_adapter_matches(model, path)
    return shape_of_dir(path).load(model, path, name=name, trainable=trainable)
