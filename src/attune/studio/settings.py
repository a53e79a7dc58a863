"""What one studio process serves: where runs and data live, and who may connect."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class StudioSettings:
    """The roots the studio reads and writes, and its bind address.

    Every file the studio serves or opens lies under `runs` or `data` (symlinks resolved), or is a
    packaged `builtin:` file. Recipes it saves go to `runs/.studio/recipes/`.
    """

    runs: Path
    data: Path
    host: str = "127.0.0.1"
    port: int = 7860
    token: str | None = None
    python: str = field(default_factory=lambda: sys.executable)

    def __post_init__(self) -> None:
        self.runs = Path(self.runs).resolve()
        self.data = Path(self.data).resolve()

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK

    @property
    def recipes_dir(self) -> Path:
        return self.runs / ".studio" / "recipes"
