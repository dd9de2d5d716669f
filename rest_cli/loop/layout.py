"""The run folder of a ReST loop, stated once: where rest.mk puts each step's files.

    RUN/data/{train,valid,test}.jsonl      the demo's data (when TRAIN/VALID/TEST are not given)
    RUN/g0/model/  RUN/g0/valid.json       BC (Grow 0): the model and its validation `rest eval` report
    RUN/gG/candidates.jsonl.gz             Grow G: scored candidates (references included)
    RUN/gG/iI/data.jsonl.gz                Improve I of Grow G: the filtered training data
    RUN/gG/iI/data.stats.json                and its counts (`rest filter --stats`: samples, references),
    RUN/gG/iI/model/  RUN/gG/iI/valid.json   the policy and its validation report
    RUN/gG/iI/skipped                      mark: validation reward had stopped rising, nothing trained
    RUN/gG/i0/valid.json                   Grow G's starting policy, measured before any Improve step
    RUN/gG/policy                          the best-validated model of Grow G (a path, one line)
    RUN/control/NAME/                      the control arms' models (converged, more)
    RUN/test/NAME.json                     test-set reports: bc, gG-iI, control-NAME
    RUN/bon/NAME.json                      Best-of-N curves: bc, final
    RUN/results.{md,json,png}              the report

rest.mk writes these paths (tests/loop/test_loop_make.py checks that they agree); the report reads
them through this module only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

BC = "bc"
_STEP = re.compile(r"g(\d+)-i(\d+)$")


def step_name(grow: int, improve: int) -> str:
    """The name of a policy in reports and tables: `g1-i2`."""
    return f"g{grow}-i{improve}"


def parse_step_name(name: str) -> tuple[int, int] | None:
    """(grow, improve) of `g1-i2`; None for other names (bc, controls)."""
    match = _STEP.match(name)
    return (int(match[1]), int(match[2])) if match else None


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder."""

    root: Path

    def step_dir(self, name: str) -> Path:
        """Where a policy's step lives: bc in g0/, `g1-i2` in g1/i2/."""
        if name == BC:
            return self.root / "g0"
        grow, improve = parse_step_name(name)
        return self.root / f"g{grow}" / f"i{improve}"

    def valid_report(self, name: str) -> Path:
        return self.step_dir(name) / "valid.json"

    def skipped_mark(self, name: str) -> Path:
        return self.step_dir(name) / "skipped"

    def filter_stats(self, name: str) -> Path:
        return self.step_dir(name) / "data.stats.json"

    def model(self, name: str) -> Path:
        return self.step_dir(name) / "model"

    def candidates(self, grow: int) -> Path:
        return self.root / f"g{grow}" / "candidates.jsonl.gz"

    def policy_file(self, grow: int) -> Path:
        return self.root / f"g{grow}" / "policy"

    def test_report(self, name: str) -> Path:
        return self.root / "test" / f"{name}.json"

    def curve(self, name: str) -> Path:
        return self.root / "bon" / f"{name}.json"

    def results(self, suffix: str) -> Path:
        return self.root / f"results.{suffix}"

    def final_policy_file(self) -> Path | None:
        """The policy file of the last Grow step (the run's final policy), None before any Grow."""
        grows = [int(p.parent.name[1:]) for p in self.root.glob("g*/policy") if p.parent.name[1:].isdigit()]
        return self.policy_file(max(grows)) if grows and max(grows) > 0 else None

    def step_of_model(self, model: str) -> str | None:
        """The step whose model folder `model` names (bc, g1-i2), None for another folder."""
        target = Path(model).resolve()
        names = [BC] + [step_name(int(g.name[1:]), int(i.name[1:])) for g in self.root.glob("g*")
                        for i in g.glob("i*") if g.name[1:].isdigit() and i.name[1:].isdigit()]
        return next((name for name in names if self.model(name).resolve() == target), None)

    def step_names(self) -> list[str]:
        """bc, then every Improve step with a test report, in loop order."""
        steps = [parse_step_name(p.stem) for p in (self.root / "test").glob("g*-i*.json")]
        return [BC] + [step_name(g, i) for g, i in sorted(s for s in steps if s is not None)]

    def control_reports(self) -> list[Path]:
        return sorted((self.root / "test").glob("control-*.json"))

    def curves(self) -> list[Path]:
        return sorted((self.root / "bon").glob("*.json"))
