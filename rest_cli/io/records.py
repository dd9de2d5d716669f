"""JSONL record streams: reading with validation, grouping by source, atomic writing.

A record is one JSON object per line (the contract is in docs/format.md). Reading and
writing stream one line at a time, so memory does not grow with the input.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import orjson

from rest_cli.errors import InputError, OutputError
from rest_cli.io.atomic import replacing_file

Record = dict[str, Any]
STDIO = "-"
_BOM = b"\xef\xbb\xbf"
_PASSED_OVER = object()  # a line that is not a record to yield: blank, or skipped as invalid


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return (type(value) is float or type(value) is int) and math.isfinite(value)  # bool is not int here


def _is_reward(value: Any) -> bool:
    return (type(value) is float or type(value) is int) and 0.0 <= value <= 1.0  # NaN fails the comparison


def _is_answer(value: Any) -> bool:
    return isinstance(value, str) or _is_number(value)


# The fields of the contract: the check each must pass, and what the error calls it.
FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "id": (_is_id, "a string or an integer"),
    "src": (_is_text, "a string"),
    "ref": (_is_text, "a string"),
    "hyp": (_is_text, "a string"),
    "k": (_is_count, "a non-negative integer"),
    "reward": (_is_reward, "a finite number in [0, 1]"),
    "logprob": (_is_number, "a finite number"),
    "weight": (_is_number, "a finite number"),
    "answer": (_is_answer, "a number or a string"),  # the checked answer (the `answer` reward)
    "tests": (_is_text, "a string (Python source)"),  # unit tests of a program (the `tests` reward)
}


# Characters JSON leaves unescaped that str.splitlines() (and some terminals) take for line
# breaks: escaped in messages, which must stay one line.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _describe(value: Any) -> str:
    """Name a bad value briefly, for an error message."""
    text = (orjson.dumps(value).decode().translate(_LINE_BREAKS) if not isinstance(value, float)
            else repr(value))
    kind = type(value).__name__ if value is not None else "null"
    return f"{kind} {text[:40]}{'...' if len(text) > 40 else ''}"


def check_record(record: Any, required: Iterable[str], optional: Iterable[str] = (),
                 needed_by: str = "") -> str | None:
    """Return what is wrong with `record` for a command that needs `required`, or None.

    `needed_by` says who needs the required fields, for the message (e.g. "reward 'chrf'").
    """
    if not isinstance(record, dict):
        return f"expected a JSON object, got {_describe(record)}"
    for field in required:
        if field not in record:
            return f"field '{field}' is missing" + (f" ({needed_by} needs it)" if needed_by else "")
    for field in (*required, *optional):
        if field in record:
            ok, expected = FIELDS[field]
            if not ok(record[field]):
                return f"field '{field}' must be {expected}, got {_describe(record[field])}"
    return None


def open_binary_input(path: str) -> IO[bytes]:
    """A file (decompressed if it ends in .gz) or stdin for "-", as bytes; a missing file is an InputError."""
    if path == STDIO:
        return sys.stdin.buffer
    try:
        stream = open(path, "rb")
    except OSError as err:
        raise InputError(path, None, f"cannot open: {err.strerror}") from None
    return gzip.open(stream) if path.endswith(".gz") else stream


def _json_problem(raw: bytes, err: orjson.JSONDecodeError) -> str:
    """Say what is wrong with a line orjson refused, in words that fit a line-located message.

    orjson's own message counts lines and columns within the one line it was given, and calls
    any invalid UTF-8 "surrogates"; the byte offset of bad UTF-8 and the name of a NaN or
    Infinity literal help more.
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"invalid UTF-8 at byte {bad.start + 1} ({raw[bad.start:bad.start + 4]!r})"
    if raw.startswith(_BOM):
        return "a byte-order mark (BOM) is allowed only at the start of the file"
    position = getattr(err, "pos", None)
    if position is None:
        return str(err)
    for literal in (b"NaN", b"Infinity"):
        if raw.startswith(literal, position):
            return f"{literal.decode()} is not JSON (column {position + 1}); write null or a number"
    return f"{err.msg} (column {position + 1})"


