"""`rest finetune` and `rest sample` on one GPU, each beside its bare baseline, in one run of under 8 minutes.

    # on the GPU machine (about 7 minutes)
    .venv/bin/python benchmarks/bench_gpu.py --json $OUT/gpu.json
    # the check, here, before GPU time is spent
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --quick

`--device cpu --quick` runs the same code with tiny models and inputs (under 3 minutes on 2 cores);
its numbers mean nothing. `--budget-s S` (default 420, quick 150) is the time the run plans for:
step counts scale down with it, sampling inputs are sized to the time left, and a measurement that
no longer fits is skipped and listed as such. Results go to `--json` after every measurement, so a
run cut short still brings back what it measured; a failed measurement is recorded and the run goes on.

In order:
  0. The device: torch's CUDA device name, CTranslate2's CUDA device count and its compute types there.
  1. Matmul peak: square fp32, TF32 (CUDA only) and bf16 matmuls on the device, synchronized. rest
     leaves torch's default (no TF32), so fp32 training runs are measured against the fp32 peak and
     bf16 autocast runs against the bf16 peak.
  2. Finetune: `rest_cli.train.run.finetune()` continuing a random parent of --train-preset (the ReST
     Improve step), --warmup-steps + --steps steps at each --train-batch-tokens, fp32 and bf16 autocast
     (FinetuneOptions.bf16), beside a bare PyTorch loop on the same device: the same parent weights,
     the same batches in the same order (bench_finetune's make_plan and pad, tensors moved to the
     device beforehand), forward, cross-entropy ignoring PAD, backward, clip 1.0, fused AdamW as rest
     uses, rest's learning-rate schedule. The bare loops are stepped from rest's on_progress callback
     (fp32 and bf16 beside rest fp32; bf16 beside rest bf16), each with its own CPU and CUDA RNG state,
     so rest fp32 and bare fp32 draw the same dropout masks and should reach the same loss. rest's step
     runs from the end of one callback to the start of the next (synchronized): all its per-step work,
     none of its start-up or final save. Reports tokens/s (tokens as rest counts them), ms/step,
     TFLOP/s (bench_finetune's step_flops, padding included) as a % of the peak, the paired per-step
     speed of rest against the bare loop, and train / held-out loss after the same steps.
  3. Sampling: a random policy of each --sample-presets (bench_sample's build_model), Multi30k German
     validation sources (cycled) or synthetic ones. For each compute type and batch size a calibration
     run of raw CTranslate2 (it also warms up) sizes the input so that a raw run takes the time the
     budget allows; then raw CTranslate2 (translate_iterable on pre-tokenized pieces, in-process, one
     Translator per preset and compute type) and the whole `rest sample` command in a subprocess run on
     the same sources, one after the other (order alternating between --repeats). N=8, T=0.8, full
     distribution, up to 64 tokens, same seed. float32 runs at --reference-batch only. Reports tokens/s
     and candidates/s, the ratio rest / raw of the whole command (start-up included: interpreter,
     imports, CUDA context, model load) and of the command's own decoding time (the "in X s" of its
     summary line, 0.1 s resolution), and the start-up seconds. Target: ratio >= 0.9.

Finetuning goes first because its length is known from its step counts; sampling sizes its inputs to
the time left.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_finetune import (  # noqa: E402  # noqa: E402
    LR,
    MULTI30K,
    SEED,
    BareLoop,
    build_parent,
    check_padding,
    load_texts,
    make_plan,
    synchronizer,
    tokenized,
    write_jsonl,
)
from bench_sample import build_model, load_sources  # noqa: E402

from rest_cli.models import modeldir  # noqa: E402
from rest_cli.models.native.tokenizer import Tokenizer, train_tokenizer  # noqa: E402
from rest_cli.sampling import DecodeOptions  # noqa: E402
from rest_cli.train.options import FinetuneOptions  # noqa: E402
from rest_cli.train.run import finetune  # noqa: E402
from rest_cli.train.trainer import validation_loss  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
N, TEMPERATURE, MAX_LENGTH = 8, 0.8, 64
SUMMARY = re.compile(r"(\d+) candidates, (\d+) tokens in ([\d.]+) s")

# Sizes of the GPU run and of the CPU check (--quick). Compute types default by device.
FULL = dict(budget_s=420.0, sample_presets="iwslt,base", batch_sizes="32,128,512,8192t",
            reference_batch="128", train_preset="iwslt", train_batch_tokens="8192,16384", warmup_steps=5,
            steps=30, pairs=20000, heldout=512, min_sources=64, max_sources=8192, run_s=(1.5, 8.0),
            matmul_sizes=(2048, 4096, 8192))
QUICK = dict(budget_s=150.0, sample_presets="tiny,base", batch_sizes="8,32,1024t", reference_batch="32",
             train_preset="tiny", train_batch_tokens="512,1024", warmup_steps=1, steps=3, pairs=2000,
             heldout=64, min_sources=16, max_sources=256, run_s=(0.3, 1.5), matmul_sizes=(256, 512))
COMPUTE_TYPES = {"cuda": "float16,int8_float16,float32", "cpu": "int8,float32"}


# --- Timing, budget and the results file ---------------------------------------------------

class Budget:
    """Seconds since the start, and what is left of `seconds` (or of a share of them)."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self, share: float = 1.0) -> float:
        return share * self.seconds - self.elapsed()


