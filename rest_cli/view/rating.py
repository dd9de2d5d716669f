"""`rest rate`: blind side-by-side human ratings of two systems' outputs, as the paper collected
them (Section 4: a source and two translations, each scored 0 to 6; "human eval diff" is the
mean score of the second system minus the first's).

Everything lives in one SQLite file, the ratings database: the items (each source with the two
outputs, copied in when the database is made, so a report needs nothing else) and every rating,
written and synced into that file the moment it is saved (a rollback journal, not a write-ahead
log, so that no committed rating waits in a second file; synchronous=FULL): a crash, a killed
server or a closed tab loses nothing, and reopening resumes at the rater's first unrated item.
The server answers requests on several threads; one lock keeps them to the connection one at a
time (ratings come at the pace of people). Which output shows on the left is drawn per rater and
item, and stays the same when the page is reloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rest_cli.errors import InputError, UsageError
from rest_cli.io.atomic import built_database
from rest_cli.io.records import Record
from rest_cli.io.shards import derived_seed

FORMAT = 1
SCORES = range(7)  # the paper's 0-6 scale
_SCHEMA = """
CREATE TABLE rest_ratings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (item INTEGER PRIMARY KEY, id TEXT NOT NULL, src TEXT, ref TEXT, hyp_a TEXT NOT NULL,
                    hyp_b TEXT NOT NULL, reward_a REAL, reward_b REAL);
CREATE TABLE ratings (rater TEXT NOT NULL, item INTEGER NOT NULL REFERENCES items, score_a INTEGER NOT NULL,
                      score_b INTEGER NOT NULL, a_on_left INTEGER NOT NULL, rated_at TEXT NOT NULL,
                      PRIMARY KEY (rater, item));
"""


@dataclass(frozen=True)
class Item:
    item: int
    id: object
    src: str | None
    ref: str | None
    hyp_a: str
    hyp_b: str
    reward_a: float | None = None
    reward_b: float | None = None


def items_of(outputs_a: list[Record], outputs_b: list[Record]) -> list[Item]:
    """The items to rate: one per source, the two systems' outputs of it (same sources, same order)."""
    return [Item(k, a.get("id", k), a.get("src"), a.get("ref"), a["hyp"], b["hyp"], a.get("reward"),
                 b.get("reward"))
            for k, (a, b) in enumerate(zip(outputs_a, outputs_b))]


def _digest(items: list[Item]) -> str:
    text = json.dumps([[i.id, i.src, i.hyp_a, i.hyp_b] for i in items], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _create(path: Path, items: list[Item], systems: tuple[str, str]) -> None:
    """A new ratings database at `path`, made whole under a temporary name, then linked into place
    (never over a file that appeared there meanwhile)."""
    with built_database(path, replace=False) as db:  # one made meanwhile stays: open() checks whose it is
        db.executescript(_SCHEMA)
        db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       [(i.item, json.dumps(i.id), i.src, i.ref, i.hyp_a, i.hyp_b, i.reward_a, i.reward_b)
                        for i in items])
        db.executemany("INSERT INTO rest_ratings VALUES (?, ?)", [
            ("format", json.dumps(FORMAT)), ("items", json.dumps(_digest(items))),
            ("systems", json.dumps(list(systems)))])


def a_on_left(rater: str, item: int) -> bool:
    """Whether system A's output shows on the left for this rater and item: a fair coin, the same on
    every reload."""
    return derived_seed(0, "rate-left", rater, item) % 2 == 0


class RatingStore:
    """The ratings database: its items, and the ratings as they come."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=DELETE")
        self._db.execute("PRAGMA synchronous=FULL")  # each commit reaches the disk before the page moves on

    @classmethod
    def create_or_open(cls, path: str | Path, items: list[Item], systems: tuple[str, str]) -> RatingStore:
        """The database at `path`: made with `items` if absent, else the same items' ratings so far.

        A file that is not a ratings database of rest, or holds other outputs, is refused, untouched.
        """
        path = Path(path)
        if not path.exists():
            _create(path, items, systems)
        store = cls.open(path)
        if store.meta("items") != _digest(items):
            systems_there = store.meta("systems")
            store.close()
            raise UsageError(f"{path} holds the ratings of other outputs ({' vs '.join(systems_there)}); "
                             f"give another --ratings file")
        return store

    @classmethod
    def open(cls, path: str | Path) -> RatingStore:
        """An existing ratings database; anything else is refused without being written."""
        path = Path(path)
        if not path.is_file():
            raise InputError(str(path), None, "no such ratings database")
        try:
            with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as probe:
                probe.execute("SELECT value FROM rest_ratings WHERE key = 'format'").fetchone()
        except sqlite3.DatabaseError:
            raise InputError(str(path), None, "not a ratings database of rest rate; give a new file's name "
                                              "or one rest rate made") from None
        return cls(path)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def meta(self, key: str):
        rows = self._rows("SELECT value FROM rest_ratings WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else None

    def count(self) -> int:
        return self._rows("SELECT COUNT(*) FROM items")[0][0]

    def item(self, number: int) -> Item | None:
        rows = self._rows("SELECT * FROM items WHERE item = ?", (number,))
        return Item(**{**dict(rows[0]), "id": json.loads(rows[0]["id"])}) if rows else None

    def items(self) -> list[Item]:
        return [Item(**{**dict(row), "id": json.loads(row["id"])})
                for row in self._rows("SELECT * FROM items ORDER BY item")]

    def next_unrated(self, rater: str) -> int | None:
        rows = self._rows("SELECT item FROM items WHERE item NOT IN "
                          "(SELECT item FROM ratings WHERE rater = ?) ORDER BY item LIMIT 1", (rater,))
        return rows[0][0] if rows else None

    def rated(self, rater: str) -> int:
        return self._rows("SELECT COUNT(*) FROM ratings WHERE rater = ?", (rater,))[0][0]

    def rating(self, rater: str, item: int) -> dict | None:
        rows = self._rows("SELECT * FROM ratings WHERE rater = ? AND item = ?", (rater, item))
        return dict(rows[0]) if rows else None

    def rate(self, rater: str, item: int, left: int, right: int) -> None:
        """Store a rating of the outputs as the rater saw them (left, right): durable on return."""
        if not rater.strip():
            raise UsageError("a rating needs the rater's name")
        if self.item(item) is None:
            raise UsageError(f"no item {item}")
        for score in (left, right):
            if score not in SCORES:
                raise UsageError(f"scores are whole numbers from 0 to 6, got {score}")
        a_left = a_on_left(rater, item)
        score_a, score_b = (left, right) if a_left else (right, left)
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO ratings VALUES (?, ?, ?, ?, ?, ?)",
                             (rater, item, score_a, score_b, int(a_left),
                              datetime.now(timezone.utc).isoformat(timespec="seconds")))

    def ratings(self) -> list[dict]:
        return [dict(row) for row in self._rows("SELECT * FROM ratings ORDER BY item, rater")]
