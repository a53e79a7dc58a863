"""Fixtures shared by the alignment tests (imported by them; pytest finds fixtures in a test module's namespace)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models are dominated by per-op overhead, which a second thread only adds to on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
