"""User rewards: a Python function, an external command speaking JSONL, and mapping raw scores to [0, 1]."""

import itertools
import re
import shlex
import sys
import textwrap
import time

import pytest

from rest_cli.errors import RestError, UsageError
from rest_cli.rewards import build_reward, make_reward, score_records
from rest_cli.rewards.user import Scaled, calibrate, parse_range
from tests.helpers import write_jsonl

RECORDS = [{"src": "ein Hund", "hyp": "a dog"}, {"src": "eine Katze", "hyp": "a cat!"}]
_names = itertools.count()


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write a module into a fresh directory made the cwd; return its (unique) name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # import_function may put the cwd on it

    def write(source: str) -> str:
        name = f"user_rewards_{next(_names)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name
    return write


# --- py:module:function -----------------------------------------------------------------------

def test_python_function_reward(user_module):
    module = user_module("""
        __version__ = "1.2"
        def length(records):
            return [len(r["hyp"]) / 10 for r in records]
        def exclaims(records):
            return [float(r["hyp"].endswith("!")) for r in records]
        exclaims.needs = ("hyp", "src")
        exclaims.version = "7"
    """)
    reward = make_reward(f"py:{module}:length")
    out = list(score_records([dict(r) for r in RECORDS], reward))
    assert [r["reward"] for r in out] == [0.5, 0.6]
    assert out[0]["reward_name"] == f"py:{module}:length"
    assert out[0]["reward_sig"].startswith(f"py:{module}:length|version:1.2|rest:")
    other = make_reward(f"py:{module}:exclaims")
    assert other.needs == ("hyp", "src") and "version:7" in other.signature()
    assert make_reward(f"product(py:{module}:exclaims, copy-guard)").score(RECORDS) == [0.0, 1.0]


@pytest.mark.parametrize("body, message", [
    ("return [0.5]", "reward function '{m}:f' returned 1 values for 2 records"),
    ("return [0.5, 'high']",
     "reward function '{m}:f' returned 'high' (str) for record 2 of the batch, not a finite number"),
    ("return [0.5, float('nan')]", "returned nan (float) for record 2"),
    ("return [True, 0.5]", "returned True (bool) for record 1"),
    ("return 0.5", "reward function '{m}:f' returned float, not a list of 2 numbers"),
    ("return [r['ref'] for r in records]", "reward function '{m}:f' raised KeyError: 'ref'"),
    ("return [0.5, 2.0]", "reward function '{m}:f' returned 2.0, outside [0, 1]: give its range with --reward-range"),
])
def test_python_function_misbehaving_is_named(user_module, body, message):
    module = user_module(f"def f(records):\n    {body}\n")
    stream = score_records([dict(r) for r in RECORDS], make_reward(f"py:{module}:f"))
    with pytest.raises(RestError, match=re.escape(message.format(m=module))):
        next(stream)


@pytest.mark.parametrize("source, spec, message", [
    ("x = 1", "py:no_such_module_xyz:f", "cannot import module 'no_such_module_xyz': ModuleNotFoundError"),
    ("raise RuntimeError('broken at import')", "py:{m}:f",
     "cannot import module '{m}': RuntimeError: broken at import"),
    ("x = 1", "py:{m}:f", "module '{m}' has no function 'f'"),
    ("x = 1", "py:{m}:x", "module '{m}' has no function 'x'"),
    ("def f(records): pass\nf.needs = ('hyp', 'lang')", "py:{m}:f", "needs names 'lang'; it can name only"),
])
def test_python_function_import_problems_are_usage_errors(user_module, source, spec, message):
    module = user_module(source)
    with pytest.raises(UsageError, match=re.escape(message.format(m=module))):
        make_reward(spec.format(m=module))


# --- normalisation -----------------------------------------------------------------------------

def test_range_maps_linearly_and_clips(user_module):
    module = user_module("def raw(records):\n    return [float(r['hyp']) for r in records]\n")
    records = [{"hyp": h} for h in ("-7", "-5", "0", "2.5", "5", "10")]
    reward = build_reward(f"py:{module}:raw", value_range="-5:5")
    assert reward.score(records) == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0]
    assert reward.signature().endswith("|range:-5:5|range-from:given|map:clip((x-lo)/(hi-lo),0,1)")
    assert make_reward(f"scale(py:{module}:raw, lo=0, hi=10)").score(records) == [0.0, 0.0, 0.0, 0.25, 0.5, 1.0]


