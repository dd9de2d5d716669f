"""`rest sample --resume`: a killed run continues without losing or repeating a source."""

import gzip
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from tests.helpers import REPO, read_jsonl, rest, write_jsonl


def _sources(count):
    return b"".join(orjson.dumps({"src": f"eins hund {i}", "ref": "one dog"}) + b"\n" for i in range(count))


def _sample_args(model, out, n=3):
    return ["sample", "-m", str(model), "-n", str(n), "--include-ref", "--max-length", "6", "--resume",
            "-o", str(out)]


@pytest.mark.subprocess
def test_resume_without_interruption_writes_what_a_plain_run_writes(random_model_dir, tmp_path):
    sources = write_jsonl(tmp_path / "src.jsonl", [{"src": f"zwei katze {i}"} for i in range(20)])
    plain = rest("sample", "-m", str(random_model_dir), "--max-length", "6", str(sources), "-o",
                 str(tmp_path / "plain.jsonl.gz"))
    resumable = rest("sample", "-m", str(random_model_dir), "--max-length", "6", "--resume", str(sources),
                     "-o", str(tmp_path / "resumed.jsonl.gz"))
    assert plain.returncode == resumable.returncode == 0, resumable.stderr
    assert gzip.decompress((tmp_path / "plain.jsonl.gz").read_bytes()) == \
        gzip.decompress((tmp_path / "resumed.jsonl.gz").read_bytes())
    assert sorted(os.listdir(tmp_path)) == ["plain.jsonl.gz", "resumed.jsonl.gz", "src.jsonl"]


@pytest.mark.subprocess
def test_a_killed_run_resumes_without_losing_or_repeating_sources(random_model_dir, tmp_path):
    out, total = tmp_path / "cands.jsonl", 6000
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # The first run is fed slowly and never reaches the end of its input, so it is surely mid-run
    # when killed. (CTranslate2 hands results back as more input arrives: keep it flowing.)
    proc = subprocess.Popen([sys.executable, "-m", "rest_cli", *_sample_args(random_model_dir, out)],
                            stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    partial, lines, fed = tmp_path / "cands.jsonl.partial", _sources(total).splitlines(keepends=True), 0
    deadline = time.monotonic() + 120
    while fed < total - 200 and time.monotonic() < deadline:
        if partial.exists() and partial.stat().st_size > 20_000:
            break
        proc.stdin.write(b"".join(lines[fed:fed + 100]))
        proc.stdin.flush()
        fed += 100
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = partial.read_bytes()
    assert len(before) > 20_000 and not out.exists()
    with open(partial, "ab") as torn:  # as if the kill had cut a group in the middle of a line
        torn.write(b'{"id": 999, "src": "half a li')

    resumed = rest(*_sample_args(random_model_dir, out), input=_sources(total))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr.decode()
    records = read_jsonl(out.read_bytes())
    assert [(r["id"], r["k"]) for r in records] == [(i, k) for i in range(total) for k in range(4)]
    done = read_jsonl(before)
    done = done[:len(done) // 4 * 4]  # the complete groups the kill left
    assert records[:len(done)] == done and len(done) >= 40
    assert not partial.exists() and not (tmp_path / "cands.jsonl.partial.json").exists()


@pytest.mark.subprocess
def test_resume_with_other_options_is_refused(random_model_dir, tmp_path):
    out = tmp_path / "c.jsonl"
    (tmp_path / "c.jsonl.partial").write_bytes(b"")
    (tmp_path / "c.jsonl.partial.json").write_bytes(b'{"decode": {"n": 99}}')
    result = rest(*_sample_args(random_model_dir, out), input=_sources(3))
    assert result.returncode == 2
    assert "c.jsonl.partial is from a run with other decode" in result.stderr.decode()
    assert (tmp_path / "c.jsonl.partial.json").read_bytes() == b'{"decode": {"n": 99}}'  # left for the user


@pytest.mark.subprocess
def test_resume_needs_a_file(random_model_dir):
    result = rest("sample", "-m", str(random_model_dir), "--resume", input=_sources(1))
    assert result.returncode == 2 and "--resume needs -o FILE" in result.stderr.decode()


@pytest.mark.subprocess
def test_a_damaged_run_description_is_one_clear_error(random_model_dir, tmp_path):
    out = tmp_path / "c.jsonl"
    (tmp_path / "c.jsonl.partial").write_bytes(b"")
    (tmp_path / "c.jsonl.partial.json").write_bytes(b'{"decode": ')  # cut short
    result = rest(*_sample_args(random_model_dir, out), input=_sources(3))
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 2 and len(lines) == 1, lines
    assert "c.jsonl.partial.json: cannot read it" in lines[0] and "delete it" in lines[0]
