"""Escape hatches: a reward from the user's own Python function, and putting unbounded scores on [0, 1].

`py:module:function` imports `function` from `module` (the current directory is searched last,
so a stray file there never shadows an installed module) and calls it with a copy of a list of
records; it returns one number per record. Scores outside
[0, 1] need a range: `scale(...)`, `--reward-range LO:HI` or `--calibrate FILE` (Scaled).
"""

from __future__ import annotations

import copy
import importlib
import math
import os
import statistics
import sys
from collections.abc import Callable, Iterable
from numbers import Real
from pathlib import Path

from rest_cli import __version__
from rest_cli.errors import RestError, UsageError
from rest_cli.io.records import FIELDS, Record, RecordReader
from rest_cli.rewards.base import FieldCap, Reward, Scores, batched, fields_of

# The percentiles --calibrate maps to 0 and 1: the extremes, less 1% on each side for outliers.
CALIBRATION_PERCENTILES = (1, 99)


def as_numbers(values, count: int, who: str) -> list[float]:
    """Check a user reward's answer: `count` finite numbers. Errors name `who` (function or command)."""
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
        raise RestError(f"{who} returned {type(values).__name__}, not a list of {count} numbers")
    values = list(values)
    if len(values) != count:
        raise RestError(f"{who} returned {len(values)} values for {count} records")
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise RestError(f"{who} returned {value!r} ({type(value).__name__}) for record {i + 1} "
                            f"of the batch, not a finite number")
    return [float(v) for v in values]


def in_unit_range(values: list[float], who: str) -> list[float]:
    """Refuse values outside [0, 1], saying how to give the scorer's range."""
    for value in values:
        if not 0.0 <= value <= 1.0:
            raise RestError(f"{who} returned {value!r}, outside [0, 1]: give its range with "
                            f"--reward-range LO:HI, --calibrate FILE or scale(..., lo=LO, hi=HI)")
    return values


class UserReward(Reward):
    """A reward whose raw scores may be unbounded: `raw_score` checks numbers, `score` also [0, 1]."""

    who = ""

    def raw_score(self, records: list[Record]) -> list[float]:
        raise NotImplementedError

    def score(self, records: list[Record]) -> list[float]:
        return in_unit_range(self.raw_score(records), self.who)


def import_function(target: str, spec: str) -> Callable:
    """Import `module:function` (dots allowed in both), searching the current directory last."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UsageError(f"reward {spec!r}: expected py:MODULE:FUNCTION, e.g. py:my_rewards:length_bonus")
    try:
        obj = _import_user_module(module_name)
    except Exception as err:  # the user's module may fail in any way while importing
        raise UsageError(f"reward {spec!r}: cannot import module {module_name!r}: "
                         f"{type(err).__name__}: {err}") from None
    module = obj
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if not callable(obj):
        raise UsageError(f"reward {spec!r}: module {module_name!r} has no function {attr!r}"
                         f"{_shadowed(module, module_name)}")
    return obj


def _shadowed(module, name: str) -> str:
    """A hint when an installed module of the same name was imported instead of the user's file."""
    local = Path(os.getcwd(), *name.split(".")).with_suffix(".py")
    found = getattr(module, "__file__", None)
    if local.is_file() and found and Path(found).resolve() != local.resolve():
        return (f" (an installed module of that name, {found}, comes before ./{local.name}: "
                f"rename your file)")
    return ""


def _import_user_module(name: str):
    """Import `name` with the current directory at the END of sys.path, for this import only.

    `rest` as an installed script does not have the current directory on the path; first there, a
    stray file (a `sacrebleu.py`) would shadow rest's own dependencies, for the rest of the run.
    Last, it is searched only for what nothing installed provides: the user's module, and what the
    module imports from beside it while it is imported.
    """
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        return importlib.import_module(name)
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _contract_fields(needs, name: str) -> tuple[str, ...]:
    """A function's `needs`, which the reader checks: only fields of the record contract have checks."""
    needs = (needs,) if isinstance(needs, str) else tuple(needs)
    unknown = [f for f in needs if f not in FIELDS]
    if unknown:
        raise UsageError(f"reward {name!r}: needs names {', '.join(map(repr, unknown))}; it can name only "
                         f"record fields with a type to check: {', '.join(FIELDS)}")
    return needs


