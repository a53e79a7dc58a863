"""attune: adapt a pretrained LLM to a task, a domain or a behaviour, and prove it worked.

The Python API is `attune.api` (train, evaluate, compare, rag_index / rag_ask, serve, advise),
the same operations as the CLI, returning typed results:

    from attune import api
    run = api.train("builtin:recipes/demo")

Importing the package is cheap: heavy libraries (torch, transformers, peft) are imported by the
functions that need them, never here.
"""

from attune.errors import AttuneError

__version__ = "0.1.0"
__all__ = ["AttuneError", "__version__"]
