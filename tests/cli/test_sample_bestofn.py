"""rest sample and rest bestofn through the real CLI, on a tiny random policy."""

import pytest

from tests.helpers import read_jsonl, rest, write_jsonl

SOURCES = [{"id": "a", "src": "eins hund", "ref": "one dog"},
           {"id": "b", "src": "zwei katze", "ref": "two cats"},
           {"src": "drei", "ref": "three"}]


@pytest.fixture
def sources(tmp_path):
    return write_jsonl(tmp_path / "src.jsonl", SOURCES)


@pytest.mark.subprocess
def test_sample_writes_grouped_candidates_and_reports_speed(random_model_dir, sources, tmp_path):
    out = tmp_path / "cands.jsonl.gz"
    result = rest("sample", "--model", str(random_model_dir), "-n", "4", "--max-length", "10",
                  "--include-ref", str(sources), "-o", str(out))
    assert result.returncode == 0, result.stderr
    import gzip
    records = read_jsonl(gzip.decompress(out.read_bytes()))
    assert [(r["id"], r["k"]) for r in records] == [(i, k) for i in ("a", "b", 2) for k in range(5)]
    assert [r["origin"] for r in records[:5]] == ["sample"] * 4 + ["ref"]
    assert "sources/s" in result.stderr.decode() and "tokens/s" in result.stderr.decode()


@pytest.mark.subprocess
def test_sample_score_filter_pipeline_and_bestofn_selector(random_model_dir, sources, tmp_path):
    sampled = rest("sample", "-m", str(random_model_dir), "-n", "3", "--max-length", "8", "--include-ref",
                   str(sources))
    scored = rest("score", "-r", "chrf", input=sampled.stdout)
    kept = rest("filter", "--tau", "0.9", input=scored.stdout)
    assert [r["origin"] for r in read_jsonl(kept.stdout)] == ["ref"] * 3  # a random policy never earns 0.9
    best = rest("bestofn", input=scored.stdout)
    assert best.returncode == 0, best.stderr
    assert [(r["id"], r["best_of"], r["reward"]) for r in read_jsonl(best.stdout)] == [
        ("a", 4, 1.0), ("b", 4, 1.0), (2, 4, 1.0)]


@pytest.mark.subprocess
def test_bestofn_samples_scores_and_selects(random_model_dir, sources):
    result = rest("bestofn", "-m", str(random_model_dir), "-r", "chrf", "-n", "6", "--max-length", "8",
                  str(sources))
    assert result.returncode == 0, result.stderr
    best = read_jsonl(result.stdout)
    assert [r["id"] for r in best] == ["a", "b", 2] and all(r["best_of"] == 6 for r in best)
    assert all(r["reward"] == r["reward_max"] >= r["reward_mean"] for r in best)


@pytest.mark.subprocess
@pytest.mark.parametrize("args, stdin, code, message", [
    (["sample", "-m", "MODEL"], b'{"id": 1}\n', 3,
     "<stdin>:1: field 'src' is missing (rest sample needs it)"),
    (["sample", "-m", "MODEL"], b'{"src": ["eins"]}\n', 3, "<stdin>:1: field 'src' must be a string"),
    (["sample", "-m", "MODEL", "--include-ref"], b'{"src": "eins"}\n', 3,
     "<stdin>:1: field 'ref' is missing"),
    (["sample", "-m", "/nonexistent"], b'{"src": "eins"}\n', 3, "/nonexistent: no such model directory"),
    (["sample", "-m", "MODEL", "-n", "5", "--beam", "2"], b'', 2, "beam search returns at most --beam"),
    (["bestofn", "-m", "MODEL"], b'', 2, "--model needs --reward"),
    (["bestofn"], b'{"id": 1, "hyp": "x"}\n', 3, "<stdin>:1: field 'reward' is missing"),
])
def test_bad_input_and_options(random_model_dir, args, stdin, code, message):
    result = rest(*[str(random_model_dir) if a == "MODEL" else a for a in args], input=stdin)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == code, lines
    assert any(line.startswith(f"rest {args[0]}: error: {message}") for line in lines), lines
    assert not any("Traceback" in line for line in lines)


@pytest.mark.subprocess
def test_parallel_workers_warn_that_samples_are_not_reproducible(random_model_dir, sources):
    result = rest("sample", "-m", str(random_model_dir), "--max-length", "6", "--threads", "1",
                  "--inter-threads", "2", str(sources))
    assert result.returncode == 0, result.stderr
    assert "2 workers: which batch each one draws depends on timing" in result.stderr.decode()
    beam = rest("sample", "-m", str(random_model_dir), "--max-length", "6", "-n", "2", "--beam", "2",
                "--inter-threads", "2", str(sources))
    assert beam.returncode == 0 and "workers" not in beam.stderr.decode()  # beam search is deterministic
