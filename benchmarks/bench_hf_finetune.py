"""`rest finetune` on imported Hugging Face models against a bare transformers loop, whole and with LoRA.

    .venv/bin/python benchmarks/bench_hf_finetune.py [--models llama,marian] [--steps 10] [--warmup-steps 2]
        [--batch-tokens 1024] [--threads 1] [--lora-rank 8] [--rss-steps 4] [--size small|tiny]

The models are bench_hf_sample.py's: a random Llama of 16.8M parameters (hf-causal) and a random
Marian of 15.9M (hf-seq2seq, OPUS-MT's layout, dropout 0.1 as transformers' default), built from a
config, saved with `save_pretrained` and imported with the function behind `rest import`. The data
are Multi30k German-English training pairs (../shared/data, else synthetic): `src` German, `ref`
English; for the Llama the German is the prompt (read, not learnt) and the English its continuation.

  1. Speed, paired step by step. `rest_cli.train.run.finetune()` (the library call behind `rest
     finetune --init POLICY`) trains for --warmup-steps + --steps steps; its `on_progress` callback
     steps a bare loop on the same batch right after each of rest's steps, so each rest step has a
     bare step on the same tokens beside it in time; the ratio is the median over steps of bare
     time / rest time (>= 0.95 is the target). rest's step runs from the end of one callback to the
     start of the next: all it does per step (collating, forward, loss, backward, clipping,
     optimizer, bookkeeping), none of the start-up or the final save and export.
     The bare loop is what one writes with transformers alone: the same parent weights
     (`from_pretrained`, float32, seeded as rest seeds), the same index batches in the same order
     (`make_batches` on rest's tokenization), tensors padded beforehand by its own code (checked
     equal to rest's `collate` where it matters: ids and attention where attended, labels where
     trained); forward with `use_cache=False`, `cross_entropy(reduction="sum", ignore_index=-100)`
     on the continuation (and end token) only, divided by the trained tokens, backward,
     `clip_grad_norm_(1.0)`, fused AdamW(betas 0.9, 0.98, no weight decay) under rest's schedule
     (linear warm-up over 10% of the steps, then 1/sqrt). For Marian both train the logits without
     <pad> (CTranslate2 drops it from the vocabulary: rest_cli/models/hf/batches.py). Each loop
     keeps its own RNG state, so both draw the same dropout masks: their losses must agree.
  2. The same with LoRA (rank --lora-rank, alpha 2 x rank, all-linear: rest's defaults; the bare
     loop calls peft's `get_peft_model` with the same LoraConfig). The optimizer state is counted
     from the optimizers themselves (a global optimizer step hook: the bytes of every tensor in
     `optimizer.state` after a step) for rest and the bare loop, full and LoRA.
  3. Peak RSS, each in a child process (VmHWM of /proc/self/status, which exec resets): `finetune()`
     for --rss-steps steps, read at its last step (training) and after it wrote the model directory
     (save_pretrained and the CTranslate2 export), against the bare loop alone for the same steps,
     and the model's safetensors on disk.

Tokens are counted as rest counts them (`Batch.tokens`): attended input tokens + trained tokens, no
padding; both sides train the same batches, so tokens/s compare like for like.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hf_sample import build_policy, load_texts  # noqa: E402

from rest_cli.models.modeldir import kind_of, load_tokenizer, model_config  # noqa: E402
from rest_cli.train.data import DataStats, Pair, TokenizedPairs, collate, make_batches, tokenize_pairs  # noqa: E402
from rest_cli.train.options import FinetuneOptions  # noqa: E402
from rest_cli.train.run import finetune  # noqa: E402
from rest_cli.train.trainer import lr_factor  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SEED, MAX_LENGTH = 0, 128
LR = {False: 5e-5, True: 2e-4}  # full fine-tuning, LoRA (docs/models.md's advice)
IGNORE = -100


# --- Data ----------------------------------------------------------------------------------

def write_pairs(path: Path, count: int) -> Path:
    pairs = zip(load_texts("train", "de", count), load_texts("train", "en", count))
    path.write_bytes(b"".join(orjson.dumps({"id": i, "src": de, "ref": en}) + b"\n"
                              for i, (de, en) in enumerate(pairs)))
    return path


def tokenized(jsonl: Path, policy: Path) -> TokenizedPairs:
    """The pairs as rest tokenizes them for this policy (what `finetune()` does before training)."""
    kind, tokenizer = kind_of(policy), load_tokenizer(policy)
    records = [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]
    pairs = [Pair(r["src"], r["ref"]) for r in records]
    return tokenize_pairs(pairs, kind, tokenizer, MAX_LENGTH, DataStats(str(jsonl)))


def plan_batches(data: TokenizedPairs, batch_tokens: int, steps: int) -> list[np.ndarray]:
    """rest's batches of the first `steps` steps: make_batches per epoch, from the seed (trainer.py)."""
    batches, epoch = [], 0
    while len(batches) < steps:
        batches += make_batches(data.src_lengths, data.tgt_lengths, batch_tokens, SEED, epoch)
        epoch += 1
    return batches[:steps]


