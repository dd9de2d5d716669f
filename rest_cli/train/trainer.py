"""The Improve step's trainer: NLL (behaviour cloning) on JSONL pairs, seeded and resumable.

Each record gives `src` and a target (`hyp`, else `ref`) and optionally a `weight`. One step
minimises, over the target tokens of one batch (EOS included),

    loss = sum_i w_i * sum_t l_it / sum_i w_i * n_i

where l_it is the token's NLL (label-smoothed if asked) and n_i the record's trained tokens:
a weight-2 record counts as the same record twice in its batch; weight 0 records are dropped.

Batches come from `train_data` (length-bucketed, reproducible from the seed).
The work directory `OUTPUT.partial/` holds the tokenizer and checkpoints (plain tensors and
numbers, loaded with `weights_only=True`); the finished model replaces it at OUTPUT.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rest_cli import __version__
from rest_cli.train.distributed import World, device_of, join_world
from rest_cli.errors import InputError, RestError, Terminated, UsageError
from rest_cli.models import modeldir
from rest_cli.models.native.tokenizer import PAD_ID, Tokenizer, train_tokenizer
from rest_cli.models.native.transformer import PRESETS, ModelConfig, Seq2SeqTransformer, config_from_preset
from rest_cli.io.shards import derived_seed
from rest_cli.train.data import (Batch, DataStats, Pair, TokenizedPairs, collate, load_pairs, make_batches,
                         tokenize_pairs)

CHECKPOINT_FORMAT = 1
_NOT_FINGERPRINTED = {"threads", "device", "checkpoint_every", "log_every", "skip_invalid"}


# --- Options -------------------------------------------------------------------------------

@dataclass
class FinetuneOptions:
    """Settings of one training run; None means "the default for this mode" (see resolve_options)."""

    # The model, from scratch only: a preset, optional shape overrides and the tokenizer's size.
    preset: str | None = None  # tiny / small / base / iwslt; "base" when None
    d_model: int | None = None
    layers: int | None = None  # encoder and decoder layers each
    heads: int | None = None
    ffn_dim: int | None = None
    vocab_size: int | None = None  # upper bound on SentencePiece pieces; 8000 when None
    dropout: float | None = None  # None keeps the preset's (0.1) or the parent's
    # Optimisation.
    lr: float = 5e-4  # peak rate; the ReST loop passes a lower one at each Improve step
    warmup: int | None = None  # linear warmup steps, then inverse-sqrt decay; 0 = constant rate;
    # None = 10% of the steps, at most 1000 (an Improve step of 400 steps warms up for 40)
    steps: int | None = None  # wins over epochs when both are given
    epochs: int | None = None
    batch_tokens: int = 4096  # source + target tokens per batch, padding included
    label_smoothing: float | None = None  # 0.1 from scratch, 0.0 from a parent (behaviour cloning)
    weight_decay: float = 0.0
    clip_norm: float = 1.0  # 0 disables clipping
    max_length: int = 256  # tokens kept per side; longer sources and targets are truncated
    seed: int = 0
    # Validation and early stopping.
    valid_every: int = 500
    patience: int | None = None  # stop after this many validations without improvement
    # Running: none of these change the weights, so a run may resume with other values.
    checkpoint_every: int = 200
    log_every: int = 100
    device: str = "auto"  # cuda when available, else cpu
    bf16: bool | None = None  # autocast to bfloat16; None = on for CUDA that supports it
    threads: int | None = None
    skip_invalid: bool = False


_SHAPE = {"d_model": "d_model", "layers": "enc_layers", "heads": "n_heads", "ffn_dim": "ffn_dim"}


def resolve_options(options: FinetuneOptions, init_dir: str | os.PathLike | None = None) -> FinetuneOptions:
    """Check the options against each other and fill in the mode-dependent defaults."""
    shaping = [name for name in ("preset", "vocab_size", *_SHAPE) if getattr(options, name) is not None]
    if init_dir is not None and shaping:
        flags = ", ".join("--" + name.replace("_", "-") for name in shaping)
        raise UsageError(f"{flags}: not with --init, which keeps the parent's model shape and tokenizer")
    if options.steps is None and options.epochs is None:
        raise UsageError("give --steps or --epochs")
    if options.patience is not None and options.patience < 1:
        raise UsageError(f"--patience must be at least 1, got {options.patience}")
    _check_ranges(options)
    if init_dir is None:
        _check_shape(options)
    scratch = init_dir is None
    return replace(options, preset=(options.preset or "base") if scratch else None,
                   vocab_size=(options.vocab_size or 8000) if scratch else None,
                   label_smoothing=options.label_smoothing if options.label_smoothing is not None
                   else (0.1 if scratch else 0.0))


def _check_ranges(options: FinetuneOptions) -> None:
    at_least_one = ("steps", "epochs", "batch_tokens", "max_length", "valid_every", "checkpoint_every",
                    "log_every", "threads", "vocab_size", *_SHAPE)
    for name in at_least_one:
        value = getattr(options, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if options.seed < 0:
        raise UsageError(f"--seed must be at least 0, got {options.seed}")
    bounded = (("dropout", options.dropout, 0.0, 1.0), ("label-smoothing", options.label_smoothing, 0.0, 1.0),
               ("lr", options.lr, 0.0, math.inf), ("warmup", options.warmup, 0, math.inf))
    for name, value, low, high in bounded:
        if value is not None and not low <= value < high:
            raise UsageError(f"--{name} must be in [{low:g}, {high:g}), got {value:g}")


def _check_shape(options: FinetuneOptions) -> None:
    preset = PRESETS.get(options.preset or "base")
    if preset is None:
        raise UsageError(f"unknown preset {options.preset!r}; choose from {', '.join(PRESETS)}")
    width, heads = options.d_model or preset["d_model"], options.heads or preset["n_heads"]
    if width % heads or width % 2:  # heads split the width; sinusoidal positions pair sin and cos
        raise UsageError(f"--d-model must be even and divisible by the heads ({heads}), got {width}")


# --- Loss --------------------------------------------------------------------------------

def batch_loss(model: torch.nn.Module, batch: Batch, label_smoothing: float = 0.0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum to minimise, weighted NLL sum, weighted token count) of one batch.

    The loss is sum(w * token loss) / sum(w * tokens): the first value over the last. The
    token loss is the NLL, mixed with the mean NLL over the vocabulary when label-smoothing.
    The NLL sum is never smoothed, so NLL sum / count is the loss to report. Sums, not means,
    so that ranks of a distributed run can share one denominator.
    """
    logprobs = F.log_softmax(model(batch.src, batch.tgt_in).float(), dim=-1)  # [B, T+1, V]
    nll = -logprobs.gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1)  # [B, T+1]
    token_loss = nll if not label_smoothing else (1 - label_smoothing) * nll - label_smoothing * logprobs.mean(-1)
    weights = batch.weights.unsqueeze(1) * batch.labels.ne(PAD_ID)  # [B, T+1], 0 at padding
    count = weights.sum()
    return (token_loss * weights).sum(), (nll * weights).sum().detach(), count.detach()


