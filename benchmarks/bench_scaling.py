"""Scaling out on one machine: sharded sampling and data-parallel finetuning, each against one job.

    .venv/bin/python benchmarks/bench_scaling.py [--sources 1000] [--shards 4] [--steps 60] [--repeats 2]

1. Shards: `rest sample --beam 2 -n 2 --shard K/N` for K = 1..N against the unsharded command on
   the same sources (Multi30k German validation sentences when ../shared/data is there, else
   synthetic), with a random `base` policy. Checks that the shards, joined, hold the unsharded
   candidates (same id, k and hyp; logprobs differ in the last digits, as CTranslate2 computes
   each batch of other sources a little differently), and reports the time of N shards run one
   after another over one job (the cost of every shard reading the whole input and loading the
   model).
2. Side by side: one `rest sample` process (2 threads) against 2 shards running at once with 1
   thread each, on the same sources: the reproducible way to use two single-threaded workers.
3. DDP: `rest finetune` on the `demo` preset for --steps steps, one process with 2 threads
   against `torchrun --nproc-per-node 2` with 1 thread each, on the same global batches.
   Reports tokens/s of each (tokens_seen / wall_time_s from training.json) and the ratio, and
   the largest difference between their logged training losses.

The two ways share the machine's 2 cores, so the DDP ratio measures the overhead of gradient
exchange and splitting batches, not a speed-up: on N machines the same code runs N times the data.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sample import build_model, load_sources  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REST = [sys.executable, "-m", "rest_cli"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def run(argv: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, env=env or ENV)
    if result.returncode:
        sys.exit(f"failed: {' '.join(argv)}\n{result.stderr.decode()[-2000:]}")
    return time.perf_counter() - started


def bench_shards(work: Path, sources: int, shards: int, repeats: int, compute_type: str = "int8") -> None:
    texts = load_sources(sources)
    model = build_model(work / f"policy-{compute_type}", texts, "base")
    inputs = work / "sources.jsonl"
    inputs.write_bytes(b"".join(orjson.dumps({"src": t}) + b"\n" for t in texts))
    decode = ["-m", str(model), "--beam", "2", "-n", "2", "--max-length", "48",
              "--compute-type", compute_type, str(inputs)]
    whole_s, sharded_s = [], []
    for _ in range(repeats):
        whole_s.append(run([*REST, "sample", *decode, "-o", str(work / "whole.jsonl")]))
        sharded_s.append(sum(run([*REST, "sample", *decode, "--shard", f"{k}/{shards}", "-o",
                                  str(work / f"shard-{k}.jsonl")]) for k in range(1, shards + 1)))
    whole = _candidates(work / "whole.jsonl")
    joined = {}
    for k in range(1, shards + 1):
        joined.update(_candidates(work / f"shard-{k}.jsonl"))
    same_keys = sorted(joined) == sorted(whole)
    differing = sum(joined[key][0] != whole[key][0] for key in whole) if same_keys else None
    drift = max(abs(joined[key][1] - whole[key][1]) for key in whole) if same_keys else None
    print(f"\nShards: {sources} sources, beam 2, 2 candidates each, {shards} shards, {compute_type}")
    print(f"  joined shards hold the same (id, k) as the unsharded run: {same_keys} "
          f"({len(joined)} vs {len(whole)}); "
          f"hyps that differ: {differing}; largest logprob difference {drift:.2g} "
          f"(CTranslate2 computes a batch with the sources around it)")
    print(f"  one job {statistics.median(whole_s):.2f} s; {shards} shards one after another "
          f"{statistics.median(sharded_s):.2f} s: "
          f"ratio {statistics.median(sharded_s) / statistics.median(whole_s):.2f}")


def _candidates(path: Path) -> dict[tuple, tuple[str, float]]:
    records = (orjson.loads(line) for line in path.read_bytes().splitlines())
    return {(r["id"], r["k"]): (r["hyp"], r["logprob"]) for r in records}


def bench_side_by_side(work: Path, sources: int, repeats: int) -> None:
    """One sampling process (2 threads) against 2 shards at once (1 thread each), same sources."""
    texts = load_sources(sources)
    model = build_model(work / "policy-side", texts, "base")
    inputs = work / "side.jsonl"
    inputs.write_bytes(b"".join(orjson.dumps({"src": t}) + b"\n" for t in texts))
    decode = [*REST, "sample", "-m", str(model), "-n", "8", "--max-length", "64", str(inputs)]
    one_s, two_s = [], []
    for _ in range(repeats):
        one_s.append(run([*decode, "-o", str(work / "one.jsonl")]))
        started = time.perf_counter()
        jobs = [subprocess.Popen([*decode, "--threads", "1", "--shard", f"{k}/2",
                                  "-o", str(work / f"two-{k}.jsonl")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
                for k in (1, 2)]
        if any(job.wait() for job in jobs):
            sys.exit("a shard failed")
        two_s.append(time.perf_counter() - started)
    one, two = statistics.median(one_s), statistics.median(two_s)
    print(f"\nSide by side: {sources} sources x 8 samples, up to 64 tokens, int8")
    print(f"  one process, 2 threads {one:.2f} s; 2 shards at once, 1 thread each {two:.2f} s: "
          f"speed-up {one / two:.2f}x (both reproducible from the seed)")


def bench_ddp(work: Path, steps: int, repeats: int) -> None:
    data = work / "demo"
    run([*REST, "demo-data", str(data), "--train", "4000", "--valid", "50", "--test", "50"])
    common = ["finetune", str(data / "train.jsonl"), "--preset", "demo", "--vocab-size", "400",
              "--steps", str(steps), "--batch-tokens", "4096", "--dropout", "0", "--log-every", "10",
              "--checkpoint-every", "100000"]
    rates = {"1 process x 2 threads": [], "torchrun 2 processes x 1 thread": []}
    for repeat in range(repeats):
        single, ddp = work / f"single-{repeat}", work / f"ddp-{repeat}"
        run([*REST, *common, "--threads", "2", "--output", str(single)])
        run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
             "-m", "rest_cli", *common, "--output", str(ddp)], env={**ENV, "OMP_NUM_THREADS": "1"})
        for name, path in zip(rates, (single, ddp)):
            record = json.loads((path / "training.json").read_text())
            rates[name].append(record["tokens_seen"] / record["wall_time_s"])
    one, two = (json.loads((work / f"{name}-0" / "training.json").read_text()) for name in ("single", "ddp"))
    loss_gap = max(abs(a[1] - b[1]) for a, b in zip(one["train_loss"], two["train_loss"]))
    print(f"\nDDP: demo preset, {steps} steps of 4096-token batches, {repeats} repeats (median)")
    for name, values in rates.items():
        print(f"  {name:34s} {statistics.median(values):9,.0f} tokens/s")
    medians = [statistics.median(v) for v in rates.values()]
    print(f"  ratio (2 processes / 1 process): {medians[1] / medians[0]:.3f}; "
          f"largest train-loss difference {loss_gap:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compute-types", default="int8,float32", help="for the shards comparison")
    parser.add_argument("--only", choices=["shards", "side-by-side", "ddp"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "shards"):
            for compute_type in args.compute_types.split(","):
                bench_shards(Path(tmp), args.sources, args.shards, args.repeats, compute_type)
        if args.only in (None, "side-by-side"):
            bench_side_by_side(Path(tmp), args.sources, args.repeats)
        if args.only in (None, "ddp"):
            bench_ddp(Path(tmp), args.steps, args.repeats)


if __name__ == "__main__":
    main()
