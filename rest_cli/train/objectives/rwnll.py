"""Reward-weighted NLL: each record's NLL weighted by exp(reward / beta), normalised over the step.

    v_i  = w_i * exp((r_i - 1) / beta)
    loss = sum_i v_i * sum_t l_it / sum_i v_i * n_i

NLL's formula with the record weight w_i scaled by exp(r_i / beta): the denominator normalises
the exponentiated rewards over the step's batch (all its accumulated batches and ranks), so that
a record's share is exp(r_i / beta) / sum_j exp(r_j / beta) per token. Subtracting 1, the highest
reward, changes nothing after the normalisation and keeps every weight at most w_i in float32.
Beyond the ReST paper: a common baseline (reward-weighted regression, Peters and Schaal 2007).
As beta grows it becomes NLL. The NLL it reports is weighted the same way.
"""

from __future__ import annotations

import torch

from rest_cli.models.base import Batch
from rest_cli.train.objectives.base import LossSums, Objective, smoothed, token_terms
from rest_cli.train.objectives.settings import RWNLLSettings


class RewardWeightedNLL(Objective):
    name = "rwnll"
    settings_class = RWNLLSettings
    required = ("src", "reward")
    numbers = ("reward",)

    def loss(self, logits: torch.Tensor, batch: Batch) -> LossSums:
        logprobs, nll, weights = token_terms(logits, batch)
        scale = torch.exp((batch.fields["reward"].float() - 1.0) / self.settings.beta)  # [B]
        weights = weights * scale.unsqueeze(1)
        token_loss = smoothed(nll, logprobs, self.label_smoothing)
        count = weights.sum()
        return (token_loss * weights).sum(), (nll * weights).sum().detach(), count.detach()
