"""User rewards: a Python function, and mapping raw scores to [0, 1] (external commands: test_external.py)."""

import itertools
import re
import sys
import textwrap

import pytest

from rest_cli.errors import RestError, UsageError
from rest_cli.rewards import RewardOptions, build_reward, score_records
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
    reward = build_reward(f"py:{module}:length")
    out = list(score_records([dict(r) for r in RECORDS], reward))
    assert [r["reward"] for r in out] == [0.5, 0.6]
    assert out[0]["reward_name"] == f"py:{module}:length"
    assert out[0]["reward_sig"].startswith(f"py:{module}:length|version:1.2|rest:")
    other = build_reward(f"py:{module}:exclaims")
    assert other.needs == ("hyp", "src") and "version:7" in other.signature()
    assert build_reward(f"product(py:{module}:exclaims, copy-guard)").score(RECORDS) == [0.0, 1.0]


@pytest.mark.parametrize("body, message", [
    ("return [0.5]", "reward function '{m}:f' returned 1 values for 2 records"),
    ("return [0.5, 'high']",
     "reward function '{m}:f' returned 'high' (str) for record 2 of the batch, not a finite number"),
    ("return [0.5, float('nan')]", "returned nan (float) for record 2"),
    ("return [True, 0.5]", "returned True (bool) for record 1"),
    ("return 0.5", "reward function '{m}:f' returned float, not a list of 2 numbers"),
    ("return [r['ref'] for r in records]", "reward function '{m}:f' raised KeyError: 'ref'"),
    ("return [0.5, 2.0]",
     "reward function '{m}:f' returned 2.0, outside [0, 1]: give its range with --reward-range"),
])
def test_python_function_misbehaving_is_named(user_module, body, message):
    module = user_module(f"def f(records):\n    {body}\n")
    stream = score_records([dict(r) for r in RECORDS], build_reward(f"py:{module}:f"))
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
        build_reward(spec.format(m=module))


# --- normalisation -----------------------------------------------------------------------------

def test_range_maps_linearly_and_clips(user_module):
    module = user_module("def raw(records):\n    return [float(r['hyp']) for r in records]\n")
    records = [{"hyp": h} for h in ("-7", "-5", "0", "2.5", "5", "10")]
    reward = build_reward(f"py:{module}:raw", RewardOptions(value_range="-5:5"))
    assert reward.score(records) == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0]
    assert reward.signature().endswith("|range:-5:5|range-from:given|map:clip((x-lo)/(hi-lo),0,1)")
    scaled = build_reward(f"scale(py:{module}:raw, lo=0, hi=10)")
    assert scaled.score(records) == [0.0, 0.0, 0.0, 0.25, 0.5, 1.0]


@pytest.mark.parametrize("text", ["5", "a:b", "1:2:3x"])
def test_bad_range(text):
    with pytest.raises(UsageError, match="--reward-range expects LO:HI"):
        parse_range(text)


def test_range_and_calibrate_are_exclusive_and_the_range_must_be_increasing():
    with pytest.raises(UsageError, match="give one"):
        build_reward("chrf", RewardOptions(value_range="0:1", calibrate="x.jsonl"))
    with pytest.raises(UsageError, match="finite LO < HI"):
        build_reward("chrf", RewardOptions(value_range="5:-5"))
    with pytest.raises(UsageError, match="one of them"):
        build_reward(None)
    with pytest.raises(UsageError, match="one of them"):
        build_reward("chrf", config="r.json")


def test_calibration_takes_percentiles_of_true_and_mismatched_pairs(user_module, tmp_path):
    module = user_module("def length(records):\n    return [float(len(r['hyp'])) for r in records]\n")
    calib = write_jsonl(tmp_path / "cal.jsonl", [{"src": "s", "ref": "x" * n} for n in (1, 2, 3)])
    # Scores: true pairs 1, 2, 3 and shifted pairs 2, 3, 1; p1 and p99 (inclusive) of [1,1,2,2,3,3]
    # are 1 and 3.
    reward = calibrate(build_reward(f"py:{module}:length"), str(calib))
    assert (reward.lo, reward.hi) == (1.0, 3.0)
    assert reward.score([{"hyp": "xx"}, {"hyp": "xxxxxx"}]) == [0.5, 1.0]
    assert "|range:1:3|range-from:calibrate:cal.jsonl:n=6:p1-p99|" in reward.signature()


