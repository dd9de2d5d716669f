"""`rest filter`: keep the candidates the Improve step trains on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import orjson
import typer

from rest_cli.cli.common import InputArg, OutputOpt, SkipInvalidOpt, handles_errors, log, report_skipped
from rest_cli.errors import UsageError
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
    max_per_source: Annotated[Optional[int], typer.Option(
        "--max-per-source", metavar="K",
        help="Per source: of the candidates that pass everything else (after --dedup and --top-k), "
             "keep at most K, drawn at random (ReST-EM keeps 10).")] = None,
    seed: Annotated[Optional[int], typer.Option(
        help="Seed of the --max-per-source draw (default 0); each source's draw depends only on it "
             "and the source's id.")] = None,
    references: Annotated[str, typer.Option(
        "--references", metavar="MODE",
        help="References mixed in by rest sample --include-ref: 'filter' judges them as candidates "
             "(default), 'keep' always keeps them and leaves them out of the per-source thresholds "
             "(for a reward that scores a reference 1.0 against itself, as chrF does), 'drop' "
             "removes them.")] = "filter",
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
    if seed is not None and max_per_source is None:
        raise UsageError("--seed: the seed of the --max-per-source draw; without --max-per-source "
                         "rest filter draws nothing")
    spec = FilterSpec(tau=tau, percentile=percentile, gamma=gamma, top_k=top_k, dedup=dedup,
                      max_per_source=max_per_source, seed=seed or 0, references=references)
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
