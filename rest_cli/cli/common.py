"""What every subcommand shares: input/output options, one-line errors, stderr reporting.

Progress displays are in `cli/progress.py`.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Annotated

import typer

from rest_cli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_TERMINATED, RestError, Terminated
from rest_cli.io.records import RecordReader

InputArg = Annotated[str, typer.Argument(
    help="JSONL input: a path, or '-' for stdin. Files ending in .gz are decompressed.")]
OutputOpt = Annotated[str, typer.Option(
    "--output", "-o", metavar="FILE",
    help="Write records here instead of stdout; the file appears only when complete. "
                           ".gz compresses.")]
SkipInvalidOpt = Annotated[bool, typer.Option(
    "--skip-invalid", help="Skip malformed records (counted on stderr) instead of stopping at the first.")]


def log(command: str, message: str) -> None:
    """One line on stderr, prefixed like the errors, unwrapped so logs stay greppable."""
    print(f"rest {command}: {message}", file=sys.stderr, flush=True)


def handles_errors(command: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Show library errors as `rest CMD: error: ...` with their exit code, never a traceback.

    SIGTERM is turned into `Terminated` (a KeyboardInterrupt) for the command's duration, so
    that a killed run cleans up like an interrupted one: outputs under temporary names are
    removed, and it exits 143 instead of dying on the spot. An OSError no library code turned
    into a RestError (a full disk while saving a model, say) is shown as one line, exit 1.
    """
    def wrap(body: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(body)
        def run(*args, **kwargs) -> None:
            try:
                with _sigterm_raises():
                    body(*args, **kwargs)
            except RestError as err:
                log(command, f"error: {one_line(str(err))}")
                raise typer.Exit(err.exit_code) from None
            except Terminated:
                log(command, "terminated")
                raise typer.Exit(EXIT_TERMINATED) from None
            except KeyboardInterrupt:
                log(command, "interrupted")
                raise typer.Exit(EXIT_INTERRUPTED) from None
            except OSError as err:
                log(command, f"error: {one_line(_describe_os_error(err))}")
                raise typer.Exit(EXIT_FAILURE) from None
        return run
    return wrap


def one_line(message: str) -> str:
    """A message from a library (torch, CTranslate2) may span lines: errors are one line, so join them."""
    return " / ".join(line.strip() for line in message.splitlines() if line.strip())


def _describe_os_error(err: OSError) -> str:
    """`PATH: No space left on device`, or the plainest form the error allows."""
    reason = err.strerror or str(err) or type(err).__name__
    return f"{err.filename}: {reason}" if err.filename else reason


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def report_skipped(command: str, reader: RecordReader) -> None:
    """Say how many invalid records --skip-invalid passed over, and the first one."""
    if reader.skipped:
        log(command, f"skipped {reader.skipped} invalid record(s); first: {reader.first_problem}")