@dataclass
class Tensors:
    """One batch as the bare loop feeds it: model inputs, labels (IGNORE where nothing is trained)."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    tokens: int  # attended inputs + trained labels: rest's count


def bare_tensors(data: TokenizedPairs, indices: np.ndarray, policy: Path) -> Tensors:
    """The bare loop's own padding of one batch (right padding, an attention mask, labels IGNORE'd)."""
    tok = load_tokenizer_cached(policy)
    sources = [data.src[data.src_start[i]:data.src_start[i + 1]].tolist() for i in indices.tolist()]
    targets = [data.tgt[data.tgt_start[i]:data.tgt_start[i + 1]].tolist() for i in indices.tolist()]
    ends = [[] if data.cut[i] else [tok.hf.eos_token_id] for i in indices.tolist()]
    pad = tok.hf.pad_token_id if tok.hf.pad_token_id is not None else tok.hf.eos_token_id
    if not tok.encoder_decoder:  # one sequence: prompt, target, end; the prompt is never a label
        rows = [s + t + e for s, t, e in zip(sources, targets, ends)]
        labels = [[IGNORE] * (len(s) - 1) + t + e for s, t, e in zip(sources, targets, ends)]
        ids, mask = _pad([r[:-1] for r in rows], pad)
        inputs = {"input_ids": ids, "attention_mask": mask}
    else:  # the decoder starts from its start token; it learns the target and its end token
        start = load_config_cached(policy)["decoder_start_token_id"]
        labels = [t + e for t, e in zip(targets, ends)]
        ids, mask = _pad(sources, pad)
        decoder, _ = _pad([[start] + row[:-1] for row in labels], pad)
        inputs = {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder}
    labels, _ = _pad(labels, IGNORE)
    return Tensors(inputs, labels, int(mask.sum() + labels.ne(IGNORE).sum()))


def _pad(rows: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row, dtype=torch.long), 1
    return ids, mask


_CACHE: dict = {}


def load_tokenizer_cached(policy: Path):
    return _CACHE.setdefault(("tok", policy), load_tokenizer(policy))


def load_config_cached(policy: Path) -> dict:
    return _CACHE.setdefault(("cfg", policy), json.loads((policy / "hf" / "config.json").read_text()))


def check_tensors(data: TokenizedPairs, batches: list[np.ndarray], tensors: list[Tensors],
                  policy: Path) -> None:
    """The bare loop trains what rest trains: equal ids where attended, equal labels where trained."""
    kind, tokenizer = kind_of(policy), load_tokenizer_cached(policy)
    for indices, bare in zip(batches, tensors):
        batch = collate(data, indices, kind, tokenizer)
        ours = bare.inputs
        attended = ours["attention_mask"].bool()
        same = (torch.equal(batch.inputs["attention_mask"].bool(), attended)
                and torch.equal(batch.inputs["input_ids"][attended], ours["input_ids"][attended])
                and torch.equal(batch.mask, bare.labels.ne(IGNORE))
                and torch.equal(batch.labels[batch.mask], bare.labels[batch.mask])
                and batch.tokens == bare.tokens)
        if "decoder_input_ids" in ours:
            trained = batch.mask
            same = same and torch.equal(batch.inputs["decoder_input_ids"][trained],
                                        ours["decoder_input_ids"][trained])
        if not same:
            raise RuntimeError("the bare loop's batch differs from rest's collate()")


# --- The bare loop -------------------------------------------------------------------------

def load_parent(policy: Path, lora_rank: int | None):
    """The parent as a transformers user loads it (float32), LoRA-wrapped by peft when asked; seeded as
    rest seeds before building its model, so that adapters and dropout masks draw the same numbers."""
    import transformers

    torch.manual_seed(SEED)
    folder = str(policy / "hf")
    auto = (transformers.AutoModelForSeq2SeqLM if load_config_cached(policy).get("is_encoder_decoder")
            else transformers.AutoModelForCausalLM)
    model = auto.from_pretrained(folder, local_files_only=True, use_safetensors=True, dtype="float32")
    model = model.eval().train()
    if lora_rank is not None:
        import warnings

        import peft

        config = peft.LoraConfig(r=lora_rank, lora_alpha=2.0 * lora_rank, lora_dropout=0.0, bias="none",
                                 target_modules="all-linear")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = peft.get_peft_model(model, config)
    return model


class BareLoop:
    """transformers alone: pre-padded batches, forward, summed cross-entropy / trained tokens, backward,
    clipping, fused AdamW, rest's learning-rate schedule. Keeps its own RNG state (dropout)."""

    def __init__(self, policy: Path, tensors: list[Tensors], lr: float, lora_rank: int | None, threads: int):
        self.tensors, self.lr, self.threads = tensors, lr, threads
        self.model = load_parent(policy, lora_rank)
        self.vocab = (load_config_cached(policy)["pad_token_id"]
                      if load_config_cached(policy).get("model_type") == "marian" else None)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=lr, betas=(0.9, 0.98), weight_decay=0.0,
                                           fused=True)
        self.warmup = min(1000, len(tensors) // 10)  # rest's default: 10% of the steps
        self.rng = torch.get_rng_state()
        self.times: list[float] = []
        self.losses: list[float] = []

    def step(self) -> None:
        outer = torch.get_rng_state()
        torch.set_rng_state(self.rng)
        torch.set_num_threads(self.threads)
        start = time.perf_counter()
        self._step(len(self.times))
        self.times.append(time.perf_counter() - start)
        self.rng = torch.get_rng_state()
        torch.set_rng_state(outer)

    def _step(self, i: int) -> None:
        batch = self.tensors[i]
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * lr_factor(i + 1, self.warmup)
        self.optimizer.zero_grad(set_to_none=True)  # before the forward, as rest does: the old gradients
        logits = self.model(**batch.inputs, use_cache=False).logits  # are gone while activations peak
        if self.vocab is not None:  # Marian: the distribution CTranslate2 decodes from, without <pad>
            logits = logits[..., :self.vocab]
        count = batch.labels.ne(IGNORE).sum()
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE,
                               reduction="sum")
        (loss / count).backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        self.losses.append(float(loss.detach()) / int(count))