class Report:
    """Everything measured, written to --json after every addition (atomically)."""

    def __init__(self, path: str | None, meta: dict):
        self.path, self.data = path, {"meta": meta, "matmul": {}, "finetune": [], "sampling": [],
                                      "skipped": [], "errors": [], "complete": False}

    def add(self, section: str, item) -> None:
        self.data[section].append(item)
        self.save()

    def save(self) -> None:
        if not self.path:
            return
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(tmp, path)


def device_info(device: str) -> dict:
    import ctranslate2

    info = {"device": device, "torch": torch.__version__, "ctranslate2": ctranslate2.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch_cuda": torch.version.cuda, "torch_cuda_available": torch.cuda.is_available(),
            "ct2_cuda_device_count": ctranslate2.get_cuda_device_count()}
    try:
        info["ct2_compute_types"] = sorted(ctranslate2.get_supported_compute_types(device))
    except RuntimeError as err:  # no CUDA driver: CTranslate2 raises rather than returning nothing
        info["ct2_compute_types"], info["ct2_error"] = [], str(err)
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(name=torch.cuda.get_device_name(0), capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1),
                    bf16_supported=torch.cuda.is_bf16_supported(),
                    allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    else:
        info.update(name=platform.processor() or platform.machine(), torch_threads=torch.get_num_threads())
    return info


# --- 1. Matmul peak ------------------------------------------------------------------------

def matmul_tflops(size: int, dtype: torch.dtype, device: str, seconds: float) -> float:
    """TFLOP/s of square matmuls over about `seconds`, after a warm-up, synchronized."""
    sync = synchronizer(device)
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    a @ b
    sync()
    done, start = 0, time.perf_counter()
    while done < 1 or time.perf_counter() - start < seconds:
        for _ in range(8 if device == "cuda" else 1):  # queue several, then wait: launch latency aside
            a @ b
            done += 1
        sync()
    return 2 * size**3 * done / (time.perf_counter() - start) / 1e12


def measure_matmul(device: str, sizes: tuple[int, ...]) -> dict:
    """TFLOP/s per precision and size, and the peaks (best over sizes) the training runs are measured
    against."""
    kinds = [("fp32", torch.float32, False), ("bf16", torch.bfloat16, False)]
    if device == "cuda":
        kinds.insert(1, ("tf32", torch.float32, True))
    flag = torch.backends.cuda.matmul.allow_tf32
    table: dict[str, dict[str, float]] = {}
    try:
        for name, dtype, tf32 in kinds:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            table[name] = {str(n): matmul_tflops(n, dtype, device, 0.3 if device == "cuda" else 0.2)
                           for n in sizes}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = flag
    return {"tflops": table, "peak": {name: max(v.values()) for name, v in table.items()}}


