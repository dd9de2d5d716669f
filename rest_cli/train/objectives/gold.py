"""GOLD (Pang and He, ICLR 2021): off-policy learning from demonstrations, as the authors' code does it.

    w_t  = clamp(pi_old(a_t | s_t), u, 1)                  importance weight, no gradient
    r_t  = max(p_MLE(a_t | s_t), c)                        GOLD-s; GOLD-p: max(log p_MLE(a_t | s_t) - b, c)
    Q_t  = sum_{k=0..K} gamma^k r_{t+k}                    r = c past the last token
    loss = sum_i w_i sum_t [(1 - eps) w_t Q_t l_t - eps mean_a log pi(a | s_t)] / sum_i w_i n_i

l_t = -log pi(a_t | s_t), w_i the record's weight, eps the label smoothing. pi_old is a copy of
the policy refreshed every `sync_every` steps; p_MLE the parent (--init, the BC policy), frozen.
The authors' code floors every r_{t+k} (not Q) at c, and past a sequence's end reads the
probability of padding, which the floor turns into c: so r = c there (their batch's longest row
reads 1.0 instead, an artifact we do not copy). Until the first refresh pi_old is the parent, so
one extra forward pass gives both; after it, two.
"""

from __future__ import annotations

import math

import torch

from rest_cli.models.base import Batch, PolicyKind
from rest_cli.train.objectives.base import (
    Context,
    LossSums,
    Objective,
    frozen_copy,
    label_probs,
    smoothed,
    token_terms,
)
from rest_cli.train.objectives.settings import GoldSettings


class GOLD(Objective):
    name = "gold"
    settings_class = GoldSettings

    def __init__(self, settings: GoldSettings | None = None, label_smoothing: float = 0.0):
        super().__init__(settings, label_smoothing)
        self.policy: torch.nn.Module | None = None
        self.reference: torch.nn.Module | None = None  # p_MLE: the parent, frozen
        self.lagged: torch.nn.Module | None = None  # pi_old once first refreshed; before, the reference
        self.synced_at: int | None = None  # the step pi_old was copied at

    def setup(self, context: Context) -> None:
        self.policy, self.reference = context.model, frozen_copy(context.model)

    def on_step(self, step: int, total: int) -> None:
        if step > 0 and step % self.settings.sync_every == 0 and self.synced_at != step:
            self._sync(step)

    def _sync(self, step: int) -> None:
        """pi_old <- the policy, reusing the copy's memory after the first time."""
        if self.lagged is None:
            self.lagged = frozen_copy(self.policy)
        else:
            self.lagged.load_state_dict(self.policy.state_dict())
        self.synced_at = step

    def batch_loss(self, kind: PolicyKind, model: torch.nn.Module, batch: Batch) -> LossSums:
        with torch.no_grad():
            mle = label_probs(kind.logits(self.reference, batch), batch)
            old = mle if self.lagged is None else label_probs(kind.logits(self.lagged, batch), batch)
        return self.loss(kind.logits(model, batch), batch, old, mle)

    def loss(self, logits: torch.Tensor, batch: Batch, old_probs: torch.Tensor,
             mle_probs: torch.Tensor) -> LossSums:
        """`old_probs`, `mle_probs`: pi_old(a_t | s_t) and p_MLE(a_t | s_t), [B, T]."""
        logprobs, nll, weights = token_terms(logits, batch)
        importance = old_probs.clamp(self.settings.lower, 1.0)
        gold = importance * self.returns(mle_probs, batch.mask) * nll
        token_loss = smoothed(gold, logprobs, self.label_smoothing)
        count = weights.sum()
        return (token_loss * weights).sum(), (nll * weights).sum().detach(), count.detach()

    def returns(self, mle_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Q [B, T]: each token's floored rewards over the next K + 1 tokens, discounted."""
        s = self.settings
        reward = mle_probs if s.variant == "s" else torch.log(mle_probs + 1e-10) - s.baseline
        reward = torch.where(mask, reward.clamp(min=s.floor), torch.full_like(reward, s.floor))
        padded = torch.cat([reward, reward.new_full((len(reward), s.horizon), s.floor)], dim=1)
        length = reward.size(1)
        return sum(math.pow(s.gamma, k) * padded[:, k:k + length] for k in range(s.horizon + 1))

    def state_dict(self) -> dict:
        # Before its first refresh pi_old is the parent: nothing to keep.
        return {"synced_at": self.synced_at,
                "lagged": None if self.lagged is None else self.lagged.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state["lagged"] is not None:
            self._sync(state["synced_at"])
            self.lagged.load_state_dict(state["lagged"])
