"""`rest finetune` against a bare PyTorch training loop on the same model and batches, and against \
the CPU's peak.

    .venv/bin/python benchmarks/bench_finetune.py [--presets demo,iwslt] [--steps N] [--warmup-steps 2]
        [--repeats 1] [--batch-tokens 4096] [--sweep-presets demo] [--sweep-batch-tokens 2048,4096,8192]

The machine is shared and noisy, so every comparison is made side by side, step by step:

  1. Matmul throughput: square fp32 and bf16 matmuls (512, 1024, 2048) at 1 and `--threads`
     threads, interleaved; one more 2048 fp32 matmul is timed after every training step. The
     best fp32 sample at `--threads` threads is the "fp32 peak" the model runs are measured against.
  2. `rest_cli.train.run.finetune()` (the library call behind `rest finetune`) on a JSONL file,
     continuing a random parent model of the preset (`--init`: the ReST Improve step), fixed
     steps, no validation, against a bare loop: the same parent weights, the same index batches
     from `make_batches` in the same order, tensors padded beforehand; forward, cross-entropy
     ignoring PAD, backward, clip_grad_norm_(1.0), AdamW(0.9, 0.98) with rest's learning-rate
     schedule: what rest's defaults do with --init (no label smoothing, clip 1.0). The bare loops
     (fp32 and bf16 autocast) are stepped from rest's `on_progress` callback, so each rest step
     is followed by the same batch in the bare loops (order alternating), and each step gives a
     paired ratio; the "x" column is the median of those. rest's step time runs from the end of
     one callback to the start of the next: all of rest's per-step work, none of start-up
     (reading, tokenizing, building the model) nor the final checkpoint and model directory,
     which training.json's wall_time_s does include (it starts when the trainer is built, after
     tokenizing). Each bare loop keeps its own RNG state, so all draw the dropout masks they would
     draw alone: rest and the fp32 bare loop must reach the same loss. rest's token count is
     checked against training.json's tokens_seen. A second run times `rest finetune --bf16`
     beside a bf16 bare loop.
  3. A sweep of the bare loop over batch tokens x threads x {fp32, bf16}, one step of each
     configuration in turn, to choose defaults.

Tokens are counted as rest counts them (collate()): real source tokens + trained target tokens
(target + EOS, not padding). Sources and targets: Multi30k German-English read from
../shared/data when present (never copied into the repo), else synthetic sentences.

FLOPs per training step, from the model shape and the padded batch (B rows, S = longest source,
T = longest target + 1 decoder positions, width d, feed-forward f, vocabulary V, Le + Ld layers),
counting 2 FLOPs per multiply-add and the matmuls only:

    encoder layer   2BS(4d^2 + 2df) + 4BS^2 d                  (q,k,v,out; ffn; scores + context)
    decoder layer   2BT(4d^2 + 2df) + 4BT^2 d                  (self-attention on all T^2: no causal saving)
                    + 2BT(2d^2) + 2BS(2d^2) + 4BTS d           (cross-attention: q,out on T; k,v on S)
    output          2BT dV
    step            3 x (Le x encoder + Ld x decoder + output)  (backward = 2 x forward)

Padding is counted as work (the hardware does it), so "% of peak" measures the kernels and the
loop, not the batching; the tokens/s columns measure everything.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import torch
import torch.nn.functional as F

from rest_cli.models import modeldir
from rest_cli.models.native.config import ModelConfig, config_from_preset
from rest_cli.models.native.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, train_tokenizer
from rest_cli.models.native.transformer import Seq2SeqTransformer
from rest_cli.train.data import TokenizedPairs, collate, load_pairs, make_batches, tokenize_pairs
from rest_cli.train.options import FinetuneOptions
from rest_cli.train.run import finetune
from rest_cli.train.trainer import lr_factor, validation_loss

REPO = Path(__file__).resolve().parent.parent
MULTI30K = REPO.parent / "shared" / "data" / "multi30k-de-en"
DEFAULT_STEPS = {"demo": 24, "iwslt": 6}  # timed steps per run; other presets get 16
SEED, LR = 0, 5e-4


# --- Data and parent models ----------------------------------------------------------------

def load_texts(count: int, split: str) -> list[tuple[str, str]]:
    """`count` (German, English) pairs of Multi30k's `split`, or synthetic pairs without it."""
    de, en = MULTI30K / f"{split}.de", MULTI30K / f"{split}.en"
    if de.exists() and en.exists():
        pairs = [(s.strip(), t.strip())
                 for s, t in zip(de.read_text().splitlines(), en.read_text().splitlines())
                 if s.strip() and t.strip()]
        return (pairs * (count // len(pairs) + 1))[:count]
    rng = random.Random(0 if split == "train" else 1)
    words = "ein Mann eine Frau Hund läuft springt über den roten Ball im Park mit zwei Kindern".split()
    english = "a man woman dog runs jumps over the red ball in park with two children".split()
    return [(" ".join(rng.choice(words) for _ in range(n)),
             " ".join(rng.choice(english) for _ in range(n + 1)))
            for n in (rng.randint(6, 18) for _ in range(count))]


def write_jsonl(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps({"id": i, "src": s, "ref": t}) + b"\n"
                              for i, (s, t) in enumerate(pairs)))
    return path


def build_parent(directory: Path, tokenizer_file: Path, preset: str) -> Path:
    """A randomly initialised model directory of `preset`: the model both sides start from."""
    torch.manual_seed(SEED)
    config = config_from_preset(preset, Tokenizer(tokenizer_file).vocab_size)
    model = Seq2SeqTransformer(config)
    return modeldir.save_model_dir(directory, model, tokenizer_file, {"note": "random, for benchmarks"})


def tokenized(jsonl: Path, tokenizer_file: Path, max_length: int = 256) -> TokenizedPairs:
    """The file's pairs as rest tokenizes them (load_pairs, then tokenize_pairs)."""
    pairs, stats = load_pairs(str(jsonl))
    return tokenize_pairs(pairs, Tokenizer(tokenizer_file), max_length, stats)


# --- Batches and FLOPs ---------------------------------------------------------------------

@dataclass
class Plan:
    """The index batches of `steps` optimizer steps in rest's order, with their token counts and FLOPs."""

    batches: list[np.ndarray]
    tokens: list[int]  # real source + trained target tokens, as collate() counts them
    flops: list[float]  # training FLOPs of each step (see the module docstring)
    padded: list[int]  # B * (S + T): positions computed, padding included


def make_plan(data: TokenizedPairs, config: ModelConfig, batch_tokens: int, steps: int) -> Plan:
    batches, epoch = [], 0
    while len(batches) < steps:  # rest's epochs: a fresh shuffle of the same data each time
        batches += make_batches(data.src_lengths, data.tgt_lengths, batch_tokens, SEED, epoch)
        epoch += 1
    batches = batches[:steps]
    tokens = [collate(data, b).tokens for b in batches]
    shapes = [(len(b), int(data.src_lengths[b].max()), int(data.tgt_lengths[b].max()) + 1) for b in batches]
    return Plan(batches, tokens, [step_flops(config, *shape) for shape in shapes],
                [rows * (s + t) for rows, s, t in shapes])


def step_flops(c: ModelConfig, rows: int, src_len: int, tgt_len: int) -> float:
    """Matmul FLOPs of one training step (forward + backward) on a padded batch
    [rows, src_len] -> [rows, tgt_len]."""
    b, s, t, d, f = rows, src_len, tgt_len, c.d_model, c.ffn_dim
    encoder = 2 * b * s * (4 * d * d + 2 * d * f) + 4 * b * s * s * d
    decoder = (2 * b * t * (4 * d * d + 2 * d * f) + 4 * b * t * t * d
               + 2 * b * t * 2 * d * d + 2 * b * s * 2 * d * d + 4 * b * t * s * d)
    output = 2 * b * t * d * c.vocab_size
    return 3.0 * (c.enc_layers * encoder + c.dec_layers * decoder + output)


def pad(data: TokenizedPairs, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(source, decoder input, labels) of one batch, padded with numpy: the bare loop's own collate."""
    src_len, tgt_len = data.src_lengths[indices], data.tgt_lengths[indices]
    rows, s, t = len(indices), int(src_len.max()), int(tgt_len.max()) + 1
    src = np.full((rows, s), PAD_ID, dtype=np.int64)
    tgt_in = np.full((rows, t), PAD_ID, dtype=np.int64)
    labels = np.full((rows, t), PAD_ID, dtype=np.int64)
    tgt_in[:, 0] = BOS_ID
    for row, i in enumerate(indices.tolist()):
        ns, nt = src_len[row], tgt_len[row]
        src[row, :ns] = data.src[data.src_start[i]:data.src_start[i] + ns]
        target = data.tgt[data.tgt_start[i]:data.tgt_start[i] + nt]
        tgt_in[row, 1:nt + 1], labels[row, :nt] = target, target
        labels[row, nt] = PAD_ID if data.cut[i] else EOS_ID
    return torch.from_numpy(src), torch.from_numpy(tgt_in), torch.from_numpy(labels)


# --- The runs ------------------------------------------------------------------------------

def synchronizer(device: str):
    """A function that waits for the device's queued work: torch.cuda.synchronize on CUDA (it covers
    CTranslate2's kernels too: one process, one device context), nothing on the CPU."""
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


class BareLoop:
    """The bare loop on one model: pre-padded tensors, forward, cross-entropy, backward, clip, fused AdamW.

    Fused AdamW, as rest uses: the comparison is with the best plain PyTorch, not the default.
    It keeps its own RNG states (CPU, and CUDA on a GPU), so that stepping it between rest's
    steps changes neither side's dropout masks: both draw what they would draw alone.
    """

    def __init__(self, parent: Path, data: TokenizedPairs, plan: Plan, threads: int | None, bf16: bool,
                 device: str = "cpu"):
        self.device, self.threads, self.bf16, self.sync = (torch.device(device), threads, bf16,
                                                           synchronizer(device))
        self.tensors = [tuple(t.to(self.device) for t in pad(data, b)) for b in plan.batches]
        self.trained = [int(labels.ne(PAD_ID).sum()) for _, _, labels in self.tensors]
        torch.manual_seed(SEED)  # as finetune() does before building the model
        self.model = modeldir.load_model(parent).to(self.device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LR, betas=(0.9, 0.98),
                                           weight_decay=0.0, fused=True)
        self.rng = self._rng()
        self.warmup_lr = min(1000, len(plan.batches) // 10)  # rest's default warm-up of the learning rate
        self.times: list[float] = []
        self.nll_sum, self.count = torch.zeros((), device=self.device), 0

    def _rng(self):
        return torch.get_rng_state(), torch.cuda.get_rng_state() if self.device.type == "cuda" else None

    def _set_rng(self, state) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1])

    def step(self) -> None:
        outer = self._rng()
        self._set_rng(self.rng)
        if self.threads:
            torch.set_num_threads(self.threads)
        self.sync()
        start = time.perf_counter()
        self._step(len(self.times))
        self.sync()
        self.times.append(time.perf_counter() - start)
        self.rng = self._rng()
        self._set_rng(outer)

    def _step(self, i: int) -> None:
        src, tgt_in, labels = self.tensors[i]
        for group in self.optimizer.param_groups:
            group["lr"] = LR * lr_factor(i + 1, self.warmup_lr)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(src, tgt_in)
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=PAD_ID)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.nll_sum, self.count = (self.nll_sum + loss.detach() * self.trained[i],
                                    self.count + self.trained[i])

    @property
    def train_loss(self) -> float:
        return float(self.nll_sum) / self.count


