"""Rewards by name: `get_reward("chrf")`. Importing a family module registers its rewards."""

from . import metrics  # noqa: F401  (registers chrf, bleu, ter, exact)
from . import numbers  # noqa: F401  (registers numbers, the demo's reward)
from .base import Reward, get_reward, register, reward_names, score_records

__all__ = ["Reward", "get_reward", "register", "reward_names", "score_records"]
