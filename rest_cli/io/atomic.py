"""The one way `rest` writes a file or a directory: so that it appears whole, or not at all.

Everything is written under a temporary name beside its destination (`.NAME.PID.XXXXXX.tmp`,
created exclusively, so a name planted there in advance is never written through), flushed to
disk with fsync, then renamed over the destination, and the folder is synced so the rename
itself survives a crash. On any error or interruption the temporary file or folder is removed
and the destination keeps what it held; what a killed writer (SIGKILL runs no clean-up) left is
removed by the next write of the same destination. OSErrors become one-line OutputErrors naming
the destination, not the temporary name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rest_cli.errors import OutputError, UsageError


def _prefix(path: Path, what: str = "") -> str:
    """`.NAME.PID.` (`.NAME.old.PID.`): the writer's process id, so a later run can tell a temporary
    left by a killed writer (its process is gone) from one being written now."""
    return f".{path.name}.{what + '.' if what else ''}{os.getpid()}."


def _temporary_name(path: Path) -> tuple[int, Path]:
    _remove_orphans(path)
    descriptor, name = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    return descriptor, Path(name)


_ORPHAN = r"\.{name}\.(?:old\.)?(\d+)\.\w+\.tmp"


def _remove_orphans(path: Path) -> None:
    """Remove the temporaries a killed writer of `path` left beside it (SIGKILL runs no clean-up).

    Only names this module makes, whose process is gone, and never through a link.
    """
    pattern = re.compile(_ORPHAN.format(name=re.escape(path.name)))
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent or "."):
            match = pattern.fullmatch(entry.name)
            if match and not entry.is_symlink() and not _alive(int(match[1])):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def cannot_write(path: str | os.PathLike, err: OSError) -> OutputError:
    """The one-line error for an OSError met while writing `path`."""
    return OutputError(f"cannot write {path}: {err.strerror or err}")


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable; some file systems cannot sync a folder, which is harmless."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def replacing_file(path: str | os.PathLike) -> contextlib.AbstractContextManager[IO[bytes]]:
    """A binary file to write `path`'s new contents into; it replaces `path` when the block ends well.

    Only a regular file is ever replaced. A symbolic link to one keeps the link and replaces the
    file it names. A device, a FIFO or a socket (`-o /dev/null`, a named pipe) is written in
    place, as a shell's `>` would; a folder is refused.
    """
    path = Path(path)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        status = None
    except OSError as err:
        raise cannot_write(path, err) from None
    if status is not None and stat.S_ISDIR(status.st_mode):
        raise OutputError(f"cannot write {path}: it is a folder")
    if status is not None and not stat.S_ISREG(status.st_mode):
        return _written_in_place(path)
    return _replacing(path.resolve() if path.is_symlink() else path)


@contextlib.contextmanager
def _written_in_place(path: Path) -> Iterator[IO[bytes]]:
    try:
        handle = open(path, "wb")
    except OSError as err:
        raise cannot_write(path, err) from None
    try:
        yield handle
        try:
            handle.close()
        except OSError as err:
            raise cannot_write(path, err) from None
    finally:
        with contextlib.suppress(OSError, ValueError):
            handle.close()


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[IO[bytes]]:
    try:
        descriptor, tmp = _temporary_name(path)
    except OSError as err:
        raise cannot_write(path, err) from None
    os.fchmod(descriptor, 0o666 & ~_umask())  # mkstemp makes it private; an output reads like any file
    handle = open(descriptor, "wb")  # open(), not os.fdopen: tests give it a full disk through this name
    try:
        yield handle
        try:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(tmp, path)
        except OSError as err:  # only our own steps: an error of the caller's is not a write error
            raise cannot_write(path, err) from None
    finally:
        # On a full disk closing fails again, flushing what is still buffered: ignored, so the
        # first error is the one reported and the temporary file still goes.
        with contextlib.suppress(OSError, ValueError):
            handle.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _sync_folder(path.parent)


@contextlib.contextmanager
def built_database(path: str | os.PathLike, replace: bool = True) -> Iterator[sqlite3.Connection]:
    """An SQLite database to fill, which becomes `path` when the block ends well (its last commit
    synced): renamed over it, or with `replace=False` linked in place only if `path` does not
    exist by then (the one there is left as it is). Built under this module's temporary name, so
    that what a killed writer left is removed by the next build of the same file."""
    path = Path(path)
    try:
        descriptor, tmp = _temporary_name(path)
        os.close(descriptor)
    except OSError as err:
        raise cannot_write(path, err) from None
    try:
        with contextlib.closing(sqlite3.connect(tmp)) as db:
            yield db
            db.commit()
        try:
            if replace:
                os.replace(tmp, path)
            else:
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
        except OSError as err:
            raise cannot_write(path, err) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _sync_folder(path.parent)


def write_file(path: str | os.PathLike, data: bytes) -> None:
    """Write a small whole file (a report, a curve, a run's metadata)."""
    with replacing_file(path) as out:
        try:
            out.write(data)
        except OSError as err:
            raise cannot_write(path, err) from None


def sole_writer(lock: str | os.PathLike, output: str | os.PathLike) -> IO[bytes]:
    """Claim `output`, which a run writes over many steps, for this process alone.

    `lock` (created if missing, never truncated, never a symlink followed) is held under an exclusive
    lock until the returned handle is closed or the process ends, even by SIGKILL. A second run
    writing the same output, say two make targets started in parallel that both need it, is refused
    with one line rather than mixing its writes with the first one's.
    """
    try:
        descriptor = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)
    except OSError as err:
        raise cannot_write(lock, err) from None
    handle = os.fdopen(descriptor, "ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UsageError(f"{output} is being written by another run of this command; let it finish "
                         f"or stop it first") from None
    except OSError as err:
        handle.close()
        raise cannot_write(lock, err) from None
    return handle


def usual_permissions(path: Path, mode: int = 0o777) -> None:
    """Give `path` the permissions of a new file or folder (`mode` less the umask).

    mkdtemp and mkstemp make private files and folders; what `rest` writes should read like any other.
    """
    path.chmod(mode & ~_umask())


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def replacing_dir(path: str | os.PathLike) -> Iterator[Path]:
    """An empty folder to fill with `path`'s new contents; it replaces `path` whole when the block
    ends well."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(path)
        tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent))
        usual_permissions(tmp)
    except OSError as err:
        raise cannot_write(path, err) from None
    try:
        yield tmp
        try:
            _sync_tree(tmp)
            _swap_in(tmp, path)
        except OSError as err:
            raise cannot_write(path, err) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _sync_folder(path.parent)


def _sync_tree(folder: Path) -> None:
    """fsync every file below `folder` (written by libraries that do not sync: safetensors, CTranslate2)."""
    for root, _, files in os.walk(folder):
        for name in files:
            descriptor = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)


def _swap_in(tmp: Path, path: Path) -> None:
    # A rename cannot replace a non-empty folder: move the old one aside first, then drop it.
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=_prefix(path, "old"), suffix=".tmp", dir=path.parent))
        path.rename(old / path.name)
    tmp.rename(path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
