"""Model references, loading (builtin GGUF cache, local dirs, hub ids), generation backends."""

from attune.models.generation import GenerationParams, Generator, HFGenerator, OpenAIGenerator, load_generator
from attune.models.loading import LoadedModel, load_model, load_tokenizer, model_source
from attune.models.reference import ModelRef, parse_model_ref

__all__ = [
    "GenerationParams",
    "Generator",
    "HFGenerator",
    "LoadedModel",
    "ModelRef",
    "OpenAIGenerator",
    "load_generator",
    "load_model",
    "load_tokenizer",
    "model_source",
    "parse_model_ref",
]
