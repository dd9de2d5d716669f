"""Ctrl-C (SIGINT) and SIGTERM sent to running commands: a clean exit, nothing half-written.

Each test starts the real CLI, waits until the command is provably mid-work (a reward has
scored batches, a temporary output holds records, a checkpoint exists), then signals it.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from rest_cli.cli.main import app
from rest_cli.errors import EXIT_INTERRUPTED, EXIT_TERMINATED
from tests.conftest import CORPUS
from tests.helpers import REPO, interruptible, read_jsonl, write_jsonl

pytestmark = pytest.mark.subprocess  # real processes, stopped by real signals

SLOW_REWARD = '''
import os, time

def slow(records):
    with open(os.environ["REST_TEST_MARKS"], "a") as marks:
        marks.write("batch\\n")
    time.sleep(0.05)
    return [0.5] * len(records)
'''

SLOW_SCORER = '''
import json, os, sys, time

with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
for line in sys.stdin:
    request = json.loads(line)
    with open(sys.argv[2], "a") as marks:
        marks.write("batch\\n")
    time.sleep(0.05)
    print(json.dumps({"id": request["id"], "rewards": [0.5] * len(request["records"])}), flush=True)
'''


class Run:
    """The real `rest` in a subprocess, its stderr in a file so it can be polled."""

    def __init__(self, args, cwd: Path, env: dict | None = None):
        self.stderr_path = cwd / f"stderr-{time.monotonic_ns()}.txt"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen([sys.executable, "-m", "rest_cli", *map(str, args)], cwd=cwd,
                                         stdout=subprocess.DEVNULL, stderr=stderr, preexec_fn=interruptible,
                                         env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_until(self, condition, timeout: float = 120.0) -> None:
        """Poll until the command is mid-work; fail (not hang) if it ends or stalls first."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"exited {self.proc.returncode} before it was mid-work:\n{self.stderr}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"not mid-work after {timeout} s:\n{self.stderr}")
            time.sleep(0.02)

    def signal(self, signum: int) -> int:
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"still running 60 s after signal {signum}:\n{self.stderr}")


