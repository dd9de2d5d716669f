"""`rest finetune` as a user runs it: messages, exit codes, what is left on disk."""

import dataclasses
import inspect
import json
import os
import signal
import subprocess
import sys

import pytest

from rest_cli.cli import finetune as command
from rest_cli.train.options import FinetuneOptions
from tests.helpers import REPO, interruptible, rest, write_jsonl

TINY = ["--preset", "tiny", "--vocab-size", "40", "--batch-tokens", "256", "--lr", "3e-3"]
GOOD = [{"src": f"w{i % 7} w{i % 5}", "ref": f"w{i % 5} w{i % 7}"} for i in range(40)]


def test_every_library_option_is_a_cli_option_with_its_default():
    parameters = inspect.signature(command.finetune).parameters
    for field in dataclasses.fields(FinetuneOptions):
        assert parameters[field.name].default == field.default, field.name


@pytest.mark.subprocess
def test_a_messy_stream_trains_with_every_oddity_reported(tmp_path):
    records = GOOD[:20] + [
        {"src": "w1", "hyp": "w2", "ref": "ignored", "weight": 2.5},
        {"src": "w1"},  # neither hyp nor ref: skipped
        {"src": "w3", "ref": "w4", "weight": 0},  # ignored
        {"src": "w3", "ref": ""},  # trains just EOS
        {"src": "", "ref": "w4"},  # no source tokens: left out
        {"src": "w1 w2 w3 w4 w5 w6", "ref": "w1"},  # truncated to --max-length
    ] + GOOD[20:]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    result = rest("finetune", "-", "-o", str(tmp_path / "model"), *TINY, "--steps", "6", "--log-every", "3",
                  "--max-length", "4", "--skip-invalid", input=data)
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert "rest finetune: skipped 1 invalid record(s); first: <stdin>:22: the record has neither" in err
    assert "rest finetune: <stdin>: truncated 1 record(s) to --max-length 4 tokens" in err
    assert "rest finetune: <stdin>: left out 1 record(s) with an empty source" in err
    assert "rest finetune: step 3/6 loss " in err and " tok/s " in err and " eta " in err
    assert err.splitlines()[-1].startswith(f"rest finetune: wrote {tmp_path / 'model'}: 6 steps")
    info = json.loads((tmp_path / "model" / "training.json").read_text())
    stats = info["data"]["train"]
    assert (stats["records"], stats["used"], stats["skipped"], stats["zero_weight"]) == (45, 43, 1, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.subprocess
@pytest.mark.parametrize("line, message", [
    (b'{"ref": "w1"}', "field 'src' is missing (finetune needs it)"),
    (b'{"src": "w1"}', "the record has neither 'hyp' nor 'ref'"),
    (b'{"src": "w1", "ref": "w2"', "invalid JSON"),
    (b'{"src": "w1", "ref": "w2", "weight": -1}', "field 'weight' must not be negative"),
])
def test_bad_records_stop_before_anything_is_written(tmp_path, line, message):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"src": "w1", "ref": "w2"}\n' * 11 + line + b"\n")
    result = rest("finetune", str(data), "-o", str(tmp_path / "model"), *TINY, "--steps", "2")
    assert result.returncode == 3
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rest finetune: error: {data}:12: {message}"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


@pytest.mark.subprocess
@pytest.mark.parametrize("args, message", [
    (["--preset", "huge", "--steps", "1"],
     "Invalid value for '--preset': Value error, 'huge' is not one of 'tiny', 'demo', 'small', 'base', "
     "'iwslt'"),
    (["--init", "parent", "--preset", "tiny", "--steps", "1"], "--preset: not with --init"),
    (["--preset", "tiny"], "give --steps or --epochs"),
    (["--preset", "tiny", "--steps", "1", "--accumulate", "0"], "--accumulate must be at least 1"),
    (["--preset", "tiny", "--steps", "1", "--lora-rank", "4"],
     "--lora-rank: LoRA is for Hugging Face policies (rest import), not for policies of kind 'native'"),
    (["--preset", "tiny", "--steps", "1", "--gradient-checkpointing"],
     "--gradient-checkpointing: policies of kind 'native' do not support it"),
])
def test_bad_options_exit_2(tmp_path, args, message):
    data = write_jsonl(tmp_path / "d.jsonl", GOOD)
    result = rest("finetune", str(data), "-o", str(tmp_path / "model"), *args)
    assert result.returncode == 2
    assert result.stderr.decode().startswith(f"rest finetune: error: {message}"), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]  # no model.partial


@pytest.mark.subprocess
def test_sigint_checkpoints_and_leaves_only_the_work_directory(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", GOOD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "rest_cli", "finetune", str(data), "-o", str(tmp_path / "model"), *TINY,
            "--steps", "5000", "--log-every", "1"]
    child = subprocess.Popen(args, stderr=subprocess.PIPE, env=env, preexec_fn=interruptible)
    try:
        for line in child.stderr:
            if b"step " in line:
                child.send_signal(signal.SIGINT)
                break
        err = line.decode() + child.stderr.read().decode()
        assert child.wait(timeout=60) == 130, err
    finally:
        child.kill()
    assert "rest finetune: stopped at step " in err and err.splitlines()[-1] == "rest finetune: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "model.partial"]
    assert (tmp_path / "model.partial" / "checkpoint.pt").exists()
    result = rest("finetune", str(data), "-o", str(tmp_path / "model"), *TINY,
                  "--steps", "5000", "--seed", "1")
    assert result.returncode == 2 and "delete it to start afresh" in result.stderr.decode()


@pytest.mark.subprocess
def test_help_does_not_import_torch():
    code = ("import sys; from typer.testing import CliRunner; from rest_cli.cli.main import app; "
            "assert CliRunner().invoke(app, ['finetune', '--help']).exit_code == 0; "
            "assert not {'torch', 'ctranslate2'} & set(sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (45, "45s"), (80, "1m20s"), (7500, "2h05m")])
def test_durations_read_like_a_clock(seconds, text):
    assert command.duration(seconds) == text


@pytest.mark.subprocess
@pytest.mark.parametrize("target", ["data-folder", "a-file", ".", "", "/", "link"])
def test_output_that_is_not_ours_to_replace_is_refused_before_training(tmp_path, target):
    folder = tmp_path / "data-folder"
    folder.mkdir()
    data = write_jsonl(folder / "train.jsonl", GOOD)
    (tmp_path / "a-file").write_text("keep\n")
    (tmp_path / "link").symlink_to(folder)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    result = rest("finetune", str(data), "-o", target, *TINY, "--steps", "2", cwd=tmp_path)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "rest finetune: error: --output" in lines[0], lines
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "a-file").read_text() == "keep\n"


@pytest.mark.subprocess
def test_a_tokenizer_that_cannot_be_trained_leaves_no_work_folder(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", [{"src": "a", "ref": "b"}])
    args = ["finetune", str(data), "-o", str(tmp_path / "model"), "--preset", "tiny", "--steps", "1"]
    failed = rest(*args, "--vocab-size", "5")  # fewer pieces than the characters need
    assert failed.returncode == 1 and "cannot train the tokenizer" in failed.stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]
