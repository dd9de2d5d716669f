"""The one way to build a reward: from a spec or a config file, with the options of every scoring command.

    build_reward("chrf")
    build_reward("product(use, copy-guard)", RewardOptions(timeout=60.0))
    build_reward(config="reward.toml", options=RewardOptions(value_range="-5:5"))

The spec language lives in spec.py; `_Builder` turns its tree into rewards. `use-guarded`, the preset
a ReST loop should start from, is registered here because it is built from a spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rest_cli.errors import UsageError
from rest_cli.rewards.base import MAX_CHARS, FieldCap, Reward, register, registered_reward, reward_names
from rest_cli.rewards.composite import Composite
from rest_cli.rewards.external import DEFAULT_RESTARTS, ExternalCommand
from rest_cli.rewards.spec import COMBINATORS, Call, Weighted, parse_config_file, parse_spec, unparse
from rest_cli.rewards.user import PythonFunction, Scaled, calibrate, parse_range

USE_GUARDED = "product(use, copy-guard, repeat-guard, length-guard)"


@dataclass(frozen=True)
class RewardOptions:
    """What a reward needs beyond its spec: `--reward-timeout`, `--reward-restarts`, `--reward-range`, ...

    `timeout` and `restarts` are defaults for the external commands of a spec: their own
    `cmd(..., timeout=, restarts=)` wins. The range (given or calibrated) applies to the whole reward.
    `max_chars` bounds what the reward is shown of `hyp`, `ref` and `src` (base.FieldCap).
    """

    timeout: float = 300.0             # seconds an external command may take to answer one batch
    restarts: int = DEFAULT_RESTARTS   # restarts of an external command on one batch, after it dies or hangs
    value_range: str | None = None     # "LO:HI", mapped linearly onto [0, 1] and clipped
    calibrate: str | None = None       # JSONL with src and ref: its 1st-99th percentile scores set the range
    batch_size: int = 256              # records per reward call while calibrating
    max_chars: int = MAX_CHARS         # characters of hyp, ref and src the reward sees (0: all)


def build_reward(spec: str | None = None, options: RewardOptions = RewardOptions(),
                 config: str | None = None) -> Reward:
    """The reward that `spec` or the `config` file describes (one of them), ranged by `options`.

    `spec` is what `--reward` takes: a name, `length-guard(max_ratio=2)`, `product(use, copy-guard)`,
    `py:module:function` or `cmd:COMMAND ARGS`; `config` a JSON or TOML file with the same tree under
    `reward` (docs/rewards.md has both). UsageError (exit 2) for anything that does not make sense.
    """
    if (spec is None) == (config is None):
        raise UsageError("give the reward as --reward SPEC or as --reward-config FILE (one of them)")
    if options.value_range is not None and options.calibrate is not None:
        raise UsageError("--reward-range and --calibrate both set the range: give one")
    if isinstance(options.max_chars, bool) or not isinstance(options.max_chars, int) or options.max_chars < 0:
        raise UsageError(f"--reward-max-chars must be a whole number >= 0, got {options.max_chars!r}")
    tree = parse_spec(spec) if spec is not None else parse_config_file(config)
    reward = _Builder(options).build(tree)
    try:
        reward = _ranged(reward, options)
    except BaseException:
        reward.close()  # an external command already started must not outlive the error
        raise
    reward.cap = FieldCap(options.max_chars)  # counts only the records the command scores
    return reward


def check_spec(spec: str) -> None:
    """UsageError if `spec` does not parse or names an unknown reward; builds nothing (no model loads)."""
    pending = [parse_spec(spec)]
    while pending:
        node = pending.pop()
        if isinstance(node, Weighted):
            pending.append(node.node)
        elif isinstance(node, Call) and node.name not in _Builder.LEAVES:
            if node.name not in COMBINATORS and node.name not in reward_names():
                raise UsageError(f"unknown reward {node.name!r}; known rewards: {', '.join(reward_names())}")
            pending.extend(node.args)


def _ranged(reward: Reward, options: RewardOptions) -> Reward:
    if options.value_range is not None:
        return Scaled(reward, *parse_range(options.value_range), how="given")
    if options.calibrate is not None:
        return calibrate(reward, options.calibrate, options.batch_size, FieldCap(options.max_chars))
    return reward


class _Builder:
    """Builds the reward a spec tree describes, node by node.

    It holds the options so that the nodes need not pass them down: only the cmd/sh leaves read them.
    """

    LEAVES = {"py": "python", "cmd": "command", "sh": "command", "scale": "scale"}  # the method per leaf

    def __init__(self, options: RewardOptions):
        self.options = options

    def build(self, node) -> Reward:
        """The reward of `node`; UsageError for anything that does not make sense."""
        if isinstance(node, Weighted):
            raise UsageError(f"a weight ({node}) only makes sense inside wsum(...)")
        if not isinstance(node, Call):
            raise UsageError(f"expected a reward, got the value {unparse(node)}")
        if node.name in COMBINATORS:
            return self.composite(node)
        if node.name in self.LEAVES:
            return getattr(self, self.LEAVES[node.name])(node)
        if node.args and node.name in reward_names():  # an unknown name is reported as such below
            raise UsageError(f"reward {node.name!r} takes named parameters only, "
                             f"e.g. {node.name}(key=value), not {node}")
        return registered_reward(node.name, **node.params)

    def composite(self, node: Call) -> Composite:
        if node.params or not node.args:
            raise UsageError(f"{node.name}(...) combines one or more rewards and takes no parameters: "
                             f"{node}")
        weights = _weights(node) if node.name == "wsum" else None
        parts: list[Reward] = []
        try:
            for arg in node.args:
                parts.append(self.build(arg.node if weights is not None else arg))
        except BaseException:
            for part in parts:  # an external command already started must not outlive the error
                part.close()
            raise
        return Composite(node.name, parts, weights, name=str(node))

    def python(self, node: Call) -> Reward:
        if node.params:
            raise UsageError(f"a py: reward takes no parameters: {node}")
        return PythonFunction(_only_text(node, "module:function"))

    def command(self, node: Call) -> Reward:
        unknown = set(node.params) - {"timeout", "restarts"}
        if unknown:
            raise UsageError(f"{node.name}(...) takes only the parameters 'timeout' and 'restarts', "
                             f"not {', '.join(sorted(unknown))}")
        return ExternalCommand(_only_text(node, "command"), shell=node.name == "sh",
                               timeout=node.params.get("timeout", self.options.timeout),
                               restarts=node.params.get("restarts", self.options.restarts))

    def scale(self, node: Call) -> Reward:
        if len(node.args) != 1 or set(node.params) != {"lo", "hi"}:
            raise UsageError(f"scale takes one reward and lo=, hi=, e.g. scale(py:m:f, lo=-5, hi=5): {node}")
        lo, hi = node.params["lo"], node.params["hi"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
            raise UsageError(f"scale's lo and hi must be numbers: {node}")
        return Scaled(self.build(node.args[0]), float(lo), float(hi), how="given")


def _weights(node: Call) -> list[float]:
    """wsum's weights: every term weighted, each >= 0, summing to at most 1 so the sum stays in [0, 1]."""
    if not all(isinstance(arg, Weighted) for arg in node.args):
        raise UsageError(f"every term of wsum needs a weight, e.g. wsum(0.7*use, 0.3*chrf): {node}")
    weights = [arg.weight for arg in node.args]
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) > 1 + 1e-9:
        raise UsageError(f"wsum weights must be >= 0 and sum to at most 1 (the result must stay in [0, 1]), "
                         f"got {', '.join(f'{w:g}' for w in weights)}")
    return weights


def _only_text(node: Call, what: str) -> str:
    if len(node.args) != 1 or not isinstance(node.args[0], str):
        raise UsageError(f"{node.name}(...) takes one quoted {what}, e.g. {node.name}(\"...\"): {node}")
    return node.args[0]


@register("use-guarded")
def use_guarded() -> Reward:
    """The preset for a ReST loop: USE similarity to the source, times the copy, repeat and length guards."""
    reward = _Builder(RewardOptions()).build(parse_spec(USE_GUARDED))
    reward.name = reward.preset = "use-guarded"
    return reward