class RecordReader:
    """Iterate over the valid records of one JSONL input, checking the fields a command uses.

    Invalid records raise InputError naming file and line, or, with `skip_invalid`, are
    counted in `skipped` (the first message kept in `first_problem`). Blank lines are not
    records and are passed over.
    """

    def __init__(self, path: str = STDIO, required: Iterable[str] = (), optional: Iterable[str] = (),
                 skip_invalid: bool = False, needed_by: str = ""):
        self.path = path
        self.needed_by = needed_by
        self.name = "<stdin>" if path == STDIO else path
        self.required = tuple(required)
        self.optional = tuple(optional)
        self._required_checks = [(field, FIELDS[field][0]) for field in self.required]
        self._optional_checks = [(field, FIELDS[field][0]) for field in self.optional]
        self.skip_invalid = skip_invalid
        self.line = 0
        self.skipped = 0
        self.first_problem: str | None = None

    def __iter__(self) -> Iterator[Record]:
        stream = open_binary_input(self.path)
        try:
            yield from self._records(stream)
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()

    def _records(self, stream: IO[bytes]) -> Iterator[Record]:
        try:
            for self.line, raw in enumerate(stream, 1):
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError as err:
                    record = self._recover(raw, err)
                    if record is _PASSED_OVER:
                        continue
                if self._is_valid(record):
                    yield record
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            raise InputError(self.name, self.line + 1, f"cannot read: {err}") from None

    def _recover(self, raw: bytes, err: orjson.JSONDecodeError) -> Any:
        """Handle a line orjson refused: a blank line or a leading BOM, else a reported error.

        Returns the value parsed after the BOM (still to be validated), or _PASSED_OVER for a
        blank line and for a refused line that --skip-invalid counted. Kept off the fast path:
        only lines that fail to parse come here.
        """
        if self.line == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError as retry_err:
                err = retry_err
        if raw.strip():
            self.reject(f"invalid JSON: {_json_problem(raw, err)}")
        return _PASSED_OVER

    def _is_valid(self, record: Any) -> bool:
        if self._passes(record):
            return True
        self.reject(check_record(record, self.required, self.optional, self.needed_by))
        return False

    def _passes(self, record: Any) -> bool:
        # The hot loop of every command: plain loops over pre-bound checks, no messages.
        if type(record) is not dict:
            return False
        for field, ok in self._required_checks:
            if field not in record or not ok(record[field]):
                return False
        for field, ok in self._optional_checks:
            if field in record and not ok(record[field]):
                return False
        return True

    def reject(self, problem: str) -> None:
        """Refuse the record read last: raise InputError, or with `skip_invalid` count it.

        Commands call it for checks the reader cannot make (say, "neither hyp nor ref"), so
        those are reported and counted like the reader's own.
        """
        if not self.skip_invalid:
            raise InputError(self.name, self.line, problem)
        self.skipped += 1
        if self.first_problem is None:
            self.first_problem = f"{self.name}:{self.line}: {problem}"
        return None

    def fail(self, message: str) -> InputError:
        """An error located at the record read last (for problems found after reading)."""
        return InputError(self.name, self.line, message)


def is_reference(record: Record) -> bool:
    """Whether a candidate is a reference mixed in by `rest sample --include-ref` (`origin: ref`),
    not one of the policy's samples."""
    return record.get("origin") == "ref"


def id_key(value: str | int) -> tuple[bool, str | int]:
    """An id as a set holds it: exactly, with 1 and "1" apart. Not its JSON from orjson, whose bytes
    each keep a 4 KiB buffer: a set of a million ids held 4 GiB."""
    return isinstance(value, str), value


def iter_groups(records: Iterable[Record], key: str = "id",
                reader: RecordReader | None = None) -> Iterator[list[Record]]:
    """Yield runs of consecutive records sharing `key`, holding one run in memory.

    With `reader` (where `records` come from), an id that comes back after another id is an
    error located at its line: the stream is not grouped. The check keeps each id seen, exactly
    (`id_key`: 1 and "1" differ; no hash that two ids could share), so it grows with the number
    of sources, not of records.
    """
    seen: set[tuple[bool, str | int]] = set()
    group: list[Record] = []
    for record in records:
        value = record[key]
        if group and value != group[0][key]:
            yield group
            group = []
        if not group and reader is not None:
            fingerprint = id_key(value)
            if fingerprint in seen:
                raise reader.fail(f"{key} {value!r} appears again after other {key}s: the stream is "
                                  f"not grouped by {key} (sort or group it first)")
            seen.add(fingerprint)
        group.append(record)
    if group:
        yield group


class RecordWriter:
    """Write records as JSONL to stdout or to a file; a file appears only when complete.

    Use as a context manager. A file output is written to a temporary name beside it and
    renamed on success; on any error or interruption the temporary file is removed, so a
    failed run leaves no half-written file. `.gz` outputs are compressed.
    """

    def __init__(self, path: str = STDIO):
        self.path = path
        self.count = 0
        self._file: contextlib.AbstractContextManager | None = None  # replacing_file, for a file output
        self._raw: IO[bytes] | None = None
        self._out: IO[bytes] | None = None

    def __enter__(self) -> "RecordWriter":
        if self.path == STDIO:
            self._out = sys.stdout.buffer
            return self
        self._file = replacing_file(self.path)
        self._raw = self._file.__enter__()
        # The header names the output, not the temporary file, and no time: same records, same bytes.
        self._out = io.BufferedWriter(gzip.GzipFile(os.path.basename(self.path), "wb", fileobj=self._raw,
                                                    mtime=0)) \
            if self.path.endswith(".gz") else self._raw
        return self

    def write(self, record: Record) -> None:
        """Write one record as one line."""
        try:
            self._out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        except OSError as err:
            raise self._failed(err) from None
        self.count += 1

    def _failed(self, err: OSError) -> OutputError:
        where = "to stdout" if self._file is None else self.path
        return OutputError(f"cannot write {where}: {err.strerror or err}")

    def write_all(self, records: Iterable[Record]) -> int:
        """Write every record of an iterable; return how many were written."""
        for record in records:
            self.write(record)
        return self.count

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._file is None:
            try:
                self._out.flush()
            except OSError as err:  # stdout redirected to a full disk
                raise self._failed(err) from None
            return
        if exc is None and self._out is not self._raw:
            try:
                self._out.close()  # the gzip stream: writes its trailer into the file, which stays open
            except OSError as err:  # a full disk often shows only when the last buffer is flushed
                exc = self._failed(err)
        if exc is None:
            self._file.__exit__(None, None, None)
            return
        with contextlib.suppress(OSError, ValueError):  # closing gzip on a full disk fails again
            self._out.close()
        self._file.__exit__(type(exc), exc, exc.__traceback__)
        if exc_type is None:
            raise exc
