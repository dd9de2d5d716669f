"""A reward made of other rewards, combined record by record (the spec's product, min, max, mean, wsum)."""

from __future__ import annotations

import math

from rest_cli.io.records import Record
from rest_cli.rewards.base import Reward, Scores, checked, merged_fields
from rest_cli.rewards.user import exact_number

_COMBINE = {
    "product": math.prod,
    "min": min,
    "max": max,
    "mean": lambda values: sum(values) / len(values),
}


class Composite(Reward):
    """Combines its parts' rewards record by record: product, min, max, mean, or wsum (weighted sum).

    Each part's batch is checked (count, finite, [0, 1]) before combining, so an error names
    the part at fault. `needs` is the union of the parts'.
    """

    def __init__(self, op: str, parts: list[Reward], weights: list[float] | None = None, name: str = ""):
        self.op, self.parts, self.weights = op, parts, weights
        self.name = name or op
        self.preset = ""  # set for a registered preset, which the signature then names
        self.needs = tuple(dict.fromkeys(f for part in parts for f in part.needs))

    def score(self, records: list[Record]) -> Scores:
        columns = [checked(part.score(records), records, part) for part in self.parts]
        return Scores(self._combined(columns), merged_fields(columns))  # the parts' fields pass on

    def _combined(self, columns: list[list[float]]) -> list[float]:
        if self.weights is not None:
            # Weights sum to at most 1 (checked when built); min() absorbs float rounding above 1.
            return [min(1.0, sum(w * v for w, v in zip(self.weights, row))) for row in zip(*columns)]
        combine = _COMBINE[self.op]
        return [float(combine(row)) for row in zip(*columns)]

    def signature(self) -> str:
        weights = self.weights or [None] * len(self.parts)
        parts = "; ".join(("" if w is None else f"{exact_number(w)}*") + p.signature()
                          for w, p in zip(weights, self.parts))
        return f"{self.preset + '=' if self.preset else ''}{self.op}({parts})"

    def close(self) -> None:
        """Close every part, even after one fails to close; then raise the first failure."""
        failure = None
        for part in self.parts:
            try:
                part.close()
            except Exception as err:  # an external command's stray last line: the others must still stop
                failure = failure or err
        if failure is not None:
            raise failure
