"""`rest view`: browse a scored candidates file in a web page, through its index (index.py).

One page: the file's counts and reward histograms (samples and references apart), a search over
sources, references and candidates, and a filter to preview (a threshold, a per-source percentile
or gamma, or top-k): each source's candidates are listed best first, each marked kept or not as
`rest filter` would decide, with what the filter keeps of the whole file.
"""

from __future__ import annotations

import functools

from rest_cli.errors import UsageError
from rest_cli.view.index import CandidateIndex
from rest_cli.view.pages import (
    FILTER_KINDS,
    PAGE_SIZE,
    filter_spec,
    histogram_bars,
    kept_overall,
    kept_rows,
    make_app,
)


def view_app(index: CandidateIndex, title: str, hosts: list[str]):
    """The Flask app of `rest view` over `index`, answering requests addressed to `hosts`."""
    from flask import render_template, request

    app = make_app(__name__, hosts)
    summary = index.summary()
    # Whole-file figures read the whole index (seconds at a million candidates): once per filter
    # or search, not on every page turn.
    overall = functools.lru_cache(maxsize=32)(lambda spec: kept_overall(index, spec))
    count = functools.lru_cache(maxsize=32)(index.count)

    @app.get("/")
    def browse():
        query = request.args.get("q", "").strip()
        kind, value = request.args.get("kind"), request.args.get("value", "").strip()
        page = max(request.args.get("page", 1, type=int), 1)
        try:
            spec = filter_spec(kind, value)
            problem = None
        except UsageError as err:
            spec, problem = None, str(err)
        sources = index.page(query, (page - 1) * PAGE_SIZE, PAGE_SIZE)
        for source in sources:
            kept = kept_rows(source["candidates"], source["id"], spec) if spec else set()
            for candidate in source["candidates"]:
                candidate["kept"] = candidate["row"] in kept
        matches = count(query)
        return render_template(
            "view.html", title=title, summary=summary, bars=histogram_bars(summary), sources=sources,
            query=query, kind=kind or "tau", value=value, kinds=FILTER_KINDS, problem=problem,
            overall=overall(spec) if spec else None, page=page, matches=matches,
            pages=max(1, -(-matches // PAGE_SIZE)))

    return app
