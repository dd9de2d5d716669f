"""What an Improve objective is: a loss over one batch, the fields it reads, and what it needs of the trainer.

The trainer calls, in this order: `setup(context)` once, before training (and before a resume
loads `load_state_dict`); `on_step(step, total)` before each optimizer step; `batch_loss(kind,
model, batch)` for each batch. Everything an objective keeps besides the policy goes through
these: copies of the model it reads (GOLD's lagged policy, a frozen reference), modules it
trains (a value head, a temperature: `modules()`, whose parameters get their own optimizer),
and its state for checkpoints (`state_dict`: plain tensors and numbers).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from rest_cli.models.base import Batch, PolicyKind
from rest_cli.train.objectives.settings import Settings

# (sum to minimise, weighted NLL sum, weighted token count) of one batch: see Objective.loss.
LossSums = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class Context:
    """What `setup` may use: the policy (unwrapped, on its device, still the parent's weights), its kind,
    the device and the seed (a module the objective builds must start the same on every rank)."""

    kind: PolicyKind
    model: torch.nn.Module
    device: torch.device
    seed: int = 0


class Objective(ABC):
    """A training loss. `required` and `optional` name the record fields it reads (checked on input);
    `numbers` those of them handed to the loss per record, as `batch.fields[name]` ([B] float32)."""

    name: ClassVar[str]
    settings_class: ClassVar[type[Settings]] = Settings
    required: ClassVar[tuple[str, ...]] = ("src",)
    optional: ClassVar[tuple[str, ...]] = ("hyp", "ref", "weight")  # the target is hyp, else ref
    numbers: ClassVar[tuple[str, ...]] = ()
    saved_modules: ClassVar[dict[str, str]] = {}  # module name -> file written beside the policy
    module_lr: float = 0.0  # the constant rate of `modules()`'s optimizer

    def __init__(self, settings: Settings | None = None, label_smoothing: float = 0.0):
        self.settings = settings if settings is not None else self.settings_class()
        self.label_smoothing = label_smoothing

    @abstractmethod
    def loss(self, logits: torch.Tensor, batch: Batch, *inputs: torch.Tensor) -> LossSums:
        """(sum to minimise, weighted NLL sum, weighted token count) of one batch, from the policy's
        logits and whatever else `batch_loss` computed for this objective (`inputs`).

        The trainer minimises the first over the last; NLL sum / count is the loss it reports.
        """

    def batch_loss(self, kind: PolicyKind, model: torch.nn.Module, batch: Batch) -> LossSums:
        """The trainer's call: the forward passes this objective needs, then `loss`."""
        return self.loss(kind.logits(model, batch), batch)

    def setup(self, context: Context) -> None:
        """Prepare what the loss needs besides the policy (copies of the model, modules), once."""
        return None

    def on_step(self, step: int, total: int) -> None:
        """Called before each optimizer step with the steps done so far (0-based) and the steps in all."""
        return None

    def modules(self) -> dict[str, torch.nn.Module]:
        """Modules this objective trains: their gradients are summed over ranks, and checkpointed."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of this objective: its modules' weights and any state of its own."""
        return {"modules": {name: module.state_dict() for name, module in self.modules().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, module in self.modules().items():
            module.load_state_dict(state["modules"][name])


# --- What the objectives share ---------------------------------------------------------

def token_terms(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs [B, T, V] in float32, each label's NLL [B, T], and the token weights [B, T]: the
    record's weight where a token is trained, 0 elsewhere."""
    logprobs = F.log_softmax(logits.float(), dim=-1)
    nll = -logprobs.gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1)
    return logprobs, nll, batch.weights.unsqueeze(1) * batch.mask


def label_probs(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The probability [B, T] each label has under `logits`, in float32, without gradient."""
    return F.softmax(logits.detach().float(), dim=-1).gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1)


def smoothed(token_loss: torch.Tensor, logprobs: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Mix a token loss with the mean NLL over the vocabulary (label smoothing), as NLL does."""
    return token_loss if not smoothing else (1 - smoothing) * token_loss - smoothing * logprobs.mean(-1)


def safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """A module's weights as a safetensors file (a value head: its shapes say its sizes)."""
    from safetensors.torch import save

    return save({name: tensor.detach().cpu().contiguous() for name, tensor in state.items()})


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` in eval mode (no dropout) that never trains: a reference or a lagged policy."""
    twin = copy.deepcopy(model).eval()
    for parameter in twin.parameters():
        parameter.requires_grad_(False)
    return twin

