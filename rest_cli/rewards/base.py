"""What a reward is, the registry that names rewards, and scoring a record stream in batches."""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

from rest_cli.errors import RestError, UsageError
from rest_cli.io.records import Record


class Reward(ABC):
    """A function R(x, y) in [0, 1] over records, scored a batch at a time.

    `needs` lists the record fields the reward reads; the reader checks them before
    scoring, so a missing reference is reported with its file and line.
    """

    name: str = ""
    needs: tuple[str, ...] = ("hyp",)

    @abstractmethod
    def score(self, records: list[Record]) -> list[float]:
        """Return one reward in [0, 1] per record, in order."""

    @abstractmethod
    def signature(self) -> str:
        """Name, settings and versions: enough to reproduce the reward (sacrebleu style)."""

    def close(self) -> None:  # noqa: B027  (optional to override: most rewards hold nothing)
        """Release what the reward holds (a child process, say). Most rewards hold nothing."""

    def __enter__(self) -> "Reward":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


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
    fails never leaves values attached to the wrong records.
    """
    signature = None
    for batch in batched(records, batch_size):
        values = checked(reward.score(batch), batch, reward)
        signature = signature or reward.signature()  # sacrebleu knows its settings only after scoring
        for record, value in zip(batch, values):
            record["reward"] = float(value)
            record["reward_name"] = reward.name
            record["reward_sig"] = signature
            yield record
