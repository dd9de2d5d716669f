"""A full disk or an unwritable output: one line, a non-zero exit, nothing half-written.

ENOSPC is real here, not a mocked exception: the output's file descriptor is pointed at
/dev/full, so every write, flush and close fails as on a full disk (which is how the close
after a failed write used to raise again and leave the temporary file behind). The model
directory's writer is driven by safetensors and CTranslate2, which open their own files, so
there a step of the export raises ENOSPC after writing part of its files.
"""

import builtins
import errno
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import orjson
import pytest
from ctranslate2.converters import Converter
from typer.main import get_command
from typer.testing import CliRunner

from rest_cli.cli.main import app
from rest_cli.errors import OutputError
from rest_cli.io import atomic, records
from rest_cli.models.modeldir import load_model, save_model_dir, training_info
from tests.helpers import REPO, read_jsonl, write_jsonl

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")

SCORED = [{"id": i // 2, "src": "eins", "ref": "one", "hyp": f"one {'x' * (i % 50)}", "reward": 0.75}
          for i in range(2000)]  # some 150 kB: several buffers, so writes fail before the close


def _open_on_full_disk(path, mode="r", *args, **kwargs):
    """open() whose files for writing sit on a full disk (their descriptor is /dev/full's)."""
    handle = builtins.open(path, mode, *args, **kwargs)
    if "w" in mode:
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, handle.fileno())
        os.close(full)
    return handle


@pytest.fixture
def full_disk(monkeypatch):
    monkeypatch.setattr(atomic, "open", _open_on_full_disk, raising=False)


@functools.cache
def _command():
    return get_command(app)


def invoke(*args):
    with mock.patch("typer.testing._get_command", lambda _: _command()):  # build the CLI once
        result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def assert_one_error_line(result, command: str, *parts: str) -> None:
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.splitlines()
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], result.stderr
    assert lines[-1].startswith(f"rest {command}: error: ") and all(p in lines[-1] for p in parts), lines[-1]
    assert "Traceback" not in result.stderr


def leftovers(folder: Path, *keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
@pytest.mark.parametrize("size", [1, len(SCORED)], ids=["fails-at-close", "fails-while-writing"])
def test_writer_on_a_full_disk_leaves_no_file(full_disk, tmp_path, name, size):
    out = tmp_path / name
    with pytest.raises(OutputError, match=f"cannot write {out}: No space left on device"):
        with records.RecordWriter(str(out)) as writer:
            writer.write_all(SCORED[:size])
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("command", [["score", "-r", "exact"], ["filter", "--tau", "0.5"]],
                         ids=["score", "filter"])
@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_full_disk_keeps_the_previous_output(full_disk, tmp_path, command, name):
    data = write_jsonl(tmp_path / "in.jsonl", SCORED)
    out = tmp_path / name
    out.write_bytes(b"previous\n")
    result = invoke(*command, data, "-o", out)
    assert_one_error_line(result, command[0], f"cannot write {out}: No space left on device")
    assert out.read_bytes() == b"previous\n"
    assert leftovers(tmp_path, "in.jsonl", name) == []


@pytest.mark.subprocess
def test_full_disk_on_stdout_is_one_line(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", SCORED)
    with open("/dev/full", "wb") as full:
        result = subprocess.run([sys.executable, "-m", "rest_cli", "filter", "--tau", "0.5", str(data)],
                                stdout=full, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "rest filter: error: cannot write to stdout: No space left on device"]


@pytest.mark.parametrize("command", [["score", "-r", "exact"], ["filter", "--tau", "0.5"]],
                         ids=["score", "filter"])
def test_output_in_a_missing_folder_is_one_line(tmp_path, command):
    data = write_jsonl(tmp_path / "in.jsonl", SCORED[:4])
    result = invoke(*command, data, "-o", tmp_path / "missing" / "out.jsonl")
    assert_one_error_line(result, command[0], "missing/out.jsonl: No such file or directory")
    assert leftovers(tmp_path, "in.jsonl") == []


def _export_then_disk_full(converter, output_dir, **options):
    """The CTranslate2 export running out of space half-way: a partial file, then ENOSPC."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / "model.bin").write_bytes(b"\0" * 1000)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(output_dir) / "model.bin"))


def test_model_directory_on_a_full_disk_keeps_the_previous_one(random_model_dir, tmp_path, monkeypatch):
    directory = Path(shutil.copytree(random_model_dir, tmp_path / "model"))
    before = training_info(directory)
    model = load_model(directory)
    monkeypatch.setattr(Converter, "convert", _export_then_disk_full)
    with pytest.raises(OutputError, match=f"cannot write {directory}: No space left on device"):
        save_model_dir(directory, model, directory, {"steps": 99})
    assert leftovers(tmp_path) == ["model"]  # no temporary directory beside it
    assert training_info(directory) == before and load_model(directory) is not None


def test_finetune_on_a_full_disk_is_one_line_and_resumes(tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "train.jsonl",
                       [{"src": f"eins {w}", "ref": f"one {w}"} for w in "abcdefgh"])
    command = ["finetune", "--preset", "tiny", "--steps", "2", "--vocab-size", "40",
               "-o", tmp_path / "model", data]
    with monkeypatch.context() as patch:
        patch.setattr(Converter, "convert", _export_then_disk_full)
        result = invoke(*command)
    assert_one_error_line(result, "finetune", "No space left on device")
    assert leftovers(tmp_path, "train.jsonl") == ["model.partial"]  # no half-written model directory
    assert (tmp_path / "model.partial" / "checkpoint.pt").exists()

    again = invoke(*command)  # space freed: the same command finishes from the checkpoint
    assert again.exit_code == 0, again.stderr
    assert "resuming from" in again.stderr
    assert orjson.loads((tmp_path / "model" / "training.json").read_bytes())["steps"] == 2
    assert leftovers(tmp_path, "train.jsonl") == ["model"]


def test_previous_output_survives_a_full_disk_even_when_it_is_the_input(full_disk, tmp_path):
    scored = write_jsonl(tmp_path / "scored.jsonl", SCORED)
    result = invoke("filter", "--tau", "0.5", scored, "-o", scored)
    assert_one_error_line(result, "filter", "No space left on device")
    assert read_jsonl(scored.read_bytes()) == SCORED
    assert leftovers(tmp_path, "scored.jsonl") == []
