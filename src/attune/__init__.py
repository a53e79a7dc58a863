"""attune: adapt a pretrained LLM to a task, a domain or a behaviour, and prove it worked.

Importing the package is cheap: heavy libraries (torch, transformers, peft) are imported by the
modules that need them, never here.
"""

__version__ = "0.1.0"
