"""Improve losses by name, as rewards are: `get_objective("nll", label_smoothing=0.1)`.

An objective turns the policy's logits over one batch into sums that the trainer normalises
(sums, not means, so that ranks of a distributed run can share one denominator), and declares
the record fields it reads, which the training data reader checks on input. Objective modules
import torch; this registry does not, so `rest finetune --help` can list the names.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> "module:Class", imported on first use.
OBJECTIVES: dict[str, str] = {
    "nll": "rest_cli.train.objectives.nll:NLL",
}


def objective_names() -> list[str]:
    return sorted(OBJECTIVES)


def get_objective(name: str, **settings: Any):
    """The objective registered as `name`, with its settings (e.g. label_smoothing)."""
    from rest_cli.errors import UsageError

    if name not in OBJECTIVES:
        raise UsageError(f"unknown objective {name!r}; choose from {', '.join(objective_names())}")
    module, _, cls = OBJECTIVES[name].partition(":")
    return getattr(importlib.import_module(module), cls)(**settings)
