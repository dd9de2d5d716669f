"""`rest score`: attach a named reward to every record."""

from __future__ import annotations

from typing import Annotated

import typer

from ..records import RecordReader, RecordWriter
from ..rewards import get_reward, reward_names, score_records
from .common import InputArg, OutputOpt, SkipInvalidOpt, handles_errors, progress, report_skipped


@handles_errors("score")
def score(
    input: InputArg = "-",
    reward: Annotated[str, typer.Option("--reward", "-r", help=f"Reward to compute: {', '.join(reward_names())}.")] = ...,
    batch_size: Annotated[int, typer.Option(min=1, help="Records per reward call.")] = 256,
    output: OutputOpt = "-",
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Add `reward` in [0, 1], `reward_name` and `reward_sig` (how it was computed) to each record."""
    scorer = get_reward(reward)
    reader = RecordReader(input, required=scorer.needs, skip_invalid=skip_invalid,
                          needed_by=f"reward '{reward}'")
    with RecordWriter(output) as writer:
        writer.write_all(progress(score_records(reader, scorer, batch_size), f"scoring ({reward})"))
    report_skipped("score", reader)
