"""The adapters one server holds on one base model: named, loaded on demand, evicted least-recently-used.

Every adapter a client can name is *known* (a name and a directory); at most `max_resident` are
*resident* (loaded into the PeftModel). A request pins its adapter until it finishes, so an
adapter is never evicted under a running request. `mix:` names become resident combinations
built once from their components (see `combine.py`) and are evicted like any other.

Only plain LoRA adapters are served: they are what PEFT can mix in one batch (`adapter_names=`;
PEFT refuses DoRA there) and what vLLM loads. Other shapes are refused with a pointer to
`attune export`, which merges them into a full model that `--model` serves.

Locks: `_lock` orders registry changes; loading takes the engine's lock so no forward pass runs
while the model changes. Unpinning (called from the engine thread, which holds the engine lock)
only takes the small `_pin_lock`, so the two never wait on each other in a cycle.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from attune.errors import AttuneError
from attune.models.engine import BASE, Engine
from attune.serve.combine import MixSpec, build_mix, parse_mix
from attune.serve.errors import ServeError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
RESERVED_PREFIXES = ("mix:", "route:", "rag:")


@dataclass
class AdapterInfo:
    """A servable adapter: where it lives and what it is for (the router reads `description`)."""

    name: str
    path: Path
    rank: int
    description: str | None = None
    runtime: bool = False  # added through POST /v1/adapters (and removable through DELETE)

    @property
    def peft_name(self) -> str:
        # prefixed: PEFT warns about (and can mis-load) names that are substrings of "lora_", like "a"
        return f"adapter-{self.name}"


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise ServeError(400, f"adapter name {name!r} is invalid: use 1-64 letters, digits, '_' or '-'", "name")


def lora_rank(path: Path) -> int:
    """The adapter's LoRA rank, refusing shapes the server cannot batch and configs it cannot read (400)."""
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise ServeError(400, f"{path}: not a LoRA adapter (no adapter_config.json); merge other shapes with `attune export`")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServeError(400, f"{config_file}: not a readable JSON file ({exc})", "path") from exc
    if not isinstance(config, dict):
        raise ServeError(400, f"{config_file}: expected a JSON object", "path")
    kind = config.get("peft_type")
    if kind != "LORA" or config.get("use_dora"):
        shown = "DoRA" if kind == "LORA" else kind
        raise ServeError(
            400, f"{path}: a {shown} adapter; the server batches plain LoRA adapters only. "
            "Merge it into its base with `attune export` and serve that directory with --model."
        )
    pattern = config.get("rank_pattern") or {}
    ranks = [config.get("r", 8), *(pattern.values() if isinstance(pattern, dict) else [None])]
    if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
        raise ServeError(400, f"{config_file}: r and rank_pattern must be positive integers, got {ranks}", "path")
    return max(ranks)


MAX_ADAPTER_FILES = 256


def inside(path: Path, roots: list[Path]) -> Path:
    """`path` resolved (symlinks too) if it lies inside one of `roots`, and so does every file in it
    (a symlinked file or folder pointing elsewhere is refused); relative paths are taken under each root."""
    shown = repr(str(path)[:120])
    try:
        candidates = [path.resolve()] if path.is_absolute() else [(r / path).resolve() for r in roots]
        for candidate in candidates:
            for root in (r.resolve() for r in roots):
                if candidate.is_relative_to(root) and candidate.exists():
                    _contained(candidate, root, shown)
                    return candidate
    except (ValueError, OSError) as exc:  # a NUL byte, a name too long for the file system, a loop of links
        raise ServeError(400, f"adapter path {shown} is invalid ({exc})", "path") from exc
    raise ServeError(400, f"adapter path {shown} is not inside an allowed adapter directory (--adapter-dir)", "path")


def _contained(folder: Path, root: Path, shown: str) -> None:
    if not folder.is_dir():
        raise ServeError(400, f"adapter path {shown} is not a directory", "path")
    entries = list(folder.iterdir())
    if len(entries) > MAX_ADAPTER_FILES:
        raise ServeError(400, f"adapter path {shown} holds more than {MAX_ADAPTER_FILES} entries", "path")
    for entry in entries:
        if not entry.resolve().is_relative_to(root):
            raise ServeError(400, f"adapter path {shown}: {entry.name} links outside the allowed adapter directory", "path")
        if entry.is_dir():
            _contained(entry, root, shown)


def check_weights(path: Path) -> None:
    """Runtime adapters load safetensors weights only (a .bin file is a pickle), and each must parse."""
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ServeError(400, f"{path}: no adapter_model.safetensors (runtime loading reads safetensors only)", "path")
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as weights:
                list(weights.keys())
        except Exception as exc:  # safetensors raises its own error type for every kind of damage
            raise ServeError(400, f"{f.name}: not a valid safetensors file ({exc})", "path") from exc


