"""The verifiable rewards: `answer` on tricky hypotheses, and `tests` verdicts for ordinary candidates.

Malicious candidates and what the sandbox stops are in test_sandbox.py.
"""

import re
import shutil
import time
from fractions import Fraction

import pytest

from rest_cli.errors import InputError, UsageError
from rest_cli.io.records import RecordReader
from rest_cli.rewards import RewardOptions, build_reward, score_records
from rest_cli.rewards.sandbox import Limits, Outcome
from rest_cli.rewards.verifiable import (
    canonical_number,
    extract_answer,
    normalise_answer,
    program_of,
    verdict_of,
)
from tests.helpers import read_jsonl, rest, write_jsonl

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap "
                                        "(CI installs it)")


def answer(hyp, expected, spec="answer"):
    """The fields and reward `spec` gives one record."""
    record, = score_records([{"hyp": hyp, "answer": expected}], build_reward(spec))
    return record


# --- answer: the extraction rule -------------------------------------------------------------------

@pytest.mark.parametrize("hyp, found", [
    ("I cannot say.", None),                                      # no number
    ("", None),
    ("3 apples and 5 pears make 8.", "8"),                        # several numbers: the last wins
    ("The total is 1,234,567 dollars", "1234567"),                # thousands separators
    ("Step 2: 1,000 + 234 = 1,234", "1234"),
    ("It fell to -15 degrees.", "-15"),                           # a negative number
    ("It fell to \u221215 degrees.", "-15"),                      # with a Unicode minus
    ("pages 10-20", "20"),                                        # a hyphen is not a sign
    ("x-5", "5"),
    ("The change is +7", "7"),                                    # a leading +
    ("So 0.50 of it", "0.5"),                                     # decimals, trailing zeros dropped
    ("about 1000.0 m", "1000"),
    ("3/4 of the cake", "0.75"),                                  # a fraction that ends as a decimal
    ("-3/4", "-0.75"),
    ("one third: 2/6", "1/3"),                                    # one that does not
    ("$1,000.25.", "1000.25"),
    ("1,23", "23"),                                               # not a thousands group: two numbers
    ("12,3456", "3456"),
    ("version 2, answer 42%", "42"),
    ("-0", "0"),
])
def test_the_last_number_is_the_answer(hyp, found):
    assert extract_answer(hyp) == found


@pytest.mark.parametrize("text", ["1,000", "1000", "1000.0", "+1000", "1000/1", "2000/2"])
def test_equal_numbers_normalise_to_one_string(text):
    assert normalise_answer(text) == "1000"


def test_fractions_and_decimals_meet():
    assert normalise_answer("3/4") == normalise_answer("0.75") == normalise_answer(0.75) == "0.75"
    assert normalise_answer("1/3") != normalise_answer("0.333")
    assert canonical_number(Fraction(1, 20)) == "0.05" and canonical_number(Fraction(-7, 8)) == "-0.875"


@pytest.mark.parametrize("value, normal", [
    (1234, "1234"), (0.1, "0.1"), (1e20, "100000000000000000000"), (-2.5, "-2.5"),
    (" Paris ", "Paris"), ("1,234", "1234"), ("5 apples", "5 apples"), ("  ", None), ("1/0", "1/0"),
])
def test_the_record_answer_may_be_a_number_or_a_string(value, normal):
    assert normalise_answer(value) == normal


def test_huge_numbers_are_compared_as_text_not_a_crash():
    huge = "9" * 5000  # past the digits Python turns into an int by default
    assert extract_answer(f"it is {huge}") == huge