def temporaries(folder: Path, output: Path) -> list[str]:
    """Files a writer of `output` may leave behind: its temporary name, or any *.tmp."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name.startswith(f".{output.name}") or p.name.endswith(".tmp"))


def assert_clean_exit(run: Run, code: int, signum: int, command: str) -> None:
    word = "terminated" if code == EXIT_TERMINATED else "interrupted"
    assert code == (EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_TERMINATED), run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.rstrip().splitlines()[-1] == f"rest {command}: {word}"


@pytest.fixture
def sources(tmp_path):
    return write_jsonl(tmp_path / "in.jsonl", [{"id": i, "src": s, "ref": s, "hyp": s} for i, s in
                                               enumerate(CORPUS * 5)])


def test_sigint_during_score_keeps_the_previous_output(tmp_path, sources):
    (tmp_path / "slow_reward.py").write_text(SLOW_REWARD)
    marks, out = tmp_path / "marks.txt", write_jsonl(tmp_path / "out.jsonl", [{"previous": True}])
    run = Run(["score", "-r", "py:slow_reward:slow", "--batch-size", "1", "-o", out, sources], tmp_path,
              env={"REST_TEST_MARKS": str(marks)})
    run.wait_until(lambda: marks.exists() and marks.read_text().count("batch") >= 3)
    assert temporaries(tmp_path, out), "the output should be under its temporary name while scoring"
    assert_clean_exit(run, run.signal(signal.SIGINT), signal.SIGINT, "score")
    assert read_jsonl(out.read_bytes()) == [{"previous": True}]
    assert temporaries(tmp_path, out) == []


def test_sigterm_during_score_leaves_no_output_and_stops_the_reward_command(tmp_path, sources):
    (tmp_path / "scorer.py").write_text(SLOW_SCORER)
    pid_file, marks, out = tmp_path / "scorer.pid", tmp_path / "marks.txt", tmp_path / "out.jsonl"
    run = Run(["score", "-r", f"cmd:{sys.executable} scorer.py {pid_file} {marks}", "--batch-size", "1",
               "-o", out, sources], tmp_path)
    run.wait_until(lambda: marks.exists() and marks.read_text().count("batch") >= 3)
    assert_clean_exit(run, run.signal(signal.SIGTERM), signal.SIGTERM, "score")
    assert not out.exists() and temporaries(tmp_path, out) == []
    scorer = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(scorer) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(scorer), "the external reward command outlived rest score"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_sample_leaves_no_output(tmp_path, random_model_dir, signum):
    many = write_jsonl(tmp_path / "src.jsonl", [{"src": s} for s in CORPUS * 20])
    out = tmp_path / "out.jsonl"
    run = Run(["sample", "-m", random_model_dir, "-n", "4", "--max-length", "16", "--threads", "1", "-o", out,
               many], tmp_path)
    # Mid-work: records have reached the temporary file (the writer's buffer was flushed at least once).
    run.wait_until(lambda: any(p.stat().st_size > 0 for p in tmp_path.glob(f".{out.name}.*.tmp")))
    assert_clean_exit(run, run.signal(signum), signum, "sample")
    assert not out.exists() and temporaries(tmp_path, out) == []


# Steps take some 20 ms: the first checkpoint comes early and the run goes on for seconds after it.
STEPS = 150
FINETUNE = ["--preset", "tiny", "--steps", str(STEPS), "--batch-tokens", "128", "--checkpoint-every", "5",
            "--log-every", "50", "--threads", "1"]


@pytest.fixture
def pairs(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", [{"src": s, "ref": s} for s in CORPUS[:200]])


def _checkpointed(work: Path):
    return lambda: (work / "checkpoint.pt").exists()


def test_sigint_during_finetune_checkpoints_and_the_same_command_resumes(tmp_path, pairs):
    model, work = tmp_path / "model", tmp_path / "model.partial"
    command = ["finetune", *FINETUNE, "-o", model, pairs]
    run = Run(command, tmp_path)
    run.wait_until(_checkpointed(work))
    assert_clean_exit(run, run.signal(signal.SIGINT), signal.SIGINT, "finetune")
    assert "stopped at step" in run.stderr and "run the same command again" in run.stderr
    assert not model.exists() and (work / "checkpoint.pt").exists()
    assert not [p for p in work.iterdir() if p.name.endswith(".tmp")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]

    # The same command again, in this process to spare a second start of torch.
    again = CliRunner().invoke(app, list(map(str, command)))
    assert again.exit_code == 0, again.stderr
    assert "resuming from" in again.stderr
    training = orjson.loads((model / "training.json").read_bytes())
    assert training["steps"] == STEPS and training["resumed"] == 1
    assert not work.exists()


def test_sigterm_during_finetune_checkpoints_and_exits_non_zero(tmp_path, pairs):
    model, work = tmp_path / "model", tmp_path / "model.partial"
    run = Run(["finetune", *FINETUNE, "-o", model, pairs], tmp_path)
    run.wait_until(_checkpointed(work))
    code = run.signal(signal.SIGTERM)
    # The training loop defers SIGTERM like Ctrl-C (training._deferred_interrupts), checkpoints,
    # then reports "terminated", 143, as other commands do.
    assert code == EXIT_TERMINATED, run.stderr
    assert "Traceback" not in run.stderr and "stopped at step" in run.stderr
    assert not model.exists() and (work / "checkpoint.pt").exists()
    assert not [p for p in work.iterdir() if p.name.endswith(".tmp")]


def test_sigint_works_when_the_suite_was_started_with_it_ignored(tmp_path, sources):
    """`make test &` starts the suite with SIGINT ignored; the children must still take Ctrl-C."""
    (tmp_path / "slow_reward.py").write_text(SLOW_REWARD)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run = Run(["score", "-r", "py:slow_reward:slow", "--batch-size", "1", sources, "-o",
                   tmp_path / "out.jsonl"], tmp_path, env={"REST_TEST_MARKS": str(tmp_path / "marks.txt")})
    finally:
        signal.signal(signal.SIGINT, previous)
    run.wait_until(lambda: (tmp_path / "marks.txt").exists())
    assert run.signal(signal.SIGINT) == EXIT_INTERRUPTED
