"""The decisions the ReST loop makes between steps; the loop itself is the Makefile (rest.mk).

Kept here, small and tested, so that rest.mk only chains commands: which threshold an Improve
step uses, whether validation reward is still rising, which checkpoint becomes the policy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from rest_cli.errors import RestError, UsageError
from rest_cli.io.records import RecordReader

PAPER_SCHEDULE = (0.0, 0.7, 0.8, 0.9, 0.95, 0.99)


def mean_reward(path: str) -> float:
    """Mean `reward` of a scored stream, in constant memory."""
    total, count = 0.0, 0
    for record in RecordReader(path, required=["reward"]):
        total += record["reward"]
        count += 1
    if not count:
        raise RestError(f"{path}: no scored records")
    return total / count


def tau_schedule(schedule: list[float], steps: int, mean: float) -> list[float]:
    """The thresholds of `steps` Improve steps: the schedule's values above the data's mean reward.

    A threshold at or below the mean keeps most of the data, which is no improvement on BC, so
    the low end of the schedule is skipped; if fewer than `steps` values remain, the last repeats.
    """
    if sorted(schedule) != list(schedule):
        raise UsageError(f"the threshold schedule must rise: {schedule}")
    above = [tau for tau in schedule if tau > mean] or [schedule[-1]]
    return (above + [above[-1]] * steps)[:steps]


def threshold(kind: str, schedule: list[float], step: int, candidates: str | None = None) -> float:
    """The filter value for Improve step `step` (1-based).

    `tau` picks from the schedule above the candidates' mean reward; `percentile` and `gamma`
    are per-source already, so their schedule is used as given.
    """
    if step < 1:
        raise UsageError(f"Improve steps count from 1, got {step}")
    if kind == "tau":
        if candidates is None:
            raise UsageError("a tau schedule needs the scored candidates, to skip thresholds "
                             "below their mean")
        return tau_schedule(schedule, step, mean_reward(candidates))[step - 1]
    if kind in ("percentile", "gamma"):
        return schedule[min(step, len(schedule)) - 1]
    raise UsageError(f"unknown filter kind {kind!r}: tau, percentile or gamma")


def _validation(path: str, reward: str) -> tuple[str, float]:
    """(model, mean reward) from a `rest eval` report."""
    try:
        result = json.loads(Path(path).read_text())["results"][0]
        return result["model"], float(result["rewards"][reward])
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise RestError(f"{path}: not a `rest eval` report with reward {reward!r} ({err})") from None


def still_rising(reports: list[str], reward: str, min_gain: float = 0.0) -> bool:
    """True if the last report's validation reward beats every earlier one by more than `min_gain`."""
    values = [_validation(path, reward)[1] for path in reports]
    return len(values) == 1 or values[-1] > max(values[:-1]) + min_gain


def best_model(reports: list[str], reward: str) -> str:
    """The model of the report with the highest validation reward; ties go to the earlier (less trained)."""
    scored = [_validation(path, reward) for path in reports]
    best = max(range(len(scored)), key=lambda i: (scored[i][1], -i))
    if math.isnan(scored[best][1]):
        raise RestError("no validation reward to choose a policy by")
    return scored[best][0]