class AdapterRegistry:
    """Known adapters, the resident LRU set and the pins of running requests."""

    def __init__(
        self, engine: Engine, max_resident: int = 8, adapter_dirs: list[Path] | None = None,
        observer: Callable[[str, dict], None] | None = None,
    ) -> None:
        self.engine = engine
        self._observe = observer or (lambda event, data: None)
        self.max_resident = max_resident
        self.adapter_dirs = [Path(d) for d in adapter_dirs or []]
        self.known: dict[str, AdapterInfo] = {}
        self.loads = 0
        self.evictions = 0
        self._resident: OrderedDict[str, None] = OrderedDict()  # PEFT names, least recently used first
        self._mixes: dict[str, MixSpec] = {}
        self._pins: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._pin_lock = threading.Lock()

    # ---- configuration ----
    def add(self, name: str, path: str | Path, *, runtime: bool = False, description: str | None = None) -> AdapterInfo:
        """Make `name` servable and load it now (a wrong-base adapter fails here, not at first use)."""
        check_name(name)
        path = Path(path)
        if runtime:
            if not self.adapter_dirs:
                raise ServeError(403, "runtime adapter loading is disabled: start the server with --adapter-dir DIR")
            path = inside(path, self.adapter_dirs)
            check_weights(path)
        elif not path.is_dir():
            raise AttuneError(f"adapter {name!r}: {path} is not a directory")
        info = AdapterInfo(name, path.resolve(), lora_rank(path), description, runtime)
        with self._lock:
            if name in self.known:
                raise ServeError(409, f"adapter {name!r} is already loaded; DELETE /v1/adapters/{name} first", "name")
            self._make_room()
            self._load(info)
            self.known[name] = info
        return info

    def remove(self, name: str) -> None:
        """Forget a runtime adapter (it must not be serving a request right now)."""
        with self._lock:
            info = self.known.get(name)
            if info is None:
                raise ServeError(404, f"no adapter named {name!r}")
            if not info.runtime:
                raise ServeError(403, f"adapter {name!r} was configured at startup and cannot be removed at runtime")
            if self._pinned(info.peft_name):
                raise ServeError(409, f"adapter {name!r} is serving requests; retry when they finish")
            self._evict(info.peft_name)
            del self.known[name]
            for peft_name, spec in list(self._mixes.items()):  # combinations that used it are stale
                if name in dict(spec.parts):
                    if peft_name in self._resident and not self._pinned(peft_name):
                        self._evict(peft_name)
                    self._mixes.pop(peft_name, None)

    # ---- per request ----
    def acquire(self, adapter: str | None) -> str:
        """The PEFT adapter name to run `adapter` with (None = the base), loaded and pinned."""
        if adapter is None:
            return BASE
        with self._lock:
            if adapter.startswith("mix:"):
                peft_name = self._ensure_mix(parse_mix(adapter))
            else:
                info = self.known.get(adapter)
                if info is None:
                    raise ServeError(404, f"model {adapter!r} does not exist; GET /v1/models lists the served names", "model")
                if info.peft_name not in self._resident:
                    self._make_room()
                    self._load(info)
                peft_name = info.peft_name
            self._resident.move_to_end(peft_name)
            with self._pin_lock:
                self._pins[peft_name] += 1
        return peft_name

    def release(self, peft_name: str) -> None:
        if peft_name == BASE:
            return
        with self._pin_lock:
            self._pins[peft_name] -= 1

    @property
    def resident(self) -> list[str]:
        """Resident adapters by served name (mixes as their canonical `mix:` name)."""
        names = {i.peft_name: i.name for i in self.known.values()}
        names.update({p: f"mix:{s.key}" for p, s in self._mixes.items()})
        return [names.get(p, p) for p in self._resident]

    # ---- internals (called with self._lock held) ----
    def _ensure_mix(self, spec: MixSpec) -> str:
        name = spec.peft_name
        if name in self._resident:
            return name
        missing = [n for n, _ in spec.parts if n not in self.known]
        if missing:
            raise ServeError(404, f"mix:{spec.key}: unknown adapter(s) {', '.join(missing)}", "model")
        components = [self.known[n] for n, _ in spec.parts]
        pinned = []
        try:
            for info in components:  # load the parts, pinned so making room for one cannot evict another
                if info.peft_name not in self._resident:
                    self._make_room()
                    self._load(info)
                with self._pin_lock:
                    self._pins[info.peft_name] += 1
                pinned.append(info.peft_name)
            self._make_room()
            with self.engine.lock:
                build_mix(self.engine.model, spec, [i.peft_name for i in components])
        finally:
            for p in pinned:
                self.release(p)
        self._mixes[name] = spec
        self._resident[name] = None
        self._observe("adapter_load", {"resident": len(self._resident)})
        return name

    def _pinned(self, peft_name: str) -> bool:
        with self._pin_lock:
            return self._pins[peft_name] > 0

    def _make_room(self) -> None:
        while len(self._resident) >= self.max_resident:
            victim = next((p for p in self._resident if not self._pinned(p)), None)
            if victim is None:
                raise ServeError(429, f"all {self.max_resident} adapter slots are serving requests (--max-adapters)")
            self._evict(victim)

    def _load(self, info: AdapterInfo) -> None:
        from peft import PeftModel

        from attune.models.adapters_io import load_adapter

        with self.engine.lock:
            model = self.engine.model
            try:
                self.engine.model = load_adapter(model, info.path, name=info.peft_name)
            except Exception as exc:  # whatever PEFT or torch raise for a bad adapter, the server stays up
                if not isinstance(model, PeftModel):
                    _strip_lora_layers(model)  # a failed first load may have wrapped layers in place
                elif info.peft_name in model.peft_config:
                    model.delete_adapter(info.peft_name)
                raise ServeError(400, f"adapter {info.name!r}: {exc}") from exc
            self.engine.model.eval()
        self._resident[info.peft_name] = None
        self.loads += 1
        self._observe("adapter_load", {"resident": len(self._resident)})

    def _evict(self, peft_name: str) -> None:
        with self.engine.lock:
            self.engine.model.delete_adapter(peft_name)
        self._resident.pop(peft_name, None)
        self.evictions += 1
        self._observe("adapter_evict", {"resident": len(self._resident)})


def _strip_lora_layers(model) -> None:
    """Undo a half-finished PEFT injection: put every wrapped layer's base layer back."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
