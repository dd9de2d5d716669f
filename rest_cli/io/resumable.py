"""An output that survives interruption: `rest sample --resume -o OUT`.

Candidates go to OUT.partial in whole source groups (each group has the same number of
records), flushed as they come. A run that stops leaves OUT.partial and OUT.partial.json (what
the run was); the same command again keeps the complete groups, drops a torn last group,
skips that many sources of its input and appends the rest. OUT appears, complete, only at the
end. The JSON beside the partial file refuses a resume with another model, input or options,
which would mix two runs in one file.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import IO, Any

import orjson

from rest_cli.errors import OutputError, UsageError
from rest_cli.io.atomic import replacing_file, sole_writer, write_file
from rest_cli.io.records import Record


class ResumableOutput:
    def __init__(self, path: str, group_size: int, run: dict[str, Any]):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.meta = self.path.with_name(self.path.name + ".partial.json")
        self.group_size = group_size
        self.run = run
        self.groups_done = 0
        self._lock: IO[bytes] | None = None

    def open(self) -> int:
        """Prepare OUT.partial; return the number of source groups it already holds.

        OUT.partial stays locked until `finish`: a second run on the same output is refused
        rather than interleaving its candidates with this one's.
        """
        self._lock = sole_writer(self.partial, self.partial)  # the lock is on the output itself
        if self.meta.exists():
            stored = self._stored_run()
            if stored != self.run:
                changed = sorted(k for k in self.run.keys() | stored.keys()
                                 if self.run.get(k) != stored.get(k))
                raise UsageError(f"{self.partial} is from a run with other {', '.join(changed)}; "
                                 f"delete it and {self.meta.name} to start afresh, or rerun that command")
            self.groups_done = self._keep_complete_groups()
            return self.groups_done
        try:
            self.partial.write_bytes(b"")
        except OSError as err:
            raise OutputError(f"cannot write {self.partial}: {err.strerror}") from None
        write_file(self.meta, orjson.dumps(self.run, option=orjson.OPT_SORT_KEYS))
        return 0

    def _stored_run(self) -> dict[str, Any]:
        try:
            stored = orjson.loads(self.meta.read_bytes())
        except (OSError, orjson.JSONDecodeError) as err:
            raise UsageError(f"{self.meta}: cannot read it ({err}); delete it and {self.partial.name} "
                             f"to start afresh") from None
        return stored if isinstance(stored, dict) else {}

    def _keep_complete_groups(self) -> int:
        """Cut OUT.partial after its last complete group (a killed run may have torn the last one)."""
        if not self.partial.exists():
            self.partial.write_bytes(b"")
            return 0
        lines, kept_bytes, complete = 0, 0, 0
        with open(self.partial, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n") or not _is_record(line):
                    break
                lines += 1
                if lines % self.group_size == 0:
                    complete, kept_bytes = lines // self.group_size, handle.tell()
        with open(self.partial, "r+b") as handle:
            handle.truncate(kept_bytes)
        return complete

    def write_groups(self, records: Iterable[Record]) -> None:
        """Append records, a whole group per write and flush, so a stop loses at most one group."""
        iterator = iter(records)
        try:
            with open(self.partial, "ab") as handle:
                while group := list(islice(iterator, self.group_size)):
                    handle.write(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in group))
                    handle.flush()
                    self.groups_done += 1
                os.fsync(handle.fileno())
        except OSError as err:
            raise OutputError(f"cannot write {self.partial}: {err.strerror}") from None

    def finish(self) -> None:
        """Move the complete output into place (compressed when OUT ends in .gz), then tidy up."""
        try:
            if self.path.suffix == ".gz":
                with open(self.partial, "rb") as src, replacing_file(self.path) as raw:
                    with gzip.GzipFile(self.path.name, "wb", fileobj=raw, mtime=0) as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                self.partial.unlink()
            else:
                os.replace(self.partial, self.path)
            self.meta.unlink()
            self._lock.close()
        except OSError as err:
            raise OutputError(f"cannot write {self.path}: {err.strerror}") from None


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Name, size and modification time: enough to notice that a file was replaced, without reading it."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
