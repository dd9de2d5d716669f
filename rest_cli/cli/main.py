"""The `rest` command: registers the subcommands; each lives in its own module."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from rest_cli import __version__
from rest_cli.cli import (
    bestofn,
    demo,
    eval,
    filter,
    finetune,
    from_text,
    import_model,
    loop,
    rate,
    rmcheck,
    sample,
    score,
    view,
)
from rest_cli.cli.common import one_line
from rest_cli.cli.help import ReadableHelp
from rest_cli.errors import InputError, OutputError, RestError

_ABOUT = ("Reinforced Self-Training (ReST) as JSONL tools. Grow: sample | score; Improve: filter | "
          "finetune; measure: eval, bestofn, rmcheck; look and rate: view, rate; data: demo-data, from-text, "
          "import; the loop's helpers: loop (rest.mk runs the whole algorithm).")
app = typer.Typer(
    name="rest",
    help=_ABOUT,
    cls=ReadableHelp,
    rich_markup_mode="markdown",
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
app.command("from-text")(from_text.from_text)
app.command("import")(import_model.import_model)
app.command("view")(view.view)
app.command("rate")(rate.rate)
app.add_typer(loop.app, name="loop")


def _show_version(value: bool) -> None:
    if value:
        print(f"rest {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Reinforced Self-Training (ReST) as JSONL tools."""


def main() -> None:
    # Die quietly on a closed pipe (`rest filter ... | head`), as Unix tools do.
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _guard_closed_streams()
    try:
        app()
    except RestError as err:  # outside any command: help or option parsing on a closed stream
        print(f"rest: error: {one_line(str(err))}", file=sys.stderr)
        sys.exit(err.exit_code)


class _ClosedStream:
    """Stands for a standard stream the shell closed (`<&-`, `>&-`): using it is a one-line error."""

    def __init__(self, error: Callable[[], RestError]):
        self._error = error

    def __getattr__(self, name: str):
        raise self._error()

    def flush(self) -> None:
        """Nothing to flush (Python flushes the standard streams at exit)."""


def _guard_closed_streams() -> None:
    """Python leaves a closed standard stream as None; reading or writing it would be a traceback,
    and print() to a None stdout silently writes nothing, so the records would be lost."""
    if sys.stderr is None:  # nothing can be told; at least logs must not land among the records
        sys.stderr = open(os.devnull, "w")
    if sys.stdin is None:
        sys.stdin = _ClosedStream(lambda: InputError("<stdin>", None, "standard input is closed"))
    if sys.stdout is None:
        sys.stdout = _ClosedStream(lambda: OutputError("cannot write to stdout: it is closed"))