@torch.no_grad()
def validation_loss(model: Seq2SeqTransformer, data: TokenizedPairs, batch_tokens: int,
                    device: torch.device | str = "cpu", bf16: bool = False, world: World = World()) -> float:
    """Weighted NLL per target token over all of `data`, in eval mode (no dropout, no smoothing).

    Ranks of a distributed run measure every size-th batch and add up what they found.
    """
    was_training, nll, count = model.training, 0.0, 0.0
    model.eval()
    batches = make_batches(data.src_lengths, data.tgt_lengths, batch_tokens, shuffle=False)
    for indices in batches[world.rank::world.size]:
        with _autocast(device, bf16):
            _, batch_nll, batch_count = batch_loss(model, collate(data, indices, device))
        nll, count = nll + batch_nll.item(), count + batch_count.item()
    model.train(was_training)
    nll, count = world.sum([nll, count], torch.device(device))
    return nll / count


def lr_factor(step: int, warmup: int) -> float:
    """Multiplier of the peak rate at (1-based) optimizer step `step`: linear warmup, then 1/sqrt decay."""
    if warmup <= 0:
        return 1.0  # no warmup: a constant rate
    return min(step / warmup, math.sqrt(warmup / step))


def _autocast(device: torch.device | str, bf16: bool):
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)


