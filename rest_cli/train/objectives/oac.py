"""Offline actor-critic (Mathieu et al. 2021, AlphaStar Unplugged; ReST Appendix A.8.3): the policy
gradient of the behaviour data with a learned state value as baseline, no V-trace.

    G_t  = gamma^(T - t) R                                 the sequence reward R arrives at token T
    A_t  = G_t - V(s_t)                                    no gradient
    loss = sum_i w_i sum_t [(1 - eps) A_t l_t - eps mean_a log pi(a | s_t)    (policy; 0 while V warms up)
                            + 0.5 (V(s_t) - G_t)^2] / sum_i w_i n_i          (value head only)

l_t = -log pi(a_t | s_t). Tokens whose return beats the value are made likelier, the others less
likely. The paper found V-trace no better than this plain advantage.
"""

from __future__ import annotations

import torch

from rest_cli.models.base import Batch, PolicyKind
from rest_cli.train.objectives.base import LossSums, smoothed, token_terms
from rest_cli.train.objectives.value import ValueObjective, value_loss_sum


class OfflineActorCritic(ValueObjective):
    name = "oac"

    def batch_loss(self, kind: PolicyKind, model: torch.nn.Module, batch: Batch) -> LossSums:
        logits, values, returns = self.forward_with_values(kind, model, batch)
        return self.loss(logits, batch, values, returns)

    def loss(self, logits: torch.Tensor, batch: Batch, values: torch.Tensor,
             returns: torch.Tensor) -> LossSums:
        """`values`: V(s_t) [B, T], which the value loss trains; `returns`: G_t [B, T]."""
        logprobs, nll, weights = token_terms(logits, batch)
        advantage = (returns - values).detach()
        policy = (smoothed(advantage * nll, logprobs, self.label_smoothing) * weights).sum()
        total = self.policy_scale * policy + value_loss_sum(values, returns, weights)
        return total, (nll * weights).sum().detach(), weights.sum().detach()
