"""`rest demo-data`: write one of the built-in offline demo tasks.

`translation` (the default): German to English number expressions, for rest's own small
Transformer. `arithmetic`: sums with checked answers, for a decoder-only Hugging Face model,
whose untrained base model is written beside the data (ReST-EM's demo).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rest_cli.cli.common import handles_errors, log
from rest_cli.errors import UsageError


class Task(str, enum.Enum):
    translation = "translation"
    arithmetic = "arithmetic"


# Per task: (train, valid, test, noise), the documented demos.
DEFAULTS = {Task.translation: (8000, 500, 500, 0.085), Task.arithmetic: (7000, 300, 500, 0.25)}
BASE_MODEL = "base-model"


@handles_errors("demo-data")
def demo_data(
    directory: Annotated[Path, typer.Argument(help="Folder for train.jsonl, valid.jsonl and test.jsonl.")],
    task: Annotated[Task, typer.Option(help="Which demo.")] = Task.translation,
    train: Annotated[Optional[int], typer.Option(
        min=1, help="Training records [default: 8000 for translation, 7000 for arithmetic].")] = None,
    valid: Annotated[Optional[int], typer.Option(
        min=1, help="Validation records (clean) [default: 500, 300].")] = None,
    test: Annotated[Optional[int], typer.Option(min=1, help="Test records (clean) [default: 500].")] = None,
    noise: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, help="translation: share of all training references with a random error "
        "[default: 0.085]; arithmetic: share of the carrying training sums whose reference drops the "
        "carry [default: 0.25].")] = None,
    systematic: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="translation: share of the salary sentences whose reference swaps tens "
        "and units.")] = 0.9,
    digits: Annotated[int, typer.Option(help="arithmetic: digits of each operand.")] = 2,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
) -> None:
    """Write a demo's splits (and, for arithmetic, its untrained base model in DIR/base-model)."""
    sizes = [given if given is not None else default
             for given, default in zip((train, valid, test, noise), DEFAULTS[task])]
    if task is Task.translation:
        if digits != 2:
            raise UsageError("--digits is an option of --task arithmetic")
        _translation(directory, *sizes, systematic=systematic, seed=seed)
    else:
        _arithmetic(directory, *sizes, digits=digits, seed=seed)


def _translation(directory: Path, train: int, valid: int, test: int, noise: float, systematic: float,
                 seed: int) -> None:
    from rest_cli.demo.translation import DemoSpec, demo_splits

    splits = demo_splits(DemoSpec(train=train, valid=valid, test=test, noise=noise, systematic=systematic,
                                  seed=seed))
    _write_splits(directory, splits)
    noisy = sum(r["noise"] is not None for r in splits["train"])
    log("demo-data", f"{directory}: {train} train ({noisy} noisy references, {100 * noisy / train:.1f}%), "
                     f"{valid} valid, {test} test")


def _arithmetic(directory: Path, train: int, valid: int, test: int, noise: float, digits: int,
                seed: int) -> None:
    from rest_cli.demo.arithmetic import ArithmeticSpec, arithmetic_splits, write_base_model
    from rest_cli.io.atomic import replacing_dir

    splits = arithmetic_splits(ArithmeticSpec(train=train, valid=valid, test=test, digits=digits, noise=noise,
                                              seed=seed))
    _write_splits(directory, splits)
    with replacing_dir(directory / BASE_MODEL) as folder:
        write_base_model(folder, seed)
    noisy = sum(r["noise"] is not None for r in splits["train"])
    log("demo-data", f"{directory}: {train} train ({noisy} references drop a carry, "
                     f"{100 * noisy / train:.1f}%), {valid} valid, {test} test; an untrained Llama in "
                     f"{directory / BASE_MODEL}")


def _write_splits(directory: Path, splits: dict) -> None:
    from rest_cli.io.records import RecordWriter

    directory.mkdir(parents=True, exist_ok=True)
    for split, records in splits.items():
        with RecordWriter(str(directory / f"{split}.jsonl")) as writer:
            writer.write_all(records)