@pytest.mark.parametrize("text", ["5", "a:b", "1:2:3x"])
def test_bad_range(text):
    with pytest.raises(UsageError, match="--reward-range expects LO:HI"):
        parse_range(text)


def test_range_and_calibrate_are_exclusive_and_the_range_must_be_increasing():
    with pytest.raises(UsageError, match="give one"):
        build_reward("chrf", value_range="0:1", calibrate_from="x.jsonl")
    with pytest.raises(UsageError, match="finite LO < HI"):
        build_reward("chrf", value_range="5:-5")
    with pytest.raises(UsageError, match="one of them"):
        build_reward(None)


def test_calibration_takes_percentiles_of_true_and_mismatched_pairs(user_module, tmp_path):
    module = user_module("def length(records):\n    return [float(len(r['hyp'])) for r in records]\n")
    calib = write_jsonl(tmp_path / "cal.jsonl", [{"src": "s", "ref": "x" * n} for n in (1, 2, 3)])
    # Scores: true pairs 1, 2, 3 and shifted pairs 2, 3, 1; p1 and p99 (inclusive) of [1,1,2,2,3,3] are 1 and 3.
    reward = calibrate(make_reward(f"py:{module}:length"), str(calib))
    assert (reward.lo, reward.hi) == (1.0, 3.0)
    assert reward.score([{"hyp": "xx"}, {"hyp": "xxxxxx"}]) == [0.5, 1.0]
    assert "|range:1:3|range-from:calibrate:cal.jsonl:n=6:p1-p99|" in reward.signature()


def test_calibration_percentiles_interpolate(user_module, tmp_path):
    module = user_module("def length(records):\n    return [float(len(r['hyp'])) for r in records]\n")
    calib = write_jsonl(tmp_path / "cal.jsonl", [{"src": "s", "ref": "x" * n} for n in range(51)])
    reward = calibrate(make_reward(f"py:{module}:length"), str(calib), batch_size=7)
    # 102 scores, each length 0..50 twice: position 101 * 0.01 = 1.01 lies between the two 0s and the first 1.
    assert reward.lo == pytest.approx(0.01) and reward.hi == pytest.approx(49.99)


def test_calibration_refuses_a_constant_scorer_and_a_tiny_file(tmp_path):
    calib = write_jsonl(tmp_path / "cal.jsonl", [{"src": "s", "ref": "same"}, {"src": "t", "ref": "same"}])
    with pytest.raises(RestError, match="gives the same score"):
        calibrate(make_reward("chrf"), str(calib))
    one = write_jsonl(tmp_path / "one.jsonl", [{"src": "s", "ref": "r"}])
    with pytest.raises(UsageError, match="needs at least 2 records"):
        calibrate(make_reward("chrf"), str(one))


def test_scaled_closes_what_it_wraps():
    closed = []
    inner = make_reward("chrf")
    inner.close = lambda: closed.append(True)
    Scaled(inner, 0, 1).close()
    assert closed


# --- external commands -------------------------------------------------------------------------

SCORER = """
import json, sys
for n, line in enumerate(sys.stdin):
    records = json.loads(line)["records"]
    {body}
    sys.stdout.flush()
"""


def command(tmp_path, body: str, name: str = "scorer.py") -> str:
    script = tmp_path / name
    script.write_text(SCORER.format(body=body))
    return f"cmd:{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


GOOD = 'print(json.dumps({"rewards": [len(r["hyp"]) / 10 for r in records]}))'


def test_external_command_scores_batches_and_stays_running(tmp_path):
    spec = command(tmp_path, GOOD)
    records = [{"hyp": "x" * n, "n": n} for n in range(7)]
    with make_reward(spec) as reward:
        out = list(score_records(records, reward, batch_size=3))
        assert reward.process.proc.poll() is None  # one process for all three batches, still running
    assert [r["reward"] for r in out] == [n / 10 for n in range(7)] and out[6]["n"] == 6
    assert out[0]["reward_sig"].startswith(f"{spec}|protocol:jsonl-batch-v1|rest:")
    assert reward.process.proc.returncode == 0  # closing stdin let it finish


