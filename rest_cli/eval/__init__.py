"""Evaluation: decode a held-out set and measure it (evaluate), and the reward-model unit tests (rmcheck)."""
