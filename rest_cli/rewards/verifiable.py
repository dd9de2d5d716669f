"""Verifiable rewards: a final answer checked against the record's `answer`, a program against its `tests`.

ReST-EM's rewards: 1 for a correct output, 0 otherwise, and a field on each record saying why.

- `answer` (`answer(pattern=...)`) adds `hyp_answer` (the answer found in `hyp`, normalised: equal
  numbers give equal strings, so majority voting may count them) and `answer_verdict` (`correct`,
  `wrong`, `no answer`). extract_answer and normalise_answer are the rule, in pure Python.
- `tests` (`tests(timeout=5, memory_mb=512, workers=4, python=...)`) runs `hyp` as a Python program,
  then the record's `tests`, in a sandbox (sandbox.py; the runner is runner.py), and adds
  `tests_verdict` (`passed`, `failed`, `timeout`, `memory`, `error: ...`).
"""

from __future__ import annotations

import json
import re
import signal
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from rest_cli import __version__
from rest_cli.errors import UsageError
from rest_cli.io.records import Record
from rest_cli.rewards.base import Reward, Scores, register
from rest_cli.rewards.sandbox import ENVIRONMENT, Limits, Outcome, Sandbox

if TYPE_CHECKING:
    from fractions import Fraction

# A number as written in text: a sign (only where it cannot be a hyphen: not after a letter, digit or
# point, so "10-20" ends in 20), digits with thousands commas in groups of exactly three or none, then a
# decimal part or a fraction. ASCII digits only; no exponents; "1,23" is the two numbers 1 and 23.
NUMBER = r"(?:(?<![\w.])[-+\u2212])?(?:[0-9]{1,3}(?:,[0-9]{3}(?![0-9]))+|[0-9]+)(?:\.[0-9]+|/[0-9]+)?"
_NUMBER = re.compile(NUMBER)
_WHOLE_NUMBER = re.compile(r"[-+\u2212]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+|/[0-9]+)?")


# --- answer ----------------------------------------------------------------------------------

def canonical_number(value: Fraction) -> str:
    """One spelling per number: "1000" (integers), "0.75" (terminating decimals), "1/3" (the rest)."""
    if value.denominator == 1:
        return str(value.numerator)
    places = _decimal_places(value.denominator)
    if places is None:
        return f"{value.numerator}/{value.denominator}"
    digits = str(abs(value.numerator) * 10 ** places // value.denominator).rjust(places + 1, "0")
    return f"{'-' if value < 0 else ''}{digits[:-places]}.{digits[-places:]}"


def _decimal_places(denominator: int) -> int | None:
    """Digits after the point that 1/denominator needs, or None if its decimal never ends."""
    twos = fives = 0
    while denominator % 2 == 0:
        denominator, twos = denominator // 2, twos + 1
    while denominator % 5 == 0:
        denominator, fives = denominator // 5, fives + 1
    return max(twos, fives) if denominator == 1 else None


def _number(text: str) -> str | None:
    """canonical_number of `text` (commas dropped, a Unicode minus read as "-"), or None if it is none."""
    from fractions import Fraction  # here: every command imports the rewards, and few score answers

    try:
        return canonical_number(Fraction(text.replace(",", "").replace("\u2212", "-")))
    except (ValueError, ZeroDivisionError):  # 1/0; or more digits than Python turns into an int
        return None


def normalise_answer(value: str | int | float) -> str | None:
    """An answer as a comparable string: a number in canonical_number's spelling, else the stripped text.

    A string is a number only as a whole ("1,234", "-0.50", "+3/4"; not "5 apples"). Floats are read
    from their shortest repr, so 0.1 is "0.1", not its binary expansion. None for an empty answer.
    """
    if not isinstance(value, str):
        return _number(repr(float(value)) if isinstance(value, float) else str(value))
    text = value.strip()
    if not text:
        return None
    return (_number(text) if _WHOLE_NUMBER.fullmatch(text) else None) or text


def extract_answer(hyp: str, pattern: re.Pattern | None = None) -> str | None:
    """The final answer of `hyp`, normalised; None when there is none.

    Without a pattern: the LAST number in the text (NUMBER says what a number is). With one: its
    last match, group 1 if the pattern has groups, else the whole match; then a number if it is one
    as a whole, else the stripped text.
    """
    if pattern is None:
        found = _NUMBER.findall(hyp)
        return normalise_answer(found[-1]) if found else None
    matches = list(pattern.finditer(hyp))
    if not matches:
        return None
    text = matches[-1].group(1 if pattern.groups else 0)
    return normalise_answer(text) if text is not None else None


@register("answer")
class AnswerMatch(Reward):
    """1 if the answer found in `hyp` equals the record's `answer` (numbers as numbers), else 0.

    Adds `hyp_answer` (extract_answer's string, or null) and `answer_verdict` (`correct`, `wrong`,
    `no answer`) to each record.
    """

    name = "answer"
    needs = ("hyp", "answer")

    def __init__(self, pattern: str | None = None):
        if pattern is not None and not isinstance(pattern, str):
            raise UsageError(f"reward {self.name!r}: pattern must be a quoted regular expression, "
                             f"got {pattern!r}")
        try:
            self.pattern = re.compile(pattern) if pattern is not None else None
        except re.error as err:
            raise UsageError(f"reward {self.name!r}: pattern {pattern!r} is not a regular expression: "
                             f"{err}") from None

    def score(self, records: list[Record]) -> Scores:
        fields = [self.judge(r["hyp"], r["answer"]) for r in records]
        return Scores([float(f["answer_verdict"] == "correct") for f in fields], fields)

    def judge(self, hyp: str, answer: str | int | float) -> dict:
        """`hyp_answer` and `answer_verdict` for one record."""
        found = extract_answer(hyp, self.pattern)
        if found is None:
            return {"hyp_answer": None, "answer_verdict": "no answer"}
        verdict = "correct" if found == normalise_answer(answer) else "wrong"
        return {"hyp_answer": found, "answer_verdict": verdict}

    def signature(self) -> str:
        rule = "last-number" if self.pattern is None else f"re:{self.pattern.pattern}"
        return f"answer|extract:{rule}|norm:fraction-or-stripped|rest:{__version__}"


# --- tests -----------------------------------------------------------------------------------

RUNNER = Path(__file__).with_name("runner.py")
RUNNER_VERSION = 1  # raise when what runner.py reports changes
VERDICTS = ("passed", "failed", "memory")  # besides "timeout" (rest's) and "error: ..."
VERDICT_CHARS = 200
_FENCE = re.compile(r"^[ \t]*```[^\n`]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)


def program_of(hyp: str) -> str:
    """The code in `hyp`: the first Markdown fenced block (```python ... ```), dedented, else all of it."""
    match = _FENCE.search(hyp)
    return textwrap.dedent(match.group(1)) if match else hyp


def verdict_of(outcome: Outcome, token: str, limits: Limits) -> str:
    """What a run's end says: its runner's verdict line (the one carrying `token`), else how it died."""
    if outcome.timed_out:
        return "timeout"
    for line in reversed(outcome.output.decode("utf-8", "replace").splitlines()):
        if line.startswith(f"{token} "):
            said = line[len(token) + 1:][:VERDICT_CHARS]
            return said if said in VERDICTS or said.startswith("error: ") else f"error: {said}"
    if outcome.output_bytes >= limits.file_mb << 20:  # the verdict line found no room
        return f"error: wrote {limits.file_mb} MB of output, the most a run may write"
    return _died(outcome.status)


def _died(status: int) -> str:
    """The verdict for a run that ended without its runner's verdict (bwrap exits 128 + a signal)."""
    if status == 128 + signal.SIGXCPU:
        return "timeout"  # the CPU-time limit, one second past the wall-clock one
    if status > 128 and status - 128 in signal.valid_signals():
        return f"error: killed by {signal.Signals(status - 128).name}"
    return f"error: exited with status {status} before the tests finished"


def _setting(name: str, value, low: float, kind: type = float) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, kind)) or not value >= low:
        what = "a whole number" if kind is int else "a number"
        raise UsageError(f"reward 'tests': {name} must be {what} >= {low:g}, got {value!r}")
    return value


