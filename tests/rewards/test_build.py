"""Building rewards: the spec language, composition, signatures, config files, options, and errors."""

import json
import re

import pytest

from rest_cli.errors import RestError, UsageError
from rest_cli.rewards import Reward, RewardOptions, build, build_reward, score_records
from rest_cli.rewards.base import MAX_CHARS, FieldCap
from rest_cli.rewards.composite import Composite
from rest_cli.rewards.spec import parse_spec

# Source of 8 characters, hypothesis of 24 sharing no word with it: copy-guard 1.0,
# length-guard 0.5 (ratio 3).
RECORD = {"src": "abcd efgh", "ref": "xxxx", "hyp": "xxxx yyyy zzzz wwww qqqq rrrr"}


def value(spec):
    return build_reward(spec).score([dict(RECORD)])[0]


class Const(Reward):
    def __init__(self, value, name="const", needs=("hyp",)):
        self.value, self.name, self.needs, self.closed = value, name, needs, False

    def score(self, records):
        return [self.value] * len(records)

    def signature(self):
        return f"{self.name}|v:{self.value}"

    def close(self):
        self.closed = True


@pytest.mark.parametrize("spec, expected", [
    ("product(copy-guard, length-guard)", 0.5),
    ("min(copy-guard, length-guard)", 0.5),
    ("max(copy-guard, length-guard)", 1.0),
    ("mean(copy-guard, length-guard)", 0.75),
    ("wsum(0.2*copy-guard, 0.4*length-guard)", 0.2 + 0.4 * 0.5),
    ("product(mean(copy-guard, length-guard), length-guard)", 0.75 * 0.5),  # nested
    ("product(length-guard(max_ratio=3), length-guard)", 0.5),               # parameters inside
    ("min(length-guard)", 0.5),
])
def test_combined_values(spec, expected):
    assert value(spec) == pytest.approx(expected)


def test_combinators_over_known_values():
    parts = [Const(0.5), Const(0.8), Const(1.0)]
    records = [{"hyp": "a"}, {"hyp": "b"}]
    assert Composite("product", parts).score(records) == pytest.approx([0.4, 0.4])
    assert Composite("min", parts).score(records) == [0.5, 0.5]
    assert Composite("mean", parts).score(records) == pytest.approx([2.3 / 3] * 2)
    assert Composite("wsum", parts, weights=[0.5, 0.25, 0.25]).score(records) == pytest.approx([0.7, 0.7])


def test_spec_is_parsed_into_a_tree_and_printed_back_canonically():
    tree = parse_spec(" product( use,copy-guard , length-guard(max_ratio=2.0, min_ratio=.5)) ")
    assert str(tree) == "product(use, copy-guard, length-guard(max_ratio=2, min_ratio=0.5))"
    assert str(parse_spec("wsum(0.7*use-ref, 0.3*py:my.mod:fn)")) == "wsum(0.7*use-ref, 0.3*py:my.mod:fn)"
    assert str(parse_spec('scale(cmd("python s.py --x 1", timeout=5), lo=-5, hi=5)')) == \
        'scale(cmd("python s.py --x 1", timeout=5), lo=-5, hi=5)'
    assert parse_spec("cmd:python s.py product(a, b)").args == ["python s.py product(a, b)"]  # taken verbatim


def test_composite_needs_the_union_and_signs_the_whole_tree():
    reward = build_reward("product(chrf, length-guard(max_ratio=2.5))")
    assert reward.needs == ("hyp", "ref", "src")
    assert reward.name == "product(chrf, length-guard(max_ratio=2.5))"
    out = list(score_records([{"src": "ein Hund", "ref": "a dog", "hyp": "a dog"}], reward))[0]
    assert out["reward_name"] == reward.name
    assert re.fullmatch(r"product\(chrf\|nrefs:1\|.*\|rest:[\d.]+; length-guard\|.*max:2\.5\|.*\)",
                        out["reward_sig"])


def test_weights_in_the_signature():
    sig = build_reward("wsum(0.25*copy-guard, 0.75*length-guard)").signature()
    assert sig.startswith("wsum(0.25*copy-guard|") and "; 0.75*length-guard|" in sig


def test_a_part_out_of_range_is_named():
    reward = Composite("product", [Const(0.5, "fine"), Const(1.5, "too-big")])
    with pytest.raises(RestError, match="reward 'too-big' returned 1.5"):
        next(score_records([{"hyp": "a"}], reward))