# --- 2. Finetune ---------------------------------------------------------------------------

class Clock:
    """rest's on_progress callback: times rest's step (synchronized), then steps the passengers, order
    alternating."""

    def __init__(self, passengers: list[BareLoop], device: str):
        self.passengers, self.sync = passengers, synchronizer(device)
        self.times: list[float] = []
        self.last: float | None = None

    def __call__(self, progress) -> None:
        self.sync()
        now = time.perf_counter()
        # step 1's start is not seen
        self.times.append(now - self.last if self.last is not None else math.nan)
        for passenger in (self.passengers if progress.step % 2 else self.passengers[::-1]):
            passenger.step()
        self.sync()
        self.last = time.perf_counter()


@dataclass
class TrainSetup:
    jsonl: Path
    data: object  # TokenizedPairs of the training file
    heldout: object
    parent: Path
    device: str
    threads: int


def prepare_finetune(args, work: Path) -> TrainSetup:
    jsonl = write_jsonl(work / "train.jsonl", load_texts(args.pairs, "train"))
    heldout_jsonl = write_jsonl(work / "heldout.jsonl", load_texts(args.heldout, "val"))
    texts = [t for line in jsonl.read_bytes().splitlines() for t in orjson.loads(line).values()
             if isinstance(t, str)]
    spm = train_tokenizer(list(dict.fromkeys(texts)), work / "spm", vocab_size=8000, seed=SEED)
    parent = build_parent(work / f"parent-{args.train_preset}", spm, args.train_preset)
    return TrainSetup(jsonl, tokenized(jsonl, spm), tokenized(heldout_jsonl, spm), parent, args.device,
                      args.threads)


def finetune_run(setup: TrainSetup, plan, batch_tokens: int, bf16: bool, passengers_bf16: list[bool],
                 out: Path) -> tuple[list[float], float, float, list[BareLoop]]:
    """rest's finetune() with bare loops stepped between its steps: rest's step times, train and
    held-out loss."""
    loops = [BareLoop(setup.parent, setup.data, plan, None, b, setup.device) for b in passengers_bf16]
    clock, steps = Clock(loops, setup.device), len(plan.batches)
    options = FinetuneOptions(steps=steps, batch_tokens=batch_tokens, lr=LR, seed=SEED,
                              threads=setup.threads or None, device=setup.device, bf16=bf16, log_every=steps,
                              checkpoint_every=10**9)
    record = finetune(str(setup.jsonl), out, options, init_dir=setup.parent, on_progress=clock)
    if record["tokens_seen"] != sum(plan.tokens):  # the same batches as the plan, counted the same way
        raise RuntimeError(f"rest saw {record['tokens_seen']} tokens, the plan has {sum(plan.tokens)}")
    if record["bf16"] != bf16 or not record["device"].startswith(setup.device):
        raise RuntimeError(f"rest ran on {record['device']} with bf16={record['bf16']}, not as asked")
    heldout = validation_loss(modeldir.load_model(out, setup.device), setup.heldout, batch_tokens,
                              setup.device)
    shutil.rmtree(out, ignore_errors=True)
    return clock.times, record["train_loss"][-1][1], heldout, loops


def variant_row(name: str, times: list[float], plan, warmup: int, peaks: dict, precision: str,
                train_loss: float, heldout_loss: float, reference: list[float] | None) -> dict:
    timed = times[warmup:]
    tflops = sum(plan.flops[warmup:]) / sum(timed) / 1e12
    paired = statistics.median(b / a for a, b in zip(timed, reference[warmup:])) if reference else None
    return {"variant": name, "tokens_per_s": sum(plan.tokens[warmup:]) / sum(timed),
            "ms_per_step": 1000 * statistics.median(timed), "tflops": tflops,
            "pct_peak": 100 * tflops / peaks[precision],
            "peak": f"{precision} {peaks[precision]:.4g} TFLOP/s",
            "speed_vs_bare": paired, "train_loss": train_loss, "heldout_loss": heldout_loss,
            "timed_steps": len(timed), "tokens_per_step": statistics.median(plan.tokens[warmup:])}