# --- Progress ------------------------------------------------------------------------------

@dataclass
class TrainProgress:
    """Where training stands, passed to `on_progress` after every step."""

    step: int
    total: int
    epoch: int
    loss: float | None  # train NLL per token over the last log interval
    valid: float | None  # the latest validation loss
    tokens_per_s: float
    eta_s: float
    logged: bool  # a log interval ended or a validation ran at this step


# --- Training state and checkpoints --------------------------------------------------------

@dataclass
class _State:
    """Everything besides model and optimizer that a resumed run needs: plain numbers and lists."""

    step: int = 0
    epoch: int = 0
    batch_index: int = 0  # next batch of this epoch
    tokens: int = 0
    window: list = field(default_factory=lambda: [0.0, 0.0])  # NLL sum and token count since the last log
    train_loss: list = field(default_factory=list)  # [step, loss]
    valid_loss: list = field(default_factory=list)  # [step, loss]
    best_loss: float | None = None
    best_step: int | None = None
    bad_validations: int = 0
    stopped_early: bool = False
    wall_time_s: float = 0.0
    resumed: int = 0
    checkpoint_step: int = -1


def partial_dir(output_dir: str | os.PathLike) -> Path:
    """The work directory of a run writing `output_dir`: its sibling `NAME.partial`."""
    output = Path(output_dir)
    return output.with_name(output.name + ".partial")


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Tied weights appear under several names: copy each tensor once, so they stay shared.
    copies: dict[int, torch.Tensor] = {}
    return {name: copies.setdefault(id(t), t.detach().to("cpu", copy=True)) for name, t in state.items()}


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _save_atomically(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as out:
        torch.save(obj, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _deferred_interrupts(request_stop: Callable[[int], None]) -> Iterator[None]:
    """Turn a first SIGINT or SIGTERM into a stop request honoured between steps.

    An interrupt inside optimizer.step() would leave half-updated weights to checkpoint;
    a second signal interrupts at once (the last periodic checkpoint stays).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in sigs}

    def first(signum, frame):
        request_stop(signum)
        for sig in sigs:
            signal.signal(sig, signal.default_int_handler)

    for sig in sigs:
        signal.signal(sig, first)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- The loop ------------------------------------------------------------------------------

class _Trainer:
    """One run's model, optimizer, data and state; steps, validates, logs and checkpoints."""

    def __init__(self, model, train: TokenizedPairs, valid: TokenizedPairs | None, options: FinetuneOptions,
                 work: Path, fingerprint: str, device: torch.device, bf16: bool, on_progress, on_message,
                 world: World = World()):
        self.model, self.train, self.valid, self.options = model.to(device).train(), train, valid, options
        self.world, self.trained = world, world.wrap(self.model, device)
        # The lengths of every rank's records, in input order, plan the batches; `local_row` says
        # which of a batch's records this rank holds (-1: another rank's).
        self.plan_src, self.plan_tgt, self.local_row = world.plan(train, device)
        self.work, self.fingerprint, self.device, self.bf16 = work, fingerprint, device, bf16
        self.on_progress, self.say = on_progress, on_message
        # The fused kernel updates all tensors in one pass: the same numbers up to rounding, 3-7x
        # faster on CPU (iwslt shape: 34 -> 10 ms of a 2.8 s step; more where steps are short).
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, betas=(0.9, 0.98),
                                           weight_decay=options.weight_decay, fused=True)
        self.state, self.best_weights = _State(), None
        # A stop asked for by a signal, and the one all ranks agreed on at the last step: in a
        # distributed run every rank must stop at the same step, or the others wait forever.
        self.stop_requested = self.stop_agreed = False
        self.stop_signal: int | None = None  # SIGTERM exits as "terminated", SIGINT as "interrupted"
        self._batches: tuple[int, list[np.ndarray]] | None = None
        self.total = options.steps or sum(len(self.epoch_batches(e)) for e in range(options.epochs))
        if options.warmup is None:
            self.options = replace(options, warmup=min(1000, self.total // 10))
        self._session = (time.monotonic(), 0, 0)  # start time, step and tokens when this process began

    @property
    def checkpoint_path(self) -> Path:
        return self.work / "checkpoint.pt"

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        if self._batches is None or self._batches[0] != epoch:
            o = self.options
            self._batches = epoch, make_batches(self.plan_src, self.plan_tgt, o.batch_tokens,
                                                o.seed, epoch)
        return self._batches[1]

    def run(self) -> None:
        """Train until the step budget or patience runs out; checkpoint and raise KeyboardInterrupt if asked to stop."""
        with _deferred_interrupts(self._request_stop):
            while self.state.step < self.total and not self.state.stopped_early:
                batches = self.epoch_batches(self.state.epoch)
                if self.state.batch_index >= len(batches):
                    self.state.epoch, self.state.batch_index = self.state.epoch + 1, 0
                    continue
                self._step(batches[self.state.batch_index])
                self._after_step()
                if self._should_stop():
                    self.save_checkpoint()
                    self.say(f"stopped at step {self.state.step}; run the same command again to resume "
                             f"from {self.work}")
                    raise Terminated if self.stop_signal == signal.SIGTERM else KeyboardInterrupt
            self.save_checkpoint()  # so that a run interrupted while saving its output resumes straight to saving

    def _request_stop(self, signum: int | None = None) -> None:
        self.stop_requested, self.stop_signal = True, signum

    def _should_stop(self) -> bool:
        return self.stop_agreed if self.world.distributed else self.stop_requested

    def _step(self, indices: np.ndarray) -> None:
        rows = self.local_row[indices]
        rows = rows[rows >= 0]
        # A rank with no row of a batch still joins the gradient exchange, with a row it ignores.
        batch = collate(self.train, rows if len(rows) else np.zeros(1, dtype=np.int64), self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self.options.lr * lr_factor(self.state.step + 1, self.options.warmup)
        with _autocast(self.device, self.bf16):
            loss_sum, nll, count = batch_loss(self.trained, batch, self.options.label_smoothing)
        if not len(rows):
            loss_sum, nll, count, batch.tokens = loss_sum * 0.0, nll * 0.0, count * 0.0, 0
        count, tokens, nll, stop = self.world.sum([count.item(), batch.tokens, nll.item(),
                                                   float(self.stop_requested)], self.device)
        self.stop_agreed = stop > 0
        # DDP averages gradients over ranks: scale by the world size to get the global batch's mean.
        loss = loss_sum * (self.world.size / count)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.options.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.clip_norm)
        self.optimizer.step()
        s = self.state
        s.step, s.batch_index, s.tokens = s.step + 1, s.batch_index + 1, s.tokens + int(tokens)
        s.window = [s.window[0] + nll, s.window[1] + count]

    def _after_step(self) -> None:
        s, o = self.state, self.options
        validated = self.valid is not None and (s.step % o.valid_every == 0 or s.step == self.total)
        if validated:
            self._validate()
        logged = s.step % o.log_every == 0 or s.step == self.total or s.stopped_early
        if logged:
            s.train_loss.append([s.step, s.window[0] / s.window[1]])
            s.window = [0.0, 0.0]
        if s.step % o.checkpoint_every == 0:
            self.save_checkpoint()
        self._report(logged or validated)

    def _validate(self) -> None:
        s = self.state
        loss = validation_loss(self.model, self.valid, self.options.batch_tokens, self.device, self.bf16, self.world)
        s.valid_loss.append([s.step, loss])
        if s.best_loss is None or loss < s.best_loss:
            s.best_loss, s.best_step, s.bad_validations = loss, s.step, 0
            self.best_weights = _cpu_copy(self.model.state_dict())
            return
        s.bad_validations += 1
        if self.options.patience is not None and s.bad_validations >= self.options.patience:
            s.stopped_early = True
            self.say(f"stopping early at step {s.step}: no improvement in {s.bad_validations} validations "
                     f"(best {s.best_loss:.4f} at step {s.best_step})")

    def _report(self, logged: bool) -> None:
        if self.on_progress is None:
            return
        s = self.state
        started, first_step, first_tokens = self._session
        elapsed = max(time.monotonic() - started, 1e-9)
        loss = s.train_loss[-1][1] if s.train_loss else (s.window[0] / s.window[1] if s.window[1] else None)
        eta = (self.total - s.step) * elapsed / max(s.step - first_step, 1)
        progress = TrainProgress(s.step, self.total, s.epoch, loss, s.valid_loss[-1][1] if s.valid_loss else None,
                                 (s.tokens - first_tokens) / elapsed, eta, logged)
        try:
            self.on_progress(progress)
        except KeyboardInterrupt:  # the caller's way to stop cleanly (as a test does)
            self.stop_requested = True

    def save_checkpoint(self) -> None:
        """Write model, optimizer, RNG and loop state to WORK/checkpoint.pt, atomically."""
        s = self.state
        if s.checkpoint_step == s.step:
            return
        s.checkpoint_step = s.step
        if not self.world.is_main:  # all ranks hold the same weights; one file is enough
            return
        wall = s.wall_time_s + time.monotonic() - self._session[0]
        _save_atomically({"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint,
                          "state": {**asdict(s), "wall_time_s": wall}, "model": self.model.state_dict(),
                          "optimizer": self.optimizer.state_dict(), "rng": _rng_state(self.device),
                          "best_model": self.best_weights}, self.checkpoint_path)

    def resume(self) -> bool:
        """Load WORK/checkpoint.pt if there is one; return whether there was."""
        if not self.checkpoint_path.exists():
            return False
        try:
            saved = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged file: say which and how to start afresh
            raise RestError(f"{self.checkpoint_path}: cannot load ({err}); "
                            f"delete {self.work} to start afresh") from None
        if saved.get("format") != CHECKPOINT_FORMAT or saved.get("fingerprint") != self.fingerprint:
            raise UsageError(f"{self.checkpoint_path} is from another run; delete {self.work} to start afresh")
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        _set_rng_state(saved["rng"], self.device)
        self.state = _State(**{f.name: saved["state"][f.name] for f in fields(_State)})
        self.state.resumed += 1
        self.best_weights = saved["best_model"]
        self._session = (time.monotonic(), self.state.step, self.state.tokens)
        return True

    def wall_time(self) -> float:
        return self.state.wall_time_s + time.monotonic() - self._session[0]


# --- The run -------------------------------------------------------------------------------

def finetune(train_path: str, output_dir: str | os.PathLike, options: FinetuneOptions | None = None,
             valid_path: str | None = None, init_dir: str | os.PathLike | None = None,
             save_last: str | os.PathLike | None = None, on_progress: Callable[[TrainProgress], None] | None = None,
             on_message: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a model on `train_path` and write it to `output_dir` as a model directory.

    From scratch a tokenizer and a preset model are built; with `init_dir` the parent model
    and its tokenizer are trained further. With `valid_path` the output is the checkpoint of
    best validation loss, else the last. A run that stops (SIGINT, SIGTERM, or on_progress
    raising KeyboardInterrupt) checkpoints into OUTPUT.partial/ and raises KeyboardInterrupt;
    the same call then resumes from there. Returns what training.json holds.
    """
    options = resolve_options(options or FinetuneOptions(), init_dir)
    world = join_world(options.device)
    try:
        return _finetune(train_path, output_dir, options, valid_path, init_dir, save_last,
                         on_progress if world.is_main else None, on_message if world.is_main else None, world)
    finally:
        world.close()


def _finetune(train_path, output_dir, options: FinetuneOptions, valid_path, init_dir, save_last, on_progress,
              on_message, world: World) -> dict[str, Any]:
    say = on_message or (lambda message: None)
    if init_dir is not None:
        modeldir.check_model_dir(init_dir)
    _check_max_length(options, init_dir)
    device, bf16 = _setup_torch(options, world)
    if options.steps and options.epochs:
        say("--steps and --epochs both given: --steps wins")
        options = replace(options, epochs=None)
    pairs, stats = _read(train_path, valid_path, options, say, world, device)
    work = partial_dir(output_dir)
    fingerprint = _fingerprint(options, stats, init_dir)
    # Rank 0 creates the work directory and tokenizer; the other ranks then find them in place.
    resuming = _main_first(world, lambda: _open_work_dir(work, fingerprint))
    # From scratch, the tokenizer learns from every training text: under torchrun rank 0 reads them all.
    vocabulary_pairs = (lambda: load_pairs(train_path, options.skip_invalid)[0]) if world.distributed \
        else (lambda: pairs["train"])
    tokenizer_file = _main_first(world, lambda: _tokenizer_file(work, init_dir, vocabulary_pairs, options))
    try:
        data = {name: _tokenize(pairs[name], tokenizer_file, options, stats[name], say,
                                _holders(name, world), device) for name in pairs}
    except InputError:
        if not resuming and world.is_main:  # a fresh run over bad data leaves nothing to resume
            shutil.rmtree(work, ignore_errors=True)
        raise
    model = _build_model(init_dir, Tokenizer(tokenizer_file).vocab_size, options)
    if world.distributed:  # the same initial weights everywhere, then each rank its own dropout
        torch.manual_seed(derived_seed(options.seed, "rank", world.rank))
    trainer = _Trainer(model, data["train"], data.get("valid"), options, work, fingerprint, device, bf16,
                       on_progress, say, world)
    _start(trainer, resuming, say)
    if device.type == "cpu" and options.bf16 is None and _cpu_multiplies_in_bf16():
        say("this CPU has bfloat16 matrix units: --bf16 trained 1.3x (demo) to 2.5x (iwslt) faster here, "
            "with the same loss (docs/benchmarks.md)")
    trainer.run()
    record = _training_record(trainer, stats, init_dir, device, bf16)
    if world.is_main:
        _write_outputs(trainer, output_dir, tokenizer_file, record, save_last)
    world.barrier()  # the model directory is complete before any rank reports success
    return record


def _main_first(world: World, make: Callable[[], Any]) -> Any:
    """`make()` on rank 0, then on the other ranks, which find what rank 0 made."""
    result = make() if world.is_main else None
    world.barrier()
    return result if world.is_main else make()


def _read(train_path, valid_path, options, say, world: World,
          device: torch.device) -> tuple[dict[str, list[Pair]], dict[str, DataStats]]:
    """Training pairs (a rank's slice under torchrun) and validation pairs (all of them, on every rank)."""
    paths = {"train": train_path, **({"valid": valid_path} if valid_path else {})}
    pairs, stats = {}, {}
    for name, path in paths.items():
        part = _holders(name, world)
        pairs[name], stats[name] = load_pairs(path, options.skip_invalid, part.share)
        if stats[name].skipped:
            say(f"skipped {stats[name].skipped} invalid record(s); first: {stats[name].first_problem}")
        usable = part.sum([sum(1 for pair in pairs[name] if pair.src.strip())], device)[0]
        if not usable:  # checked here, before anything is written
            raise InputError(stats[name].path, None, f"no record to {'train' if name == 'train' else 'validate'} on"
                                                     " (records need a non-empty src and a weight above 0)")
    return pairs, stats


def _holders(name: str, world: World) -> World:
    """The ranks that share a data set: training pairs are split over them, validation pairs are whole on each."""
    return world if name == "train" else World()


def _tokenize(pairs: list[Pair], tokenizer_file: Path, options: FinetuneOptions, stats: DataStats,
              say: Callable[[str], None], world: World, device: torch.device) -> TokenizedPairs:
    data = tokenize_pairs(pairs, Tokenizer(tokenizer_file), options.max_length, stats)
    # Under torchrun each rank counted its own slice: the report and training.json give the totals.
    stats.used, stats.truncated, stats.empty_src, idle = (int(n) for n in world.sum(
        [stats.used, stats.truncated, stats.empty_src, not len(data)], device))
    if stats.truncated:
        say(f"{stats.path}: truncated {stats.truncated} record(s) to --max-length {options.max_length} tokens")
    if stats.empty_src:
        say(f"{stats.path}: left out {stats.empty_src} record(s) with an empty source")
    if not stats.used:
        raise InputError(stats.path, None, "no record has a non-empty source")
    if idle:  # some rank holds no record; all ranks know it, so all stop together
        raise UsageError(f"{stats.path}: {stats.used} usable record(s) for {world.size} processes; "
                         f"run fewer processes")
    return data


def _fingerprint(options: FinetuneOptions, stats: dict[str, DataStats], init_dir) -> str:
    """A hash of what determines the weights: options, data and parent model."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in asdict(options).items() if k not in _NOT_FINGERPRINTED},
                                       sort_keys=True).encode())
    for name in sorted(stats):
        digest.update(f"{name}:{stats[name].sha256}".encode())
    if init_dir is not None:
        for name in (modeldir.WEIGHTS, modeldir.TOKENIZER):
            with open(Path(init_dir) / name, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _open_work_dir(work: Path, fingerprint: str) -> bool:
    """Create WORK, or check that the run it holds is this one; return whether it is resumed."""
    meta = work / "run.json"
    if meta.exists():
        stored = modeldir.read_json(meta).get("fingerprint")
        if stored != fingerprint:
            raise UsageError(f"{work} holds an interrupted run with other options, data or parent model; "
                             f"delete it to start afresh, or rerun that run's command to resume it")
        return True
    work.mkdir(parents=True, exist_ok=True)
    _write_json(meta, {"fingerprint": fingerprint, "rest_version": __version__})
    return False


def _setup_torch(options: FinetuneOptions, world: World) -> tuple[torch.device, bool]:
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        device = torch.device("cuda" if options.device == "auto" and torch.cuda.is_available()
                              else "cpu" if options.device == "auto" else options.device)
    except RuntimeError as err:
        raise UsageError(f"--device {options.device!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {options.device}: CUDA is not available")
    device = device_of(world, device)
    bf16 = options.bf16 if options.bf16 is not None else device.type == "cuda" and torch.cuda.is_bf16_supported()
    return device, bf16


def _cpu_multiplies_in_bf16() -> bool:
    # Off by default all the same: without these units bf16 is emulated and slower, and a default
    # that depends on the CPU would make the same command train differently on two machines.
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(probe is not None and probe() for probe in probes)


def _tokenizer_file(work: Path, init_dir, pairs: Callable[[], list[Pair]], options: FinetuneOptions) -> Path:
    """The parent's tokenizer, or one trained on the training texts (kept in WORK for a resumed run)."""
    if init_dir is not None:
        return Path(init_dir) / modeldir.TOKENIZER
    path = work / modeldir.TOKENIZER
    if not path.exists():
        # Each distinct text once: N samples of one source should not weigh N times in the vocabulary.
        texts = [t for t in dict.fromkeys(text for p in pairs() for text in (p.src, p.tgt)) if t]
        try:
            trained = train_tokenizer(texts, work / ".spm", options.vocab_size, seed=options.seed)
        except RuntimeError as err:
            raise RestError(f"cannot train the tokenizer: {err}") from None
        os.replace(trained, path)  # only a complete tokenizer gets the name a resumed run looks for
    return path


def _build_model(init_dir, vocab_size: int, options: FinetuneOptions) -> Seq2SeqTransformer:
    torch.manual_seed(options.seed)  # the initial weights, then dropout, follow the seed
    if init_dir is None:
        shape = {_SHAPE[k]: getattr(options, k) for k in _SHAPE if getattr(options, k) is not None}
        if options.layers is not None:
            shape["dec_layers"] = options.layers
        if options.dropout is not None:
            shape["dropout"] = options.dropout
        config = config_from_preset(options.preset, vocab_size, **shape)
        model = Seq2SeqTransformer(config)
    else:
        model = modeldir.load_model(init_dir).train()
        if options.dropout is not None and options.dropout != model.config.dropout:
            # Dropout rates are fixed when the layers are built: rebuild and copy the weights over.
            rebuilt = Seq2SeqTransformer(replace(model.config, dropout=options.dropout))
            rebuilt.load_state_dict(model.state_dict())
            model = rebuilt
    return model


def _check_max_length(options: FinetuneOptions, init_dir) -> None:
    # The decoder reads BOS + max_length tokens: one position more than the longest target.
    limit = modeldir.model_config(init_dir).max_positions if init_dir is not None else ModelConfig.max_positions
    if options.max_length >= limit:
        raise UsageError(f"--max-length must be below the model's max_positions ({limit}), got {options.max_length}")


def _start(trainer: _Trainer, resuming: bool, say: Callable[[str], None]) -> None:
    if trainer.resume():
        say(f"resuming from {trainer.work} at step {trainer.state.step}/{trainer.total}")
    elif resuming:
        say(f"resuming in {trainer.work} (no checkpoint yet: starting at step 0)")


def _training_record(trainer: _Trainer, stats: dict[str, DataStats], init_dir, device, bf16: bool) -> dict[str, Any]:
    """The contents of training.json."""
    s, total_train = trainer.state, len(trainer.plan_src)
    return {
        "rest_version": __version__, "objective": "nll", "torch_version": torch.__version__,
        "parent": str(init_dir) if init_dir is not None else None,
        "data": {name: asdict(value) for name, value in stats.items()},
        "options": asdict(trainer.options), "device": str(device), "bf16": bf16,
        "steps": s.step, "epochs": s.epoch + s.batch_index / max(len(trainer.epoch_batches(s.epoch)), 1),
        "tokens_seen": s.tokens, "train_records": total_train,
        "train_loss": s.train_loss, "valid_loss": s.valid_loss, "best_step": s.best_step,
        "best_valid_loss": s.best_loss, "stopped_early": s.stopped_early,
        "output": "best" if trainer.best_weights is not None else "last",
        "resumed": s.resumed, "wall_time_s": round(trainer.wall_time(), 3), "world_size": trainer.world.size,
    }


def _write_outputs(trainer: _Trainer, output_dir, tokenizer_file: Path, record: dict, save_last) -> dict[str, Any]:
    model = trainer.model.eval().cpu()
    if save_last is not None:
        modeldir.save_model_dir(save_last, model, tokenizer_file, {**record, "output": "last"})
    if trainer.best_weights is not None:
        model.load_state_dict(trainer.best_weights)
    modeldir.save_model_dir(output_dir, model, tokenizer_file, record)
    shutil.rmtree(trainer.work, ignore_errors=True)
    return record