class Interleaver:
    """rest's on_progress callback: times rest's step, then steps each passenger and samples the matmul peak.

    rest's time for step k runs from the end of the callback of step k - 1 to the start of the
    callback of step k: everything rest does in between (collate, forward, backward, optimizer,
    its bookkeeping), and nothing of the passengers.
    """

    def __init__(self, passengers: list[BareLoop], peak_samples: list[float]):
        self.passengers, self.peak_samples = passengers, peak_samples
        # drawn now: rest's RNG is seeded later
        self.operands = torch.randn(2048, 2048), torch.randn(2048, 2048)
        self.times: list[float] = []
        self.last: float | None = None

    def __call__(self, progress) -> None:
        now = time.perf_counter()
        # step 1's start is not seen
        self.times.append(now - self.last if self.last is not None else math.nan)
        order = self.passengers if progress.step % 2 else self.passengers[::-1]  # A B C, C B A, ...
        for passenger in order:
            passenger.step()
        a, b = self.operands
        start = time.perf_counter()
        a @ b
        self.peak_samples.append(2 * 2048**3 / (time.perf_counter() - start) / 1e9)
        self.last = time.perf_counter()


@dataclass
class Timing:
    """One variant in one run: per-step seconds and the losses it reached."""

    times: list[float]
    train_loss: float  # mean NLL per trained token over all steps, warm-up included (rest's reported loss)
    heldout_loss: float | None
    wall_time_s: float | None = None  # rest's training.json