def finetune_pair(setup: TrainSetup, plan, batch_tokens: int, bf16: bool, warmup: int, peaks: dict,
                  work: Path) -> list[dict]:
    """One rest run (fp32 or bf16) with its passengers, as table rows."""
    precision = "bf16" if bf16 else "fp32"
    passengers = [True] if bf16 else [False, True]
    times, train, held, loops = finetune_run(setup, plan, batch_tokens, bf16, passengers,
                                             work / f"ft-{batch_tokens}-{precision}")
    same = next(loop for loop in loops if loop.bf16 == bf16)
    rows = [variant_row(f"rest finetune, {precision}", times, plan, warmup, peaks, precision, train, held,
                        same.times)]
    for loop in loops:
        name = f"bare loop, {'bf16' if loop.bf16 else 'fp32'}" + (" (beside rest bf16)" if bf16 else "")
        held_bare = validation_loss(loop.model, setup.heldout, batch_tokens, setup.device)
        rows.append(variant_row(name, loop.times, plan, warmup, peaks, "bf16" if loop.bf16 else "fp32",
                                loop.train_loss, held_bare, None))
    return [{"batch_tokens": batch_tokens, "run": f"rest {precision}", **row} for row in rows]


def finetune_phase(args, budget: Budget, report: Report, work: Path, peaks: dict) -> None:
    setup = prepare_finetune(args, work)
    config = modeldir.model_config(setup.parent)
    print(f"\n[finetune] preset {args.train_preset}: d_model {config.d_model}, "
          f"{config.enc_layers}+{config.dec_layers} layers, vocab {config.vocab_size}; "
          f"{args.warmup_steps} warm-up + {args.steps} timed steps per run", flush=True)
    last_run = 0.0
    for batch_tokens in map(int, args.train_batch_tokens.split(",")):
        plan = make_plan(setup.data, config, batch_tokens, args.warmup_steps + args.steps)
        check_padding(setup.data, plan)
        for bf16 in (False, True):
            what = f"finetune {batch_tokens} tokens {'bf16' if bf16 else 'fp32'}"
            if budget.left(args.finetune_share) < last_run:
                report.add("skipped", f"{what}: would overrun the budget's finetune share")
                print(f"  skipped {what}: budget", flush=True)
                continue
            start = time.perf_counter()
            try:
                rows = finetune_pair(setup, plan, batch_tokens, bf16, args.warmup_steps, peaks, work)
            except Exception as err:  # recorded, and the run goes on: GPU time is scarce
                report.add("errors", f"{what}: {type(err).__name__}: {err}")
                print(f"  ERROR {what}: {type(err).__name__}: {err}", flush=True)
                continue
            finally:
                release_memory(args.device)
            last_run = time.perf_counter() - start
            for row in rows:
                report.add("finetune", row)
            print(f"  {what}: {last_run:.1f} s; " + "; ".join(
                f"{r['variant']} {r['tokens_per_s']:,.0f} tok/s" for r in rows), flush=True)


def release_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# --- 3. Sampling ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleConfig:
    preset: str
    compute_type: str
    batch_size: int
    batch_type: str  # examples or tokens

    @property
    def batch(self) -> str:
        return f"{self.batch_size} {self.batch_type}"


@dataclass
class SampleRun:
    seconds: float  # wall time: for rest, the whole command
    candidates: int
    tokens: int
    in_command_s: float | None = None  # rest only: its own summary's time (after start-up)


def parse_batch(text: str) -> tuple[int, str]:
    return (int(text[:-1]), "tokens") if text.endswith("t") else (int(text), "examples")


