"""`rest filter`: keep the candidates the Improve step trains on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import orjson
import typer

from rest_cli.cli.common import InputArg, OutputOpt, SkipInvalidOpt, handles_errors, log, report_skipped
from rest_cli.io.atomic import write_file
from rest_cli.io.records import RecordReader, RecordWriter
from rest_cli.select.filters import FilterSpec, FilterStats, filter_records


@handles_errors("filter")
def filter(
    input: InputArg = "-",
    tau: Annotated[Optional[float], typer.Option(help="Keep reward > TAU (ReST's global threshold).")] = None,
    percentile: Annotated[Optional[float], typer.Option(
        help="Per source: keep reward >= the P-th percentile of that source's rewards.")] = None,
    gamma: Annotated[Optional[float], typer.Option(
        help="Per source: keep reward >= G*max + (1-G)*mean of that source's rewards.")] = None,
    top_k: Annotated[Optional[int], typer.Option(
        "--top-k", help="Per source: keep the K best candidates.")] = None,
    dedup: Annotated[bool, typer.Option(
        "--dedup", help="Per source: drop repeated hypotheses first.")] = False,
    output: OutputOpt = "-",
    stats_path: Annotated[Optional[str], typer.Option(
        "--stats", metavar="FILE",
        help="Also write the counts and mean rewards, in and out, as JSON.")] = None,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Keep scored candidates that pass every given criterion; order is preserved.

    Per-source criteria need the stream grouped by `id` (as `rest sample` writes it) and hold
    one source's candidates in memory at a time.
    """
    spec = FilterSpec(tau=tau, percentile=percentile, gamma=gamma, top_k=top_k, dedup=dedup)
    reader = RecordReader(input, required=spec.fields(), skip_invalid=skip_invalid)
    stats = FilterStats()
    with RecordWriter(output) as writer:
        writer.write_all(filter_records(reader, spec, stats))
    report_skipped("filter", reader)
    log("filter", stats.summary())
    if stats.references_warning():
        log("filter", f"warning: {stats.references_warning()}")
    if stats_path is not None:
        write_file(Path(stats_path), orjson.dumps(stats.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")