@pytest.mark.parametrize("body, message", [
    ('print(json.dumps({"rewards": [0.5]}))', "reward command '{c}' returned 1 values for 2 records"),
    ('print(json.dumps({"rewards": ["good", 0.5]}))', "reward command '{c}' returned 'good' (str) for record 1"),
    ('print("0.5 0.5")', "reward command '{c}' answered a batch of 2 records with invalid JSON"),
    ('print(json.dumps([0.5, 0.5]))', "answered a batch of 2 records without a \"rewards\" list"),
    ('print(json.dumps({"error": "model not loaded"}))', "reward command '{c}' reported an error: model not loaded"),
    ('print(json.dumps({"rewards": [0.5, 3]}))', "returned 3.0, outside [0, 1]: give its range"),
])
def test_external_command_bad_answers(tmp_path, body, message):
    spec = command(tmp_path, body)
    with make_reward(spec) as reward:
        with pytest.raises(RestError, match=re.escape(message.format(c=spec[4:]))):
            reward.score([{"hyp": "a"}, {"hyp": "b"}])


def test_external_command_crash_mid_stream_names_status_and_stderr(tmp_path):
    body = ('if n == 1: print("loading the model", file=sys.stderr); raise SystemExit("scorer gave up")\n'
            '    print(json.dumps({"rewards": [0.5] * len(records)}))')
    reward = make_reward(command(tmp_path, body))
    stream = score_records([{"hyp": str(i)} for i in range(4)], reward, batch_size=2)
    assert [next(stream)["reward"] for _ in range(2)] == [0.5, 0.5]
    with pytest.raises(RestError, match=r"exited with status 1 before answering a batch of 2 records; "
                                        r"its stderr ends: loading the model / scorer gave up$"):
        next(stream)
    reward.close()


def test_external_command_that_hangs_is_stopped_after_the_timeout(tmp_path):
    reward = make_reward(command(tmp_path, "import time; time.sleep(60)"), timeout=0.5)
    with pytest.raises(RestError, match="gave no answer within 0.5 s for a batch of 1 records; stopped it"):
        reward.score([{"hyp": "a"}])
    assert reward.process.proc.poll() is not None
    reward.close()


def test_external_command_that_never_reads_its_input_still_times_out(tmp_path):
    script = tmp_path / "deaf.py"
    script.write_text("import time; time.sleep(60)\n")
    reward = make_reward(f'cmd("{sys.executable} {script}", timeout=0.5)')
    with pytest.raises(RestError, match="gave no answer within 0.5 s"):
        reward.score([{"hyp": "x" * 1_000_000}])  # larger than a pipe buffer: the write blocks
    reward.close()


def test_external_command_extra_output_lines_are_refused(tmp_path):
    body = 'print(json.dumps({"rewards": [0.5] * len(records)})); print("debug: done")'
    with make_reward(command(tmp_path, body)) as reward:
        assert reward.score([{"hyp": "a"}]) == [0.5]
        for _ in range(500):  # let the stray line arrive (up to 5 s); a wait, not a timing assertion
            if not reward.process.answers.empty():
                break
            time.sleep(0.01)
        with pytest.raises(RestError, match="wrote a line nobody asked for: b'debug: done"):
            reward.score([{"hyp": "a"}])


def test_shell_only_when_asked(tmp_path):
    script = tmp_path / "scorer.py"
    script.write_text(SCORER.format(body=GOOD))
    with make_reward(f"sh:{shlex.quote(sys.executable)} {script} | cat") as reward:
        assert reward.score([{"hyp": "abc"}]) == [0.3] and reward.name.startswith("sh:")
    with pytest.raises(UsageError, match="cannot start"):  # no shell: '|' is an argument, the program is missing
        make_reward("cmd:no-such-program-xyz | cat")


def test_external_command_timeout_must_be_positive():
    with pytest.raises(UsageError, match="timeout must be a number of seconds > 0"):
        make_reward('cmd("true", timeout=0)')
