import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rest_cli.errors import UsageError
from rest_cli.io.records import RecordReader
from rest_cli.select.filters import (
    FilterSpec,
    FilterStats,
    filter_group,
    filter_records,
    gamma_threshold,
    random_subset,
)
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
    ({"gamma": 2}, "--gamma"), ({"top_k": 0}, "--top-k"), ({"max_per_source": 0}, "--max-per-source"),
    ({"tau": 0.5, "references": "ignore"}, "--references must be one of filter, keep, drop"),
    ({"references": "keep"}, "give a filter"),
])
def test_bad_specs_are_usage_errors(spec, message):
    with pytest.raises(UsageError, match=message):
        FilterSpec(**spec)


def test_max_per_source_keeps_all_when_fewer_pass():
    assert kept_ks(group(0.9, 0.1, 0.8), tau=0.5, max_per_source=2) == [0, 2]
    assert kept_ks(group(0.9, 0.1, 0.8), tau=0.5, max_per_source=5) == [0, 2]
    assert kept_ks(group(0.1, 0.2), tau=0.5, max_per_source=1) == []


def test_max_per_source_draws_k_of_the_passing_in_their_order_the_same_for_a_seed():
    records = group(*[0.2, 0.9] * 10)  # the odd ks pass
    drawn = {seed: kept_ks(records, tau=0.5, max_per_source=3, seed=seed) for seed in range(20)}
    for ks in drawn.values():
        assert len(ks) == 3 and ks == sorted(ks) and all(k % 2 for k in ks)
    assert drawn[0] == kept_ks(records, tau=0.5, max_per_source=3, seed=0)
    assert len({tuple(ks) for ks in drawn.values()}) > 1  # other seeds draw other subsets


def test_max_per_source_comes_after_dedup_and_top_k():
    # dedup leaves 3 distinct passing hypotheses; the cap draws 2 of them, never both copies of "same".
    records = group(0.9, 0.9, 0.9, 0.8, hyps=["same", "same", "other", "third"])
    for seed in range(10):
        kept = [r["hyp"] for r in filter_group(records, FilterSpec(dedup=True, max_per_source=2, seed=seed))]
        assert len(kept) == 2 == len(set(kept))
    # top-k first keeps the 2 best; a cap of 1 then draws one of those two.
    best_two = group(0.3, 0.9, 0.95, 0.1)
    assert {kept_ks(best_two, top_k=2, max_per_source=1, seed=s)[0] for s in range(20)} == {1, 2}


def test_a_sources_draw_depends_on_its_id_not_on_the_others(tmp_path):
    def kept_of(sources, source_id):
        records = [{"id": s, "hyp": f"{s}{k}", "reward": 1.0} for s in sources for k in range(8)]
        reader = RecordReader(str(write_jsonl(tmp_path / "x.jsonl", records)), required=["reward", "id"])
        return [r["hyp"] for r in filter_records(reader, FilterSpec(max_per_source=3, seed=7), FilterStats())
                if r["id"] == source_id]
    assert kept_of(["b"], "b") == kept_of(["a", "c", "b"], "b") == kept_of(["b", "z"], "b")


def test_max_per_source_counts_references_as_candidates():
    # As every per-source filter does, a reference (origin "ref") is one of the source's candidates:
    # it must pass, and it takes one of the K places when drawn.
    records = [{"id": "s", "k": k, "hyp": f"h{k}", "reward": 1.0, "origin": "sample"} for k in range(4)]
    records.append({"id": "s", "k": 4, "hyp": "ref", "reward": 1.0, "origin": "ref"})
    draws = [kept_ks(records, max_per_source=2, seed=seed) for seed in range(30)]
    assert all(len(ks) == 2 for ks in draws) and any(4 in ks for ks in draws)


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


def _with_references(records_per_source):
    """Per source: samples with the given rewards, then its reference (reward 1), as --include-ref writes."""
    return [record for s, rewards in records_per_source for record in
            [{"id": s, "hyp": f"{s}{k}", "reward": r, "origin": "sample"} for k, r in enumerate(rewards)]
            + [{"id": s, "hyp": f"{s}-ref", "reward": 1.0, "origin": "ref"}]]