def run_rest(jsonl: Path, parent: Path, out: Path, plan: Plan, threads: int, bf16: bool, batch_tokens: int,
             passengers: list[BareLoop], heldout: TokenizedPairs, peak_samples: list[float]) -> Timing:
    """rest_cli.train.run.finetune() on the JSONL file, with the passengers stepped between its steps."""
    steps, clock = len(plan.batches), Interleaver(passengers, peak_samples)
    options = FinetuneOptions(steps=steps, batch_tokens=batch_tokens, lr=LR, seed=SEED, threads=threads,
                              device="cpu", bf16=bf16, log_every=steps, checkpoint_every=10**9)
    record = finetune(str(jsonl), out, options, init_dir=parent, on_progress=clock)
    if record["tokens_seen"] != sum(plan.tokens):  # the same batches as the plan, counted the same way
        raise RuntimeError(f"rest saw {record['tokens_seen']} tokens, the plan has {sum(plan.tokens)}")
    heldout_loss = validation_loss(modeldir.load_model(out), heldout, batch_tokens)
    return Timing(clock.times, record["train_loss"][-1][1], heldout_loss, record["wall_time_s"])


def bare_timing(loop: BareLoop, heldout: TokenizedPairs | None, batch_tokens: int) -> Timing:
    heldout_loss = validation_loss(loop.model, heldout, batch_tokens) if heldout is not None else None
    return Timing(loop.times, loop.train_loss, heldout_loss)


