"""Helpers the tests share: tiny JSONL files and running the real CLI."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent


def write_jsonl(path: Path, records) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def read_jsonl(text: bytes | str):
    if isinstance(text, str):
        text = text.encode()
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def rest(*args: str, input: bytes | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run the real `rest` CLI in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rest_cli", *args], input=input, capture_output=True,
                          cwd=cwd, env=env, timeout=300)


REST_SHELL = f"{sys.executable} -m rest_cli"




def interruptible() -> None:
    """preexec_fn for a child a test will stop with SIGINT: a non-interactive shell starts background
    jobs (`make test &`, nohup, some CI runners) with SIGINT ignored, and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
