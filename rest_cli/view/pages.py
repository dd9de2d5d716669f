"""The web pages of `rest view` and `rest rate`, served by Flask on this machine only.

Flask (with Werkzeug and Jinja2) parses HTTP and renders the pages; Jinja2 escapes every value a
template prints (autoescaping is on for .html templates), so the untrusted text of records
(sources, references, model outputs) reaches the browser as text, never as markup. No route
serves files: the pages are rendered from the index or the ratings database the command was
given. Requests must name this server's host (Flask's TRUSTED_HOSTS; Werkzeug compares the name,
not the port), which stops a web page elsewhere from reaching it through a DNS name pointed at
127.0.0.1; write requests must come from the server's own pages (their Origin header, host and
port), or they are refused.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from rest_cli.errors import UsageError

PAGE_SIZE = 20
WILDCARDS = ("0.0.0.0", "::", "")  # addresses that accept a request for any host name
FILTER_KINDS = ("tau", "percentile", "gamma", "top_k")


def make_app(name: str, hosts: list[str]):
    """A Flask app that renders the package's templates, serves no static files and answers only
    requests addressed to `hosts` (host names or addresses)."""
    from flask import Flask

    app = Flask(name, static_folder=None, template_folder="templates")
    app.config["TRUSTED_HOSTS"] = hosts
    app.jinja_env.autoescape = True  # every template, whatever its name
    return app


def same_origin(request) -> bool:
    """Whether a write request comes from a page of this server: its Origin is this server's own."""
    origin = request.headers.get("Origin")
    return origin is not None and origin.rstrip("/") == request.host_url.rstrip("/")


def filter_spec(kind: str | None, value: str | None):
    """The filter the page previews (a `rest filter` FilterSpec), or None; a bad one is a UsageError."""
    from rest_cli.select.filters import FilterSpec

    if not kind or value in (None, ""):
        return None
    if kind not in FILTER_KINDS:
        raise UsageError(f"unknown filter {kind!r}: one of {', '.join(FILTER_KINDS)}")
    try:
        number = int(value) if kind == "top_k" else float(value)
    except ValueError:
        raise UsageError(f"{kind} takes a number, got {value!r}") from None
    return FilterSpec(**{kind: number})


def kept_rows(candidates: list[dict], source_id, spec) -> set[int]:
    """The index rows of one source's candidates that `spec` keeps, as `rest filter` would."""
    from rest_cli.select.filters import filter_group

    records = [{**c, "id": source_id} for c in sorted(candidates, key=lambda c: c["row"])]  # file order
    return {r["row"] for r in filter_group(records, spec)}


def kept_overall(index, spec) -> dict:
    """What `spec` keeps of the whole file, read source by source from the index: `rest filter --stats`."""
    from rest_cli.select.filters import FilterStats, filter_group

    stats = FilterStats()
    for group in index.groups():
        stats.add(group, filter_group(group, spec))
    return stats.as_dict()


def histogram_bars(summary: dict, height: int = 80) -> list[dict]:
    """The reward histograms as bars to draw: per bin, its range and each kind's count and height."""
    bins, histograms = summary["bins"], summary["histograms"]
    tallest = max([max(counts) for counts in histograms.values()] + [1])
    return [{"low": k / bins, "high": (k + 1) / bins,
             **{kind: counts[k] for kind, counts in histograms.items()},
             **{f"{kind}_height": math.ceil(height * counts[k] / tallest)
                for kind, counts in histograms.items()}}
            for k in range(bins)]


class Serving:
    """A Werkzeug server of `app` on host:port (port 0: a free one) in a thread, until `stop`."""

    def __init__(self, app_for: Callable[[list[str]], Any], host: str = "127.0.0.1", port: int = 0):
        import logging

        from werkzeug.serving import make_server

        if host in WILDCARDS:
            raise UsageError(f"--host {host} would answer to any name, which a page elsewhere can point at "
                             f"this machine; give the address or name others will open the page at")
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request on stderr
        self.server = make_server(host, port, app_for(trusted_names(host)), threaded=True)
        self.port = self.server.server_port
        self.url = f"http://{host}:{self.port}/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Serving:
        """Serve in a thread (tests, or the caller's own loop); `stop` ends it."""
        self._thread.start()
        return self

    def run(self) -> None:
        """Serve in this thread until Ctrl-C or SIGTERM (rest's commands turn it into an interrupt)."""
        try:
            self.server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.server.server_close()

    def stop(self) -> None:
        self.server.shutdown()
        self._thread.join()


def trusted_names(host: str) -> list[str]:
    """The names a request may give as its host: this machine's two for 127.0.0.1, else `host` itself."""
    return ["127.0.0.1", "localhost"] if host in ("127.0.0.1", "localhost") else [host]
