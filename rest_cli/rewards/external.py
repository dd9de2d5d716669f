"""A reward computed by an external command that stays running and speaks JSONL.

Protocol (docs/rewards.md has an example scorer): for each batch rest writes one line
`{"id": N, "records": [...]}` to the command's stdin and reads one line back from its stdout,
`{"id": N, "rewards": [...]}` (the request's id echoed, one number per record, in order) or
`{"error": "message"}`. An answer with another id, or none, is refused: a line that arrives late
or twice can never be taken for the answer to another batch. At the end rest closes stdin; the
command should then exit, and what it started is stopped with it. Its stderr is kept (the last
lines, each cut to STDERR_LINE_CHARS) for errors.

`cmd:COMMAND ARGS` runs without a shell (shlex.split, an argument list); `sh:COMMAND` asks
for /bin/sh explicitly, for pipes and variables.

A command that dies or hangs on a batch is restarted and sent the same batch again, up to
`restarts` times per batch; a command that answers wrongly is not (see ExternalCommand).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import orjson

from rest_cli import __version__
from rest_cli.errors import RestError, UsageError
from rest_cli.io.records import Record
from rest_cli.rewards.user import UserReward, as_numbers, in_unit_range

PROTOCOL = "jsonl-batch-v2"  # v2: each request carries an id that its answer must echo
STDERR_LINES = 20  # kept for error messages; the last 3 are shown
STDERR_LINE_CHARS = 500  # kept of each stderr line: a 10 MB line without a newline is not an error message
_STDERR_LINE_BYTES = 4 * STDERR_LINE_CHARS + 1  # UTF-8: at most 4 bytes a character, and the newline
# Restarts per batch: one for a transient failure (out of memory, a lost GPU or connection), one more
# in case the first restart met the same passing trouble. A command that fails a third time on the same
# batch fails on it for a reason (a record it cannot handle, a broken install): stop and say so.
DEFAULT_RESTARTS = 2
_EXIT_WAIT_S = 5.0
# While waiting for an answer, how often the command's own exit is checked: a child it started may keep
# its output open after it died, and waiting for the end of that output would wait out the timeout.
_POLL_S = 0.05


def _write_ignoring_sigpipe(stream, data: bytes) -> None:
    """Write `data` in full; a dead reader gives an error here, not a silent death by SIGPIPE.

    `rest` restores SIGPIPE's default (so `| head` is quiet), which would kill the whole
    process on a write to a crashed command. Blocking SIGPIPE in this thread turns it into
    EPIPE, and the pending signal dies with the thread.
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    view = memoryview(data)
    try:
        while view:
            view = view[stream.write(view):]
    except (OSError, ValueError):
        pass  # the reading side reports the command's death with its status and stderr


class CommandFailed(Exception):
    """The command died, closed its output or hung: worth a restart. `cause` reads after "it ..."."""

    def __init__(self, cause: str):
        super().__init__(cause)
        self.cause = cause