@pytest.mark.parametrize("pattern, hyp, found", [
    (r"#### (\S+)", "12 + 30 = 42\n#### 42", "42"),                  # GSM8K style: group 1
    (r"#### (\S+)", "#### 1\nno, wait\n#### 1,000", "1000"),          # the last match
    (r"answer is (\w+)", "The answer is Paris, not Lyon", "Paris"),    # not a number: the text
    (r"\d+ apples", "3 apples, then 5 apples", "5 apples"),           # no group: the whole match
    (r"\\boxed\{([^}]*)\}", r"so \boxed{3/4}", "0.75"),
    (r"#### (\S+)", "no marker 42", None),                             # no match: no answer
])
def test_a_pattern_picks_the_answer(pattern, hyp, found):
    assert extract_answer(hyp, re.compile(pattern)) == found


# --- answer: the reward ------------------------------------------------------------------------

@pytest.mark.parametrize("hyp, expected, reward, verdict", [
    ("so the answer is 1,234", 1234, 1.0, "correct"),
    ("so the answer is 1,234", "1234", 1.0, "correct"),
    ("half: 0.50", 0.5, 1.0, "correct"),
    ("three quarters, 3/4", "0.75", 1.0, "correct"),
    ("it is -3", 3, 0.0, "wrong"),
    ("no idea", 3, 0.0, "no answer"),
])
def test_answer_reward_and_its_fields(hyp, expected, reward, verdict):
    record = answer(hyp, expected)
    assert (record["reward"], record["answer_verdict"]) == (reward, verdict)
    assert record["hyp_answer"] == (None if verdict == "no answer" else extract_answer(hyp))
    assert record["reward_sig"].startswith("answer|extract:last-number|")


def test_answer_with_a_pattern_compares_strings_stripped():
    record = answer("The capital is  Paris .", " Paris", 'answer(pattern="capital is (.*)\\.")')
    assert (record["reward"], record["hyp_answer"], record["answer_verdict"]) == (1.0, "Paris", "correct")
    assert "|extract:re:capital is (.*)\\.|" in record["reward_sig"]


@pytest.mark.parametrize("spec, message", [
    ('answer(pattern="(")', "reward 'answer': pattern '(' is not a regular expression"),
    ("answer(pattern=5)", "reward 'answer': pattern must be a quoted regular expression"),
    ("answer(regex='x')", "reward 'answer' takes no parameter 'regex'"),
])
def test_bad_answer_settings(spec, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        build_reward(spec)


@pytest.mark.parametrize("line, problem", [
    (b'{"hyp": "4"}', "field 'answer' is missing (reward 'answer' needs it)"),
    (b'{"hyp": "4", "answer": null}', "field 'answer' must be a number or a string, got null"),
    (b'{"hyp": "4", "answer": true}', "field 'answer' must be a number or a string, got bool"),
])
def test_a_record_without_an_answer_is_one_located_error(tmp_path, line, problem):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"hyp": "4", "answer": 4}\n' + line + b"\n")
    reward = build_reward("answer")
    with pytest.raises(InputError) as error:
        list(RecordReader(str(path), required=reward.needs, needed_by="reward 'answer'"))
    assert str(error.value).startswith(f"{path}:2: {problem}")


def test_fields_pass_through_compositions_ranges_and_keep_the_rest():
    records = [{"hyp": "it is 4", "ref": "it is 4", "answer": 4, "mine": [1]},
               {"hyp": "it is 5", "ref": "it is 4", "answer": 4, "mine": [2]}]
    out = list(score_records([dict(r) for r in records], build_reward("product(answer, exact)")))
    assert [(r["reward"], r["answer_verdict"], r["hyp_answer"], r["mine"]) for r in out] == [
        (1.0, "correct", "4", [1]), (0.0, "wrong", "5", [2])]
    ranged, = score_records([dict(records[0])], build_reward("answer", RewardOptions(value_range="0:2")))
    assert (ranged["reward"], ranged["answer_verdict"]) == (0.5, "correct")


