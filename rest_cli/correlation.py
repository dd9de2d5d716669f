"""Rank correlations, numpy only: how two scorings of the same items agree (a value head and the
reward, a human and a reward, two raters)."""

from __future__ import annotations

import numpy as np


def kendall_tau(x, y) -> float:
    """Kendall's tau-b of two sequences (ties in either count as neither concordant nor discordant).

    Row by row, so that memory stays linear in the length (the n x n signs of 12,000 records
    would take gigabytes).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    concordance = untied_x = untied_y = 0
    for i in range(len(x) - 1):
        dx, dy = np.sign(x[i + 1:] - x[i]), np.sign(y[i + 1:] - y[i])
        concordance += int((dx * dy).sum())
        untied_x, untied_y = untied_x + np.count_nonzero(dx), untied_y + np.count_nonzero(dy)
    denominator = np.sqrt(float(untied_x) * float(untied_y))
    return float(concordance / denominator) if denominator else float("nan")


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's correlation of the ranks (ties get their mean rank)."""
    rx, ry = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    if rx.std() == 0 or ry.std() == 0:  # a constant has no ranking
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0; tied values share the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, tie_group = np.unique(values, return_inverse=True)
    return (np.bincount(tie_group, weights=ranks) / np.bincount(tie_group))[tie_group]