# --- Optimizer state -----------------------------------------------------------------------

class OptimizerStates:
    """Every optimizer that steps while installed, with the bytes of its state after its latest step."""

    def __init__(self):
        self.bytes: dict[int, int] = {}
        self.trained: dict[int, int] = {}
        self.handle = register_optimizer_step_post_hook(self._hook)

    def _hook(self, optimizer, args, kwargs) -> None:
        self.bytes[id(optimizer)] = sum(t.numel() * t.element_size() for state in optimizer.state.values()
                                        for t in state.values() if torch.is_tensor(t))
        self.trained[id(optimizer)] = sum(p.numel() for g in optimizer.param_groups for p in g["params"])

    def close(self) -> None:
        self.handle.remove()


# --- The paired runs -----------------------------------------------------------------------

class Interleaver:
    """rest's on_progress: times rest's step, then steps the bare loop on the same batch."""

    def __init__(self, bare: BareLoop):
        self.bare, self.times, self.last = bare, [], None

    def __call__(self, progress) -> None:
        now = time.perf_counter()
        self.times.append(now - self.last if self.last is not None else math.nan)  # step 1's start is unseen
        self.bare.step()
        self.last = time.perf_counter()


@dataclass
class Paired:
    """One paired run: per-step seconds of rest and of the bare loop, losses, optimizer state."""

    rest: list[float]
    bare: list[float]
    tokens: list[int]
    rest_loss: float
    bare_loss: float
    rest_state: int
    bare_state: int
    trained: int
    extra: dict = field(default_factory=dict)


