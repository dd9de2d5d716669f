"""An index of a scored candidates file, so that `rest view` browses a file of millions of
candidates without holding it in memory.

One pass over the file (plain or gzipped JSONL, grouped by `id` as `rest sample | rest score`
writes it) copies each source and each candidate into an SQLite database, a few thousand rows at
a time, and adds up the reward histograms as it goes; pages then read only their own rows. The
database is rest's own file, kept in a cache folder (`REST_CACHE`, else `XDG_CACHE_HOME/rest`,
else `~/.cache/rest`), named after the candidates file's real path and rebuilt when the file's
size or modification time changes. It is built under a temporary name and renamed into place, so
an interrupted indexing leaves no half index behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rest_cli.errors import OutputError
from rest_cli.io.atomic import built_database
from rest_cli.io.records import Record, RecordReader, is_reference, iter_groups

FORMAT = 2  # of the database: an index of another format is rebuilt
BINS = 20  # reward histogram bins over [0, 1]
_CHUNK = 5000  # rows per insert: memory stays flat whatever the file's size
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sources (no INTEGER PRIMARY KEY, id TEXT NOT NULL, src TEXT, ref TEXT, n INTEGER NOT NULL,
                      best REAL NOT NULL, mean REAL NOT NULL);
CREATE TABLE candidates (source INTEGER NOT NULL, k INTEGER NOT NULL, reward REAL NOT NULL, origin TEXT,
                         logprob REAL, hyp TEXT NOT NULL);
"""
Progress = Callable[[int], None]


def cache_folder() -> Path:
    """Where indexes live: REST_CACHE, else XDG_CACHE_HOME/rest, else ~/.cache/rest; then view/."""
    if os.environ.get("REST_CACHE"):
        return Path(os.environ["REST_CACHE"]) / "view"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rest" / "view"


def _stamp(path: Path) -> dict:
    """What says the indexed file is still the same: its real path, size and modification time."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "format": FORMAT}


def index_path(path: Path, folder: Path | None = None) -> Path:
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
    return (folder or cache_folder()) / f"{digest}.sqlite"


@dataclass
class _Tally:
    """The figures of the whole file, added up as it is read: counts and reward histograms."""

    sources: int = 0
    candidates: int = 0
    references: int = 0
    reward_sum: float = 0.0

    def __post_init__(self):
        self.histograms = {"sample": [0] * BINS, "ref": [0] * BINS}

    def add(self, record: Record) -> None:
        kind = "ref" if is_reference(record) else "sample"
        self.histograms[kind][min(int(record["reward"] * BINS), BINS - 1)] += 1
        self.candidates += 1
        self.references += kind == "ref"
        self.reward_sum += record["reward"]

    def as_json(self) -> dict:
        return {"sources": self.sources, "candidates": self.candidates, "references": self.references,
                "mean_reward": self.reward_sum / self.candidates if self.candidates else None,
                "bins": BINS, "histograms": self.histograms}


def open_index(path: str | os.PathLike, folder: Path | None = None, progress: Progress | None = None,
               skip_invalid: bool = False) -> CandidateIndex:
    """The index of candidates file `path`: the cached one when the file has not changed, else built."""
    source = Path(path)
    stamp = _stamp(source)
    target = index_path(source, folder)
    if target.exists():
        index = CandidateIndex(target)
        try:
            if index.meta("stamp") == stamp:
                return index
        except sqlite3.DatabaseError:  # damaged, or not an index: ours to build again
            pass
        index.close()
    build_index(source, target, stamp, progress, skip_invalid)
    return CandidateIndex(target)


def build_index(source: Path, target: Path, stamp: dict, progress: Progress | None = None,
                skip_invalid: bool = False) -> None:
    """Read `source` once into a new database, renamed over `target` when complete."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise OutputError(f"{target.parent}: cannot write the index there ({err.strerror})") from None
    with built_database(target) as db:
        db.executescript(_SCHEMA)
        tally = _fill(db, source, progress, skip_invalid)
        db.execute("CREATE INDEX candidates_by_source ON candidates (source)")
        db.executemany("INSERT INTO meta VALUES (?, ?)",
                       [("stamp", json.dumps(stamp)), ("summary", json.dumps(tally.as_json()))])


def _fill(db: sqlite3.Connection, source: Path, progress: Progress | None, skip_invalid: bool) -> _Tally:
    reader = RecordReader(str(source), required=["id", "hyp", "reward"], optional=["src", "ref", "logprob"],
                          skip_invalid=skip_invalid, needed_by="rest view")
    tally, sources, candidates = _Tally(), [], []
    for group in iter_groups(reader, reader=reader):
        sources.append(_source_row(tally.sources, group))
        for k, record in enumerate(group):
            tally.add(record)
            candidates.append((tally.sources, record.get("k", k), record["reward"], record.get("origin"),
                               record.get("logprob"), record["hyp"]))
        tally.sources += 1
        if len(candidates) >= _CHUNK:
            _flush(db, sources, candidates)
            if progress:
                progress(tally.candidates)
    _flush(db, sources, candidates)
    return tally