def sample_configs(args, supported: list[str]) -> tuple[list[SampleConfig], list[str]]:
    """The grid in the order it runs (most important first), and what this device cannot run."""
    batches = [parse_batch(b) for b in args.batch_sizes.split(",")]
    configs, unsupported = [], []
    for preset in args.sample_presets.split(","):
        for ct in args.compute_types.split(","):
            if ct not in supported:
                unsupported.append(f"sampling {preset} {ct}: not supported on {args.device} "
                                   f"({', '.join(supported)})")
                continue
            chosen = batches if ct != "float32" else [parse_batch(args.reference_batch)]
            configs += [SampleConfig(preset, ct, size, kind) for size, kind in chosen]
    return configs, unsupported


def raw_run(translator, pieces: list[list[str]], config: SampleConfig, sync) -> SampleRun:
    """CTranslate2 alone on pre-tokenized sources, nothing written."""
    options = DecodeOptions(n=N, temperature=TEMPERATURE, max_length=MAX_LENGTH).ctranslate2_kwargs()
    sync()
    start = time.perf_counter()
    results = list(translator.translate_iterable(pieces, max_batch_size=config.batch_size,
                                                 batch_type=config.batch_type, **options))
    sync()
    elapsed = time.perf_counter() - start
    hypotheses = [h for r in results for h in r.hypotheses]
    return SampleRun(elapsed, len(hypotheses), sum(map(len, hypotheses)))


def rest_run(model_dir: Path, source_file: Path, config: SampleConfig, args, timeout: float) -> SampleRun:
    """The whole `rest sample` command in a subprocess, JSONL in and out."""
    out = source_file.with_suffix(".out.jsonl")
    command = [sys.executable, "-m", "rest_cli", "sample", "-m", str(model_dir), "-n", str(N),
               "--temperature", str(TEMPERATURE), "--max-length", str(MAX_LENGTH), "--device", args.device,
               "--compute-type", config.compute_type, "--threads", str(args.threads),
               "--batch-size", str(config.batch_size), "--batch-type", config.batch_type, "-o", str(out),
               str(source_file)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, cwd=REPO, timeout=timeout)
    elapsed = time.perf_counter() - start
    stderr = result.stderr.decode(errors="replace")
    if result.returncode != 0 or not (found := SUMMARY.search(stderr)):
        raise RuntimeError(f"rest sample exited {result.returncode}: {stderr.strip()[-500:]}")
    out.unlink(missing_ok=True)
    return SampleRun(elapsed, int(found[1]), int(found[2]), float(found[3]))


def make_translator(model_dir: Path, compute_type: str, pieces: list[list[str]], args):
    """A seeded Translator, warmed up on a few sources (the first calls on a GPU set up its libraries)."""
    import ctranslate2

    ctranslate2.set_random_seed(0)  # rest sample's default seed; must come before the Translator
    translator = ctranslate2.Translator(str(model_dir / "ctranslate2"), device=args.device,
                                        compute_type=compute_type, intra_threads=args.threads)
    raw_run(translator, pieces[:args.min_sources],
            SampleConfig("", compute_type, args.min_sources, "examples"), synchronizer(args.device))
    return translator


class SampleEstimates:
    """Running estimates that size the next configuration's input to the time left.

    A configuration takes about `fixed` (rest's start-ups and the calibration run) plus `factor`
    times the planned seconds of one raw run; both start as guesses (rest taking 1.1x raw) and
    become the means of what was measured.
    """

    def __init__(self, device: str, repeats: int):
        self.repeats = repeats
        self.startup = [5.0 if device == "cuda" else 3.0]
        self.calibration, self.factor = [1.0], [2.1 * repeats]
        self.measured = False

    def fixed(self) -> float:
        return statistics.mean(self.startup) * self.repeats + statistics.mean(self.calibration)

    def add(self, startup: float, calibration: float, seconds: float, run_s: float) -> None:
        """What one configuration took: rest's start-up, the calibration, all of it, and the run
        length planned."""
        if not self.measured:
            self.startup, self.calibration, self.factor, self.measured = [], [], [], True
        self.startup.append(startup)
        self.calibration.append(calibration)
        self.factor.append(max(seconds - self.fixed(), 0.0) / run_s)

    def run_seconds(self, left: float, configs_left: int, low: float, high: float) -> float:
        """Seconds per raw run so that the remaining configurations fit in `left`."""
        per_run = (left / configs_left - self.fixed()) / max(statistics.mean(self.factor), 1.0)
        return min(high, max(low, per_run))

    def needed(self, run_s: float) -> float:
        return self.fixed() + statistics.mean(self.factor) * run_s