class JsonlProcess:
    """A child process asked one line at a time, each answer awaited with a timeout.

    It runs in a process group of its own; stopping it stops the group: the command and whatever
    it started (an `sh:` pipeline, a forked worker, a background helper).
    """

    def __init__(self, argv: list[str], label: str):
        self.label = label
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
        except OSError as err:
            raise UsageError(f"reward command {label!r} cannot start: {err.strerror or err}") from None
        # Each process has its own queue: a late answer from a stopped process can never be taken
        # for the answer of its replacement.
        self.answers: queue.Queue[bytes | None] = queue.Queue()
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._readers:
            thread.start()

    def _read_stdout(self) -> None:
        for line in io.BufferedReader(self.proc.stdout):  # unbuffered pipes (for stdin) read lines slowly
            self.answers.put(line)
        self.answers.put(None)  # end of output: the command exited or closed stdout

    def _read_stderr(self) -> None:
        """Keep the last STDERR_LINES lines, each cut to STDERR_LINE_CHARS, whatever their length."""
        stream = io.BufferedReader(self.proc.stderr)
        kept, cut = bytearray(), False  # the start of the line being read
        while chunk := stream.readline(65536):
            room = _STDERR_LINE_BYTES - len(kept)
            kept += chunk[:room]
            cut = cut or len(chunk) > room
            if chunk.endswith(b"\n"):
                self.stderr.append(_shown(kept, cut))
                kept, cut = bytearray(), False
        if kept:
            self.stderr.append(_shown(kept, cut))

    def ask(self, request: bytes, timeout: float) -> bytes:
        """Send one request line, return the answer line.

        CommandFailed if the command exits or gives no answer within `timeout` seconds (then it
        is stopped); RestError if it wrote a line before being asked.
        """
        if not self.answers.empty() and self.answers.queue[0] is not None:
            raise RestError(f"reward command {self.label!r} wrote a line nobody asked for: "
                            f"{self.answers.get()[:80]!r} (one answer line per request; logs go to stderr)")
        writer = threading.Thread(target=_write_ignoring_sigpipe, args=(self.proc.stdin, request),
                                  daemon=True)
        writer.start()
        answer = self._next_line(timeout)
        if answer is None or not answer.endswith(b"\n"):  # a line without its end: the output ended inside it
            ended = "before answering" if answer is None else "in the middle of its answer"
            raise CommandFailed(f"{self._exit_status()} {ended}{self._stderr_tail()}")
        writer.join(timeout)
        return answer

    def _next_line(self, timeout: float) -> bytes | None:
        """The next output line; None once the command has exited or closed its output without one."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                return self.answers.get(timeout=min(left, _POLL_S))
            except queue.Empty:
                pass
            if self._exited():  # its last line, if it wrote one, is in the pipe: let the reader deliver it
                try:
                    return self.answers.get(timeout=1.0)
                except queue.Empty:
                    return None
        self.stop()
        raise CommandFailed(f"gave no answer within {timeout:g} s, so rest stopped it "
                            f"(raise --reward-timeout if it is just slow)")

    def _exited(self) -> bool:
        """Whether the command itself has ended, without reaping it.

        Unreaped, its pid, which is its process group's id, cannot be given to another process, so
        stop() can kill the group left behind without ever hitting a stranger.
        """
        if self.proc.returncode is not None:
            return True
        if not hasattr(os, "waitid"):  # macOS: poll() reaps, which is safe enough there
            return self.proc.poll() is not None
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def stop(self, wait: float = 0.0) -> int | None:
        """Give the command `wait` seconds to exit, then kill its process group and reap it.

        Returns its exit code (negative: the signal), or None if rest had to kill it. Whatever the
        command started and left running is killed either way.
        """
        deadline = time.monotonic() + wait
        while not self._exited() and time.monotonic() < deadline:
            time.sleep(0.02)
        exited = self._exited()
        if self.proc.returncode is None:  # once reaped, its group was killed then (here)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:  # the group is already gone
                pass
        code = self.proc.wait()
        return code if exited else None

    def _exit_status(self) -> str:
        code = self.stop(_EXIT_WAIT_S)
        if code is None:
            return "closed its output"
        return f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"

    def _stderr_tail(self) -> str:
        self._readers[1].join(timeout=1.0)  # the command is gone; let its last words arrive
        lines = [line.strip() for line in self.stderr if line.strip()][-3:]
        return f"; its stderr ends: {' / '.join(lines)}" if lines else "; it wrote nothing on stderr"

    def close(self) -> bytes | None:
        """End of input: close stdin so the command can finish, wait for it (kill it if it lingers),
        and stop what it left running. Returns an output line nobody read, if there is one."""
        if self.proc.stdin and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self.stop(_EXIT_WAIT_S)
        self._readers[0].join(timeout=1.0)  # everything is stopped: the rest of its output arrives now
        unread = None
        while not self.answers.empty():
            line = self.answers.get()
            unread = unread or line
        return unread


def _shown(line: bytes, cut: bool) -> str:
    text = line.decode("utf-8", "replace").rstrip()
    return f"{text[:STDERR_LINE_CHARS]}..." if cut or len(text) > STDERR_LINE_CHARS else text


def _to_stderr(message: str) -> None:
    print(f"rest: {message}", file=sys.stderr, flush=True)


class ExternalCommand(UserReward):
    """`cmd:COMMAND ARGS` / `sh:COMMAND`: a long-running scorer speaking the JSONL batch protocol.

    A command that dies, closes its output or hangs on a batch is restarted and sent the same
    batch, up to `restarts` times per batch, each restart reported through `on_message` (default:
    one line on stderr). An answer that is wrong (the wrong count, not numbers, invalid JSON, an
    `{"error": ...}`) stops the run at once: the command is alive and said what it meant, so the
    same batch would get the same answer, and a restart would only hide the bug.
    """

    def __init__(self, command: str, shell: bool = False, timeout: float = 300.0,
                 restarts: int = DEFAULT_RESTARTS, on_message: Callable[[str], None] | None = None):
        self.command, self.shell = command, shell
        self.name = f"{'sh' if shell else 'cmd'}:{command}"
        self.timeout = _positive_timeout(timeout, self.name)
        self.restarts = _restart_limit(restarts, self.name)
        self.say = on_message or _to_stderr
        self.who = f"reward command {command!r}"
        self.argv = _argv(command, shell, self.name)
        self.process = JsonlProcess(self.argv, command)
        self.batches = self.records_sent = 0  # to name a failing batch: "batch 3 (records 513-768)"

    def score(self, records: list[Record]) -> list[float]:
        values = self.raw_score(records)
        return in_unit_range(values, f"{self.who} on {self._batch_name(records)}")

    def raw_score(self, records: list[Record]) -> list[float]:
        self.batches += 1
        self.records_sent += len(records)
        what = self._batch_name(records)
        request = {"id": self.batches, "records": records}  # the batch number: unique for this command
        line = self._ask(orjson.dumps(request, option=orjson.OPT_APPEND_NEWLINE), what)
        return as_numbers(self._rewards(line, what, self.batches), len(records), f"{self.who} on {what}")

    def _batch_name(self, records: list[Record]) -> str:
        first = self.records_sent - len(records) + 1
        span = f"record {first}" if len(records) == 1 else f"records {first}-{self.records_sent}"
        ids = [r["id"] for r in (records[0], records[-1]) if "id" in r]
        if len(ids) == 2:
            span += f", id {ids[0]!r}" if ids[0] == ids[1] else f", ids {ids[0]!r} to {ids[1]!r}"
        return f"batch {self.batches} ({span})"

    def _ask(self, request: bytes, what: str) -> bytes:
        """The answer to `request`, restarting the command after each failure, `restarts` times at most."""
        for restart in range(1, self.restarts + 1):
            try:
                return self.process.ask(request, self.timeout)
            except CommandFailed as failure:
                self.say(f"{self.who} failed on {what}, restarting it ({restart} of {self.restarts}): "
                         f"it {failure.cause}")
                self._restart()
        try:
            return self.process.ask(request, self.timeout)
        except CommandFailed as failure:
            done = f"{self.restarts} restart{'' if self.restarts == 1 else 's'}"
            raise RestError(f"{self.who} failed on {what} after {done}: it {failure.cause}") from None

    def _restart(self) -> None:
        self.process.stop()  # a command that closed its output may still be running, or what it started
        self.process.close()  # its unread output is dropped with it: it answered nothing rest will use
        try:
            self.process = JsonlProcess(self.argv, self.command)
        except UsageError as err:  # it started before: not a usage error now
            raise RestError(str(err)) from None

    def _rewards(self, line: bytes, what: str, request_id: int) -> list:
        """The answer's rewards, once it is known to answer request `request_id`."""
        answer, problem = _loads(line)
        if problem:
            raise RestError(f"{self.who} answered {what} with invalid JSON ({problem}): {line[:80]!r}")
        if not isinstance(answer, dict):
            raise RestError(f"{self.who} answered {what} without a \"rewards\" list: {line[:80]!r}")
        if "id" in answer and not _same_id(answer["id"], request_id):
            raise RestError(f"{self.who} answered {what}, sent as id {request_id}, with the id "
                            f"{answer['id']!r}: an answer line arrived late or twice, and rest will not "
                            f"attach it to other records (one answer line per request; logs go to stderr)")
        if isinstance(answer.get("error"), str):  # may lack the id: the request may be what it could not read
            raise RestError(f"{self.who} reported an error on {what}: {answer['error']}")
        if "id" not in answer:
            raise RestError(f"{self.who} answered {what} without an \"id\": protocol {PROTOCOL} needs "
                            f"each answer to echo its request's id, as "
                            f"{{\"id\": {request_id}, \"rewards\": [...]}} (see docs/rewards.md)")
        if "rewards" not in answer:
            raise RestError(f"{self.who} answered {what} without a \"rewards\" list: {line[:80]!r}")
        return answer["rewards"]

    def signature(self) -> str:
        return f"{self.name}|protocol:{PROTOCOL}|rest:{__version__}"

    def close(self) -> None:
        """Let the command finish (what it started is stopped too); a line it wrote that nobody
        asked for, after its last answer, is an error like one before an answer."""
        unread = self.process.close()
        if unread is not None:
            raise RestError(f"{self.who} wrote a line nobody asked for after its last answer: "
                            f"{unread[:80]!r} (one answer line per request; logs go to stderr)")


def _same_id(value, request_id: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value == request_id


def _loads(line: bytes) -> tuple[object, str]:
    """(answer, "") or (None, what is wrong with the JSON).

    NaN, Infinity and 1e400 (Python's json.dumps writes the first two) are read as floats, to be
    refused as "not a finite number" for the record they belong to rather than as invalid JSON.
    """
    try:
        return orjson.loads(line), ""
    except orjson.JSONDecodeError as err:
        problem = str(err)
    try:
        return json.loads(line, parse_int=float), ""  # parse_int: 10**400 would overflow float() later
    except ValueError:
        return None, problem


def _argv(command: str, shell: bool, name: str) -> list[str]:
    if shell:
        return ["/bin/sh", "-c", command]
    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise UsageError(f"reward {name!r}: cannot split the command: {err}") from None
    if not argv:
        raise UsageError(f"reward {name!r}: the command is empty")
    return argv


def _positive_timeout(timeout, name: str) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise UsageError(f"reward {name!r}: timeout must be a number of seconds > 0, got {timeout!r}")
    return float(timeout)


def _restart_limit(restarts, name: str) -> int:
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        raise UsageError(f"reward {name!r}: restarts must be a whole number >= 0, got {restarts!r}")
    return restarts
