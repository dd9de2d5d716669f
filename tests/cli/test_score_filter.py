"""score and filter as a user runs them: subprocesses, exit codes, real shell pipelines."""

import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO, read_jsonl, rest, write_jsonl

CANDIDATES = [
    {"id": "s1", "src": "ein Hund", "ref": "a dog", "hyp": "a dog", "k": 0, "meta": {"x": 1}},
    {"id": "s1", "src": "ein Hund", "ref": "a dog", "hyp": "one cat", "k": 1},
    {"id": "s2", "src": "zwei Katzen", "ref": "two cats", "hyp": "two cats", "k": 0},
    {"id": "s2", "src": "zwei Katzen", "ref": "two cats", "hyp": "two dogs", "k": 1},
]


@pytest.fixture
def candidates(tmp_path):
    return write_jsonl(tmp_path / "cands.jsonl", CANDIDATES)


def shell(command: str, cwd) -> subprocess.CompletedProcess:
    env_python = f"PYTHONPATH={REPO} {sys.executable} -m rest_cli"
    return subprocess.run(command.replace("rest ", f"{env_python} "), shell=True, capture_output=True,
                          cwd=cwd, timeout=300, executable="/bin/bash")


@pytest.mark.subprocess
def test_score_adds_reward_and_provenance_keeping_other_fields(candidates):
    result = rest("score", "--reward", "exact", str(candidates))
    assert result.returncode == 0, result.stderr
    out = read_jsonl(result.stdout)
    assert [r["reward"] for r in out] == [1.0, 0.0, 1.0, 0.0]
    assert out[0]["meta"] == {"x": 1} and out[0]["reward_name"] == "exact"
    assert [{k: v for k, v in r.items() if not k.startswith("reward")} for r in out] == CANDIDATES


