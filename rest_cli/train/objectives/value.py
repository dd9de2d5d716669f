"""State-value functions for the value-based objectives (oac, bvmpo): a head on the policy's hidden states.

The paper trains a separate encoder-decoder to predict, at every target token, the Monte-Carlo
discounted return of the sequence reward (which arrives at the end): G_t = gamma^(T - t) R, T the
last trained token. Here the value network is a small MLP on the policy's last hidden states,
detached. h_t already reads the source and the prefix y_<t (the state s_t), but it is tuned to
predict the next token; the mean of the prefix's states h_1..h_t gives the head the prefix
itself (on a synthetic task it raised Kendall's tau on held-out data from 0.73 to 0.89):

    x_t    = [norm(h_t), mean_{k <= t} norm(h_k)]         norm: layer norm without weights
    V(s_t) = W2 gelu(W1 x_t + b1) + b2,                    value loss = sum_t w_i 0.5 (V(s_t) - G_t)^2

Detached, the value loss cannot change the policy (the point of the paper's separate networks),
and V costs two small matrix products on a forward pass the policy makes anyway, where a separate
network would cost a second Transformer's forward and backward passes. The price: its features
move as the policy trains, so it trains all along, after fitting alone for the first steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rest_cli.correlation import kendall_tau, spearman
from rest_cli.models.base import Batch, PolicyKind
from rest_cli.train.objectives.base import Context, Objective
from rest_cli.train.objectives.settings import ValueSettings

VALUE_FILE = "value_head.safetensors"


class ValueHead(torch.nn.Module):
    """V(s_t) [B, T] from the policy's last hidden states [B, T, d]: a one-hidden-layer MLP on each
    state and the mean of the trained states up to it (`mask` [B, T])."""

    def __init__(self, d_model: int, width: int = 256):
        super().__init__()
        self.norm = torch.nn.LayerNorm(d_model, elementwise_affine=False)  # kinds scale h differently
        self.hidden = torch.nn.Linear(2 * d_model, width)
        self.out = torch.nn.Linear(width, 1)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.norm(hidden.float())
        trained = mask.unsqueeze(-1).to(x.dtype)
        prefix = (x * trained).cumsum(1) / trained.cumsum(1).clamp(min=1.0)  # causal: h_k reads y_<k
        return self.out(F.gelu(self.hidden(torch.cat([x, prefix], dim=-1)))).squeeze(-1)


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G [B, T]: gamma^(trained tokens after t) * R_i at each trained position t, 0 elsewhere.

    `rewards` [B]: each sequence's reward, which its last trained token receives.
    """
    trained = mask.to(torch.float32)
    after = trained.flip(1).cumsum(1).flip(1) - trained  # trained tokens after t (all later ones are)
    return rewards.float().unsqueeze(1) * torch.pow(torch.tensor(gamma), after) * trained


def value_loss_sum(values: torch.Tensor, returns: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_t w 0.5 (V - G)^2 over trained tokens (`weights`: the record's weight there, else 0)."""
    return (0.5 * (values - returns) ** 2 * weights).sum()


class ValueObjective(Objective):
    """What oac and bvmpo share: the head, its fitting alone for the first steps, the returns."""

    settings_class = ValueSettings
    required = ("src", "reward")
    numbers = ("reward",)
    saved_modules = {"value": VALUE_FILE}

    def __init__(self, settings: ValueSettings | None = None, label_smoothing: float = 0.0):
        super().__init__(settings, label_smoothing)
        self.module_lr = self.settings.value_lr
        self.head: ValueHead | None = None
        self.policy_scale = 1.0  # 0 while the head fits alone: the policy then gets no gradient

    def setup(self, context: Context) -> None:
        d_model = context.kind.output_layer(context.model).weight.shape[1]
        # Its own seed: every rank builds the same head, and the run's random stream is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            self.head = ValueHead(d_model, self.settings.value_width).to(context.device)

    def on_step(self, step: int, total: int) -> None:
        self.policy_scale = 0.0 if step < int(self.settings.value_warmup * total) else 1.0

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"value": self.head} if self.head is not None else {}

    def forward_with_values(self, kind: PolicyKind, model: torch.nn.Module,
                            batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The policy's logits, V(s_t) [B, T] (gradient to the head only) and the returns G [B, T].

        While the head fits alone the policy's pass keeps no graph: its backward pass would only
        bring zeros (and DDP, seeing no graph, expects no gradients either).
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.policy_scale > 0):
            logits, hidden = kind.logits_and_hidden(model, batch)
        returns = discounted_returns(batch.fields["reward"], batch.mask, self.settings.gamma)
        return logits, self.head(hidden.detach(), batch.mask), returns


# --- The head beside a model directory, and how well it ranks rewards ------------------------

def load_head(path) -> ValueHead:
    """The value head saved in a model directory (DIR/value_head.safetensors), in eval mode."""
    from safetensors.torch import load

    with open(path, "rb") as f:
        state = load(f.read())
    width, inputs = state["hidden.weight"].shape
    head = ValueHead(inputs // 2, width)
    head.load_state_dict(state)
    return head.eval()


@torch.no_grad()
def predicted_values(head: ValueHead, kind: PolicyKind, model: torch.nn.Module,
                     batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """V at each record's first state s_0 (the source alone) and at its last (the whole candidate
    read, before the end token), [B] each."""
    _, hidden = kind.logits_and_hidden(model, batch)
    values = head(hidden, batch.mask)
    first = batch.mask.float().argmax(1)
    last = batch.mask.size(1) - 1 - batch.mask.flip(1).float().argmax(1)
    rows = torch.arange(len(values))
    return values[rows, first], values[rows, last]


def value_correlations(directory, records_path: str, batch_tokens: int = 4096) -> dict[str, float]:
    """How well the value head saved in model directory DIR ranks the rewards of the (src, hyp,
    reward) records of `records_path` (held-out candidates, say): Kendall's tau and Spearman's rho
    of V(s_0) and of V at the last state against the reward."""
    from pathlib import Path

    from rest_cli.models import modeldir
    from rest_cli.train.data import DataStats, collate, load_pairs, make_batches, tokenize_pairs

    kind = modeldir.kind_of(modeldir.check_model_dir(directory))
    model, tokenizer = modeldir.load_model(directory), kind.tokenizer(directory)
    head = load_head(Path(directory) / VALUE_FILE)
    pairs, _ = load_pairs(records_path, fields=(("src", "reward"), ("hyp", "ref", "weight")),
                          numbers=("reward",))
    longest = min(256, kind.max_positions(modeldir.model_config(directory)) - 1)  # finetune's --max-length
    data = tokenize_pairs(pairs, kind, tokenizer, longest, DataStats(records_path), ("reward",))
    first, last, rewards = [], [], []
    for indices in make_batches(data.src_lengths, data.tgt_lengths, batch_tokens, shuffle=False):
        batch = collate(data, indices, kind, tokenizer)
        v0, v_last = predicted_values(head, kind, model, batch)
        first.append(v0), last.append(v_last), rewards.append(batch.fields["reward"])
    first, last, rewards = (torch.cat(parts).numpy() for parts in (first, last, rewards))
    return {"records": len(rewards), "kendall_first": kendall_tau(first, rewards),
            "spearman_first": spearman(first, rewards), "kendall_last": kendall_tau(last, rewards),
            "spearman_last": spearman(last, rewards)}