def _source_row(number: int, group: list[Record]) -> tuple:
    first, rewards = group[0], [r["reward"] for r in group]
    src = first.get("src")
    ref = next((r["ref"] for r in group if "ref" in r), None)
    return (number, json.dumps(first["id"]), src, ref, len(group), max(rewards), sum(rewards) / len(rewards))


def _flush(db: sqlite3.Connection, sources: list, candidates: list) -> None:
    db.executemany("INSERT INTO sources VALUES (?, ?, ?, ?, ?, ?, ?)", sources)
    db.executemany("INSERT INTO candidates VALUES (?, ?, ?, ?, ?, ?)", candidates)
    sources.clear()
    candidates.clear()


def _like(text: str) -> str:
    """`text` as a LIKE pattern matching it anywhere, its own % and _ taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class CandidateIndex:
    """Read access to an index: the summary, pages of sources with their candidates, search."""

    def __init__(self, path: Path):
        self.path = path
        # Read-only, opened by URI so that a missing file is an error, not a new empty database.
        # The server answers each request on a thread of its own: one connection, one query at a
        # time, each read whole (a page is small); a whole-file pass opens its own (`groups`).
        self._uri = f"{path.resolve().as_uri()}?mode=ro"
        self._lock = threading.Lock()
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
        db.row_factory = sqlite3.Row
        return db

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def meta(self, key: str):
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else None

    def summary(self) -> dict:
        return self.meta("summary")

    @staticmethod
    def _matching_sql(query: str) -> tuple[str, tuple]:
        """The numbers of the sources whose source, reference or any candidate holds `query`, in order."""
        if not query:
            return "SELECT no FROM sources ORDER BY no", ()
        return ("SELECT no FROM sources WHERE src LIKE ?1 ESCAPE '\\' OR ref LIKE ?1 ESCAPE '\\' "
                "UNION SELECT source FROM candidates WHERE hyp LIKE ?1 ESCAPE '\\' ORDER BY 1",
                (_like(query),))

    def matching(self, query: str = "") -> list[int]:
        """Numbers of the sources whose source, reference or any candidate holds `query` (all without)."""
        return [row[0] for row in self._rows(*self._matching_sql(query))]

    def count(self, query: str = "") -> int:
        if not query:
            return self.summary()["sources"]
        sql, args = self._matching_sql(query)
        return self._rows(f"SELECT COUNT(*) FROM ({sql})", args)[0][0]

    def page(self, query: str = "", offset: int = 0, size: int = 20) -> list[dict]:
        """Up to `size` sources from the `offset`-th match on, each with its candidates, best first."""
        sql, args = self._matching_sql(query)
        numbers = [row[0] for row in self._rows(f"{sql} LIMIT {int(size)} OFFSET {int(offset)}", args)]
        return [self.source(number) for number in numbers]

    def source(self, number: int) -> dict:
        row = self._rows("SELECT * FROM sources WHERE no = ?", (number,))[0]
        candidates = [dict(c) for c in self._rows(
            "SELECT rowid AS row, k, reward, origin, logprob, hyp FROM candidates WHERE source = ? "
            "ORDER BY reward DESC, k", (number,))]
        return {"no": row["no"], "id": json.loads(row["id"]), "src": row["src"], "ref": row["ref"],
                "n": row["n"], "best": row["best"], "mean": row["mean"], "candidates": candidates}

    def groups(self) -> Iterator[list[Record]]:
        """Every source's candidates as records, in file order, one source at a time (for filters),
        through a connection of its own, closed at the end."""
        with contextlib.closing(self._connect()) as db:
            yield from _groups(db)


def _groups(db: sqlite3.Connection) -> Iterator[list[Record]]:
    cursor = db.execute("SELECT c.source, s.id, c.k, c.reward, c.origin, c.hyp FROM candidates c "
                        "JOIN sources s ON s.no = c.source ORDER BY c.source, c.rowid")
    group: list[Record] = []
    for source, id_json, k, reward, origin, hyp in cursor:
        if group and group[0]["_source"] != source:
            yield group
            group = []
        group.append({"_source": source, "id": json.loads(id_json), "k": k, "reward": reward,
                      "hyp": hyp, **({"origin": origin} if origin else {})})
    if group:
        yield group
