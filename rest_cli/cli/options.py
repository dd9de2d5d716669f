"""Option groups that several subcommands share: the reward options of every command that scores."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rest_cli.cli.common import log
from rest_cli.errors import UsageError
from rest_cli.rewards import Reward, RewardOptions

_DEFAULTS = RewardOptions()

RewardConfigOpt = Annotated[Optional[str], typer.Option(
    "--reward-config", metavar="FILE",
    help="JSON or TOML file describing the reward tree, instead of --reward.")]
RewardRangeOpt = Annotated[Optional[str], typer.Option(
    "--reward-range", metavar="LO:HI",
    help="LO:HI of an unbounded reward, mapped linearly onto [0, 1] and clipped.")]
CalibrateOpt = Annotated[Optional[str], typer.Option(
    "--calibrate", metavar="FILE",
    help="JSONL file with src and ref: its 1st-99th percentile scores set the range.")]
RewardTimeoutOpt = Annotated[float, typer.Option(
    "--reward-timeout", min=0.001, help="Seconds an external reward command may take for one batch.")]
RewardRestartsOpt = Annotated[int, typer.Option(
    "--reward-restarts", min=0,
    help="Times an external reward command is restarted on one batch after it dies or hangs.")]
RewardMaxCharsOpt = Annotated[int, typer.Option(
    "--reward-max-chars", min=0,
    help="Characters of hyp, ref and src the reward is shown; longer fields are cut for the reward only "
         "(counted on stderr; records keep their full text). 0 = no cap.")]

# The defaults to give the options above: the library's own.
REWARD_TIMEOUT = _DEFAULTS.timeout
REWARD_RESTARTS = _DEFAULTS.restarts
REWARD_MAX_CHARS = _DEFAULTS.max_chars


def report_truncated(command: str, rewards: list[Reward]) -> None:
    """One line if a reward was shown shortened records (all of a command's rewards see the same ones)."""
    caps = [r.cap for r in rewards if r.cap is not None and r.cap.truncated]
    if caps:
        log(command, max(caps, key=lambda cap: cap.truncated).summary())


def reward_options(timeout: float, restarts: int, value_range: str | None, calibrate: str | None,
                   rewards: int = 1, batch_size: int = _DEFAULTS.batch_size,
                   max_chars: int = _DEFAULTS.max_chars) -> RewardOptions:
    """The options for `rewards` rewards built by one command.

    A range (given or calibrated) fits one reward: with several, or none, it is a usage error.
    """
    ranged = "--reward-range" if value_range is not None else "--calibrate" if calibrate is not None else ""
    if ranged and rewards != 1:
        raise UsageError(f"{ranged} sets the range of one reward, but {rewards or 'no'} rewards are given; "
                         f"to range one of them, write scale(SPEC, lo=LO, hi=HI) in its --reward")
    return RewardOptions(timeout=timeout, restarts=restarts, value_range=value_range, calibrate=calibrate,
                         batch_size=batch_size, max_chars=max_chars)
