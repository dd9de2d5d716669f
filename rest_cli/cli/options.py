"""Option groups that several subcommands share: the reward options of every command that scores."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rest_cli.errors import UsageError
from rest_cli.rewards import RewardOptions

_DEFAULTS = RewardOptions()

RewardConfigOpt = Annotated[Optional[str], typer.Option(
    "--reward-config", help="JSON or TOML file describing the reward tree, instead of --reward.")]
RewardRangeOpt = Annotated[Optional[str], typer.Option(
    "--reward-range", help="LO:HI of an unbounded reward, mapped linearly onto [0, 1] and clipped.")]
CalibrateOpt = Annotated[Optional[str], typer.Option(
    "--calibrate", help="JSONL file with src and ref: its 1st-99th percentile scores set the range.")]
RewardTimeoutOpt = Annotated[float, typer.Option(
    "--reward-timeout", min=0.001, help="Seconds an external reward command may take for one batch.")]
RewardRestartsOpt = Annotated[int, typer.Option(
    "--reward-restarts", min=0,
    help="Times an external reward command is restarted on one batch after it dies or hangs.")]

# The defaults to give the options above: the library's own.
REWARD_TIMEOUT = _DEFAULTS.timeout
REWARD_RESTARTS = _DEFAULTS.restarts


def reward_options(timeout: float, restarts: int, value_range: str | None, calibrate: str | None,
                   rewards: int = 1, batch_size: int = _DEFAULTS.batch_size) -> RewardOptions:
    """The options for `rewards` rewards built by one command.

    A range (given or calibrated) fits one reward: with several, or none, it is a usage error.
    """
    ranged = "--reward-range" if value_range is not None else "--calibrate" if calibrate is not None else ""
    if ranged and rewards != 1:
        raise UsageError(f"{ranged} sets the range of one reward, but {rewards or 'no'} rewards are given; "
                         f"to range one of them, write scale(SPEC, lo=LO, hi=HI) in its --reward")
    return RewardOptions(timeout=timeout, restarts=restarts, value_range=value_range, calibrate=calibrate,
                         batch_size=batch_size)