def measure_config(config: SampleConfig, translator, pieces, texts, model_dir: Path, run_s: float, args,
                   work: Path) -> tuple[dict, float]:
    """Calibrate, then raw and rest on the same sources; a table row and the calibration's seconds."""
    sync = synchronizer(args.device)
    mean_len = statistics.mean(map(len, pieces))
    worth = config.batch_size if config.batch_type == "examples" else int(config.batch_size / mean_len) + 1
    calibration_n = min(max(2 * worth, args.min_sources), args.max_sources)
    calibration = raw_run(translator, pieces[:calibration_n], config, sync)
    count = int(calibration_n / calibration.seconds * run_s)
    count = min(max(count, worth, args.min_sources), args.max_sources)
    source_file = work / f"src-{count}.jsonl"
    if not source_file.exists():
        source_file.write_bytes(b"".join(orjson.dumps({"id": i, "src": t}) + b"\n"
                                         for i, t in enumerate(texts[:count])))
    raws, rests = [], []
    for repeat in range(args.repeats):
        for side in (("raw", "rest") if repeat % 2 == 0 else ("rest", "raw")):
            if side == "raw":
                raws.append(raw_run(translator, pieces[:count], config, sync))
            else:
                rests.append(rest_run(model_dir, source_file, config, args, timeout=120 + 20 * run_s))
    return sample_row(config, count, raws, rests), calibration.seconds


def sample_row(config: SampleConfig, count: int, raws: list[SampleRun], rests: list[SampleRun]) -> dict:
    raw, rest = min(raws, key=lambda r: r.seconds), min(rests, key=lambda r: r.seconds)
    raw_rate = raw.tokens / raw.seconds

    def side(run: SampleRun) -> dict:
        return {"seconds": run.seconds, "tokens": run.tokens, "candidates": run.candidates,
                "tokens_per_s": run.tokens / run.seconds, "candidates_per_s": run.candidates / run.seconds}

    in_command = rest.tokens / rest.in_command_s if rest.in_command_s else math.nan
    return {**asdict(config), "batch": config.batch, "sources": count, "raw": side(raw),
            "rest": {**side(rest), "in_command_s": rest.in_command_s,
                     "startup_s": rest.seconds - rest.in_command_s,
                     "in_command_tokens_per_s": in_command},
            "ratio": rest.tokens / rest.seconds / raw_rate, "ratio_in_command": in_command / raw_rate,
            "same_tokens": rest.tokens == raw.tokens, "repeats": len(raws)}


def sampling_phase(args, budget: Budget, report: Report, work: Path, supported: list[str]) -> None:
    configs, unsupported = sample_configs(args, supported)
    for note in unsupported:
        report.add("skipped", note)
    texts = load_sources(args.max_sources)
    estimates, done = SampleEstimates(args.device, args.repeats), 0
    print(f"\n[sampling] {len(configs)} configurations; N={N}, T={TEMPERATURE}, "
          f"up to {MAX_LENGTH} tokens", flush=True)
    for preset in dict.fromkeys(c.preset for c in configs):
        model_dir = build_model(work / f"sample-{preset}", list(dict.fromkeys(texts)), preset)
        pieces = Tokenizer(model_dir / "spm.model").encode_pieces(texts)
        for compute_type in dict.fromkeys(c.compute_type for c in configs if c.preset == preset):
            translator = make_translator(model_dir, compute_type, pieces, args)
            for config in [c for c in configs if c.preset == preset and c.compute_type == compute_type]:
                run_s = estimates.run_seconds(budget.left(), len(configs) - done, *args.run_s)
                done += 1
                sample_one(config, translator, pieces, texts, model_dir, run_s, args, work, budget, report,
                           estimates)
            del translator
            release_memory(args.device)