class PythonFunction(UserReward):
    """`py:module:function`: function(records: list[dict]) -> list[float], one per record.

    The function gets a deep copy of the records: what it changes in them goes nowhere.

    The function may carry `needs` (fields it reads, checked on input like any reward's) and
    `version` (recorded in the signature; else the module's `__version__`).
    """

    def __init__(self, target: str):
        self.name = f"py:{target}"
        self.target = target
        self.function = import_function(target, self.name)
        self.needs = _contract_fields(getattr(self.function, "needs", ("hyp",)), self.name)
        self.who = f"reward function {target!r}"

    def raw_score(self, records: list[Record]) -> list[float]:
        try:
            # A deep copy (values may be nested): a function that edits its records must not change
            # what is written. Measured: 22 ms per 10,000 records of five short fields (70 ms nested).
            values = self.function(copy.deepcopy(records))
        except Exception as err:  # one line naming the function, not a traceback through rest
            raise RestError(f"{self.who} raised {type(err).__name__}: {err}") from None
        return as_numbers(values, len(records), self.who)

    def signature(self) -> str:
        module = sys.modules.get(self.function.__module__)
        version = getattr(self.function, "version", None) or getattr(module, "__version__", None) or "unknown"
        return f"{self.name}|version:{version}|rest:{__version__}"


class Scaled(Reward):
    """clip((x - lo) / (hi - lo), 0, 1) over another reward's raw scores; the range goes in the signature."""

    def __init__(self, inner: Reward, lo: float, hi: float, how: str = "given"):
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise UsageError(f"reward range {lo:g}:{hi:g} for {inner.name!r} needs finite LO < HI")
        self.inner, self.lo, self.hi, self.how = inner, lo, hi, how
        self.name, self.needs = inner.name, inner.needs

    def score(self, records: list[Record]) -> Scores:
        raw = getattr(self.inner, "raw_score", self.inner.score)(records)
        span = self.hi - self.lo
        return Scores([min(1.0, max(0.0, (x - self.lo) / span)) for x in raw], fields_of(raw))

    def signature(self) -> str:
        return (f"{self.inner.signature()}|range:{exact_number(self.lo)}:{exact_number(self.hi)}|"
                f"range-from:{self.how}|map:clip((x-lo)/(hi-lo),0,1)")

    def close(self) -> None:
        self.inner.close()


def exact_number(x: float) -> str:
    """Short when that is exact (5, not 5.0), else every digit: a calibrated range must reproduce."""
    return f"{x:g}" if float(f"{x:g}") == x else repr(x)


def parse_range(text: str) -> tuple[float, float]:
    """`LO:HI` as two floats (`--reward-range -5:5`)."""
    lo, sep, hi = text.rpartition(":")
    try:
        if not sep:
            raise ValueError
        return float(lo), float(hi)
    except ValueError:
        raise UsageError(f"--reward-range expects LO:HI, e.g. 0:100, got {text!r}") from None


def calibration_pairs(path: str, needs: Iterable[str]) -> list[Record]:
    """The file's references as hypotheses (good end), and each shifted one record on (unrelated end)."""
    required = ("src", "ref", *(f for f in needs if f not in ("src", "ref", "hyp")))
    records = list(RecordReader(path, required=required, needed_by="--calibrate"))
    if len(records) < 2:
        raise UsageError(f"--calibrate {path}: needs at least 2 records with 'src' and 'ref', "
                         f"found {len(records)}")
    shifted = records[1:] + records[:1]
    return ([{**r, "hyp": r["ref"]} for r in records]
            + [{**r, "hyp": s["ref"]} for r, s in zip(records, shifted)])


def calibrate(reward: Reward, path: str, batch_size: int = 256, cap: FieldCap | None = None) -> Scaled:
    """Scale `reward` so the 1st percentile of its scores on `path`'s pairs maps to 0 and the 99th to 1.

    The pairs pool true translations (src, ref) with mismatched ones (src, another record's
    ref), so the range spans "unrelated" to "as good as a reference", trimmed of outliers. The
    reward is shown them through `cap` (default: base.MAX_CHARS), as score_records shows records.
    """
    cap = cap if cap is not None else FieldCap()
    pairs = [cap.view(pair) for pair in calibration_pairs(path, reward.needs)]
    raw = getattr(reward, "raw_score", reward.score)
    who = f"reward {reward.name!r}"
    scores = [x for batch in batched(pairs, batch_size) for x in as_numbers(raw(batch), len(batch), who)]
    cuts = statistics.quantiles(scores, n=100, method="inclusive")
    lo, hi = (cuts[p - 1] for p in CALIBRATION_PERCENTILES)
    if not lo < hi:
        raise RestError(f"--calibrate {path}: {who} gives the same score ({lo:g}) across the file; "
                        "cannot scale it")
    how = (f"calibrate:{Path(path).name}:n={len(pairs)}:"
           f"p{CALIBRATION_PERCENTILES[0]}-p{CALIBRATION_PERCENTILES[1]}")
    return Scaled(reward, lo, hi, how)
