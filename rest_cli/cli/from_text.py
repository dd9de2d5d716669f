"""`rest from-text`: records from plain-text parallel data (one sentence per line)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rest_cli.cli.common import OutputOpt, handles_errors, log


@handles_errors("from-text")
def from_text(
    source: Annotated[str, typer.Argument(
        metavar="SOURCE", help="Source sentences, one a line ('-' for stdin; .gz is decompressed).")],
    reference: Annotated[Optional[str], typer.Argument(
        metavar="REFERENCE", help="Their references, line by line (leave out for sources only).")] = None,
    skip_empty: Annotated[bool, typer.Option(
        "--skip-empty",
        help="Leave out pairs with an empty line (counted on stderr) instead of stopping.")] = False,
    output: OutputOpt = "-",
) -> None:
    """Turn aligned text files into records with `id` (the line number), `src` and `ref`.

    Only "\\n" ends a line: tabs and other characters are part of the sentence. The files must
    have the same number of lines; an empty line stops the conversion unless --skip-empty.

        rest from-text train.de train.en -o train.jsonl
    """
    from rest_cli.io.records import RecordWriter
    from rest_cli.io.text import TextPairStats, text_pairs

    stats = TextPairStats()
    with RecordWriter(output) as writer:
        writer.write_all(text_pairs(source, reference, skip_empty=skip_empty, stats=stats))
    left_out = (f"; left out {stats.empty_skipped} with an empty line (first: {stats.first_empty})"
                if stats.empty_skipped else "")
    log("from-text", f"{stats.pairs:,} records{left_out}")
