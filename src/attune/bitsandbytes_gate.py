"""bitsandbytes is imported only for QLoRA.

PEFT imports bitsandbytes at module level whenever it is installed (`peft.helpers`), and
bitsandbytes in turn imports transformers' fp8 integration and `torch._inductor`: about 2 s on
every `attune` start on a 2-core CPU, plus its kernel notes, for a library only QLoRA uses. The CLI
therefore keeps it out until a QLoRA shape asks for it: `sys.modules["bitsandbytes"] = None` makes
`import bitsandbytes` fail and `importlib.util.find_spec` answer None, exactly what PEFT and
transformers see when it is not installed, so they skip it.

Letting it in undoes what they cached while it was out: their `lru_cache`d availability checks
are cleared, and PEFT's bnb tuner modules (which define their classes only when bitsandbytes was
importable) are dropped so they import afresh. Nothing happens when the gate was never closed, so
a Python API user who imported PEFT first keeps the usual behaviour.
"""

from __future__ import annotations

import importlib
import sys

NAME = "bitsandbytes"
_AVAILABILITY_CHECKS = {
    "transformers.utils.import_utils": ("is_bitsandbytes_available",),
    "peft.import_utils": ("is_bnb_available", "is_bnb_4bit_available"),
}


def keep_bitsandbytes_out() -> None:
    """Make bitsandbytes look absent to this process, unless something imported it already."""
    if NAME not in sys.modules:
        sys.modules[NAME] = None  # type: ignore[assignment]


def let_bitsandbytes_in() -> None:
    """Undo `keep_bitsandbytes_out` (QLoRA is about to load a 4-bit model); a no-op otherwise."""
    if NAME not in sys.modules or sys.modules[NAME] is not None:
        return
    del sys.modules[NAME]
    for module_name, checks in _AVAILABILITY_CHECKS.items():
        module = sys.modules.get(module_name)
        for check in checks if module is not None else ():
            getattr(getattr(module, check, None), "cache_clear", lambda: None)()
    for stale in [m for m in sys.modules if m.startswith("peft.tuners.") and m.endswith(".bnb")]:
        del sys.modules[stale]
    helpers = sys.modules.get("peft.helpers")
    if helpers is not None and getattr(helpers, "bnb", None) is None:
        helpers.bnb = importlib.import_module(NAME)