def options(args, steps: int, lora: bool) -> FinetuneOptions:
    return FinetuneOptions(steps=steps, batch_tokens=args.batch_tokens, lr=LR[lora], seed=SEED,
                           threads=args.threads, device="cpu", bf16=False, max_length=MAX_LENGTH,
                           log_every=steps, checkpoint_every=10**9,
                           lora_rank=args.lora_rank if lora else None)


def paired_run(policy: Path, jsonl: Path, work: Path, tensors: list[Tensors], args, lora: bool) -> Paired:
    steps = len(tensors)
    gc.collect()
    states = OptimizerStates()
    try:
        bare = BareLoop(policy, tensors, LR[lora], args.lora_rank if lora else None, args.threads)
        clock = Interleaver(bare)
        out = work / f"out-{policy.name}-{'lora' if lora else 'full'}-{time.monotonic_ns()}"
        record = finetune(str(jsonl), out, options(args, steps, lora), init_dir=policy, on_progress=clock)
    finally:
        states.close()
    if record["tokens_seen"] != sum(t.tokens for t in tensors):
        raise RuntimeError(f"rest saw {record['tokens_seen']} tokens, the bare loop's batches hold "
                           f"{sum(t.tokens for t in tensors)}")
    bare_id = id(bare.optimizer)
    rest_id = next(i for i in states.bytes if i != bare_id)
    rest_loss = record["train_loss"][-1][1]
    bare_loss = sum(loss * t.labels.ne(IGNORE).sum().item() for loss, t in zip(bare.losses, tensors)) / sum(
        t.labels.ne(IGNORE).sum().item() for t in tensors)
    return Paired(clock.times, bare.times, [t.tokens for t in tensors], rest_loss, bare_loss,
                  states.bytes[rest_id], states.bytes[bare_id], states.trained[rest_id],
                  {"bare_trained": states.trained[bare_id], "wall_time_s": record["wall_time_s"]})


# --- Peak RSS in child processes -----------------------------------------------------------

