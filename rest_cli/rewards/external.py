"""A reward computed by an external command that stays running and speaks JSONL.

Protocol (docs/rewards.md has an example scorer): for each batch rest writes one line
`{"records": [...]}` to the command's stdin and reads one line back from its stdout,
`{"rewards": [...]}` (one number per record, in order) or `{"error": "message"}`. At the end
rest closes stdin; the command should then exit. Its stderr is kept (last lines) for errors.

`cmd:COMMAND ARGS` runs without a shell (shlex.split, an argument list); `sh:COMMAND` asks
for /bin/sh explicitly, for pipes and variables.
"""

from __future__ import annotations

import collections
import io
import os
import queue
import shlex
import signal
import subprocess
import threading

import orjson

from .. import __version__
from ..errors import RestError, UsageError
from ..records import Record
from .user import UserReward, as_numbers

PROTOCOL = "jsonl-batch-v1"
STDERR_LINES = 20  # kept for error messages; the last 3 are shown
_EXIT_WAIT_S = 5.0


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


class JsonlProcess:
    """A child process asked one line at a time, each answer awaited with a timeout."""

    def __init__(self, argv: list[str], label: str):
        self.label = label
        try:
            # A session of its own, so that stopping it also stops what it started (sh: pipelines).
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
        except OSError as err:
            raise UsageError(f"reward command {label!r} cannot start: {err.strerror or err}") from None
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
        for line in io.BufferedReader(self.proc.stderr):
            self.stderr.append(line.decode("utf-8", "replace").rstrip())

    def ask(self, request: bytes, timeout: float, what: str) -> bytes:
        """Send one request line, return the answer line; RestError if the command dies or hangs."""
        if not self.answers.empty() and self.answers.queue[0] is not None:
            # Answers are matched to requests by order alone: an extra line would shift them all.
            raise RestError(f"reward command {self.label!r} wrote a line nobody asked for: "
                            f"{self.answers.get()[:80]!r} (one answer line per request; logs go to stderr)")
        writer = threading.Thread(target=_write_ignoring_sigpipe, args=(self.proc.stdin, request), daemon=True)
        writer.start()
        try:
            answer = self.answers.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise RestError(f"reward command {self.label!r} gave no answer within {timeout:g} s for {what}; "
                            f"stopped it (raise --reward-timeout if it is just slow)") from None
        if answer is None:
            raise RestError(f"reward command {self.label!r} {self._exit_status()} before answering {what}"
                            f"{self._stderr_tail()}")
        writer.join(timeout)
        return answer

    def _exit_status(self) -> str:
        try:
            code = self.proc.wait(timeout=_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            return "closed its output"
        return f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"

    def _stderr_tail(self) -> str:
        self._readers[1].join(timeout=1.0)  # the command is gone; let its last words arrive
        lines = [line.strip() for line in self.stderr if line.strip()][-3:]
        return f"; its stderr ends: {' / '.join(lines)}" if lines else "; it wrote nothing on stderr"

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """End of input: close stdin so the command can finish, then wait for it (kill if it lingers)."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()


class ExternalCommand(UserReward):
    """`cmd:COMMAND ARGS` / `sh:COMMAND`: a long-running scorer speaking the JSONL batch protocol."""

    def __init__(self, command: str, shell: bool = False, timeout: float = 300.0):
        self.command, self.shell = command, shell
        self.name = f"{'sh' if shell else 'cmd'}:{command}"
        self.timeout = _positive_timeout(timeout, self.name)
        self.who = f"reward command {command!r}"
        self.process = JsonlProcess(_argv(command, shell, self.name), command)

    def raw_score(self, records: list[Record]) -> list[float]:
        what = f"a batch of {len(records)} records"
        line = self.process.ask(orjson.dumps({"records": records}, option=orjson.OPT_APPEND_NEWLINE),
                                self.timeout, what)
        return as_numbers(self._rewards(line, what), len(records), self.who)

    def _rewards(self, line: bytes, what: str) -> list:
        try:
            answer = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            raise RestError(f"{self.who} answered {what} with invalid JSON ({err}): {line[:80]!r}") from None
        if isinstance(answer, dict) and isinstance(answer.get("error"), str):
            raise RestError(f"{self.who} reported an error: {answer['error']}")
        if not isinstance(answer, dict) or "rewards" not in answer:
            raise RestError(f"{self.who} answered {what} without a \"rewards\" list: {line[:80]!r}")
        return answer["rewards"]

    def signature(self) -> str:
        return f"{self.name}|protocol:{PROTOCOL}|rest:{__version__}"

    def close(self) -> None:
        self.process.close()


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
