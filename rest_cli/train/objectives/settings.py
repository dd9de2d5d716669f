"""Each objective's settings, their defaults and checks: `--objective-opt KEY=VALUE`.

No torch here: `rest finetune` checks the settings (and that an objective has the parent model
it needs) before any work, as it checks its other options. docs/objectives.md explains each.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from rest_cli.errors import UsageError


@dataclass(frozen=True)
class Settings:
    """No settings. `needs_parent`: the objective reads the --init model as a frozen reference;
    `shardable`: it works with --fsdp (objectives that hold copies of the model or a head do not)."""

    needs_parent: ClassVar[bool] = False
    shardable: ClassVar[bool] = True

    def check(self) -> None:
        """Refuse values out of range (ValueError naming the setting)."""


@dataclass(frozen=True)
class RWNLLSettings(Settings):
    beta: float = 0.1  # temperature of exp(reward / beta); rewards lie in [0, 1]

    def check(self) -> None:
        # exp(-1 / beta) is the smallest weight (reward 0 against 1): below exp(-50) float32 loses it.
        _at_least("beta", self.beta, 0.02)


@dataclass(frozen=True)
class GoldSettings(Settings):
    """Pang and He (2021), as their code runs IWSLT14 (run_iwslt_golds.sh)."""

    needs_parent: ClassVar[bool] = True
    shardable: ClassVar[bool] = False
    variant: str = "s"  # s: reward p_MLE(a|s); p: log p_MLE(a|s) - baseline
    lower: float = 0.2  # u: importance weights clamp(pi_old(a|s), u, 1) (--iw-min; 0.1 on CNN/DM)
    sync_every: int = 3000  # optimizer steps between refreshes of pi_old (--policy-update-per-k-epoch)
    horizon: int = 5  # K: Q_t sums the rewards of tokens t .. t+K (--suffix-num)
    gamma: float = 1.0  # discount within the horizon
    floor: float = 0.1  # c: each reward floored at c (--trunc-min)
    baseline: float = -10.0  # b of GOLD-p (--q-baseline)

    def check(self) -> None:
        if self.variant not in ("s", "p"):
            raise ValueError(f"variant must be s or p, got {self.variant!r}")
        _within("lower", self.lower, 0.0, 1.0)
        _at_least("sync_every", self.sync_every, 1)
        _at_least("horizon", self.horizon, 0)
        _within("gamma", self.gamma, 0.0, 1.0)
        _at_least("floor", self.floor, 0.0)


@dataclass(frozen=True)
class ValueSettings(Settings):
    """A state-value head on the policy's last hidden states (objectives.value)."""

    shardable: ClassVar[bool] = False
    gamma: float = 1.0  # discount of the sequence reward, which arrives at the last token
    value_lr: float = 1e-3  # the head's own AdamW rate, constant
    value_warmup: float = 0.1  # the first fraction of the steps fits the head alone; the policy waits
    value_width: int = 256  # hidden units of the head's MLP

    def check(self) -> None:
        _within("gamma", self.gamma, 0.0, 1.0)
        _at_least("value_lr", self.value_lr, 1e-12)
        if not 0.0 <= self.value_warmup < 1.0:
            raise ValueError(f"value_warmup must be in [0, 1), got {self.value_warmup:g}")
        _at_least("value_width", self.value_width, 1)


@dataclass(frozen=True)
class BVMPOSettings(ValueSettings):
    needs_parent: ClassVar[bool] = True
    eps_eta: float = 0.01  # V-MPO's bound on the KL of the sample weights from uniform
    eta: float = 1.0  # the temperature's initial value (learned)
    kl_start: float = 1.0  # lambda of KL(pi_BC || pi) at the first step ...
    kl_end: float = 1e-5  # ... annealed geometrically to this at the last

    def check(self) -> None:
        super().check()
        _at_least("eps_eta", self.eps_eta, 1e-12)
        _at_least("eta", self.eta, 1e-6)
        _at_least("kl_start", self.kl_start, 0.0)
        _at_least("kl_end", self.kl_end, 0.0)
        if (self.kl_start == 0) != (self.kl_end == 0):
            raise ValueError("kl_start and kl_end must both be 0 or both above 0 (the annealing is "
                             "geometric)")


SETTINGS: dict[str, type[Settings]] = {
    "nll": Settings, "rwnll": RWNLLSettings, "gold": GoldSettings, "oac": ValueSettings,
    "bvmpo": BVMPOSettings,
}


def _at_least(name: str, value: float, low: float) -> None:
    if not value >= low:
        raise ValueError(f"{name} must be at least {low:g}, got {value:g}")


def _within(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value:g}")


def parse_settings(objective: str, items: tuple[str, ...] | list[str]) -> Settings:
    """The settings of `objective` from KEY=VALUE strings, the others at their defaults (UsageError
    if one is wrong)."""
    cls = SETTINGS[objective]
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            takes = f"it takes {', '.join(known)}" if known else "it takes none"
            raise UsageError(f"--objective-opt {item!r}: not a setting of objective {objective} ({takes})")
        values[key] = _convert(item, type(known[key].default), text.strip())
    try:
        settings = cls(**values)
        settings.check()
    except ValueError as err:
        raise UsageError(f"--objective-opt: {objective}: {err}") from None
    return settings


def _convert(item: str, kind: type, text: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise UsageError(f"--objective-opt {item!r}: expected {kind.__name__}, got {text!r}") from None


def describe_settings() -> str:
    """One line per objective with its settings and defaults, for `rest finetune --help`."""
    lines = []
    for name, cls in SETTINGS.items():
        parts = [f"{f.name}={f.default}" for f in fields(cls)]
        lines.append(f"{name}: {', '.join(parts) if parts else '(none)'}")
    return "; ".join(lines)
