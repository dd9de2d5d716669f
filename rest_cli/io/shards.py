"""Deterministic shards of a record stream, so that N jobs can share one Grow step.

Shard K of N (1-based, as in coreutils `split -n K/N`) owns every N-th source, starting with
the K-th: sources are dealt round-robin, which spreads long and short sources evenly. Every
job reads the whole input and keeps its own sources, so no job needs to know the input's size
and the shards together hold each source exactly once, with its candidates grouped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from rest_cli.errors import UsageError
from rest_cli.io.records import Record, RecordReader, iter_groups


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """`K/N` with 1 <= K <= N."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise UsageError(f"--shard must look like K/N (for example 2/8), got {text!r}") from None
        if not 1 <= index <= count:
            raise UsageError(f"--shard K/N needs 1 <= K <= N, got {text!r}")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, position: int) -> bool:
        """Whether the source at 0-based `position` among all sources is this shard's."""
        return position % self.count == self.index - 1

    def seed(self, seed: int) -> int:
        """The random seed of this shard: reproducible from the global seed, different per shard.

        One shard of one is the whole input and keeps the global seed, so `--shard 1/1` changes
        nothing.
        """
        return seed if self.count == 1 else derived_seed(seed, "shard", self.index, self.count)


def derived_seed(seed: int, *salt: Any) -> int:
    """A 32-bit seed for one part of a run (a shard, a resumed remainder), reproducible from the
    run's seed."""
    digest = hashlib.sha256(orjson.dumps(["rest", seed, *salt])).digest()
    return int.from_bytes(digest[:4], "little")


def shard_records(records: Iterable[Record], shard: Shard | None) -> Iterator[Record]:
    """The records of `shard`, one source per record (the input of `rest sample`)."""
    if shard is None:
        yield from records
        return
    for position, record in enumerate(records):
        if shard.owns(position):
            yield record


def shard_groups(reader: RecordReader, shard: Shard | None, key: str = "id") -> Iterator[Record]:
    """The records of `shard` from a stream of candidates grouped by `key` (the input of `rest score`)."""
    if shard is None:
        yield from reader
        return
    for position, group in enumerate(iter_groups(reader, key, reader=reader)):
        if shard.owns(position):
            yield from group
