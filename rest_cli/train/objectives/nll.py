"""Weighted NLL (behaviour cloning on the filtered data): ReST's Improve loss.

    loss = sum_i w_i * sum_t l_it / sum_i w_i * n_i

where l_it is the token's NLL (mixed with the mean NLL over the vocabulary when label-smoothing)
and n_i the record's trained tokens: a weight-2 record counts as the same record twice in its
batch. The NLL sum is never smoothed, so NLL sum / count is the loss to report.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rest_cli.models.base import Batch
from rest_cli.train.objectives.base import Objective


class NLL(Objective):
    name = "nll"
    required = ("src",)
    optional = ("hyp", "ref", "weight")  # the target is hyp, else ref

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def loss(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logprobs = F.log_softmax(logits.float(), dim=-1)  # [B, T, V]
        nll = -logprobs.gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1)  # [B, T]
        smoothing = self.label_smoothing
        token_loss = nll if not smoothing else (1 - smoothing) * nll - smoothing * logprobs.mean(-1)
        weights = batch.weights.unsqueeze(1) * batch.mask  # [B, T], 0 where nothing is trained
        count = weights.sum()
        return (token_loss * weights).sum(), (nll * weights).sum().detach(), count.detach()
