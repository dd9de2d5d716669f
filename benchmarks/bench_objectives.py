"""Step time of each Improve objective against NLL's, on the same batches, side by side.

    .venv/bin/python benchmarks/bench_objectives.py [--preset demo] [--rounds 7] [--batches 6]
        [--batch-tokens 2048] [--threads 1]

Builds one parent policy (the native kind, `--preset`, untrained: speed does not depend on the
weights) and a trainer per objective from it, as `rest finetune --init` does, over the same
training data (copy pairs with a reward). Each round times one optimizer step on each of
`--batches` batches for every objective, the objectives in a new random order each round, so
that a busy machine slows them alike. Reports the median step time, and its ratio to NLL's median.
GOLD runs twice: before its first refresh of pi_old (one extra forward pass, pi_old being the
parent) and after (two). The value objectives are timed after the value head's warmup (their
policy steps), and oac also during it (the policy's pass without a graph).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rest_cli.models.base import get_kind
from rest_cli.train.data import DataStats, Pair, tokenize_pairs
from rest_cli.train.options import FinetuneOptions
from rest_cli.train.trainer import Trainer

WORDS = [f"w{i}" for i in range(60)]
# name -> (objective, its settings)
SETUPS = {"nll": ("nll", ()), "rwnll": ("rwnll", ()), "gold": ("gold", ()),
          "gold, pi_old refreshed": ("gold", ()), "oac": ("oac", ("value_warmup=0",)),
          "oac, value warmup": ("oac", ("value_warmup=0.99",)), "bvmpo": ("bvmpo", ("value_warmup=0",))}


def pairs(n: int, seed: int = 0) -> list[Pair]:
    """Copy pairs of 5 to 20 words, each with a reward."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(5, 20))) for _ in range(n)]
    return [Pair(t, t, 1.0, None, (rng.random(),)) for t in texts]


def trainer(name: str, parent: torch.nn.Module, kind, tokenizer, data, work: Path, args) -> Trainer:
    """A trainer of `name` over a fresh copy of the parent, as `rest finetune --init` makes it."""
    objective, settings = SETUPS[name]
    model = kind.new_model(tokenizer.vocab_size, {"preset": args.preset})
    model.load_state_dict(parent.state_dict())
    options = FinetuneOptions(objective=objective, objective_options=settings, steps=10_000, lr=1e-4,
                              warmup=0, batch_tokens=args.batch_tokens, label_smoothing=0.0)
    made = Trainer(model.train(), kind, tokenizer, data, None, options, work / name, "-", torch.device("cpu"),
                   False, None, print)
    if name == "gold, pi_old refreshed":
        made.objective._sync(1)
    return made


def timed_step(run: Trainer, batch: np.ndarray) -> float:
    start = time.perf_counter()
    run._step([batch])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-tokens", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kind = get_kind("native")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train = pairs(2000)
        tokenizer = kind.tokenizer(kind.train_tokenizer([p.src for p in train], work, 400, 0))
        data = tokenize_pairs(train, kind, tokenizer, 64, DataStats("bench"), ("reward",))
        parent = kind.new_model(tokenizer.vocab_size, {"preset": args.preset})
        runs = {name: trainer(name, parent, kind, tokenizer, data, work, args) for name in SETUPS}
        batches = runs["nll"].epoch_batches(0)[:args.batches]
        times: dict[str, list[float]] = {name: [] for name in SETUPS}
        for step in range(args.rounds + 1):  # the first round warms up and is not counted
            for name in random.Random(step).sample(list(SETUPS), len(SETUPS)):
                taken = [timed_step(runs[name], batch) for batch in batches]
                if step:
                    times[name].extend(taken)
        report(times, args, sum(len(b) for b in batches) / len(batches))


def report(times: dict[str, list[float]], args, rows: float) -> None:
    base = statistics.median(times["nll"])
    print(f"preset {args.preset}, {args.batch_tokens} tokens a batch ({rows:.0f} records), "
          f"{args.threads} thread(s), {args.rounds} rounds x {args.batches} batches\n")
    print("| objective | step (ms, median) | vs nll |\n|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {1000 * median:.0f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
