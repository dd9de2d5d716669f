"""Improve losses by name, as rewards are: `get_objective("gold", 0.1, ["lower=0.1"])`.

An objective turns the policy's logits over one batch into sums that the trainer normalises
(sums, not means, so that ranks of a distributed run can share one denominator), and declares
the record fields it reads, which the training data reader checks on input. Objective modules
import torch; this registry does not, so `rest finetune --help` and `rest loop check` can list
the names. docs/objectives.md describes each.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

# name -> "module:Class", imported on first use.
OBJECTIVES: dict[str, str] = {
    "nll": "rest_cli.train.objectives.nll:NLL",
    "rwnll": "rest_cli.train.objectives.rwnll:RewardWeightedNLL",
    "gold": "rest_cli.train.objectives.gold:GOLD",
    "oac": "rest_cli.train.objectives.oac:OfflineActorCritic",
    "bvmpo": "rest_cli.train.objectives.bvmpo:BVMPO",
}


def objective_names() -> list[str]:
    return sorted(OBJECTIVES)


def get_objective(name: str, label_smoothing: float = 0.0, settings: Sequence[str] = ()):
    """The objective registered as `name`, with label smoothing and its own KEY=VALUE settings."""
    from rest_cli.errors import UsageError
    from rest_cli.train.objectives.settings import parse_settings

    if name not in OBJECTIVES:
        raise UsageError(f"unknown objective {name!r}; choose from {', '.join(objective_names())}")
    parsed = parse_settings(name, tuple(settings))
    module, _, cls = OBJECTIVES[name].partition(":")
    return getattr(importlib.import_module(module), cls)(parsed, label_smoothing=label_smoothing)


def objective_class(name: str):
    """The class registered as `name` (its `required` and `optional` fields), without settings."""
    module, _, cls = OBJECTIVES[name].partition(":")
    return getattr(importlib.import_module(module), cls)