@pytest.mark.subprocess
def test_rest_score_with_the_answer_reward(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"id": 1, "src": "2+2?", "hyp": "2+2 = 4", "answer": 4, "k": 0},
        {"id": 1, "src": "2+2?", "hyp": "I think 5", "answer": 4, "k": 1},
        {"id": 2, "src": "half?", "hyp": "It is 1/2.", "answer": "0.50", "k": 0},
        {"id": 3, "src": "?", "hyp": "no idea", "answer": "7", "k": 0},
    ])
    result = rest("score", "--reward", "answer", str(path))
    assert result.returncode == 0, result.stderr
    out = read_jsonl(result.stdout)
    assert [(r["reward"], r["hyp_answer"], r["answer_verdict"]) for r in out] == [
        (1.0, "4", "correct"), (0.0, "5", "wrong"), (1.0, "0.5", "correct"), (0.0, None, "no answer")]
    assert [r["k"] for r in out] == [0, 1, 0, 0] and out[0]["reward_name"] == "answer"


@pytest.mark.subprocess
def test_rest_score_answer_without_the_field_is_one_line(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"hyp": "4", "answer": 4}, {"hyp": "4"}])
    result = rest("score", "--reward", "answer", str(path))
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 3 and lines == [
        f"rest score: error: {path}:2: field 'answer' is missing (reward 'answer' needs it)"]


# --- tests: the contract, without a sandbox ---------------------------------------------------------

@pytest.mark.parametrize("hyp, program", [
    ("def f(): return 1", "def f(): return 1"),
    ("Here:\n```python\ndef f():\n    return 1\n```\nIt returns 1.", "def f():\n    return 1\n"),
    ("```\nx = 1\n```", "x = 1\n"),
    ("  ```py\n  x = 1\n  ```", "x = 1\n"),                          # an indented fence is dedented
    ("```python\nx = 1\n", "x = 1\n"),                                # no closing fence: to the end
    ("```python\na = 1\n```\n```python\nb = 2\n```", "a = 1\n"),      # the first block
])
def test_program_of_strips_a_markdown_fence(hyp, program):
    assert program_of(hyp) == program


@pytest.mark.parametrize("outcome, verdict", [
    (Outcome(0, False, b"noise\nTOKEN passed\n"), "passed"),
    (Outcome(0, False, b"TOKEN failed\n"), "failed"),
    (Outcome(0, False, b"TOKEN error: ValueError: x\n"), "error: ValueError: x"),
    (Outcome(0, False, b"passed\nOTHER passed\n"), "error: exited with status 0 before the tests finished"),
    (Outcome(-9, True, b"TOKEN passed\n"), "timeout"),
    (Outcome(128 + 24, False, b""), "timeout"),                                 # SIGXCPU: CPU seconds
    (Outcome(128 + 11, False, b""), "error: killed by SIGSEGV"),
    (Outcome(120, False, b"", 16 << 20), "error: wrote 16 MB of output, the most a run may write"),
])
def test_verdict_of_a_run(outcome, verdict):
    assert verdict_of(outcome, "TOKEN", Limits()) == verdict


