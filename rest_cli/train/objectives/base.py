"""What an Improve objective is: a loss over one batch of the policy's logits, and the fields it reads."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from rest_cli.models.base import Batch


class Objective(ABC):
    """A training loss. `required` and `optional` name the record fields it reads (checked on input)."""

    name: ClassVar[str]
    required: ClassVar[tuple[str, ...]] = ("src",)
    optional: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def loss(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sum to minimise, weighted NLL sum, weighted token count) of one batch.

        The trainer minimises the first over the last; NLL sum / count is the loss it reports.
        """