@register("tests")
class UnitTests(Reward):
    """1 if `hyp`, run as a Python program, passes the record's `tests` in the sandbox, else 0.

    Adds `tests_verdict` to each record. Candidates of a batch run `workers` at a time, each in a
    fresh sandbox (sandbox.py says what it stops); docs/rewards.md states the contract.
    """

    name = "tests"
    needs = ("hyp", "tests")

    def __init__(self, timeout: float = 5.0, memory_mb: int = 512, workers: int = 4,
                 python: str | None = None):
        self.limits = Limits(timeout=float(_setting("timeout", timeout, 0.1)),
                             memory_mb=_setting("memory_mb", memory_mb, 64, int))
        self.workers = _setting("workers", workers, 1, int)
        if python is not None and not isinstance(python, str):
            raise UsageError(f"reward 'tests': python must be a quoted path, got {python!r}")
        self.sandbox = Sandbox(self.limits, python, who=f"reward {self.name!r}")
        self.runner = RUNNER.read_text(encoding="utf-8")

    def score(self, records: list[Record]) -> Scores:
        from concurrent.futures import ThreadPoolExecutor  # here: rest --help does not pay for it

        pool = ThreadPoolExecutor(max(1, min(self.workers, len(records))), thread_name_prefix="rest-tests")
        try:
            verdicts = list(pool.map(self.verdict, records))
        finally:  # on Ctrl-C, start no more; those running end within their timeout
            pool.shutdown(wait=True, cancel_futures=True)
        return Scores([float(v == "passed") for v in verdicts], [{"tests_verdict": v} for v in verdicts])

    def verdict(self, record: Record) -> str:
        """Run one record's candidate and tests in a fresh sandbox; its `tests_verdict`."""
        import secrets

        token = secrets.token_hex(16)  # the runner's verdict line carries it; the candidate cannot know it
        job = {"token": token, "candidate": program_of(record["hyp"]), "tests": record["tests"]}
        outcome = self.sandbox.run(self.runner, json.dumps(job).encode() + b"\n")
        return verdict_of(outcome, token, self.limits)

    def signature(self) -> str:
        limits = self.limits
        return (f"tests|runner:{RUNNER_VERSION}|python:{self.sandbox.version}|timeout:{limits.timeout:g}|"
                f"memory_mb:{limits.memory_mb}|processes:{limits.processes}|file_mb:{limits.file_mb}|"
                f"sandbox:bwrap|hashseed:{ENVIRONMENT['PYTHONHASHSEED']}|rest:{__version__}")
