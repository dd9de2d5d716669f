"""The program the `tests` reward runs inside the sandbox: a candidate, then its tests, in one namespace.

rest never imports it: verifiable.py sends its source to sandbox.Sandbox.run. Standard library only.

Input: one JSON line on stdin, {"token": ..., "candidate": ..., "tests": ...}; the candidate then finds
stdin at its end. Output: its last word is one line on stdout, `TOKEN VERDICT`, where VERDICT is
`passed`, `failed` (an exception in the tests, AssertionError), `memory` (MemoryError) or
`error: <the exception's first line>`. The token is random per run and reaches the candidate in no
file, argument or environment variable, so a candidate that prints "passed" or exits early before
the tests gains nothing. (One that searches the interpreter's memory for it can; see sandbox.py.)
"""

import contextlib
import json
import os
import sys

VERDICT_CHARS = 200  # the verdict line is cut here: an exception message may be any length
# The namespace's __name__: a candidate's `if __name__ == "__main__":` block does not run.
MODULE = "candidate"


def verdict(candidate: str, tests: str) -> str:
    """Run the candidate's source, then the tests' in the same namespace, and say how it went."""
    namespace = {"__name__": MODULE, "__builtins__": __builtins__}
    in_tests = False
    try:
        exec(compile(candidate, "candidate.py", "exec"), namespace)
        in_tests = True
        exec(compile(tests, "tests.py", "exec"), namespace)
    except MemoryError:
        return "memory"
    except AssertionError as err:
        return "failed" if in_tests else f"error: {_described(err)}"
    except BaseException as err:  # SystemExit and KeyboardInterrupt too: the tests did not finish
        return f"error: {_described(err)}"
    return "passed"


def _described(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().rstrip(":")
    return text.splitlines()[0] if text.splitlines() else type(err).__name__


def main() -> None:
    job = json.loads(sys.stdin.readline())
    token = job.pop("token")
    report = os.dup(1)  # the candidate may close or replace stdout; the verdict still gets out
    pid = os.getpid()
    result = verdict(job.pop("candidate"), job.pop("tests"))
    if os.getpid() != pid:  # a process the candidate forked came back here: only the run itself reports
        os._exit(0)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # the candidate may have closed or replaced it
            stream.flush()
    line = " ".join(result.split())[:VERDICT_CHARS]
    os.write(report, f"\n{token} {line}\n".encode("utf-8", "replace"))
    os._exit(0)  # now: no atexit handler or thread of the candidate runs after the verdict


if __name__ == "__main__":
    main()
