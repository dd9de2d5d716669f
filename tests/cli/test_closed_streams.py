"""Standard streams the shell closed (`<&-`, `>&-`): one line and an exit code, never a traceback."""

import os
import subprocess

import pytest

from tests.helpers import REPO, REST_SHELL

pytestmark = pytest.mark.subprocess


def shell(command: str, folder) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=folder, env=env,
                          timeout=120)


@pytest.mark.parametrize("redirect, code, message", [
    ("<&-", 3, "rest filter: error: <stdin>: standard input is closed"),
    ("in.jsonl >&-", 1, "rest filter: error: cannot write to stdout: it is closed"),
])
def test_a_closed_stream_is_one_line(tmp_path, redirect, code, message):
    (tmp_path / "in.jsonl").write_text('{"reward": 0.5}\n')
    result = shell(f"{REST_SHELL} filter --tau 0.1 {redirect}", tmp_path)
    assert (result.returncode, result.stderr.splitlines()) == (code, [message])


def test_help_on_a_closed_stdout_is_one_line(tmp_path):
    result = shell(f"{REST_SHELL} --help >&-", tmp_path)
    expected = ["rest: error: cannot write to stdout: it is closed"]
    assert (result.returncode, result.stderr.splitlines()) == (1, expected)


def test_a_closed_stderr_keeps_the_records_clean(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"reward": 0.5}\n{"reward": 0.05}\n')
    result = shell(f"{REST_SHELL} filter --tau 0.1 in.jsonl 2>&-", tmp_path)
    assert result.returncode == 0 and result.stdout == '{"reward":0.5}\n'  # the summary line went nowhere