def sample_one(config, translator, pieces, texts, model_dir, run_s, args, work, budget, report,
               estimates) -> None:
    what = f"sampling {config.preset} {config.compute_type} batch {config.batch}"
    if budget.left() < estimates.needed(run_s):
        report.add("skipped", f"{what}: would overrun the budget")
        print(f"  skipped {what}: budget", flush=True)
        return
    start = time.perf_counter()
    try:
        row, calibration_s = measure_config(config, translator, pieces, texts, model_dir, run_s, args, work)
    except Exception as err:  # recorded, and the run goes on
        report.add("errors", f"{what}: {type(err).__name__}: {err}")
        print(f"  ERROR {what}: {type(err).__name__}: {err}", flush=True)
        return
    estimates.add(row["rest"]["startup_s"], calibration_s, time.perf_counter() - start, run_s)
    report.add("sampling", row)
    print(f"  {what}: {row['sources']} sources, raw {row['raw']['tokens_per_s']:,.0f} tok/s, rest "
          f"{row['rest']['tokens_per_s']:,.0f} tok/s (ratio {row['ratio']:.3f}, in-command "
          f"{row['ratio_in_command']:.3f}, start-up {row['rest']['startup_s']:.1f} s)", flush=True)


# --- Tables --------------------------------------------------------------------------------

def print_tables(data: dict) -> None:
    meta = data["meta"]
    print(f"\n=== Results: {meta['info']['name']} ({meta['device']}); whole run "
          f"{meta.get('elapsed_s', 0):.0f} s of a {meta['budget_s']:.0f} s budget ===")
    print("\nMatmul TFLOP/s (square n x n):")
    for name, row in data["matmul"].get("tflops", {}).items():
        print(f"  {name:5} " + "  ".join(f"n={n}: {v:8.3g}" for n, v in row.items()))
    print_finetune(data["finetune"])
    print_sampling(data["sampling"])
    for title in ("skipped", "errors"):
        for line in data[title]:
            print(f"{title}: {line}")


def print_finetune(rows: list[dict]) -> None:
    if not rows:
        return
    print(f"\nFinetune ({rows[0]['timed_steps']} timed steps); x bare = median over steps of the bare loop's "
          "time / rest's, same batch, same precision; %peak against the matching matmul peak")
    print(f"  {'batch':>6} {'variant':32} {'tokens/s':>10} {'ms/step':>8} {'TFLOP/s':>8} {'%peak':>6} "
          f"{'x bare':>7} {'train':>7} {'held-out':>8}")
    for r in rows:
        paired = f"{r['speed_vs_bare']:7.3f}" if r["speed_vs_bare"] is not None else f"{'-':>7}"
        print(f"  {r['batch_tokens']:>6} {r['variant']:32} {r['tokens_per_s']:10,.0f} "
              f"{r['ms_per_step']:8.1f} {r['tflops']:8.3g} {r['pct_peak']:5.1f}% {paired} "
              f"{r['train_loss']:7.4f} {r['heldout_loss']:8.4f}")


