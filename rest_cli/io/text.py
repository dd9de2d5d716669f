"""Plain-text parallel data as records: one sentence per line in a source file and a reference file.

Lines are split on "\\n" only: a tab, a form feed or a Unicode line separator inside a sentence
is part of it (splitting on them is what breaks `paste | cut` converters). A "\\r" before the
"\\n" (files from Windows) and a UTF-8 byte-order mark at the start are dropped. Both files are
read in step, one line at a time, so memory does not depend on their size.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from rest_cli.errors import InputError
from rest_cli.io.records import STDIO, Record, open_binary_input

_BOM = b"\xef\xbb\xbf"
_END = object()  # a file that has no more lines


@dataclass
class TextPairStats:
    """What a conversion did: pairs written, and pairs left out for an empty side."""

    pairs: int = 0
    empty_skipped: int = 0
    first_empty: str | None = field(default=None)


class _Lines:
    """The lines of one text file as str, numbered from 1, with errors that name file and line."""

    def __init__(self, path: str):
        self.path = path
        self.name = "<stdin>" if path == STDIO else path
        self.line = 0
        self._stream: IO[bytes] | None = None

    def __enter__(self) -> "_Lines":
        self._stream = open_binary_input(self.path)
        return self

    def __exit__(self, *exc) -> None:
        if self._stream is not None and self.path != STDIO:
            self._stream.close()

    def next(self) -> str | object:
        """The next line without its line end, or _END."""
        try:
            raw = self._stream.readline()
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            raise InputError(self.name, self.line + 1, f"cannot read: {err}") from None
        if not raw:
            return _END
        self.line += 1
        if self.line == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(self.name, self.line,
                             f"not UTF-8 text (byte {err.start + 1} of the line)") from None

    def count_rest(self) -> int:
        """Read to the end; the number of lines in the file."""
        while self.next() is not _END:
            pass
        return self.line


def text_pairs(src_path: str, ref_path: str | None = None, skip_empty: bool = False,
               stats: TextPairStats | None = None) -> Iterator[Record]:
    """Records `{"id": LINE, "src": ..., "ref": ...}` from aligned text files (`ref` only with a ref file).

    `id` is the line number, from 1, so an error downstream points back at the text files. Files
    of different lengths are an error naming both counts; an empty sentence is an error too, or
    with `skip_empty` the pair is left out and counted in `stats`.
    """
    stats = stats if stats is not None else TextPairStats()
    with _Lines(src_path) as src, (_Lines(ref_path) if ref_path else _NoFile()) as ref:
        while True:
            source, reference = src.next(), ref.next()
            if source is _END or reference is _END:
                _check_same_length(src, ref, source, reference)
                return
            record = _pair(src, ref, source, reference, skip_empty, stats)
            if record is not None:
                stats.pairs += 1
                yield record


def _pair(src: _Lines, ref, source: str, reference, skip_empty: bool, stats: TextPairStats) -> Record | None:
    for lines, text in ((src, source), (ref, reference)):
        if text == "":
            where = f"{lines.name}:{lines.line}"
            if not skip_empty:
                raise InputError(lines.name, lines.line, "empty line (an empty sentence); --skip-empty "
                                                         "leaves such pairs out")
            stats.empty_skipped += 1
            stats.first_empty = stats.first_empty or where
            return None
    record = {"id": src.line, "src": source}
    if reference is not None:
        record["ref"] = reference
    return record


def _check_same_length(src: _Lines, ref, source, reference) -> None:
    if isinstance(ref, _NoFile) or (source is _END and reference is _END):
        return
    src_count = src.line if source is _END else src.count_rest()
    ref_count = ref.line if reference is _END else ref.count_rest()
    raise InputError(src.name, None, f"{src_count:,} lines, but {ref.name} has {ref_count:,}: the files must "
                                     f"be aligned line by line")


class _NoFile:
    """The reference side when there is no reference file: every line is None."""

    def __enter__(self) -> "_NoFile":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def next(self) -> None:
        return None