@pytest.mark.parametrize("spec, message", [
    ("tests(timeout=0)", "reward 'tests': timeout must be a number >= 0.1, got 0"),
    ("tests(memory_mb=10)", "reward 'tests': memory_mb must be a whole number >= 64, got 10"),
    ("tests(workers=0)", "reward 'tests': workers must be a whole number >= 1, got 0"),
    ("tests(workers=1.5)", "reward 'tests': workers must be a whole number >= 1, got 1.5"),
])
def test_bad_tests_settings(spec, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        build_reward(spec)


# --- tests: ordinary candidates in the sandbox -------------------------------------------------------

TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"


@pytest.fixture(scope="module")
def tests_reward():
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: apt-get install bubblewrap (CI installs it)")
    return build_reward("tests(timeout=2, memory_mb=256)")


@needs_bwrap
@pytest.mark.subprocess
@pytest.mark.parametrize("hyp, verdict", [
    ("def add(a, b):\n    return a + b\n", "passed"),
    ("Sure:\n```python\ndef add(a, b):\n    return a + b\n```\n", "passed"),
    ("def add(a, b):\n    return a - b\n", "failed"),
    ("def add(a, b):\n    while True:\n        pass\n", "timeout"),
    ("def add(a, b):\n    return len(bytearray(1 << 30))\n", "memory"),
    ("junk = []\nwhile True:\n    junk.append(bytearray(1 << 20))\n", "memory"),
    ("def add(a, b):\n    return a / 0\n", "error: ZeroDivisionError: division by zero"),
    ("def add(a, b) return a + b\n", "error: SyntaxError: expected ':' (candidate.py, line 1)"),
    ("assert False, 'at the top'\n", "error: AssertionError: at the top"),
    ("def add(a, b):\n    return a + b\nif __name__ == '__main__':\n    input()\n", "passed"),
    ("def add(a, b):\n    return input()\n", "error: EOFError: EOF when reading a line"),
    ("print('x' * 100_000)\ndef add(a, b):\n    return a + b\n", "passed"),
])
def test_each_candidate_gets_its_verdict(tests_reward, hyp, verdict):
    record, = score_records([{"hyp": hyp, "tests": TESTS}], tests_reward)
    assert (record["tests_verdict"], record["reward"]) == (verdict, float(verdict == "passed"))


@needs_bwrap
@pytest.mark.subprocess
@pytest.mark.parametrize("hyp, verdict", [
    ("import sys\nsys.exit(0)\n", "error: SystemExit: 0"),                          # leaves before the tests
    ("import os\nos._exit(0)\n", "error: exited with status 0 before the tests finished"),  # without a trace
    ("print('passed')\nimport os\nos._exit(0)\n", "error: exited with status 0"),   # and claims success
    ("import sys\nprint('\\nx passed')\nsys.stdout.flush()\nimport os\nos._exit(0)\n", "error: exited"),
    ("import os\nos.close(1)\nos.close(2)\n", "failed"),       # the verdict has its own copy of stdout
    ("import os\nos.closerange(0, 4096)\n", "error: exited with status"),  # ... unless that is closed too
])
def test_a_candidate_cannot_pass_without_running_the_tests(tests_reward, hyp, verdict):
    record, = score_records([{"hyp": hyp, "tests": "assert False"}], tests_reward)
    assert record["reward"] == 0.0 and record["tests_verdict"].startswith(verdict)


@needs_bwrap
@pytest.mark.subprocess
def test_a_batch_runs_in_parallel_and_keeps_its_order(tests_reward):
    hangs = "import time\ntime.sleep(1.2)\ndef add(a, b):\n    return a + b\n"
    records = [{"hyp": hangs if n < 4 else "", "tests": TESTS, "n": n} for n in range(5)]
    start = time.monotonic()
    out = list(score_records(records, tests_reward))
    assert time.monotonic() - start < 4 * 1.2  # 4 workers: the sleeps overlap
    assert [(r["n"], r["tests_verdict"]) for r in out] == [
        *[(n, "passed") for n in range(4)], (4, "error: NameError: name 'add' is not defined")]
    assert out[0]["reward_sig"].startswith("tests|runner:1|python:") and "|timeout:2|memory_mb:256|" in \
        out[0]["reward_sig"]


@needs_bwrap
@pytest.mark.subprocess
def test_rest_score_with_the_tests_reward_and_a_composition(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"id": 1, "hyp": "def add(a, b):\n    return a + b  # 3\n", "tests": TESTS, "answer": 3},
        {"id": 2, "hyp": "def add(a, b):\n    return 3\n", "tests": TESTS, "answer": 3},
    ])
    result = rest("score", "--reward", "product(tests(timeout=3), answer)", str(path))
    assert result.returncode == 0, result.stderr
    out = read_jsonl(result.stdout)
    assert [(r["reward"], r["tests_verdict"], r["answer_verdict"]) for r in out] == [
        (1.0, "passed", "correct"), (0.0, "failed", "correct")]
