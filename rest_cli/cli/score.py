"""`rest score`: attach a reward to every record (docs/rewards.md lists the rewards and spec syntax)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rest_cli.cli import options as opts  # the reward options every scoring command shares
from rest_cli.cli.common import InputArg, OutputOpt, SkipInvalidOpt, handles_errors, report_skipped
from rest_cli.cli.progress import count_lines, progress
from rest_cli.io.records import RecordReader, RecordWriter
from rest_cli.io.shards import Shard, shard_groups
from rest_cli.rewards import build_reward, reward_names, score_records


@handles_errors("score")
def score(
    input: InputArg = "-",
    reward: Annotated[Optional[str], typer.Option(
        "--reward", "-r", metavar="SPEC",
        help=f"Required (or --reward-config). Reward spec: a name ({', '.join(reward_names())}), "
             "a composition such as 'product(use, copy-guard)', 'py:MODULE:FUNCTION', "
             "or 'cmd:COMMAND ARGS'.")] = None,
    reward_config: opts.RewardConfigOpt = None,
    reward_range: opts.RewardRangeOpt = None,
    calibrate: opts.CalibrateOpt = None,
    reward_timeout: opts.RewardTimeoutOpt = opts.REWARD_TIMEOUT,
    reward_restarts: opts.RewardRestartsOpt = opts.REWARD_RESTARTS,
    reward_max_chars: opts.RewardMaxCharsOpt = opts.REWARD_MAX_CHARS,
    batch_size: Annotated[int, typer.Option(min=1, help="Records per reward call.")] = 256,
    shard: Annotated[Optional[str], typer.Option(
        help="K/N: only the K-th of N round-robin shares of the sources (records grouped by `id`, as "
             "`rest sample` writes them). The N shards together hold every record once.")] = None,
    output: OutputOpt = "-",
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Add `reward` in [0, 1], `reward_name` and `reward_sig` (how it was computed) to each record."""
    part = Shard.parse(shard) if shard is not None else None
    options = opts.reward_options(reward_timeout, reward_restarts, reward_range, calibrate,
                                  batch_size=batch_size, max_chars=reward_max_chars)
    with build_reward(reward, options, reward_config) as scorer:
        reader = RecordReader(input, required=[*scorer.needs, *(["id"] if part else [])],
                              skip_invalid=skip_invalid,
                              needed_by=f"reward '{scorer.name}'" + (" and --shard" if part else ""))
        records = shard_groups(reader, part)
        with RecordWriter(output) as writer:
            total = count_lines(input) if part is None else None  # a shard's share of groups is unknown
            writer.write_all(progress(score_records(records, scorer, batch_size), "score", "records", total))
            scorer.close()  # before the output is complete: a command's stray last line fails the run
    report_skipped("score", reader)
    opts.report_truncated("score", [scorer])
