"""The Improve step's trainer: steps, validation, early stopping, progress and checkpoints of one run.

The policy kind builds the batches and the forward pass; the objective turns the logits into the
loss. Batches come from `train.data` (length-bucketed, reproducible from the seed). A checkpoint
holds plain tensors and numbers, loaded with `weights_only=True`. Under torchrun every rank runs
a trainer over its rows of the same global batches (`train.distributed`); with --fsdp the model
is sharded over the ranks, and the checkpoints are gathered whole (`train.sharding`).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rest_cli.errors import RestError, Terminated, UsageError
from rest_cli.io.atomic import replacing_file
from rest_cli.models.base import PolicyKind, Tokenizer
from rest_cli.train.data import TokenizedPairs, collate, make_batches
from rest_cli.train.distributed import World
from rest_cli.train.objectives import get_objective
from rest_cli.train.objectives.base import Context
from rest_cli.train.options import FinetuneOptions
from rest_cli.train.sharding import (
    full_model_state,
    full_optimizer_state,
    load_model_state,
    load_optimizer_state,
)

CHECKPOINT_FORMAT = 1


@torch.no_grad()
def validation_loss(model: torch.nn.Module, kind: PolicyKind, tokenizer: Tokenizer, data: TokenizedPairs,
                    batch_tokens: int, device: torch.device | str = "cpu", bf16: bool = False,
                    world: World = World()) -> float:
    """Weighted NLL per target token over all of `data`, in eval mode (no dropout, no smoothing).

    Ranks of a distributed run measure every size-th batch and add up what they found.
    """
    was_training, nll, count, objective = model.training, 0.0, 0.0, get_objective("nll")
    model.eval()
    batches = make_batches(data.src_lengths, data.tgt_lengths, batch_tokens, shuffle=False)
    mine = batches[world.rank::world.size]
    # A sharded model's forward pass gathers each layer from all ranks, so all ranks make as many:
    # a rank short of a batch measures the first one again and leaves it out.
    rounds = -(-len(batches) // world.size) if world.sharded else len(mine)
    for i in range(rounds):
        batch = collate(data, mine[i] if i < len(mine) else batches[0], kind, tokenizer, device)
        with _autocast(device, bf16):
            _, batch_nll, batch_count = objective.loss(kind.logits(model, batch), batch)
        if i < len(mine):
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
    interval_ended: bool  # a log interval ended at this step: `loss` is its mean, as training.json has it
    validated: bool  # a validation ran at this step: `valid` is its loss
    lr: float  # the learning rate of this step

    @property
    def logged(self) -> bool:
        """A log interval ended or a validation ran at this step: a moment worth a log line."""
        return self.interval_ended or self.validated


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
    with replacing_file(path) as out:
        torch.save(obj, out)


def _objective_optimizer(objective, options: FinetuneOptions) -> torch.optim.Optimizer | None:
    """AdamW at the objective's constant rate for the modules it trains (a value head), or None."""
    parameters = [p for module in objective.modules().values() for p in module.parameters()]
    if not parameters:
        return None
    return torch.optim.AdamW(parameters, lr=objective.module_lr, betas=(0.9, 0.98), weight_decay=0.0)