def check_padding(data: TokenizedPairs, plan: Plan) -> None:
    """The bare loop's tensors are exactly rest's collate() tensors."""
    for indices in plan.batches:
        batch, (src, tgt_in, labels) = collate(data, indices), pad(data, indices)
        if not (torch.equal(batch.src, src) and torch.equal(batch.tgt_in, tgt_in)
                and torch.equal(batch.labels, labels)):
            raise RuntimeError("the bare loop's padding differs from rest's collate()")


# --- Matmul peak ---------------------------------------------------------------------------

def matmul_gflops(size: int, dtype: torch.dtype, seconds: float) -> float:
    """GFLOP/s of a square matmul over `seconds` seconds, after one warm-up call."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    done, start = 0, time.perf_counter()
    while done < 1 or time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return 2 * size**3 * done / (time.perf_counter() - start) / 1e9


def measure_matmul(threads: list[int], repeats: int) -> dict[tuple[int, int, str], list[float]]:
    """GFLOP/s samples of square fp32 and bf16 matmuls at each thread count, all interleaved."""
    samples: dict[tuple[int, int, str], list[float]] = {}
    for _ in range(repeats):
        for size in (512, 1024, 2048):
            for th in threads:
                torch.set_num_threads(th)
                for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                    samples.setdefault((size, th, name), []).append(matmul_gflops(size, dtype, seconds=0.3))
    return samples


# --- Summaries -----------------------------------------------------------------------------

@dataclass
class Variant:
    """All runs of one variant on one plan."""

    plan: Plan
    warmup: int
    runs: list[Timing] = field(default_factory=list)

    def timed(self, run: Timing) -> list[float]:
        return run.times[self.warmup:]

    def tokens_per_s(self) -> float:
        return median([sum(self.plan.tokens[self.warmup:]) / sum(self.timed(r)) for r in self.runs])

    def gflops(self) -> float:
        return median([sum(self.plan.flops[self.warmup:]) / sum(self.timed(r)) / 1e9 for r in self.runs])

    def ms_per_step(self) -> float:
        return 1000 * median([t for r in self.runs for t in self.timed(r)])

    def speed_vs(self, other: Variant) -> float:
        """Median over the paired steps (same batch, adjacent in time) of other's time / this one's:
        > 1 is faster."""
        return median([b / a for ra, rb in zip(self.runs, other.runs)
                       for a, b in zip(self.timed(ra), other.timed(rb))])

    def loss(self, name: str) -> float | None:
        values = [getattr(r, name) for r in self.runs]
        return median(values) if None not in values else None


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_table(title: str, variants: dict[str, Variant], peak: float, reference: str | None) -> None:
    ref = variants.get(reference) if reference else None
    print(f"\n{title}\n  {'variant':34} {'tokens/s':>9} {'ms/step':>8} {'GFLOP/s':>8} {'%peak':>6} "
          f"{'x ' + (reference or '')[:14]:>16} {'train':>7} {'held-out':>8}")
    for name, v in variants.items():
        paired = f"{v.speed_vs(ref):16.3f}" if ref is not None else f"{'-':>16}"
        heldout = v.loss("heldout_loss")
        print(f"  {name:34} {v.tokens_per_s():9,.0f} {v.ms_per_step():8.0f} {v.gflops():8.1f} "
              f"{100 * v.gflops() / peak:5.1f}% {paired} {v.loss('train_loss'):7.4f} "
              f"{heldout if heldout is not None else math.nan:8.4f}")


# --- The comparisons -----------------------------------------------------------------------

def compare(preset: str, args, work: Path, jsonl: Path, data: TokenizedPairs, heldout: TokenizedPairs,
            parent: Path, peak_samples: list[float]) -> dict[str, Variant]:
    """rest vs the bare loop, fp32 and bf16, stepped alternately; every run repeated `repeats` times."""
    config = modeldir.model_config(parent)
    plan = make_plan(data, config, args.batch_tokens, args.warmup_steps + steps_for(preset, args))
    check_padding(data, plan)
    print(f"\n[{preset}] d_model {config.d_model}, {config.enc_layers}+{config.dec_layers} layers, "
          f"ffn {config.ffn_dim}, vocab {config.vocab_size}; "
          f"{len(plan.batches)} steps ({args.warmup_steps} warm-up) of <= "
          f"{args.batch_tokens} tokens; per step (median) {median(plan.tokens):,.0f} counted tokens, "
          f"{median(plan.padded):,.0f} padded positions, {median(plan.flops) / 1e9:.1f} GFLOP", flush=True)
    names = ["rest finetune, fp32", "bare loop, fp32", "bare loop, bf16 autocast", "rest finetune --bf16",
             "bare loop, bf16 (beside rest --bf16)"]
    variants = {name: Variant(plan, args.warmup_steps) for name in names[:3 if args.no_rest_bf16 else 5]}
    for i in range(args.repeats):
        runs = ([(False, [False, True], names[:3])]
                + ([] if args.no_rest_bf16 else [(True, [True], names[3:])]))
        for bf16, passengers_bf16, run_names in runs:
            gc.collect()
            loops = [BareLoop(parent, data, plan, args.threads, b) for b in passengers_bf16]
            rest = run_rest(jsonl, parent, work / f"out-{preset}-{i}-{bf16}", plan, args.threads, bf16,
                            args.batch_tokens, loops, heldout, peak_samples)
            timings = [rest] + [bare_timing(loop, heldout, args.batch_tokens) for loop in loops]
            for name, timing in zip(run_names, timings):
                variants[name].runs.append(timing)
            spans = " / ".join(f"{sum(t.times[args.warmup_steps:]):.1f}" for t in timings)
            print(f"  repeat {i + 1}, rest{' --bf16' if bf16 else ''}: timed seconds {spans} "
                  f"({', '.join(run_names)}); training.json wall_time_s {rest.wall_time_s:.1f} s "
                  f"for all {len(plan.batches)} steps", flush=True)
            del loops
    return variants


def sweep(preset: str, args, data: TokenizedPairs, parent: Path) -> dict[str, Variant]:
    """The bare loop over batch tokens x threads x precision, one step of each in turn."""
    config, steps = modeldir.model_config(parent), args.warmup_steps + max(2, steps_for(preset, args) // 2)
    grid = [(bt, th, bf16) for bt in map(int, args.sweep_batch_tokens.split(","))
            for th in map(int, args.sweep_threads.split(",")) for bf16 in (False, True)]
    plans = {bt: make_plan(data, config, bt, steps) for bt in {g[0] for g in grid}}
    variants = {g: Variant(plans[g[0]], args.warmup_steps) for g in grid}
    print(f"\n[{preset} sweep] {steps} steps per configuration ({args.warmup_steps} warm-up), bare loop",
          flush=True)
    for _ in range(args.repeats):
        loops = {g: BareLoop(parent, data, plans[g[0]], g[1], g[2]) for g in grid}
        for step in range(steps):
            for g in (grid if step % 2 else grid[::-1]):
                loops[g].step()
        for g, loop in loops.items():
            variants[g].runs.append(bare_timing(loop, None, g[0]))
        del loops
        gc.collect()
    return {f"{bt} tokens, {th} thread{'s' if th > 1 else ''}, {'bf16' if bf16 else 'fp32'}": v
            for (bt, th, bf16), v in variants.items()}


# --- Main ----------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="demo,iwslt", help="model presets compared (comma-separated)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"timed steps per run (default {DEFAULT_STEPS}, others 16); the sweep uses half")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before the timed ones")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of every variant (each run already alternates the variants step by step)")
    parser.add_argument("--batch-tokens", type=int, default=4096,
                        help="batch size of the rest vs bare comparison")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=10000, help="training pairs (Multi30k or synthetic)")
    parser.add_argument("--heldout", type=int, default=256, help="held-out pairs for the loss after training")
    parser.add_argument("--no-rest-bf16", action="store_true", help="skip timing rest --bf16")
    parser.add_argument("--sweep-presets", default="demo",
                        help="presets for the batch/threads/bf16 sweep ('' = none)")
    parser.add_argument("--sweep-batch-tokens", default="2048,4096,8192")
    parser.add_argument("--sweep-threads", default="1,2")
    return parser.parse_args()


def steps_for(preset: str, args: argparse.Namespace) -> int:
    return args.steps if args.steps is not None else DEFAULT_STEPS.get(preset, 16)


def main() -> None:
    args = parse_args()
    presets = [p for p in args.presets.split(",") if p]
    sweep_presets = [p for p in args.sweep_presets.split(",") if p]
    started = time.perf_counter()
    source = "Multi30k de-en" if (MULTI30K / "train.de").exists() else "synthetic"
    print(f"torch {torch.__version__}, {args.threads} threads; {args.pairs} {source} training pairs; "
          f"{args.repeats} run(s) of each comparison", flush=True)
    threads = sorted({1, args.threads})
    matmul = measure_matmul(threads, 3)
    peak_samples = list(matmul[(2048, args.threads, "fp32")])  # more come from between the training steps
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        jsonl = write_jsonl(work / "train.jsonl", load_texts(args.pairs, "train"))
        heldout_jsonl = write_jsonl(work / "heldout.jsonl", load_texts(args.heldout, "val"))
        texts = [t for line in jsonl.read_bytes().splitlines() for t in orjson.loads(line).values()
                 if isinstance(t, str)]
        spm = train_tokenizer(texts, work / "spm", vocab_size=8000, seed=SEED)
        data, heldout = tokenized(jsonl, spm), tokenized(heldout_jsonl, spm)
        parents = {p: build_parent(work / f"parent-{p}", spm, p)
                   for p in dict.fromkeys(presets + sweep_presets)}
        results = {p: compare(p, args, work, jsonl, data, heldout, parents[p], peak_samples) for p in presets}
        sweeps = {p: sweep(p, args, data, parents[p]) for p in sweep_presets}
    report(args, matmul, peak_samples, results, sweeps, time.perf_counter() - started)


def report(args, matmul, peak_samples, results, sweeps, elapsed) -> None:
    peak = max(max(v) for (size, th, name), v in matmul.items() if name == "fp32" and th == args.threads)
    peak = max(peak, *peak_samples)
    print(f"\n=== Results ({args.threads} threads unless said; whole run {elapsed:.0f} s) ===")
    print("\nMatmul throughput, square n x n, GFLOP/s: median [best] of the samples")
    for size in (512, 1024, 2048):
        cells = "   ".join(f"{th} thr {name} {median(matmul[(size, th, name)]):6.1f} "
                           f"[{max(matmul[(size, th, name)]):6.1f}]"
                           for th in sorted({1, args.threads}) for name in ("fp32", "bf16"))
        print(f"  n={size:<5d} {cells}")
    print(f"  n=2048 fp32 sampled between training steps ({len(peak_samples) - 3} samples): median "
          f"{median(peak_samples[3:] or peak_samples):.1f} [best {max(peak_samples):.1f}]")
    print(f"  fp32 peak used for %peak: {peak:.1f} GFLOP/s (the best fp32 sample at {args.threads} threads)")
    for preset, variants in results.items():
        print_table(f"[{preset}] batches of <= {args.batch_tokens} tokens; x = paired speed vs the bare "
                    "fp32 loop (median over steps of its time / this time)", variants, peak,
                    "bare loop, fp32")
    for preset, variants in sweeps.items():
        print_table(f"[{preset}] sweep of the bare loop; x = paired speed vs {args.batch_tokens} tokens, "
                    f"{args.threads} threads, fp32", variants, peak,
                    f"{args.batch_tokens} tokens, "
                    f"{args.threads} thread{'s' if args.threads > 1 else ''}, fp32")
    print("\nRatios and targets:")
    for preset, v in results.items():
        rest, bare, bf16 = v["rest finetune, fp32"], v["bare loop, fp32"], v["bare loop, bf16 autocast"]
        paired, totals = rest.speed_vs(bare), rest.tokens_per_s() / bare.tokens_per_s()
        print(f"  [{preset}] rest / bare, fp32: {paired:.3f} paired per step, {totals:.3f} tokens/s totals "
              f"(target >= 0.9: {'met' if paired >= 0.9 else 'NOT met'})")
        pct_rest, pct_bare = 100 * rest.gflops() / peak, 100 * bare.gflops() / peak
        print(f"  [{preset}] % of fp32 peak: rest {pct_rest:.1f}%, bare {pct_bare:.1f}%"
              + (f" (target >= 30%: {'met' if pct_rest >= 30 else 'NOT met'})" if preset == "iwslt" else ""))
        print(f"  [{preset}] bf16 autocast / fp32, bare loop: {bf16.speed_vs(bare):.2f}x paired; "
              f"losses after {len(bare.plan.batches)} steps fp32 vs bf16: "
              f"train {bare.loss('train_loss'):.4f} vs {bf16.loss('train_loss'):.4f}, "
              f"held-out {bare.loss('heldout_loss'):.4f} vs {bf16.loss('heldout_loss'):.4f}")
        if "rest finetune --bf16" in v:
            rb, bb = v["rest finetune --bf16"], v["bare loop, bf16 (beside rest --bf16)"]
            print(f"  [{preset}] rest --bf16 / bare bf16: {rb.speed_vs(bb):.3f} paired; rest --bf16 loss "
                  f"train {rb.loss('train_loss'):.4f}, held-out {rb.loss('heldout_loss'):.4f}")
        print(f"  [{preset}] rest vs bare fp32 losses (same batches, same dropout masks): train "
              f"{rest.loss('train_loss'):.4f} vs {bare.loss('train_loss'):.4f}, held-out "
              f"{rest.loss('heldout_loss'):.4f} vs {bare.loss('heldout_loss'):.4f}")


if __name__ == "__main__":
    main()
