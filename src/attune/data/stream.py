"""Mix record streams on the fly, for corpora that are read while training instead of loaded.

`interleave` is the streaming twin of `mix_datasets`: each next record comes from a source drawn
with probability proportional to its weight, so no source is ever held in memory. A source that
runs out is restarted (small ones are repeated, as `mix_datasets` repeats them), and one pass
ends when every source marked `ends_pass` has been read to its end at least once. Replay sets
are not marked: they are cycled for as long as the domain corpus lasts.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from attune.errors import AttuneError

T = TypeVar("T")


@dataclass(frozen=True)
class StreamSource(Generic[T]):
    """A restartable stream: `open()` starts it from the beginning (it must yield the same items each time)."""

    name: str
    open: Callable[[], Iterator[T]]
    weight: float = 1.0
    ends_pass: bool = True


def interleave(sources: Sequence[StreamSource[T]], seed: int) -> Iterator[T]:
    """One pass over `sources`, mixed by weight; deterministic for a given `seed`."""
    if not any(s.ends_pass for s in sources):
        raise AttuneError("interleave: at least one source must end the pass (all of them are cycled)")
    rng = random.Random(seed)
    iters = [s.open() for s in sources]
    unfinished = {i for i, s in enumerate(sources) if s.ends_pass}
    restarted_empty: set[int] = set()
    weights = [s.weight for s in sources]
    while unfinished:
        i = rng.choices(range(len(sources)), weights)[0]
        try:
            item = next(iters[i])
        except StopIteration:
            if i in restarted_empty:  # restarted and still nothing: an empty source would spin forever
                raise AttuneError(f"stream {sources[i].name!r} yielded no records") from None
            unfinished.discard(i)
            iters[i] = sources[i].open()
            restarted_empty.add(i)
            continue
        restarted_empty.discard(i)
        yield item