class Trainer:
    """One run's model, optimizer, data and state; steps, validates, logs and checkpoints."""

    def __init__(self, model: torch.nn.Module, kind: PolicyKind, tokenizer: Tokenizer, train: TokenizedPairs,
                 valid: TokenizedPairs | None, options: FinetuneOptions, work: Path, fingerprint: str,
                 device: torch.device, bf16: bool, on_progress, on_message, world: World = World()):
        self.model, self.train, self.valid, self.options = model.train(), train, valid, options
        self.kind, self.tokenizer = kind, tokenizer
        self.objective = get_objective(options.objective, options.label_smoothing, options.objective_options)
        # Sharded, `model` itself is split over the ranks in place: the optimizer must see its shards.
        self.world, self.trained = world, world.wrap(self.model, device, kind.skips_layers(self.model), bf16)
        # Before any resume: the objective copies the parent's weights (GOLD's, BVMPO's reference).
        self.objective.setup(Context(kind, self.model, device, options.seed))
        self.objective_optimizer = _objective_optimizer(self.objective, options)
        # The lengths of every rank's records, in input order, plan the batches; `local_row` says
        # which of a batch's records this rank holds (-1: another rank's).
        self.plan_src, self.plan_tgt, self.local_row = world.plan(train, device)
        self.work, self.fingerprint, self.device, self.bf16 = work, fingerprint, device, bf16
        self.on_progress, self.say = on_progress, on_message
        # The fused kernel updates all tensors in one pass: the same numbers up to rounding, 3-7x
        # faster on CPU (iwslt shape: 34 -> 10 ms of a 2.8 s step; more where steps are short).
        # Frozen parameters (all but LoRA's adapters) get no optimizer state.
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=options.lr, betas=(0.9, 0.98),
                                           weight_decay=options.weight_decay, fused=True)
        self.state, self.best_weights, self.best_modules = _State(), None, None
        # A stop asked for by a signal, and the one all ranks agreed on at the last step: in a
        # distributed run every rank must stop at the same step, or the others wait forever.
        self.stop_requested = self.stop_agreed = False
        self.stop_signal: int | None = None  # SIGTERM exits as "terminated", SIGINT as "interrupted"
        self._batches: tuple[int, list[np.ndarray]] | None = None
        self.total = options.steps or sum(-(-len(self.epoch_batches(e)) // options.accumulate)
                                          for e in range(options.epochs))
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
        """Train until the step budget or patience runs out.

        After `request_stop` it checkpoints at the end of the step and raises KeyboardInterrupt
        (Terminated for SIGTERM).
        """
        while self.state.step < self.total and not self.state.stopped_early:
            batches = self.epoch_batches(self.state.epoch)
            if self.state.batch_index >= len(batches):
                self.state.epoch, self.state.batch_index = self.state.epoch + 1, 0
                continue
            self._step(batches[self.state.batch_index:self.state.batch_index + self.options.accumulate])
            self._after_step()
            if self._should_stop():
                self.save_checkpoint()
                self.say(f"stopped at step {self.state.step}; run the same command again to resume "
                         f"from {self.work}")
                raise Terminated if self.stop_signal == signal.SIGTERM else KeyboardInterrupt
        self.save_checkpoint()  # so that a run interrupted while saving its output resumes straight to saving

    def request_stop(self, signum: int | None = None) -> None:
        """Stop cleanly after the current step (a signal handler's call, or the progress callback's)."""
        self.stop_requested, self.stop_signal = True, signum

    def _should_stop(self) -> bool:
        return self.stop_agreed if self.world.distributed else self.stop_requested

    def _step(self, group: list[np.ndarray]) -> None:
        """One optimizer step over a group of batches (--accumulate; the last of an epoch may be short).

        Each batch's loss sum is backpropagated as it comes, and the gradients are divided by the
        token count of the whole group, over all ranks, at the end: the step of one batch holding
        them all. DDP averages gradients over ranks, so they are also multiplied by the world size.
        """
        for group_lr in self.optimizer.param_groups:
            group_lr["lr"] = self.options.lr * lr_factor(self.state.step + 1, self.options.warmup)
        self.objective.on_step(self.state.step, self.total)
        self.optimizer.zero_grad(set_to_none=True)
        if self.objective_optimizer is not None:
            self.objective_optimizer.zero_grad(set_to_none=True)
        count = tokens = nll = 0.0
        for i, indices in enumerate(group):
            # DDP exchanges gradients once, after the group's last batch; FSDP reduce-scatters each
            # batch's, so that the accumulated gradients stay sharded (whole, they would take a copy
            # of the model on every rank).
            exchange = i == len(group) - 1 or not self.world.distributed or self.world.sharded
            with contextlib.nullcontext() if exchange else self.trained.no_sync():
                batch_count, batch_tokens, batch_nll = self._backward(indices)
            count, tokens, nll = count + batch_count, tokens + batch_tokens, nll + batch_nll
        count, tokens, nll, stop = self.world.sum([count, tokens, nll, float(self.stop_requested)],
                                                  self.device)
        self.stop_agreed = stop > 0
        self._check_finite("loss", nll / count if count else math.nan)  # summed over ranks: all stop together
        for parameter in self.trainable:
            if parameter.grad is not None:
                parameter.grad.mul_(self.world.size / count)
        if self.options.clip_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.options.clip_norm)
            # DDP made the gradients equal on all ranks; sharded, the norm is of all shards (a DTensor).
            norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
            self._check_finite("gradient norm", norm.item())
        self.optimizer.step()
        self._step_objective(count)
        s = self.state
        s.step, s.batch_index, s.tokens = s.step + 1, s.batch_index + len(group), s.tokens + int(tokens)
        s.window = [s.window[0] + nll, s.window[1] + count]

    def _step_objective(self, count: float) -> None:
        """Step the objective's own modules (a value head): gradients summed over ranks (they are
        outside DDP) and normalised as the policy's, clipped on their own."""
        if self.objective_optimizer is None:
            return
        parameters = [p for group in self.objective_optimizer.param_groups for p in group["params"]]
        self.world.sum_gradients(parameters)
        for parameter in parameters:
            if parameter.grad is not None:
                parameter.grad.div_(count)
        if self.options.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, self.options.clip_norm)
        self.objective_optimizer.step()

    def _backward(self, indices: np.ndarray) -> tuple[float, int, float]:
        """Backpropagate this rank's rows of a batch; return their weighted count, tokens and NLL sum."""
        rows = self.local_row[indices]
        rows = rows[rows >= 0]
        # A rank with no row of a batch still joins the gradient exchange, with a row it ignores.
        batch = collate(self.train, rows if len(rows) else np.zeros(1, dtype=np.int64), self.kind,
                        self.tokenizer, self.device)
        with _autocast(self.device, self.bf16):
            loss_sum, nll, count = self.objective.batch_loss(self.kind, self.trained, batch)
        if not len(rows):
            loss_sum, nll, count, batch.tokens = loss_sum * 0.0, nll * 0.0, count * 0.0, 0
        loss_sum.backward()
        return count.item(), batch.tokens, nll.item()

    def _check_finite(self, what: str, value: float) -> None:
        """Stop before a NaN or an infinity reaches the weights: nothing is written, the checkpoint stays."""
        if not math.isfinite(value):
            step = self.state.step + 1
            raise RestError(f"training stopped at step {step}: the {what} is {value} (a weight or learning "
                            f"rate too large for float32?); nothing was written, and {self.work} keeps the "
                            f"last checkpoint")

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
        self._report(logged, validated)

    def _validate(self) -> None:
        s = self.state
        loss = validation_loss(self.model, self.kind, self.tokenizer, self.valid, self.options.batch_tokens,
                               self.device, self.bf16, self.world)
        s.valid_loss.append([s.step, loss])
        if s.best_loss is None or loss < s.best_loss:
            s.best_loss, s.best_step, s.bad_validations = loss, s.step, 0
            self.best_weights, self.best_modules = self.model_state(), self.module_states()
            return
        s.bad_validations += 1
        if self.options.patience is not None and s.bad_validations >= self.options.patience:
            s.stopped_early = True
            self.say(f"stopping early at step {s.step}: no improvement in {s.bad_validations} validations "
                     f"(best {s.best_loss:.4f} at step {s.best_step})")

    def _report(self, interval_ended: bool, validated: bool) -> None:
        if self.on_progress is None:
            return
        s = self.state
        started, first_step, first_tokens = self._session
        elapsed = max(time.monotonic() - started, 1e-9)
        loss = s.train_loss[-1][1] if s.train_loss else (s.window[0] / s.window[1] if s.window[1] else None)
        eta = (self.total - s.step) * elapsed / max(s.step - first_step, 1)
        progress = TrainProgress(s.step, self.total, s.epoch, loss,
                                 s.valid_loss[-1][1] if s.valid_loss else None,
                                 (s.tokens - first_tokens) / elapsed, eta, interval_ended, validated,
                                 self.optimizer.param_groups[0]["lr"])
        try:
            self.on_progress(progress)
        except KeyboardInterrupt:  # the caller's way to stop cleanly (as a test does)
            self.stop_requested = True

    def model_state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the whole model's state dict. Sharded, every rank must ask: the shards are
        gathered on rank 0, and the other ranks get {}."""
        if self.world.sharded:
            return full_model_state(self.model)
        return _cpu_copy(self.model.state_dict())

    def module_states(self) -> dict[str, dict[str, torch.Tensor]]:
        """CPU copies of the objective's modules' weights (a value head), by module name."""
        return {name: _cpu_copy(module.state_dict()) for name, module in self.objective.modules().items()}

    def saved_modules(self) -> dict[str, dict[str, torch.Tensor]]:
        """The objective's modules to write beside the policy, by file name: those of the weights
        written (the best validation's, when they are)."""
        states = self.best_modules if self.best_weights is not None else self.module_states()
        return {file: states[name] for name, file in self.objective.saved_modules.items() if name in states}

    def save_checkpoint(self) -> None:
        """Write model, optimizer, RNG and loop state to WORK/checkpoint.pt, atomically."""
        s = self.state
        if s.checkpoint_step == s.step:
            return
        s.checkpoint_step = s.step
        model, optimizer = self._states()
        # Each rank draws its own dropout masks: a resumed run must go on drawing each rank's own.
        rngs = self.world.every_rank(_rng_state(self.device), self.device)
        if not self.world.is_main:  # all ranks hold the same weights (or their shards went to rank 0)
            return
        wall = s.wall_time_s + time.monotonic() - self._session[0]
        _save_atomically({"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint,
                          "state": {**asdict(s), "wall_time_s": wall}, "model": model,
                          "optimizer": optimizer, "rng": rngs[0], "rank_rngs": rngs,
                          "best_model": self.best_weights, "objective": self._objective_state()},
                         self.checkpoint_path)

    def _objective_state(self) -> dict[str, Any]:
        optimizer = self.objective_optimizer
        return {"state": self.objective.state_dict(), "best_modules": self.best_modules,
                "optimizer": optimizer.state_dict() if optimizer is not None else None}

    def _states(self) -> tuple[dict, dict]:
        """Model and optimizer state dicts to checkpoint, in the unsharded format whether sharded or not."""
        if self.world.sharded:  # every rank takes part in the gathering
            return full_model_state(self.model), full_optimizer_state(self.model, self.optimizer)
        return self.model.state_dict(), self.optimizer.state_dict()

    def resume(self) -> bool:
        """Load WORK/checkpoint.pt if there is one; return whether there was."""
        if not self.checkpoint_path.exists():
            return False
        try:
            # Sharded, every rank reads the whole checkpoint: mapped, the ranks share one copy in memory.
            saved = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True,
                               mmap=self.world.sharded)
        except Exception as err:  # a damaged file: say which and how to start afresh
            raise RestError(f"{self.checkpoint_path}: cannot load ({err}); "
                            f"delete {self.work} to start afresh") from None
        if saved.get("format") != CHECKPOINT_FORMAT or saved.get("fingerprint") != self.fingerprint:
            raise UsageError(f"{self.checkpoint_path} is from another run; "
                             f"delete {self.work} to start afresh")
        self._load_states(saved["model"], saved["optimizer"])
        self._load_objective(saved.get("objective"))
        ranks = saved.get("rank_rngs") or []  # older checkpoints kept rank 0's alone
        _set_rng_state(ranks[self.world.rank] if len(ranks) == self.world.size else saved["rng"], self.device)
        self.state = _State(**{f.name: saved["state"][f.name] for f in fields(_State)})
        self.state.resumed += 1
        self.best_weights = saved["best_model"]
        if self.world.sharded and not self.world.is_main and self.best_weights is not None:
            self.best_weights = {}  # rank 0 alone writes them, as after a validation
        self._session = (time.monotonic(), self.state.step, self.state.tokens)
        return True

    def _load_objective(self, saved: dict[str, Any] | None) -> None:
        if saved is None:  # a checkpoint written before objectives kept state: NLL's, which keeps none
            return
        self.objective.load_state_dict(saved["state"])
        self.best_modules = saved["best_modules"]
        if self.objective_optimizer is not None:
            self.objective_optimizer.load_state_dict(saved["optimizer"])

    def _load_states(self, model: dict, optimizer: dict) -> None:
        if self.world.sharded:  # each rank keeps its shards of the whole tensors
            load_model_state(self.model, model)
            load_optimizer_state(self.model, self.optimizer, optimizer)
        else:
            self.model.load_state_dict(model)
            self.optimizer.load_state_dict(optimizer)

    def wall_time(self) -> float:
        return self.state.wall_time_s + time.monotonic() - self._session[0]


