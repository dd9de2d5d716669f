"""What a reward is, the registry that names rewards, and scoring a record stream in batches."""

from __future__ import annotations

import contextlib
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from rest_cli.errors import RestError, UsageError
from rest_cli.io.records import Record

# The most characters of `hyp`, `ref` and `src` a reward is shown (--reward-max-chars; 0 = all). Far above
# an ordinary record (rest samples 256 tokens by default, about 1,000-1,500 characters; a sentence of an MT
# corpus rarely passes 1,000), and it bounds the worst registered reward: TER on two unrelated texts of
# 5,000 characters takes 28 s and 150 MB, of 20,000 characters 208 s and 530 MB (50,000 words: 20 GB).
MAX_CHARS = 5_000
CAPPED_FIELDS = ("hyp", "ref", "src")


@dataclass
class FieldCap:
    """What a reward is shown of a record: at most `max_chars` characters of each of CAPPED_FIELDS.

    The reward sees a shortened copy; the record itself keeps its full text. `truncated` counts
    the records shortened, for the command's report.
    """

    max_chars: int = MAX_CHARS  # 0: no cap
    truncated: int = 0

    def view(self, record: Record) -> Record:
        """`record` itself when it is within the cap, else a copy with the long fields cut."""
        cap = self.max_chars
        long = [f for f in CAPPED_FIELDS if cap and isinstance(record.get(f), str) and len(record[f]) > cap]
        if not long:
            return record
        self.truncated += 1
        return {**record, **{f: record[f][:cap] for f in long}}

    def summary(self) -> str:
        fields = f"{', '.join(CAPPED_FIELDS[:-1])} and {CAPPED_FIELDS[-1]}"
        return (f"truncated {self.truncated} record(s) to {self.max_chars} characters of {fields} "
                f"for the reward (--reward-max-chars; 0 = no cap)")


class Reward(ABC):
    """A function R(x, y) in [0, 1] over records, scored a batch at a time.

    `needs` lists the record fields the reward reads; the reader checks them before
    scoring, so a missing reference is reported with its file and line. `cap` (set by
    build_reward from RewardOptions.max_chars) is what score_records shows the reward of each record.
    """

    name: str = ""
    needs: tuple[str, ...] = ("hyp",)
    cap: FieldCap | None = None  # None: score_records uses the default cap

    @abstractmethod
    def score(self, records: list[Record]) -> list[float]:
        """Return one reward in [0, 1] per record, in order (a `Scores` to add fields to the records)."""

    @abstractmethod
    def signature(self) -> str:
        """Name, settings and versions: enough to reproduce the reward (sacrebleu style)."""

    def close(self) -> None:  # noqa: B027  (optional to override: most rewards hold nothing)
        """Release what the reward holds (a child process, say). Most rewards hold nothing."""

    def __enter__(self) -> "Reward":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()  # may raise: an external command's stray last line fails the command
            return
        with contextlib.suppress(Exception):  # the error already under way is the one to report
            self.close()


class Scores(list):
    """A reward's values for a batch, with `fields` to add to each record: one dict per record.

    A reward that says why a candidate got its value (an extracted answer, a test verdict) returns
    Scores(values, fields); a plain list means no fields. score_records adds the fields to the records
    (overwriting only those names), and compositions pass their parts' fields on.
    """

    def __init__(self, values: Iterable[float], fields: list[dict] | None = None):
        super().__init__(values)
        self.fields = fields if fields is not None else [{} for _ in self]
        if len(self.fields) != len(self):
            raise ValueError(f"{len(self.fields)} field sets for {len(self)} values")


def fields_of(values: list[float]) -> list[dict]:
    """The fields a reward's answer adds to each record: Scores' own, none for a plain list."""
    return getattr(values, "fields", None) or [{} for _ in values]


def merged_fields(columns: list[list[float]]) -> list[dict]:
    """Record by record, the fields of several rewards' answers; a later part's name wins a clash."""
    merged = [{} for _ in columns[0]] if columns else []
    for column in columns:
        for fields, extra in zip(merged, fields_of(column)):
            fields.update(extra)
    return merged


_REGISTRY: dict[str, Callable[..., Reward]] = {}


def register(name: str) -> Callable[[Callable[..., Reward]], Callable[..., Reward]]:
    """Class decorator: make a reward available by `name` to `rest score --reward`."""
    def add(factory: Callable[..., Reward]) -> Callable[..., Reward]:
        if name in _REGISTRY:
            raise ValueError(f"reward {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory
    return add


def reward_names() -> list[str]:
    """The registered names, sorted (compositions and py:/cmd: specs are not listed)."""
    return sorted(_REGISTRY)


def registered_reward(name: str, **params) -> Reward:
    """The reward registered as `name`, with settings such as `max_ratio=2.0`.

    The registry's side of building; callers outside rest_cli.rewards use build.build_reward.
    """
    if name not in _REGISTRY:
        raise UsageError(f"unknown reward {name!r}; known rewards: {', '.join(reward_names())}")
    factory = _REGISTRY[name]
    try:
        inspect.signature(factory).bind(**params)
    except TypeError:
        # Checked before the call, so a TypeError raised inside the reward is not mistaken for this.
        allowed = list(inspect.signature(factory).parameters)
        unknown = [key for key in params if key not in allowed] or list(params)
        raise UsageError(f"reward {name!r} takes no parameter {', '.join(map(repr, unknown))}; "
                         f"its parameters: {', '.join(allowed) or 'none'}") from None
    return factory(**params)


def batched(items: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """Lists of up to `size` items, in order."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def checked(values: list[float], batch: list[Record], reward: Reward) -> list[float]:
    """`values` if there is one per record of `batch`, each a finite number in [0, 1]; else a RestError."""
    if len(values) != len(batch):
        raise RestError(f"reward {reward.name!r} returned {len(values)} values for {len(batch)} records")
    for value in values:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
            raise RestError(f"reward {reward.name!r} returned {value!r}, not a number in [0, 1]")
    return values


def score_records(records: Iterable[Record], reward: Reward, batch_size: int = 256) -> Iterator[Record]:
    """Add `reward`, `reward_name` and `reward_sig` to each record, scoring in batches.

    A batch is checked whole before any of its records is yielded, so a reward that
    fails never leaves values attached to the wrong records. The reward is shown each record
    through `reward.cap` (long text fields cut), and the records keep their full text. A reward
    that returns `Scores` also adds its fields (`hyp_answer`, `tests_verdict`, ...) to each record.
    """
    cap = reward.cap if reward.cap is not None else FieldCap()
    signature = None
    for batch in batched(records, batch_size):
        values = checked(reward.score([cap.view(r) for r in batch]), batch, reward)
        signature = signature or reward.signature()  # sacrebleu knows its settings only after scoring
        for record, value, fields in zip(batch, values, fields_of(values)):
            record.update(fields)
            record["reward"] = float(value)
            record["reward_name"] = reward.name
            record["reward_sig"] = signature
            yield record