@pytest.mark.parametrize("spec", [FilterSpec(tau=0.5), FilterSpec(percentile=50)])
def test_summary_says_how_many_kept_are_samples_and_how_many_references(tmp_path, spec):
    records = _with_references([("a", [0.9, 0.1]), ("b", [0.2, 0.3]), ("c", [0.7, 0.8])])
    stats = FilterStats()
    reader = RecordReader(str(write_jsonl(tmp_path / "x.jsonl", records)), required=["reward"])
    kept = list(filter_records(reader, spec, stats))
    samples = [r for r in kept if r["origin"] == "sample"]
    assert (stats.refs_in, stats.refs_out, stats.records_out - stats.refs_out) == (3, 3, len(samples))
    facts = stats.as_dict()
    assert facts["reference_share"] == pytest.approx(3 / len(kept))
    assert facts["mean_reward_samples_out"] == pytest.approx(sum(r["reward"] for r in samples) / len(samples))
    assert facts["mean_reward_references_out"] == 1.0
    assert f"{len(samples)} samples (" in stats.summary() and "3 references (" in stats.summary()


def test_mostly_references_is_warned_about_and_half_is_not(tmp_path):
    stats = FilterStats()
    # Only the references pass: the run the issue saw ("all origin: ref").
    list(filter_records(RecordReader(str(write_jsonl(tmp_path / "x.jsonl", _with_references(
        [("a", [0.3, 0.4]), ("b", [0.2])]))), required=["reward"]), FilterSpec(tau=0.9), stats))
    assert stats.reference_share == 1.0
    assert "references are 100% of the kept records" in stats.references_warning()
    assert "every reference is kept" in stats.references_warning()  # so --references keep is no remedy
    some_dropped = FilterStats()
    records = _with_references([("a", [0.3]), ("b", [0.2])]) + [
        {"id": "c", "hyp": "c-ref", "reward": 0.5, "origin": "ref"}]
    list(filter_records(RecordReader(str(write_jsonl(tmp_path / "z.jsonl", records)), required=["reward"]),
                        FilterSpec(tau=0.9), some_dropped))
    assert some_dropped.reference_share == 1.0
    assert "with --references keep" in some_dropped.references_warning()
    half = FilterStats()
    list(filter_records(RecordReader(str(write_jsonl(tmp_path / "y.jsonl", _with_references(
        [("a", [0.95, 0.4])]))), required=["reward"]), FilterSpec(tau=0.9), half))
    assert half.reference_share == 0.5 and half.references_warning() is None


def test_a_stream_without_references_has_no_origin_figures(tmp_path):
    stats = FilterStats()
    list(filter_records(RecordReader(str(write_jsonl(tmp_path / "x.jsonl", [{"id": 1, "reward": 0.8}])),
                                     required=["reward"]), FilterSpec(tau=0.5), stats))
    assert stats.reference_share is None and stats.references_warning() is None
    assert "samples" not in stats.summary()


def _source_with_reference(*sample_rewards, ref_reward=1.0):
    return ([{"id": "s", "k": k, "hyp": f"h{k}", "reward": r, "origin": "sample"}
             for k, r in enumerate(sample_rewards)]
            + [{"id": "s", "k": len(sample_rewards), "hyp": "ref", "reward": ref_reward, "origin": "ref"}])


def test_references_filtered_set_the_per_source_bar_their_samples_must_reach():
    # chrF scores a reference 1.0 against itself: judged as a candidate, it lifts the 75th
    # percentile above every sample but the best.
    assert kept_ks(_source_with_reference(0.2, 0.4, 0.6, 0.8), percentile=75) == [3, 4]


