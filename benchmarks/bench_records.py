"""Throughput and memory of `rest filter` and `rest score`, measured side by side with baselines.

    .venv/bin/python benchmarks/bench_records.py [--small 100000] [--large 1000000] [--score-large 1000000]

Prints records/s, the ratio to each baseline, and peak RSS at two input sizes (memory must
not grow with the input). Baselines: `jq -c 'select(.reward > 0.9)'` for the filter, and a
plain Python loop calling sacrebleu's sentence chrF for the scorer.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

WORDS = ("a man woman dog cat runs jumps over the red blue small big house street park ball child "
         "two three people sitting standing near water with of in on at").split()

SACREBLEU_LOOP = """
import sys, orjson
from sacrebleu.metrics import CHRF
chrf = CHRF()
out = sys.stdout.buffer
for line in open(sys.argv[1], "rb"):
    r = orjson.loads(line)
    r["reward"] = chrf.sentence_score(r["hyp"], [r["ref"]]).score / 100
    out.write(orjson.dumps(r) + b"\\n")
"""

SACREBLEU_BARE = """
import sys, orjson
from sacrebleu.metrics import CHRF
pairs = [(r["hyp"], r["ref"]) for r in map(orjson.loads, open(sys.argv[1], "rb"))]
chrf = CHRF()
import time; start = time.perf_counter()
scores = [chrf.sentence_score(h, [r]).score for h, r in pairs]
print(time.perf_counter() - start)
"""


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16)))


def make_records(path: Path, count: int, samples_per_source: int = 8) -> Path:
    rng = random.Random(count)
    with open(path, "wb") as out:
        for i in range(count):
            source = i // samples_per_source
            out.write(orjson.dumps({"id": f"s{source}", "src": f"quelle {source}", "ref": sentence(rng),
                                    "hyp": sentence(rng), "k": i % samples_per_source,
                                    "reward": rng.random()}) + b"\n")
    return path


def run(command: list[str], stdin_path: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one command, output discarded."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    start = time.perf_counter()
    process = subprocess.Popen(command, stdin=stdin, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return elapsed, usage.ru_maxrss / 1024


def best_of(repeats: int, command: list[str]) -> tuple[float, float]:
    runs = [run(command) for _ in range(repeats)]
    return min(t for t, _ in runs), max(m for _, m in runs)


REST = [sys.executable, "-m", "rest_cli"]


def bench_filter(small: Path, large: Path, n_large: int, repeats: int) -> None:
    t_rest, rss_large = best_of(repeats, REST + ["filter", "--tau", "0.9", str(large)])
    _, rss_small = best_of(1, REST + ["filter", "--tau", "0.9", str(small)])
    print(f"filter --tau 0.9   {n_large:>9,} records: {n_large / t_rest:>10,.0f} records/s ({t_rest:.2f} s)")
    print(f"  peak RSS: {rss_small:.1f} MiB small, {rss_large:.1f} MiB large: "
          f"ratio {rss_large / rss_small:.3f}")
    if shutil.which("jq"):
        t_jq, _ = best_of(repeats, ["jq", "-c", "select(.reward > 0.9)", str(large)])
        print(f"  jq -c 'select(.reward > 0.9)': {n_large / t_jq:,.0f} records/s ({t_jq:.2f} s): "
              f"rest is {t_jq / t_rest:.2f}x jq")
    t_group, rss_group = best_of(1, REST + ["filter", "--gamma", "0.5", str(large)])
    print(f"filter --gamma 0.5 {n_large:>9,} records: {n_large / t_group:>10,.0f} records/s, "
          f"peak RSS {rss_group:.1f} MiB")


def bench_score(small: Path, n_small: int, large: Path | None, n_large: int) -> None:
    t_rest, rss_small = best_of(1, REST + ["score", "--reward", "chrf", str(small)])
    t_loop, _ = best_of(1, [sys.executable, "-c", SACREBLEU_LOOP, str(small)])
    bare = subprocess.run([sys.executable, "-c", SACREBLEU_BARE, str(small)], capture_output=True, check=True)
    t_bare = float(bare.stdout)
    print(f"score --reward chrf {n_small:>8,} records: {n_small / t_rest:>10,.0f} records/s ({t_rest:.2f} s)")
    print(f"  sacrebleu loop with JSONL I/O: {n_small / t_loop:,.0f} records/s: "
          f"rest takes {t_rest / t_loop:.3f}x its time")
    print(f"  sacrebleu chrF calls alone (pairs in memory): {n_small / t_bare:,.0f} records/s: "
          f"rest takes {t_rest / t_bare:.3f}x their time")
    if large is not None:
        t_large, rss_large = best_of(1, REST + ["score", "--reward", "chrf", str(large)])
        print(f"  {n_large:,} records: {n_large / t_large:,.0f} records/s; peak RSS {rss_small:.1f} MiB "
              f"small, {rss_large:.1f} MiB large: ratio {rss_large / rss_small:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--score-large", type=int, default=1_000_000, help="0 skips the large score run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = make_records(Path(tmp) / "small.jsonl", args.small)
        large = make_records(Path(tmp) / "large.jsonl", args.large)
        bench_filter(small, large, args.large, args.repeats)
        bench_score(small, args.small, large if args.score_large else None, args.large)


if __name__ == "__main__":
    main()
