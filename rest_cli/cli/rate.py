"""`rest rate A B`: a page for blind side-by-side human ratings; `rest rate --report`: what they say."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rest_cli.cli.common import SkipInvalidOpt, handles_errors, log
from rest_cli.cli.view import HostOpt, PortOpt
from rest_cli.errors import UsageError


@handles_errors("rate")
def rate(
    outputs: Annotated[Optional[list[str]], typer.Argument(
        help="Two files of outputs of the same sources, in the same order: JSONL with hyp (and src, id; "
             "ref and reward are kept for the report), one record per source. System A, then B.",
        show_default=False)] = None,
    ratings: Annotated[Path, typer.Option(
        help="The ratings database: made if absent (with the two files' outputs), resumed if present.")]
        = Path("ratings.sqlite"),
    report: Annotated[bool, typer.Option(
        "--report", help="Report on the ratings so far instead of serving the page: table on stderr, "
                         "JSON on stdout.")] = False,
    reward: Annotated[Optional[list[str]], typer.Option(
        "--reward", "-r", metavar="SPEC", help="With --report: also correlate the human scores with this "
                                               "reward of the outputs (repeatable).")] = None,
    plot: Annotated[Optional[Path], typer.Option(
        help="With --report: draw the scores and each reward against them to this PNG.")] = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 0,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Serve a page where raters score two systems' outputs of the same sources, blind, 0-6 (the paper's
    side-by-side evaluation); every rating is stored in --ratings the moment it is given. Prints the
    page's address on stdout; Ctrl-C stops. With --report, the human eval diff with its bootstrap
    interval, the agreement between raters and the correlation of human scores with rewards."""
    if report:
        if outputs:
            raise UsageError("--report reads the ratings database only; leave out the output files")
        _report(ratings, reward or [], plot)
        return
    if reward or plot:
        raise UsageError("--reward and --plot belong to --report")
    if not outputs or len(outputs) != 2:
        raise UsageError("give two files of outputs (system A, then B), or --report")
    _serve(outputs, ratings, host, port, skip_invalid)


def _serve(outputs: list[str], ratings: Path, host: str, port: int, skip_invalid: bool) -> None:
    from rest_cli.eval.evaluate import read_outputs
    from rest_cli.io.records import RecordReader
    from rest_cli.view.pages import Serving
    from rest_cli.view.rate import rate_app
    from rest_cli.view.rating import RatingStore, items_of

    def read(path: str, like=None, like_name=""):
        reader = RecordReader(path, required=["hyp"], optional=["id", "src", "ref", "reward"],
                              skip_invalid=skip_invalid, needed_by="rest rate")
        return reader.name, read_outputs(reader, like, like_name)

    name_a, outputs_a = read(outputs[0])
    name_b, outputs_b = read(outputs[1], outputs_a, name_a)
    store = RatingStore.create_or_open(ratings, items_of(outputs_a, outputs_b), (name_a, name_b))
    try:
        serving = Serving(lambda hosts: rate_app(store, hosts), host, port)
        print(serving.url, flush=True)
        log("rate", f"serving {store.count()} items at {serving.url}; ratings go to {ratings}; Ctrl-C stops")
        serving.run()
    finally:
        store.close()
    log("rate", "stopped")


def _report(ratings: Path, specs: list[str], plot: Optional[Path]) -> None:
    import sys

    import orjson

    from rest_cli.view.rating import RatingStore
    from rest_cli.view.rating_report import Session, markdown, report
    from rest_cli.view.rating_report import plot as draw

    session = Session.load(RatingStore.open(ratings), specs)
    found = report(session)
    print(markdown(found), file=sys.stderr)
    sys.stdout.buffer.write(orjson.dumps(found, option=orjson.OPT_INDENT_2) + b"\n")
    if plot:
        draw(session, plot)
        log("rate", f"wrote {plot}")
