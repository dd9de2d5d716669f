"""Progress on stderr: a rich bar on a terminal; in a log, one line at a steady interval.

A log (stderr redirected to a file, a batch job, a Makefile run) gets lines such as
`rest sample: 1,200/5,000 candidates, 40.1/s, 30s elapsed, eta 1m35s`: the first after
FIRST_S seconds, so that a newcomer soon sees the run is alive, then one every INTERVAL_S
seconds, however fast or slow the items come. REST_PROGRESS_INTERVAL sets the interval
(0: a line per item). The library never prints: commands wrap its iterators here.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rest_cli.cli.common import log
from rest_cli.errors import UsageError

T = TypeVar("T")

INTERVAL_S = 30.0  # seconds between progress lines in a log
FIRST_S = 10.0  # the first line comes sooner
INTERVAL_VARIABLE = "REST_PROGRESS_INTERVAL"


def interval() -> float:
    """Seconds between progress lines in a log: $REST_PROGRESS_INTERVAL, else INTERVAL_S."""
    value = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not value:
        return INTERVAL_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise UsageError(f"{INTERVAL_VARIABLE} must be a number of seconds, 0 or more; got {value!r}")
    return seconds


class Ticker:
    """Says when a periodic line is due: `first` seconds after the start (at most `interval`),
    then `interval` seconds after the previous line. The clock is injectable: tests need no sleeps."""

    def __init__(self, interval: float, first: float = FIRST_S, clock: Callable[[], float] = time.monotonic):
        self.interval, self.clock = interval, clock
        self.start = clock()
        self._next = self.start + min(first, interval)

    def elapsed(self) -> float:
        return self.clock() - self.start

    def due(self, force: bool = False) -> bool:
        """Whether a line is due now (always with `force`); a yes starts the next interval."""
        now = self.clock()
        if not force and now < self._next:
            return False
        self._next = now + self.interval
        return True


def progress(items: Iterable[T], command: str, unit: str, total: int | None = None,
             ticker: Ticker | None = None) -> Iterator[T]:
    """Count `items` on stderr as the caller consumes them: `unit` names what is counted (records,
    candidates); with the `total` expected, the display adds the time remaining."""
    if sys.stderr.isatty():
        yield from _bar(items, command, unit, total)
        return
    ticker = ticker or Ticker(interval())
    count = 0
    for item in items:
        yield item
        count += 1
        if ticker.due():
            log(command, rate_line(count, unit, ticker.elapsed(), total))


def rate_line(count: int, unit: str, elapsed: float, total: int | None = None) -> str:
    """`1,200/5,000 candidates, 40.1/s, 30s elapsed, eta 1m35s`; no total, no eta."""
    rate = count / elapsed if elapsed > 0 else 0.0
    done = f"{count:,}/{total:,}" if total is not None else f"{count:,}"
    line = f"{done} {unit}, {rate:,.1f}/s, {duration(elapsed)} elapsed"
    if total is not None and rate > 0:
        line += f", eta {duration(max(total - count, 0) / rate)}"
    return line


def _bar(items: Iterable[T], command: str, unit: str, total: int | None) -> Iterator[T]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (SpinnerColumn(), TextColumn(f"rest {command}"), *([BarColumn()] if total else []),
               MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn(),
               *([TimeRemainingColumn()] if total else []))
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(command, total=total)
        for item in items:
            yield item
            bar.advance(task)


def duration(seconds: float) -> str:
    """Seconds as `45s`, `1m20s` or `2h05m`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def count_lines(path: str) -> int | None:
    """Lines of a regular file (decompressed if it ends in .gz): the total a progress display expects.

    None for stdin or a pipe, which cannot be read twice, and for a file that cannot be read
    (its reader then says why). Counting newlines runs at disk speed, far faster than parsing
    the records, let alone sampling or scoring them.
    """
    if path == "-":
        return None
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as raw, (gzip.open(raw) if path.endswith(".gz") else raw) as stream:
            lines, last = 0, b"\n"
            for block in iter(lambda: stream.read(1 << 20), b""):
                lines, last = lines + block.count(b"\n"), block[-1:]
    except (OSError, EOFError, zlib.error):
        return None
    return lines + (last != b"\n")  # a last line without its newline
