"""`rest demo-data`: write the built-in offline demo task (German to English number expressions)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rest_cli.cli.common import handles_errors, log


@handles_errors("demo-data")
def demo_data(
    directory: Annotated[Path, typer.Argument(help="Folder for train.jsonl, valid.jsonl and test.jsonl.")],
    train: Annotated[int, typer.Option(min=1, help="Training pairs.")] = 8000,
    valid: Annotated[int, typer.Option(min=1, help="Validation pairs (clean).")] = 500,
    test: Annotated[int, typer.Option(min=1, help="Test pairs (clean).")] = 500,
    noise: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of all training references with a random error.")] = 0.085,
    systematic: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of the salary sentences whose reference swaps tens and units.")] = 0.9,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
) -> None:
    """Write the demo's splits: German number expressions with (noisy) English references."""
    from rest_cli.demo.translation import DemoSpec, demo_splits
    from rest_cli.io.records import RecordWriter

    splits = demo_splits(DemoSpec(train=train, valid=valid, test=test, noise=noise, systematic=systematic,
                                  seed=seed))
    directory.mkdir(parents=True, exist_ok=True)
    for split, records in splits.items():
        with RecordWriter(str(directory / f"{split}.jsonl")) as writer:
            writer.write_all(records)
    noisy = sum(r["noise"] is not None for r in splits["train"])
    log("demo-data", f"{directory}: {train} train ({noisy} noisy references, {100 * noisy / train:.1f}%), "
                     f"{valid} valid, {test} test")
