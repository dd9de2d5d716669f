import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rest_cli.errors import UsageError
from rest_cli.io.records import RecordReader
from rest_cli.select.filters import FilterSpec, FilterStats, filter_group, filter_records, gamma_threshold
from tests.helpers import write_jsonl


def group(*rewards, hyps=None):
    hyps = hyps or [f"h{i}" for i in range(len(rewards))]
    return [{"id": "s", "k": i, "hyp": h, "reward": r} for i, (r, h) in enumerate(zip(rewards, hyps))]


def kept_ks(records, **spec):
    return [r["k"] for r in filter_group(records, FilterSpec(**spec))]


def test_tau_keeps_strictly_greater():
    assert kept_ks(group(0.2, 0.5, 0.9, 0.5), tau=0.5) == [2]
    assert kept_ks(group(0.0, 0.1), tau=0.0) == [1]


def test_percentile_is_per_source_and_inclusive():
    # 50th percentile of [0.1, 0.2, 0.3, 0.4] is 0.25 (linear interpolation).
    assert kept_ks(group(0.4, 0.1, 0.3, 0.2), percentile=50) == [0, 2]
    assert kept_ks(group(0.4, 0.1, 0.3, 0.2), percentile=100) == [0]
    assert kept_ks(group(0.4, 0.1, 0.3, 0.2), percentile=0) == [0, 1, 2, 3]


def test_gamma_threshold_mixes_max_and_mean():
    # max 0.8, mean 0.4: gamma 0.5 gives 0.6.
    assert gamma_threshold([0.0, 0.4, 0.8], 0.5) == pytest.approx(0.6)
    # with 0.7 added: mean 0.475, threshold 0.6375
    assert kept_ks(group(0.0, 0.4, 0.8, 0.7), gamma=0.5) == [2, 3]
    assert kept_ks(group(0.0, 0.4, 0.8), gamma=1.0) == [2]


def test_gamma_never_empties_a_source_of_equal_rewards():
    # fsum([0.1] * 3) / 3 rounds above 0.1; the threshold must still admit them.
    assert kept_ks(group(0.1, 0.1, 0.1), gamma=0.3) == [0, 1, 2]


def test_top_k_keeps_best_in_original_order_ties_to_earlier():
    assert kept_ks(group(0.3, 0.9, 0.5, 0.9), top_k=2) == [1, 3]
    assert kept_ks(group(0.5, 0.5, 0.5), top_k=2) == [0, 1]


def test_dedup_runs_before_top_k():
    records = group(0.9, 0.9, 0.1, hyps=["same", "same", "other"])
    assert kept_ks(records, top_k=2, dedup=True) == [0, 2]


def test_criteria_combine():
    assert kept_ks(group(0.2, 0.6, 0.7, 0.95), tau=0.5, top_k=1) == [3]


@pytest.mark.parametrize("spec, message", [
    ({}, "give a filter"), ({"tau": 1.5}, "--tau"), ({"percentile": -1}, "--percentile"),
    ({"gamma": 2}, "--gamma"), ({"top_k": 0}, "--top-k"),
])
def test_bad_specs_are_usage_errors(spec, message):
    with pytest.raises(UsageError, match=message):
        FilterSpec(**spec)


def test_stream_summary_counts_sources_left_empty(tmp_path):
    records = [{"id": s, "hyp": f"{s}{k}", "reward": r}
               for s, rewards in [("a", [0.9, 0.1]), ("b", [0.2, 0.3]), ("c", [0.95])]
               for k, r in enumerate(rewards)]
    stats = FilterStats()
    reader = RecordReader(str(write_jsonl(tmp_path / "x.jsonl", records)), required=["reward"])
    kept = list(filter_records(reader, FilterSpec(tau=0.5), stats))
    assert [r["hyp"] for r in kept] == ["a0", "c0"]
    assert (stats.records_in, stats.records_out, stats.sources, stats.empty_sources) == (5, 2, 3, 1)
    assert stats.summary() == ("5 records in, 2 out (40.0%); 3 sources, 1 left with no candidate; "
                               "mean reward 0.4900 in, 0.9250 out")


rewards = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=12)

@st.composite
def filter_specs(draw):
    spec = dict(tau=draw(st.none() | st.floats(0.0, 1.0)), percentile=draw(st.none() | st.floats(0.0, 100.0)),
                gamma=draw(st.none() | st.floats(0.0, 1.0)), top_k=draw(st.none() | st.integers(1, 5)),
                dedup=draw(st.booleans()))
    if all(v in (None, False) for v in spec.values()):
        spec["tau"] = 0.5
    return FilterSpec(**spec)


@settings(max_examples=300, deadline=None)
@given(rewards=rewards, spec=filter_specs(), dup=st.integers(1, 3))
def test_output_is_an_ordered_subset(rewards, spec, dup):
    records = group(*rewards, hyps=[f"h{i % dup}" for i in range(len(rewards))])
    kept = filter_group(records, spec)
    ks = [r["k"] for r in kept]
    assert ks == sorted(ks) and len(set(ks)) == len(ks)
    assert all(r is records[r["k"]] for r in kept)


@settings(max_examples=300, deadline=None)
@given(rewards=rewards, low=st.floats(0.0, 1.0), high=st.floats(0.0, 1.0))
def test_a_higher_tau_never_keeps_more(rewards, low, high):
    low, high = sorted((low, high))
    strict = set(kept_ks(group(*rewards), tau=high))
    assert strict <= set(kept_ks(group(*rewards), tau=low))


@settings(max_examples=300, deadline=None)
@given(rewards=rewards, low=st.floats(0.0, 100.0), high=st.floats(0.0, 100.0))
def test_a_higher_percentile_never_keeps_more(rewards, low, high):
    low, high = sorted((low, high))
    assert set(kept_ks(group(*rewards), percentile=high)) <= set(kept_ks(group(*rewards), percentile=low))


@settings(max_examples=300, deadline=None)
@given(rewards=rewards, gamma=st.floats(0.0, 1.0))
def test_per_source_thresholds_always_keep_the_best(rewards, gamma):
    best = max(rewards)
    for spec in ({"gamma": gamma}, {"percentile": gamma * 100}):
        assert any(r["reward"] == best for r in filter_group(group(*rewards), FilterSpec(**spec)))
