"""`rest sample --resume`: a killed run continues without losing or repeating a source."""

import gzip
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from rest_cli.errors import UsageError
from rest_cli.io.resumable import ResumableOutput
from tests.helpers import REPO, read_jsonl, rest, write_jsonl


def _sources(count):
    return b"".join(orjson.dumps({"src": f"eins hund {i}", "ref": "one dog"}) + b"\n" for i in range(count))


def _sample_args(model, out, sources, n=3):
    return ["sample", "-m", str(model), "-n", str(n), "--include-ref", "--max-length", "6", "--resume",
            "-o", str(out), str(sources)]


def _source_file(folder, count):
    (folder / "src.jsonl").write_bytes(_sources(count))
    return folder / "src.jsonl"


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
    out, total = tmp_path / "cands.jsonl", 12000
    sources = _source_file(tmp_path, total)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "rest_cli", *_sample_args(random_model_dir, out, sources)],
                            stderr=subprocess.DEVNULL, env=env)
    partial, deadline = tmp_path / "cands.jsonl.partial", time.monotonic() + 120
    # Killed as soon as some groups are written: far from the end of its input.
    while not (partial.exists() and partial.stat().st_size > 20_000) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = partial.read_bytes()
    assert len(before) > 20_000 and not out.exists()
    with open(partial, "ab") as torn:  # as if the kill had cut a group in the middle of a line
        torn.write(b'{"id": 999, "src": "half a li')

    resumed = rest(*_sample_args(random_model_dir, out, sources))
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
    result = rest(*_sample_args(random_model_dir, out, _source_file(tmp_path, 3)))
    assert result.returncode == 2
    assert "c.jsonl.partial is from a run with other decode" in result.stderr.decode()
    assert (tmp_path / "c.jsonl.partial.json").read_bytes() == b'{"decode": {"n": 99}}'  # left for the user


@pytest.mark.subprocess
def test_resume_needs_files_in_and_out(random_model_dir, tmp_path):
    result = rest("sample", "-m", str(random_model_dir), "--resume", input=_sources(1))
    assert result.returncode == 2 and "--resume needs -o FILE" in result.stderr.decode()
    result = rest("sample", "-m", str(random_model_dir), "--resume", "-o", str(tmp_path / "c.jsonl"),
                  input=_sources(1))
    assert result.returncode == 2 and "--resume needs the input as a file" in result.stderr.decode()
    assert sorted(os.listdir(tmp_path)) == []


def test_a_second_run_on_the_same_output_is_refused_while_the_first_writes(tmp_path):
    first = ResumableOutput(str(tmp_path / "c.jsonl"), group_size=2, run={"seed": 0})
    assert first.open() == 0
    first.write_groups([{"id": 0}, {"id": 0}])
    second = ResumableOutput(str(tmp_path / "c.jsonl"), group_size=2, run={"seed": 0})
    with pytest.raises(UsageError, match=r"c\.jsonl\.partial is being written by another run"):
        second.open()
    first.finish()
    assert read_jsonl((tmp_path / "c.jsonl").read_bytes()) == [{"id": 0}, {"id": 0}]


@pytest.mark.subprocess
def test_a_damaged_run_description_is_one_clear_error(random_model_dir, tmp_path):
    out = tmp_path / "c.jsonl"
    (tmp_path / "c.jsonl.partial").write_bytes(b"")
    (tmp_path / "c.jsonl.partial.json").write_bytes(b'{"decode": ')  # cut short
    result = rest(*_sample_args(random_model_dir, out, _source_file(tmp_path, 3)))
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 2 and len(lines) == 1, lines
    assert "c.jsonl.partial.json: cannot read it" in lines[0] and "delete it" in lines[0]