def test_calibration_through_the_options(user_module, tmp_path):
    module = user_module("def length(records):\n    return [float(len(r['hyp'])) for r in records]\n")
    calib = write_jsonl(tmp_path / "cal.jsonl", [{"src": "s", "ref": "x" * n} for n in (1, 2, 3)])
    reward = build_reward(f"py:{module}:length", RewardOptions(calibrate=str(calib), batch_size=1))
    assert isinstance(reward, Scaled) and (reward.lo, reward.hi) == (1.0, 3.0)  # as calibrate() above


def test_calibration_is_shown_its_pairs_through_the_cap(user_module, tmp_path):
    module = user_module("def length(records):\n    return [float(len(r['hyp'])) for r in records]\n")
    calib = write_jsonl(tmp_path / "cal.jsonl", [{"src": "s", "ref": "x" * n} for n in (1, 2, 30)])
    reward = build_reward(f"py:{module}:length", RewardOptions(calibrate=str(calib), max_chars=3))
    assert (reward.lo, reward.hi) == (1.0, 3.0)  # 30 characters seen as 3
    assert reward.cap.truncated == 0  # the count is of the records the command scores


def test_calibration_percentiles_interpolate(user_module, tmp_path):
    module = user_module("def length(records):\n    return [float(len(r['hyp'])) for r in records]\n")
    calib = write_jsonl(tmp_path / "cal.jsonl", [{"src": "s", "ref": "x" * n} for n in range(51)])
    reward = calibrate(build_reward(f"py:{module}:length"), str(calib), batch_size=7)
    # 102 scores, each length 0..50 twice: position 101 * 0.01 = 1.01 lies between the two 0s and the first 1.
    assert reward.lo == pytest.approx(0.01) and reward.hi == pytest.approx(49.99)


def test_calibration_refuses_a_constant_scorer_and_a_tiny_file(tmp_path):
    calib = write_jsonl(tmp_path / "cal.jsonl", [{"src": "s", "ref": "same"}, {"src": "t", "ref": "same"}])
    with pytest.raises(RestError, match="gives the same score"):
        calibrate(build_reward("chrf"), str(calib))
    one = write_jsonl(tmp_path / "one.jsonl", [{"src": "s", "ref": "r"}])
    with pytest.raises(UsageError, match="needs at least 2 records"):
        calibrate(build_reward("chrf"), str(one))


def test_scaled_closes_what_it_wraps():
    closed = []
    inner = build_reward("chrf")
    inner.close = lambda: closed.append(True)
    Scaled(inner, 0, 1).close()
    assert closed


# --- what user code is given, and where its module is found --------------------------------------

def test_a_function_that_edits_its_records_changes_nothing_written(user_module):
    module = user_module("""
        def meddles(records):
            for r in records:
                r["hyp"] = "changed"
                r["extra"] = 1
                r["meta"]["seen"] = True
                del r["src"]
            return [0.5] * len(records)
    """)
    records = [{"src": "ein Hund", "hyp": "a dog", "meta": {"k": 0}}]
    out = list(score_records(records, build_reward(f"py:{module}:meddles")))
    assert out == [{"src": "ein Hund", "hyp": "a dog", "meta": {"k": 0}, "reward": 0.5,
                    "reward_name": f"py:{module}:meddles", "reward_sig": out[0]["reward_sig"]}]


def test_the_working_directory_is_searched_last_and_only_while_importing(user_module):
    module = user_module("import os\ndef f(records):\n    return [0.5] * len(records)\n")
    before = list(sys.path)
    assert build_reward(f"py:{module}:f").score(RECORDS) == [0.5, 0.5]
    assert sys.path == before  # the cwd is not left first on the path, to shadow what is imported later


def test_an_installed_module_of_the_same_name_is_named_in_the_error(user_module, tmp_path):
    (tmp_path / "textwrap.py").write_text("def f(records):\n    return [0.5] * len(records)\n")
    with pytest.raises(UsageError, match=re.escape("module 'textwrap' has no function 'f' (an installed "
                                                   "module of that name, ")) as caught:
        build_reward("py:textwrap:f")
    assert "comes before ./textwrap.py: rename your file" in str(caught.value)
