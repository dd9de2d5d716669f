"""Rewards by name or spec: `get_reward("chrf")`, `make_reward("product(use, copy-guard)")`.

Importing a family module registers its rewards; none imports a model until a reward is built.
"""

from rest_cli.rewards import compose, embedding, guards, metrics, numbers  # noqa: F401  (register their rewards)
from rest_cli.rewards.base import Reward, get_reward, make_reward, register, reward_names, score_records
from rest_cli.rewards.compose import build_reward, load_reward_config

__all__ = ["Reward", "build_reward", "get_reward", "load_reward_config", "make_reward", "register",
           "reward_names", "score_records"]