def vm_hwm() -> int:
    """This process's peak RSS in bytes (VmHWM: reset by exec, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_main(config: dict) -> None:
    """One measured run in this (child) process; prints a JSON line of peak RSS figures."""
    policy, jsonl, work = Path(config["policy"]), Path(config["jsonl"]), Path(config["work"])
    args = argparse.Namespace(**config["args"])
    lora, steps = config["lora"], config["steps"]
    if config["side"] == "rest":
        seen = {}

        def last_step(progress) -> None:
            if progress.step == progress.total:
                seen["training"] = vm_hwm()

        finetune(str(jsonl), work / f"child-{os.getpid()}", options(args, steps, lora), init_dir=policy,
                 on_progress=last_step)
        result = {"training": seen["training"], "whole": vm_hwm()}
    else:
        torch.set_num_threads(args.threads)
        data = tokenized(jsonl, policy)
        tensors = [bare_tensors(data, b, policy) for b in plan_batches(data, args.batch_tokens, steps)]
        result = {"imports and data": vm_hwm()}
        bare = BareLoop(policy, tensors, LR[lora], args.lora_rank if lora else None, args.threads)
        result["model loaded"] = vm_hwm()
        for _ in range(steps):
            bare.step()
        result.update(training=vm_hwm(), whole=vm_hwm())
    print(json.dumps(result))


def child_rss(side: str, policy: Path, jsonl: Path, work: Path, args, lora: bool) -> dict:
    config = {"side": side, "policy": str(policy), "jsonl": str(jsonl), "work": str(work), "lora": lora,
              "steps": args.rss_steps, "args": vars(args)}
    result = subprocess.run([sys.executable, "-W", "ignore", __file__, "--child", json.dumps(config)],
                            capture_output=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"child {side} exited {result.returncode}:\n{result.stderr.decode()[-2000:]}")
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


# --- Main ----------------------------------------------------------------------------------

def compare(name: str, work: Path, jsonl: Path, args) -> dict:
    policy = build_policy(name, work, args.size)
    data = tokenized(jsonl, policy)
    steps = args.warmup_steps + args.steps
    batches = plan_batches(data, args.batch_tokens, steps)
    tensors = [bare_tensors(data, b, policy) for b in batches]
    check_tensors(data, batches, tensors, policy)
    print(f"\n[{name}] {model_config(policy)['parameters'] / 1e6:.1f}M parameters; {steps} steps "
          f"({args.warmup_steps} warm-up) of <= {args.batch_tokens} tokens (padded); per step (median) "
          f"{statistics.median(t.tokens for t in tensors):.0f} counted tokens", flush=True)
    runs: dict[str, list[Paired]] = {"full": [], "lora": []}
    rss: dict[str, list[dict]] = {}
    for repeat in range(args.repeats):
        for lora in ((False, True) if repeat % 2 == 0 else (True, False)):
            key = "lora" if lora else "full"
            run = paired_run(policy, jsonl, work, tensors, args, lora)
            runs[key].append(run)
            print(f"  repeat {repeat + 1} {key}: rest {sum(run.rest[args.warmup_steps:]):.1f} s, bare "
                  f"{sum(run.bare[args.warmup_steps:]):.1f} s over the timed steps; losses rest "
                  f"{run.rest_loss:.5f} bare {run.bare_loss:.5f}", flush=True)
    if args.rss_steps:
        for lora in (False, True):
            for side in ("rest", "bare"):
                key = f"{side} {'lora' if lora else 'full'}"
                rss[key] = [child_rss(side, policy, jsonl, work, args, lora)]
                figures = ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in rss[key][0].items())
                print(f"  peak RSS {key}: {figures}", flush=True)
    size = (policy / "hf" / "model.safetensors").stat().st_size
    return {"name": name, "parameters": model_config(policy)["parameters"], "runs": runs, "rss": rss,
            "size": size}


def summarize(result: dict, args) -> None:
    w = args.warmup_steps
    print(f"\n[{result['name']}] {result['parameters'] / 1e6:.1f}M parameters, safetensors "
          f"{result['size'] / 2**20:.1f} MiB; {args.steps} timed steps of <= {args.batch_tokens} tokens")
    print(f"  {'':6} {'rest tok/s':>10} {'bare tok/s':>10} {'rest/bare (paired)':>18} {'loss rest':>10} "
          f"{'loss bare':>10} {'trained params':>14} {'AdamW state':>12}")
    full_state = None
    for key, runs in result["runs"].items():
        tokens = runs[0].tokens[w:]
        rest = statistics.median(sum(tokens) / sum(r.rest[w:]) for r in runs)
        bare = statistics.median(sum(tokens) / sum(r.bare[w:]) for r in runs)
        paired = statistics.median(b / a for r in runs for a, b in zip(r.rest[w:], r.bare[w:]))
        state = runs[0].rest_state
        full_state = state if key == "full" else full_state
        if runs[0].rest_state != runs[0].bare_state or runs[0].trained != runs[0].extra["bare_trained"]:
            print(f"  ! optimizer state rest {runs[0].rest_state} B vs bare {runs[0].bare_state} B")
        smaller = f" ({full_state / state:.1f}x less)" if key == "lora" and full_state else ""
        print(f"  {key:6} {rest:10.0f} {bare:10.0f} {paired:18.3f} {runs[0].rest_loss:10.5f} "
              f"{runs[0].bare_loss:10.5f} {runs[0].trained:14,d} {state / 2**20:9.2f} MiB{smaller}")
    for key, values in result["rss"].items():
        v = values[0]
        stages = [name for name in ("imports and data", "model loaded") if name in v]
        before = "".join(f"{name} {v[name] / 2**20:.0f} MiB, " for name in stages)
        print(f"  peak RSS, {key:10}: {before}training {v['training'] / 2**20:5.0f} MiB, whole run "
              f"{v['whole'] / 2**20:5.0f} MiB ({v['whole'] / result['size']:.1f}x the safetensors)")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="llama,marian", help="comma-separated: llama, marian")
    parser.add_argument("--size", default="small", choices=("small", "tiny"))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--batch-tokens", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=4000, help="training pairs")
    parser.add_argument("--repeats", type=int, default=1,
                        help="paired runs of each (full, LoRA), alternating")
    parser.add_argument("--rss-steps", type=int, default=4, help="steps of each peak-RSS child (0: none)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    import peft
    import transformers

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
          f"{os.cpu_count()} cores, {args.threads} thread(s) each side", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        jsonl = write_pairs(work / "train.jsonl", args.pairs)
        results = [compare(name, work, jsonl, args) for name in args.models.split(",") if name]
    print(f"\n=== Results (medians; whole run {time.perf_counter() - started:.0f} s) ===")
    for result in results:
        summarize(result, args)


if __name__ == "__main__":
    main()