@pytest.mark.parametrize("spec, message", [
    ("product(chrf,", "bad reward spec 'product(chrf,': expected a reward name at column 14"),
    ("product(chrf", "expected ',' or ')' at column 13"),
    ("chrf $", "unexpected '$' at column 6"),
    ("nope(chrf)", "unknown reward 'nope'; known rewards: "),
    ("product()", "product(...) combines one or more rewards"),
    ("product(chrf, x=1)", "product(...) combines one or more rewards and takes no parameters"),
    ("chrf(1*exact)", "reward 'chrf' takes named parameters only"),
    ("0.5*chrf", "a weight (0.5*chrf) only makes sense inside wsum"),
    ("mean(0.5*chrf, exact)", "a weight (0.5*chrf) only makes sense inside wsum"),
    ("wsum(0.7*chrf, exact)", "every term of wsum needs a weight"),
    ("wsum(0.7*chrf, 0.6*exact)", "sum to at most 1"),
    ("wsum(-0.1*chrf)", "must be >= 0"),
    ("length-guard(max_ratio=2, max_ratio=3)", "parameter 'max_ratio' given twice"),
    ("length-guard(max_ratio=huge)", "expected a value (number, 'string', true or false), got 'huge'"),
    ("scale(chrf, lo=1)", "scale takes one reward and lo=, hi="),
    ("scale(chrf, lo=1, hi=1)", "needs finite LO < HI"),
    ("cmd(timeout=3)", "cmd(...) takes one quoted command"),
    ("cmd:", "the command is empty"),
    ("cmd:python 'unclosed", "cannot split the command"),
    ("py:nomodule", "expected py:MODULE:FUNCTION"),
])
def test_bad_specs_are_usage_errors(spec, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        build_reward(spec)


def test_parts_built_before_an_error_are_closed(monkeypatch):
    opened = []
    monkeypatch.setattr(build._Builder, "python", lambda self, node: opened.append(Const(1.0)) or opened[-1])
    with pytest.raises(UsageError, match="unknown reward 'nope'"):
        build_reward("product(py:m:f, nope)")
    assert opened and opened[0].closed


def test_closing_a_composite_closes_its_parts():
    parts = [Const(1.0), Const(1.0)]
    with Composite("min", parts):
        pass
    assert all(p.closed for p in parts)


SPEC = "wsum(0.5*copy-guard, 0.5*length-guard(max_ratio=3))"
JSON_CONFIG = {"reward": {"wsum": [[0.5, "copy-guard"], [0.5, {"length-guard": {"max_ratio": 3}}]]}}
TOML_CONFIG = """
[reward]
wsum = [[0.5, "copy-guard"], [0.5, { length-guard = { max_ratio = 3 } }]]
"""


@pytest.mark.parametrize("name, text", [("r.json", json.dumps(JSON_CONFIG)), ("r.toml", TOML_CONFIG)])
def test_config_file_describes_the_same_tree_as_the_spec(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    reward, same = build_reward(config=str(path)), build_reward(SPEC)
    assert reward.signature() == same.signature() and reward.name == same.name
    assert reward.score([dict(RECORD)]) == same.score([dict(RECORD)])


def test_config_leaves_and_scale(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"reward": {"product": [
        "length-guard", {"scale": {"reward": "chrf", "lo": 0, "hi": 0.5}}, {"copy-guard": None}]}}))
    name = build_reward(config=str(path)).name
    assert name == "product(length-guard, scale(chrf, lo=0, hi=0.5), copy-guard)"


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ('{"rewards": "chrf"}', "expected a table with the key 'reward'"),
    ('{"reward": {"product": "chrf"}}', "product takes a list of rewards"),
    ('{"reward": {"chrf": 1, "bleu": 2}}', "expected a spec string or a table with one key"),
    ('{"reward": {"length-guard": 2}}', "the parameters of 'length-guard' must be a table"),
    ('{"reward": "product(chrf,"}', "bad reward spec"),
])
def test_bad_config_files_are_usage_errors(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(message)):
        build_reward(config=str(path))
    with pytest.raises(UsageError, match="cannot read"):
        build_reward(config=str(tmp_path / "missing.json"))


# --- the cap on what a reward is shown ---------------------------------------------------------

class Seen(Reward):
    """Notes the lengths of the fields it is shown."""

    def __init__(self):
        self.seen = []

    def score(self, records):
        self.seen += [tuple(len(r[f]) for f in ("hyp", "ref", "src")) for r in records]
        return [0.5] * len(records)

    def signature(self):
        return "seen"


def test_a_reward_is_shown_at_most_max_chars_of_hyp_ref_and_src_and_the_records_keep_theirs():
    long = {"id": 1, "src": "s" * (MAX_CHARS + 1), "ref": "r" * MAX_CHARS, "hyp": "h" * 1_000_000,
            "note": "n" * 2 * MAX_CHARS, "meta": {"k": 0}}
    records = [dict(long), {"id": 2, "src": "a", "ref": "b", "hyp": "c"}]
    reward = Seen()  # built without build_reward: the default cap
    out = list(score_records(records, reward))
    assert reward.seen == [(MAX_CHARS, MAX_CHARS, MAX_CHARS), (1, 1, 1)]
    assert out[0] == {**long, "reward": 0.5, "reward_name": "", "reward_sig": "seen"}


def test_the_cap_comes_from_the_options_and_counts_what_it_cut():
    records = [{"hyp": "abcdef", "ref": "abcxyz"}, {"hyp": "ab", "ref": "ab"}, {"hyp": "abcd", "ref": "abc"}]
    reward = build_reward("exact", RewardOptions(max_chars=3))
    out = list(score_records(records, reward))
    assert [r["reward"] for r in out] == [1.0, 1.0, 1.0] and out[0]["hyp"] == "abcdef"  # "abc" == "abc"
    assert reward.cap.truncated == 2
    assert reward.cap.summary() == ("truncated 2 record(s) to 3 characters of hyp, ref and src for the "
                                    "reward (--reward-max-chars; 0 = no cap)")
    uncapped = build_reward("exact", RewardOptions(max_chars=0))
    assert [r["reward"] for r in score_records(records, uncapped)] == [0.0, 1.0, 0.0]
    assert uncapped.cap == FieldCap(0, truncated=0)
    assert build_reward("exact").cap.max_chars == RewardOptions().max_chars == MAX_CHARS
    with pytest.raises(UsageError, match="--reward-max-chars must be a whole number >= 0, got -1"):
        build_reward("exact", RewardOptions(max_chars=-1))
