"""Rewards by name or spec: `build_reward("chrf")`, `build_reward("product(use, copy-guard)", options)`.

build.build_reward is the one entry point. Importing a family module registers its rewards;
none imports a model until a reward is built.
"""

from rest_cli.rewards import embedding, guards, metrics, numbers, verifiable  # noqa: F401  (registers them)
from rest_cli.rewards.base import Reward, register, reward_names, score_records
from rest_cli.rewards.build import RewardOptions, build_reward

__all__ = ["Reward", "RewardOptions", "build_reward", "register", "reward_names", "score_records"]