def print_sampling(rows: list[dict]) -> None:
    if not rows:
        return
    print(f"\nSampling, N={N}, T={TEMPERATURE}, up to {MAX_LENGTH} tokens; ratio = rest tokens/s / raw "
          "(whole command; in-command: after start-up); target >= 0.9")
    print(f"  {'preset':6} {'compute':13} {'batch':>14} {'sources':>7} {'raw tok/s':>10} {'cand/s':>8} "
          f"{'rest tok/s':>10} {'cand/s':>8} {'ratio':>6} {'in-cmd':>6} {'start s':>7}")
    for r in rows:
        raw, rest = r["raw"], r["rest"]
        print(f"  {r['preset']:6} {r['compute_type']:13} {r['batch']:>14} {r['sources']:7d} "
              f"{raw['tokens_per_s']:10,.0f} {raw['candidates_per_s']:8,.0f} {rest['tokens_per_s']:10,.0f} "
              f"{rest['candidates_per_s']:8,.0f} {r['ratio']:6.3f} {r['ratio_in_command']:6.3f} "
              f"{rest['startup_s']:7.1f}")
    whole, inside = sum(r["ratio"] >= 0.9 for r in rows), sum(r["ratio_in_command"] >= 0.9 for r in rows)
    print(f"  ratio >= 0.9 in {whole} of {len(rows)} configurations for the whole command, "
          f"{inside} of {len(rows)} after start-up")


# --- Main ----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the script works")
    parser.add_argument("--json", help="write the results here (after every measurement)")
    parser.add_argument("--budget-s", type=float,
                        help="seconds the whole run plans for (default 420, quick 150)")
    parser.add_argument("--repeats", type=int, default=1, help="raw/rest pairs per sampling configuration")
    parser.add_argument("--threads", type=int, help="CPU threads for CTranslate2 and torch (default: 0 = "
                                                     "CTranslate2 decides on cuda, 2 on cpu)")
    parser.add_argument("--compute-types", help=f"sampling compute types (default {COMPUTE_TYPES})")
    for name in ("sample_presets", "batch_sizes", "reference_batch", "train_preset", "train_batch_tokens"):
        parser.add_argument("--" + name.replace("_", "-"),
                            help=f"default {FULL[name]!r}, quick {QUICK[name]!r}")
    for name in ("warmup_steps", "steps", "pairs", "heldout", "max_sources"):
        parser.add_argument("--" + name.replace("_", "-"), type=int,
                            help=f"default {FULL[name]}, quick {QUICK[name]}")
    parser.add_argument("--finetune-share", type=float, default=0.5,
                        help="share of the budget finetuning may use")
    args = parser.parse_args(argv)
    return fill_defaults(args)


def fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    sizes = QUICK if args.quick else FULL
    for name, value in sizes.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.compute_types = args.compute_types or COMPUTE_TYPES[args.device]
    args.threads = args.threads if args.threads is not None else (2 if args.device == "cpu" else 0)
    if args.warmup_steps < 1:  # rest's first step has no start to time from
        sys.exit("bench_gpu: --warmup-steps must be at least 1")
    if args.budget_s < sizes["budget_s"]:  # a smaller budget: fewer steps, in proportion
        scale = args.budget_s / sizes["budget_s"]
        args.steps = max(2, round(args.steps * scale))
        args.warmup_steps = max(1, round(args.warmup_steps * scale))
    return args


def main() -> None:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: torch sees no CUDA device; use --device cpu --quick to check the script")
    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    budget = Budget(args.budget_s)
    info = device_info(args.device)
    data = {"train": "Multi30k train" if (MULTI30K / "train.de").exists() else "synthetic",
            "sampling": "Multi30k val.de" if (MULTI30K / "val.de").exists() else "synthetic"}
    report = Report(args.json, {"device": args.device, "info": info, "budget_s": args.budget_s, "data": data,
                                "args": vars(args), "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    print("device: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    print(f"data: {data['train']} pairs for finetuning, {data['sampling']} sources for sampling", flush=True)
    report.data["matmul"] = measure_matmul(args.device, args.matmul_sizes)
    report.save()
    print("matmul peak TFLOP/s: "
          + ", ".join(f"{k} {v:.3g}" for k, v in report.data["matmul"]["peak"].items()), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as tmp:
        finetune_phase(args, budget, report, Path(tmp), report.data["matmul"]["peak"])
        sampling_phase(args, budget, report, Path(tmp), info["ct2_compute_types"])
    report.data["meta"]["elapsed_s"] = budget.elapsed()
    report.data["complete"] = True
    report.save()
    print_tables(report.data)
    if args.json:
        print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()
