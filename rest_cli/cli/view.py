"""`rest view FILE`: browse scored candidates in a web page on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rest_cli.cli.common import SkipInvalidOpt, handles_errors, log

HostOpt = Annotated[str, typer.Option(
    help="Address to serve on. The default is this machine only; an address of this machine on a "
         "network (not 0.0.0.0) lets others there open the page at that address.")]
PortOpt = Annotated[int, typer.Option(help="Port to serve on; 0 takes a free one.")]


@handles_errors("view")
def view(
    input: Annotated[str, typer.Argument(
        help="Scored candidates, JSONL or JSONL.gz, grouped by id (as rest sample | rest score "
             "writes them).")],
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 0,
    index_dir: Annotated[Optional[Path], typer.Option(
        help="Folder for the index (default: REST_CACHE, XDG_CACHE_HOME/rest or ~/.cache/rest, "
             "then view/).")] = None,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Serve a page to browse a candidates file: each source's candidates by reward, what a filter would
    keep, reward histograms, search. Prints the page's address on stdout; Ctrl-C stops."""
    from rest_cli.view.browse import view_app
    from rest_cli.view.index import open_index
    from rest_cli.view.pages import Serving

    index = open_index(input, index_dir, _indexing_progress(), skip_invalid)
    serving = Serving(lambda hosts: view_app(index, Path(input).name, hosts), host, port)
    print(serving.url, flush=True)
    log("view", f"serving {input} at {serving.url} ({index.summary()['candidates']:,} candidates); "
                f"Ctrl-C stops")
    serving.run()
    log("view", "stopped")


def _indexing_progress():
    """A progress callback for indexing: a line now and then on stderr, with the count so far."""
    from rest_cli.cli.progress import Ticker, interval, rate_line

    ticker = Ticker(interval())

    def progress(count: int) -> None:
        if ticker.due():
            log("view", f"indexing: {rate_line(count, 'candidates', ticker.elapsed())}")
    return progress
