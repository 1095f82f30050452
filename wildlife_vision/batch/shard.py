"""`predict --shard I/N`: a deterministic split of one job into N disjoint parts, for any scheduler's job array.

Each input belongs to exactly one shard, chosen by a hash of its ``input`` key (the path string exactly as it
is written in the output rows): ``int(sha256(key)[:8]) mod N``. The choice depends on nothing but the key and
N (not on the machine, the Python version, the order of the listing or the other inputs), so N array tasks
that each list the same PATHs on different nodes agree on the split, the union of their outputs is exactly
the full job, and no input is in two of them. Contiguous slices of the sorted list would balance the shards
exactly, but an input added or removed between two tasks' listings would shift every later slice boundary and
give overlaps or gaps; a hash keeps every other input where it was. See docs/batch.md.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import List, Sequence

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"the shard count N must be at least 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"the shard index I must be in 0..{self.count - 1} (0-based) for N = {self.count}, "
                             f"got {self.index}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, key: str) -> bool:
        """Whether the input with this ``input`` key belongs to this shard."""
        return shard_of(key, self.count) == self.index

    def select(self, keys: Sequence[str]) -> List[str]:
        """The keys of this shard, in their given order."""
        return [k for k in keys if self.owns(k)]


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) of one input key: the first 8 bytes of its UTF-8 SHA-256, big-endian, mod count.

    Keys that are not valid UTF-8 file names (lone surrogates from ``os.fsdecode``) hash their surrogates as
    such (``surrogatepass``), so every string has exactly one shard.
    """
    digest = hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> Shard:
    """``"I/N"`` -> :class:`Shard`; raises ValueError saying what is wrong (format, N < 1, I outside 0..N-1)."""
    m = _SHARD.fullmatch(str(text))
    if not m:
        raise ValueError(f"--shard wants I/N with whole numbers, 0 <= I < N (I is 0-based), e.g. --shard 0/4; "
                         f"got {text!r}")
    try:
        return Shard(int(m.group(1)), int(m.group(2)))
    except ValueError as e:
        raise ValueError(f"--shard {text.strip()}: {e}") from None


__all__ = ["Shard", "parse_shard", "shard_of"]
