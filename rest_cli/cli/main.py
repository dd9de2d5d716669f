"""The `rest` command: registers the subcommands; each lives in its own module."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from rest_cli import __version__
from rest_cli.cli import bestofn, demo, eval, filter, finetune, loop, rmcheck, sample, score

app = typer.Typer(
    name="rest",
    help="Reinforced Self-Training (ReST) as JSONL tools: sample | score | filter | finetune.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("sample")(sample.sample)
app.command("score")(score.score)
app.command("filter")(filter.filter)
app.command("finetune")(finetune.finetune)
app.command("bestofn")(bestofn.bestofn)
app.command("eval")(eval.evaluate)
app.command("rmcheck")(rmcheck.rmcheck)
app.command("demo-data")(demo.demo_data)
app.add_typer(loop.app, name="loop")


def _show_version(value: bool) -> None:
    if value:
        print(f"rest {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Reinforced Self-Training (ReST) as JSONL tools: sample | score | filter | finetune."""


def main() -> None:
    # Die quietly on a closed pipe (`rest filter ... | head`), as Unix tools do.
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    app()
