"""Training throughput when other work shares the cores: torch's default threads against --threads 1.

    .venv/bin/python benchmarks/bench_threads.py [--steps 60] [--busy 1] [--repeats 2]

Runs `rest finetune` (demo preset, from scratch, the demo's data) with torch's default thread count
and with --threads 1, first on a quiet machine, then with --busy processes spinning on the CPU
beside it (each one busy loop, as another job on a shared machine would be), interleaved, and
reports tokens/s (tokens_seen / wall_time_s from training.json) and each setting's ratio to the
default on the same machine state.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPIN = "while True: pass"


def finetune(data: Path, out: Path, steps: int, threads: int | None) -> float:
    """tokens/s of one run."""
    command = [sys.executable, "-m", "rest_cli", "finetune", str(data / "train.jsonl"), "-o", str(out),
               "--preset", "demo", "--vocab-size", "400", "--steps", str(steps), "--lr", "1e-3",
               "--log-every", str(steps), *(["--threads", str(threads)] if threads else [])]
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    record = json.loads((out / "training.json").read_text())
    return record["tokens_seen"] / record["wall_time_s"]


def measure(data: Path, work: Path, steps: int, repeats: int, busy: int) -> dict[str, list[float]]:
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
    try:
        runs: dict[str, list[float]] = {"default": [], "--threads 1": []}
        for repeat in range(repeats):
            for name, threads in (("default", None), ("--threads 1", 1)):
                runs[name].append(finetune(data, work / f"{busy}-{repeat}-{threads}", steps, threads))
        return runs
    finally:
        for spinner in spinners:
            spinner.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--busy", type=int, default=1, help="spinning processes beside training")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, "-m", "rest_cli", "demo-data", str(work / "data"), "--train", "2000",
                        "--valid", "10", "--test", "10"], check=True, capture_output=True, cwd=REPO)
        print("| machine | threads | tokens/s (median) | runs | vs default |\n|---|---|---|---|---|")
        for busy in (0, args.busy):
            runs = measure(work / "data", work, args.steps, args.repeats, busy)
            base = statistics.median(runs["default"])
            for name, values in runs.items():
                median = statistics.median(values)
                print(f"| {busy} busy | {name} | {median:.0f} | {', '.join(f'{v:.0f}' for v in values)} | "
                      f"{median / base:.2f} |")


if __name__ == "__main__":
    main()
