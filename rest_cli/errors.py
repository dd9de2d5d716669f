"""The exceptions the library raises; the CLI shows each as one line with its own exit code."""

from __future__ import annotations

# Exit codes, documented in docs/format.md. 2 is click's usage error.
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended


class RestError(Exception):
    """An error the user can act on; shown as one line, never as a traceback."""

    exit_code = EXIT_FAILURE


class UsageError(RestError):
    """Options that contradict each other or name something that does not exist."""

    exit_code = EXIT_USAGE


class OutputError(RestError):
    """An output that cannot be written (missing folder, no permission, disk full)."""


class InputError(RestError):
    """A malformed input record, located by file and line."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, source: str, line: int | None, message: str):
        super().__init__(f"{source}:{line}: {message}" if line else f"{source}: {message}")
        self.source = source
        self.line = line
        self.message = message


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs (no half-written output).

    A KeyboardInterrupt subclass on purpose: code that stops cleanly on Ctrl-C stops cleanly
    on SIGTERM too.
    """
