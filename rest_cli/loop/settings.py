"""The variables of a ReST run (rest.mk's G, I, N, schedules, ...), checked before any work starts.

rest.mk asks `rest loop check NAME=VALUE ...` while make reads it, so that `make rest G=0` or a
learning-rate list shorter than I fails in a second, not after minutes of training. Each
problem is one line naming the variable; all of them are reported at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rest_cli.errors import RestError, UsageError
from rest_cli.models.modeldir import check_model_dir
from rest_cli.train.objectives import objective_names  # the registry alone: no torch

FILTER_KINDS = ("tau", "percentile", "gamma")
CONTROL_ARMS = ("converged", "more")
TASKS = ("translation", "arithmetic")  # the demos rest.mk knows (TASK=)
IMPROVE_STARTS = ("previous", "base")  # IMPROVE_FROM: ReST's previous policy, or ReST-EM's BC
# The range each filter kind's threshold lives in.
_THRESHOLD_RANGE = {"tau": (0.0, 1.0), "percentile": (0.0, 100.0), "gamma": (0.0, 1.0)}
WHOLE_AT_LEAST_1 = ("G", "I", "N", "IMPROVE_STEPS", "CONTROL_MAX_STEPS", "CONTROL_PATIENCE", "SHARDS")


def _whole(value: str, least: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"must be a whole number, got {value!r}") from None
    if number < least:
        raise ValueError(f"must be at least {least}, got {number}")
    return number


def _numbers(value: str) -> list[float]:
    try:
        return [float(word) for word in value.split()]
    except ValueError:
        raise ValueError(f"must be numbers separated by spaces, got {value!r}") from None


def check_schedule(settings: dict[str, str]) -> None:
    values = _numbers(settings["SCHEDULE"])
    if not values:
        raise ValueError("is empty")
    if values != sorted(values):
        raise ValueError(f"must rise, got {settings['SCHEDULE']!r}")
    low, high = _THRESHOLD_RANGE.get(settings.get("FILTER", "tau"), (0.0, 1.0))
    if not (low <= values[0] and values[-1] <= high):
        raise ValueError(f"must lie in [{low:g}, {high:g}] for FILTER={settings.get('FILTER', 'tau')}")


def check_lrs(settings: dict[str, str]) -> None:
    rates = _numbers(settings["LRS"])
    if any(not rate > 0 for rate in rates):
        raise ValueError(f"learning rates must be above 0, got {settings['LRS']!r}")
    steps = settings.get("I", "1")
    if steps.isdigit() and len(rates) < int(steps):
        raise ValueError(f"needs a learning rate per Improve step: I={steps} but {len(rates)} given")


def check_curve(settings: dict[str, str]) -> None:
    try:
        sizes = [int(word) for word in settings["BON_N"].split(",")]
    except ValueError:
        raise ValueError(f"must be whole numbers separated by commas, got {settings['BON_N']!r}") from None
    if any(size < 1 for size in sizes):
        raise ValueError(f"sizes must be at least 1, got {settings['BON_N']!r}")


def check_one_of(choices: tuple[str, ...], many: bool = False) -> Callable[[str], None]:
    def check(value: str) -> None:
        words = value.split() if many else [value]
        unknown = [word for word in words if word not in choices]
        if unknown:
            raise ValueError(f"must be {'some of' if many else 'one of'} {', '.join(choices)}; "
                             f"got {' '.join(unknown)!r}")
    return check


def check_seeds(value: str) -> None:
    """losses.mk's SEEDS: whole numbers, each once (a repeated seed would be the same run twice)."""
    seeds = [_whole(word, 0) for word in value.split()]
    if not seeds:
        raise ValueError("is empty")
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"names a seed twice: {value!r}")


def check_reward(value: str) -> None:
    from rest_cli.rewards.build import check_spec

    try:
        check_spec(value)
    except UsageError as err:
        raise ValueError(str(err)) from None


def check_data_files(value: str) -> None:
    """A JSONL file, or two aligned text files (source and reference) that `rest from-text` converts."""
    paths = value.split()
    if len(paths) not in (1, 2):
        raise ValueError(f"must be a JSONL file or two text files (source, reference), "
                         f"got {len(paths)} words")
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"no such file: {path}")


def check_start(value: str) -> None:
    """INIT: a policy directory, or a Hugging Face folder that `rest import` can read."""
    if not (Path(value) / "config.json").is_file():
        raise ValueError(f"must be a policy directory or a folder saved with save_pretrained "
                         f"(no {Path(value) / 'config.json'})")


def check_trained_policy(value: str) -> None:
    """BC: a policy directory to start Grow 1 from (rest's own format: it is not trained further)."""
    try:
        check_model_dir(value)
    except RestError as err:
        raise ValueError(f"must be a policy directory that rest finetune or rest import wrote: "
                         f"{err}") from None


# What each variable must be; checks that read one value take it, the others the whole settings.
_VALUE_CHECKS: dict[str, Callable[[str], None]] = {
    **{name: (lambda value, least=1: _whole(value, least)) for name in WHOLE_AT_LEAST_1},
    "SEED": lambda value: _whole(value, 0),
    "FILTER": check_one_of(FILTER_KINDS),
    "TASK": check_one_of(TASKS), "IMPROVE_FROM": check_one_of(IMPROVE_STARTS),
    "CONTROLS": check_one_of(CONTROL_ARMS, many=True),
    "REWARD": check_reward, "OBJECTIVE": check_one_of(tuple(objective_names())),
    "OBJECTIVES": check_one_of(tuple(objective_names()), many=True), "SEEDS": check_seeds,
    "I0_OBJECTIVES": check_one_of(tuple(objective_names()), many=True),
    "TRAIN": check_data_files, "VALID": check_data_files, "TEST": check_data_files, "INIT": check_start,
    "BC": check_trained_policy,
}
_SETTINGS_CHECKS: dict[str, Callable[[dict[str, str]], None]] = {
    "SCHEDULE": check_schedule, "LRS": check_lrs, "BON_N": check_curve,
}


def problems(settings: dict[str, str]) -> list[str]:
    """One line per variable that is wrong: `G=0: must be at least 1, got 0`."""
    found = []
    for name, value in settings.items():
        try:
            if name in _VALUE_CHECKS:
                _VALUE_CHECKS[name](value)
            elif name in _SETTINGS_CHECKS:
                _SETTINGS_CHECKS[name](settings)
            else:
                raise ValueError(f"not a variable rest loop check knows (it knows "
                                 f"{', '.join(sorted({**_VALUE_CHECKS, **_SETTINGS_CHECKS}))})")
        except ValueError as err:
            found.append(f"{name}={value}: {err}")
    return found


def check(settings: dict[str, str]) -> None:
    """UsageError listing every problem of `settings`, one per line (the CLI joins them)."""
    found = problems(settings)
    if found:
        raise UsageError("\n".join(found))