@pytest.mark.subprocess
@pytest.mark.skipif(shutil.which("jq") is None, reason="jq not installed")
def test_score_filter_jq_pipeline(candidates, tmp_path):
    result = shell(f"set -o pipefail; cat {candidates} | rest score --reward chrf | rest filter --tau 0.5 "
                   "| jq -r .hyp", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split("\n")[:-1] == ["a dog", "two cats"]
    assert b"4 records in, 2 out (50.0%); 2 sources, 0 left with no candidate" in result.stderr


@pytest.mark.subprocess
def test_per_source_filter_pipeline_with_gzip_files(candidates, tmp_path):
    result = shell(f"set -o pipefail; rest score -r chrf {candidates} -o scored.jsonl.gz && "
                   "rest filter --top-k 1 scored.jsonl.gz -o best.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r["hyp"] for r in read_jsonl((tmp_path / "best.jsonl").read_bytes())] == ["a dog", "two cats"]


@pytest.mark.subprocess
def test_max_per_source_caps_the_correct_samples_of_each_source_reproducibly(tmp_path):
    # ReST-EM: of 6 samples per source with a binary reward, keep at most 2 of the correct ones.
    records = [{"id": s, "hyp": f"{s}{k}", "reward": float(k % 3 != 0)} for s in "abc" for k in range(6)]
    scored = write_jsonl(tmp_path / "scored.jsonl", records)
    runs = [rest("filter", "--tau", "0.5", "--max-per-source", "2", *seed, str(scored))
            for seed in ([], ["--seed", "0"], ["--seed", "1"])]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr
    default, zero, one = ([r["hyp"] for r in read_jsonl(run.stdout)] for run in runs)
    assert default == zero and len(default) == 6 and [h[0] for h in default] == list("aabbcc")
    assert all(int(h[1]) % 3 for h in default + one)  # only correct ones
    assert b"18 records in, 6 out (33.3%); 3 sources" in runs[0].stderr


@pytest.mark.subprocess
def test_head_closes_the_pipe_quietly(tmp_path):
    many = write_jsonl(tmp_path / "many.jsonl", [{"id": i, "reward": 0.9} for i in range(200_000)])
    result = shell(f"rest filter --tau 0.5 {many} | head -n 2", cwd=tmp_path)
    assert len(result.stdout.splitlines()) == 2
    assert b"Traceback" not in result.stderr and b"BrokenPipe" not in result.stderr


@pytest.mark.subprocess
@pytest.mark.parametrize("args, line, code, message", [
    (["score", "-r", "chrf"], b'{"id": 1, "hyp": "a"}', 3,
     "<stdin>:2: field 'ref' is missing (reward 'chrf' needs it)"),
    (["filter", "--tau", "0.5"], b'{"id": 1, "reward": "high"}', 3, "<stdin>:2: field 'reward' must be"),
    (["filter", "--tau", "0.5"], b'{"id": 1, "reward": NaN}', 3, "<stdin>:2: invalid JSON"),
    (["filter", "--gamma", "0.5"], b'{"reward": 0.5}', 3, "<stdin>:2: field 'id' is missing"),
    (["score", "-r", "chrf"], b'{"hyp": ["a"], "ref": "a"}', 3, "<stdin>:2: field 'hyp' must be a string"),
    (["score", "-r", "nope"], b'{}', 2, "unknown reward 'nope'"),
    (["filter"], b'{}', 2, "give a filter"),
    (["filter", "--max-per-source", "0"], b'{}', 2, "--max-per-source must be at least 1"),
    (["filter", "--tau", "0.5", "--seed", "3"], b'{}', 2, "--seed: the seed of the --max-per-source draw"),
])
def test_bad_input_is_one_line_with_its_exit_code(args, line, code, message):
    good = b'{"id": 0, "hyp": "a", "ref": "a", "reward": 0.5}\n'
    result = rest(*args, input=good + line + b"\n")
    assert result.returncode == code
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rest {args[0]}: error: {message}"), lines


@pytest.mark.subprocess
def test_failed_run_writes_no_output_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": 1, "reward": 0.9}\n' * 1000 + b'{"id": 2, "reward": 2}\n')
    result = rest("filter", "--tau", "0.5", str(bad), "-o", str(tmp_path / "out.jsonl"))
    assert result.returncode == 3
    assert f"{bad}:1001: field 'reward'" in result.stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


@pytest.mark.subprocess
def test_skip_invalid_reports_the_count(tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b'{"id": 1, "reward": 0.9}\n{oops\n{"id": 2, "reward": 0.8}\n{"id": 3}\n')
    result = rest("filter", "--tau", "0.5", "--skip-invalid", str(mixed))
    assert result.returncode == 0
    assert [r["id"] for r in read_jsonl(result.stdout)] == [1, 2]
    assert f"skipped 2 invalid record(s); first: {mixed}:2: invalid JSON" in result.stderr.decode()


@pytest.mark.subprocess
def test_ungrouped_stream_is_refused_by_per_source_filters(tmp_path):
    path = write_jsonl(tmp_path / "u.jsonl", [{"id": "a", "reward": 0.1}, {"id": "b", "reward": 0.2},
                                               {"id": "a", "reward": 0.3}])
    result = rest("filter", "--top-k", "1", str(path))
    assert result.returncode == 3
    assert "u.jsonl:3: id 'a' appears again" in result.stderr.decode()


@pytest.mark.subprocess
def test_help_does_not_import_torch_or_ctranslate2():
    code = ("import sys; from rest_cli.cli.main import app; "
            "assert not {'torch', 'ctranslate2'} & set(sys.modules), sorted(sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
    assert rest("--help").returncode == 0 and rest("filter", "--help").returncode == 0


@pytest.mark.subprocess
def test_references_option_keeps_references_out_of_the_percentile(tmp_path):
    records = [{"id": "s", "hyp": f"h{k}", "reward": r, "origin": "sample"}
               for k, r in enumerate([0.2, 0.4, 0.6, 0.8])]
    records.append({"id": "s", "hyp": "ref", "reward": 1.0, "origin": "ref"})
    scored = write_jsonl(tmp_path / "scored.jsonl", records)
    kept = rest("filter", "--percentile", "50", "--references", "keep", str(scored))
    assert kept.returncode == 0, kept.stderr
    assert [r["hyp"] for r in read_jsonl(kept.stdout)] == ["h2", "h3", "ref"]
    assert b"2 samples (66.7%" in kept.stderr
    wrong = rest("filter", "--percentile", "50", "--references", "never", str(scored))
    assert wrong.returncode != 0 and b"--references must be one of filter, keep, drop" in wrong.stderr
