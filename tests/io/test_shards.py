"""Shards: N jobs that split one Grow step between them produce, together, the unsharded output."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rest_cli.errors import InputError, UsageError
from rest_cli.io.records import RecordReader
from rest_cli.io.shards import Shard, derived_seed, shard_groups, shard_records
from tests.helpers import read_jsonl, rest, write_jsonl


@pytest.mark.parametrize("text", ["0/3", "4/3", "1", "a/b", "1/0", "-1/2", "1/2/3"])
def test_bad_shards_are_usage_errors(text):
    with pytest.raises(UsageError, match="--shard"):
        Shard.parse(text)


@given(st.integers(1, 9), st.integers(0, 60))
def test_every_source_belongs_to_exactly_one_shard(count, sources):
    shards = [Shard.parse(f"{k}/{count}") for k in range(1, count + 1)]
    owners = [[s for s in shards if s.owns(position)] for position in range(sources)]
    assert all(len(o) == 1 for o in owners)
    # Round-robin: shard sizes differ by at most one source.
    sizes = [sum(1 for o in owners if o[0] is s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_shard_seeds_are_reproducible_and_distinct():
    seeds = [Shard(k, 4).seed(7) for k in range(1, 5)]
    assert seeds == [Shard(k, 4).seed(7) for k in range(1, 5)]
    assert len(set(seeds)) == 4 and 7 not in seeds
    assert Shard(1, 1).seed(7) == 7  # one shard is the whole run: the global seed
    assert Shard(1, 4).seed(8) != seeds[0] and derived_seed(7, "x") < 2 ** 32


def test_shard_records_deals_round_robin():
    records = [{"i": i} for i in range(7)]
    assert [r["i"] for r in shard_records(records, Shard(2, 3))] == [1, 4]
    assert list(shard_records(records, None)) == records


def test_shard_groups_keeps_groups_whole_and_refuses_an_ungrouped_stream(tmp_path):
    records = [{"id": i // 3, "hyp": f"h{i}"} for i in range(12)]  # 4 sources x 3 candidates
    path = write_jsonl(tmp_path / "c.jsonl", records)
    kept = list(shard_groups(RecordReader(str(path), required=["id"]), Shard(2, 2)))
    assert [r["id"] for r in kept] == [1, 1, 1, 3, 3, 3]
    ungrouped = write_jsonl(tmp_path / "u.jsonl", [{"id": 1}, {"id": 2}, {"id": 1}])
    with pytest.raises(InputError, match="u.jsonl:3: id 1 appears again"):
        list(shard_groups(RecordReader(str(ungrouped), required=["id"]), Shard(1, 2)))


SOURCES = [{"src": f"eins hund {i}", "ref": "one dog"} for i in range(11)]


def _sample(model, sources, *args):
    result = rest("sample", "-m", str(model), "--max-length", "8", *args, str(sources))
    assert result.returncode == 0, result.stderr
    return read_jsonl(result.stdout)


@pytest.mark.subprocess
def test_beam_shards_concatenate_to_the_unsharded_output(random_model_dir, tmp_path):
    sources = write_jsonl(tmp_path / "src.jsonl", SOURCES)
    whole = _sample(random_model_dir, sources, "-n", "2", "--beam", "2")
    shards = [_sample(random_model_dir, sources, "-n", "2", "--beam", "2", "--shard", f"{k}/3")
              for k in (1, 2, 3)]
    joined = {(r["id"], r["k"]): r for r in sum(shards, [])}
    assert sorted(joined) == sorted((r["id"], r["k"]) for r in whole)
    for record in whole:  # the same candidates; int8 log-probs may differ slightly with the batch around them
        assert joined[record["id"], record["k"]]["hyp"] == record["hyp"]
        assert joined[record["id"], record["k"]]["logprob"] == pytest.approx(record["logprob"], abs=0.1)
    assert [r["id"] for r in shards[1]] == [1, 1, 4, 4, 7, 7, 10, 10]  # ids of the whole input, groups kept


@pytest.mark.subprocess
def test_sampled_shards_hold_every_source_once_with_their_own_seeds(random_model_dir, tmp_path):
    sources = write_jsonl(tmp_path / "src.jsonl", SOURCES)
    whole = _sample(random_model_dir, sources, "-n", "3", "--include-ref")
    shards = [_sample(random_model_dir, sources, "-n", "3", "--include-ref", "--shard", f"{k}/2")
              for k in (1, 2)]
    merged = sorted(sum(shards, []), key=lambda r: (r["id"], r["k"]))
    assert [(r["id"], r["k"], r["src"]) for r in merged] == [(r["id"], r["k"], r["src"]) for r in whole]
    again = _sample(random_model_dir, sources, "-n", "3", "--include-ref", "--shard", "1/2")
    assert again == shards[0]  # a shard is reproducible
    one = _sample(random_model_dir, sources, "-n", "3", "--include-ref", "--shard", "1/1")
    assert one == whole


@pytest.mark.subprocess
def test_scored_shards_concatenate_to_the_unsharded_output(tmp_path):
    records = [{"id": i // 4, "hyp": f"one dog {i % 4}", "ref": "one dog 1"} for i in range(40)]
    path = write_jsonl(tmp_path / "c.jsonl", records)
    whole = read_jsonl(rest("score", "-r", "chrf", str(path)).stdout)
    shards = [read_jsonl(rest("score", "-r", "chrf", "--shard", f"{k}/3", str(path)).stdout)
              for k in (1, 2, 3)]
    assert sorted(map(repr, sum(shards, []))) == sorted(map(repr, whole)) and len(whole) == 40
    no_ids = write_jsonl(tmp_path / "n.jsonl", [{"hyp": "a", "ref": "a"}])
    result = rest("score", "-r", "chrf", "--shard", "1/2", str(no_ids))
    assert result.returncode == 3
    assert "n.jsonl:1: field 'id' is missing" in result.stderr.decode()
