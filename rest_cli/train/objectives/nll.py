"""Weighted NLL (behaviour cloning on the filtered data): ReST's Improve loss.

    loss = sum_i w_i * sum_t l_it / sum_i w_i * n_i

where l_it is the token's NLL (mixed with the mean NLL over the vocabulary when label-smoothing)
and n_i the record's trained tokens: a weight-2 record counts as the same record twice in its
batch. The NLL sum is never smoothed, so NLL sum / count is the loss to report.
"""

from __future__ import annotations

import torch

from rest_cli.models.base import Batch
from rest_cli.train.objectives.base import LossSums, Objective, smoothed, token_terms


class NLL(Objective):
    name = "nll"

    def loss(self, logits: torch.Tensor, batch: Batch) -> LossSums:
        logprobs, nll, weights = token_terms(logits, batch)  # weights: 0 where nothing is trained
        token_loss = smoothed(nll, logprobs, self.label_smoothing)
        count = weights.sum()
        return (token_loss * weights).sum(), (nll * weights).sum().detach(), count.detach()