def test_references_kept_are_left_out_of_the_per_source_threshold_and_always_kept():
    source = _source_with_reference(0.2, 0.4, 0.6, 0.8, ref_reward=0.1)
    assert kept_ks(source, percentile=50, references="keep") == [2, 3, 4]  # median of samples: 0.5
    assert kept_ks(source, gamma=1.0, references="keep") == [3, 4]        # the best sample, not the ref
    assert kept_ks(source, top_k=1, references="keep") == [3, 4]
    assert kept_ks(source, max_per_source=1, references="keep", seed=3)[-1] == 4
    assert kept_ks(source, tau=0.5, references="keep") == [2, 3, 4]      # a weak reference stays


def test_references_dropped_leave_only_the_samples_that_pass():
    source = _source_with_reference(0.2, 0.4, 0.6, 0.8)
    assert kept_ks(source, percentile=50, references="drop") == [2, 3]
    assert kept_ks(source, tau=0.5, references="drop") == [2, 3]
    assert kept_ks(_source_with_reference(), percentile=50, references="drop") == []


def test_kept_references_are_not_trained_on_twice_under_dedup():
    source = _source_with_reference(0.9, 0.7)
    source[0]["hyp"] = "ref"  # the policy sampled its reference word for word
    assert kept_ks(source, dedup=True, references="keep") == [1, 2]
    assert kept_ks(source, dedup=True) == [0, 1]  # judged as a candidate, the first of the two stays


@pytest.mark.parametrize("references, kept_hyps", [
    ("filter", ["a0", "a-ref", "b-ref"]), ("keep", ["a0", "a-ref", "b-ref"]), ("drop", ["a0"])])
def test_the_streamed_tau_filter_treats_references_as_asked(tmp_path, references, kept_hyps):
    records = _with_references([("a", [0.9, 0.1]), ("b", [0.2])])
    records[-1]["reward"] = 0.3 if references == "keep" else 1.0  # kept although below tau
    stats = FilterStats()
    reader = RecordReader(str(write_jsonl(tmp_path / "x.jsonl", records)), required=["reward"])
    kept = list(filter_records(reader, FilterSpec(tau=0.5, references=references), stats))
    assert [r["hyp"] for r in kept] == kept_hyps
    assert (stats.refs_in, stats.refs_out) == (2, kept_hyps.count("a-ref") + kept_hyps.count("b-ref"))


def test_references_dropped_alone_is_a_filter(tmp_path):
    reader = RecordReader(str(write_jsonl(tmp_path / "x.jsonl", _with_references([("a", [0.1])]))),
                          required=["reward"])
    assert [r["hyp"] for r in filter_records(reader, FilterSpec(references="drop"), FilterStats())] == ["a0"]


rewards = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=12)

@st.composite
def filter_specs(draw):
    spec = dict(tau=draw(st.none() | st.floats(0.0, 1.0)), percentile=draw(st.none() | st.floats(0.0, 100.0)),
                gamma=draw(st.none() | st.floats(0.0, 1.0)), top_k=draw(st.none() | st.integers(1, 5)),
                dedup=draw(st.booleans()), max_per_source=draw(st.none() | st.integers(1, 5)))
    if all(v in (None, False) for v in spec.values()):
        spec["tau"] = 0.5
    return FilterSpec(**spec, seed=draw(st.integers(0, 3)))


@settings(max_examples=300, deadline=None)
@given(rewards=rewards, spec=filter_specs(), dup=st.integers(1, 3))
def test_output_is_an_ordered_subset(rewards, spec, dup):
    records = group(*rewards, hyps=[f"h{i % dup}" for i in range(len(rewards))])
    kept = filter_group(records, spec)
    ks = [r["k"] for r in kept]
    assert ks == sorted(ks) and len(set(ks)) == len(ks)
    assert all(r is records[r["k"]] for r in kept)
    assert spec.max_per_source is None or len(kept) <= spec.max_per_source


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


@settings(max_examples=300, deadline=None)
@given(rewards=rewards, k=st.integers(1, 6), seed=st.integers(0, 2**32))
def test_random_subset_never_keeps_more_than_k_and_keeps_order(rewards, k, seed):
    records = group(*rewards)
    kept = random_subset(records, k, seed)
    assert len(kept) == min(k, len(records)) and kept == [r for r in records if r in kept]
    assert kept == random_subset(records, k, seed)
