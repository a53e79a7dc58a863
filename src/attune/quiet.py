"""Quiet by default: the CLI hides other libraries' deprecation notices, kernel fallbacks and info logs.

They are about those libraries, not the user's run (transformers' `is_gradient_checkpointing`
FutureWarning, DeepSpeed's "Setting accelerator to CPU", bitsandbytes' missing-kernel note on CPUs
with AVX512-BF16). `attune --verbose COMMAND` shows them. Errors are never hidden; attune's own
warnings are not touched.
"""

from __future__ import annotations

import logging
import os
import warnings

THIRD_PARTY = r"(torch|transformers|peft|accelerate|trl|datasets|bitsandbytes|deepspeed|sentence_transformers|huggingface_hub|faiss)"
LOGGERS = ("transformers", "peft", "accelerate", "datasets", "bitsandbytes", "torch", "huggingface_hub", "sentence_transformers")


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def quiet_third_party() -> None:
    """Hide third-party warnings and logs below ERROR for this process and the processes it starts."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")  # torchrun children
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", category=UserWarning, module=THIRD_PARTY)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # DeepSpeed (imported by accelerate's unwrap_model) sets its logger's own level at import: filter instead
    logging.getLogger("DeepSpeed").addFilter(_below_error)
