"""Rewards built from other rewards: a small, safe spec language and the same tree from a config file.

    product(use, copy-guard, repeat-guard)       min(chrf, length-guard(max_ratio=2.0))
    wsum(0.7*use-ref, 0.3*chrf)                  scale(py:my_rewards:logprob_bonus, lo=-5, hi=5)
    py:my_rewards:score                          cmd:python my_scorer.py --fast     (whole spec)

The parser reads tokens with one regular expression and builds a tree by recursive descent;
nothing is evaluated. `--reward-config FILE` (JSON or TOML) describes the same tree as data.
docs/rewards.md has the grammar; `use-guarded` below is the preset a ReST loop should start from.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from rest_cli.errors import UsageError
from rest_cli.io.records import Record
from rest_cli.rewards.base import Reward, _checked, get_reward, register, reward_names
from rest_cli.rewards.external import DEFAULT_RESTARTS, ExternalCommand
from rest_cli.rewards.user import PythonFunction, Scaled, calibrate, exact_number, parse_range

USE_GUARDED = "product(use, copy-guard, repeat-guard, length-guard)"


# --- the tree ---------------------------------------------------------------------------------

@dataclass
class Call:
    """`name(args..., key=value...)`: a reward, a combinator, or a py/cmd/sh leaf."""

    name: str
    args: list = field(default_factory=list)  # Call, Weighted, or a literal (cmd's command string)
    params: dict = field(default_factory=dict)

    def __str__(self) -> str:
        if self.name == "py" and len(self.args) == 1 and not self.params:
            return f"py:{self.args[0]}"
        inner = [_unparse(a) for a in self.args] + [f"{k}={_unparse(v)}" for k, v in self.params.items()]
        return f"{self.name}({', '.join(inner)})" if inner else self.name


@dataclass
class Weighted:
    """`0.7*reward`, a term of `wsum`."""

    weight: float
    node: Call

    def __str__(self) -> str:
        return f"{exact_number(self.weight)}*{self.node}"


def _unparse(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return str(value).lower()
    return exact_number(value) if isinstance(value, float) else str(value)


# --- the spec language ------------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:
      (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<string>"[^"]*"|'[^']*')
    | (?P<name>[A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.]*)*)
    | (?P<punct>[(),=*])
    )""", re.VERBOSE)


def _tokens(spec: str) -> list[tuple[str, str, int]]:
    """(kind, text, column) for each token, then ("end", "", len)."""
    tokens, pos = [], 0
    while spec[pos:].strip():
        match = _TOKEN.match(spec, pos)
        if not match:
            column = len(spec) - len(spec[pos:].lstrip())
            raise _bad(spec, f"unexpected {spec[column]!r}", column)
        tokens.append((match.lastgroup, match.group(match.lastgroup), match.start(match.lastgroup)))
        pos = match.end()
    return tokens + [("end", "", len(spec))]


def _bad(spec: str, problem: str, column: int) -> UsageError:
    return UsageError(f"bad reward spec {spec!r}: {problem} at column {column + 1}")


class _Parser:
    """Recursive descent over: term := [NUMBER '*'] call;  call := NAME ['(' [arg (',' arg)*] ')'];
    arg := NAME '=' literal | STRING | term;  literal := NUMBER | STRING | true | false."""

    def __init__(self, spec: str):
        self.spec, self.tokens, self.i = spec, _tokens(spec), 0

    def parse(self) -> Call | Weighted:
        node = self.term()
        self.expect("end", "the end of the spec")
        return node

    def peek(self, offset: int = 0) -> tuple[str, str, int]:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def expect(self, kind: str, what: str, text: str | None = None) -> str:
        got_kind, got, column = self.peek()
        if got_kind != kind or (text is not None and got != text):
            raise _bad(self.spec, f"expected {what}, got {got!r}" if got else f"expected {what}", column)
        self.i += 1
        return got

    def term(self) -> Call | Weighted:
        if self.peek()[0] == "number":
            weight = float(self.expect("number", "a weight"))
            self.expect("punct", "'*' after the weight", "*")
            return Weighted(weight, self.call())
        return self.call()

    def call(self) -> Call:
        name = self.expect("name", "a reward name")
        if name.startswith("py:"):
            return Call("py", [name[3:]])
        node = Call(name)
        if self.peek()[:2] == ("punct", "("):
            self.i += 1
            self.arguments(node)
            self.expect("punct", "',' or ')'", ")")
        return node

    def arguments(self, node: Call) -> None:
        while self.peek()[:2] != ("punct", ")"):
            if node.args or node.params:
                self.expect("punct", "',' or ')'", ",")
            if self.peek()[0] == "name" and self.peek(1)[:2] == ("punct", "="):
                self.parameter(node)
            elif self.peek()[0] == "string":
                node.args.append(self.expect("string", "a string")[1:-1])
            else:
                node.args.append(self.term())

    def parameter(self, node: Call) -> None:
        key, column = self.expect("name", "a parameter name"), self.peek(-1)[2]
        self.expect("punct", "'='", "=")
        if key in node.params:
            raise _bad(self.spec, f"parameter {key!r} given twice", column)
        node.params[key] = self.literal()

    def literal(self):
        kind, text, column = self.peek()
        self.i += 1
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "string":
            return text[1:-1]
        if kind == "name" and text in ("true", "false"):
            return text == "true"
        raise _bad(self.spec, f"expected a value (number, 'string', true or false), got {text!r}", column)


def parse_spec(spec: str) -> Call | Weighted:
    """The tree of a spec. `cmd:` and `sh:` take the rest of the spec verbatim as the command."""
    stripped = spec.strip()
    for prefix in ("cmd:", "sh:"):
        if stripped.startswith(prefix):
            return Call(prefix[:-1], [stripped[len(prefix):].strip()])
    return _Parser(spec).parse()


# --- composite rewards ------------------------------------------------------------------------

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

    def score(self, records: list[Record]) -> list[float]:
        columns = [_checked(part.score(records), records, part) for part in self.parts]
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
        for part in self.parts:
            part.close()


# --- building rewards from the tree -----------------------------------------------------------

def build(node, timeout: float = 300.0, restarts: int = DEFAULT_RESTARTS) -> Reward:
    """The reward a tree describes; UsageError (exit 2) for anything that does not make sense.

    `timeout` and `restarts` are the defaults of the external commands in it (ExternalCommand).
    """
    if isinstance(node, Weighted):
        raise UsageError(f"a weight ({node}) only makes sense inside wsum(...)")
    if not isinstance(node, Call):
        raise UsageError(f"expected a reward, got the value {_unparse(node)}")
    if node.name in _COMBINE or node.name == "wsum":
        return _composite(node, timeout, restarts)
    if node.name in _LEAVES:
        return _LEAVES[node.name](node, timeout, restarts)
    if node.args and node.name in reward_names():  # an unknown name is reported as such by get_reward
        raise UsageError(f"reward {node.name!r} takes named parameters only, e.g. {node.name}(key=value), "
                         f"not {node}")
    return get_reward(node.name, **node.params)


def _composite(node: Call, timeout: float, restarts: int) -> Composite:
    if node.params or not node.args:
        raise UsageError(f"{node.name}(...) combines one or more rewards and takes no parameters: {node}")
    weights = _weights(node) if node.name == "wsum" else None
    parts: list[Reward] = []
    try:
        for arg in node.args:
            parts.append(build(arg.node if weights is not None else arg, timeout, restarts))
    except BaseException:
        for part in parts:  # an external command already started must not outlive the error
            part.close()
        raise
    return Composite(node.name, parts, weights, name=str(node))


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


def _python(node: Call, timeout: float, restarts: int) -> Reward:
    if node.params:
        raise UsageError(f"a py: reward takes no parameters: {node}")
    return PythonFunction(_only_text(node, "module:function"))


def _command(node: Call, timeout: float, restarts: int) -> Reward:
    unknown = set(node.params) - {"timeout", "restarts"}
    if unknown:
        raise UsageError(f"{node.name}(...) takes only the parameters 'timeout' and 'restarts', "
                         f"not {', '.join(sorted(unknown))}")
    command = _only_text(node, "command")
    return ExternalCommand(command, shell=node.name == "sh", timeout=node.params.get("timeout", timeout),
                           restarts=node.params.get("restarts", restarts))


def _scale(node: Call, timeout: float, restarts: int) -> Reward:
    if len(node.args) != 1 or set(node.params) != {"lo", "hi"}:
        raise UsageError(f"scale takes one reward and lo=, hi=, e.g. scale(py:m:f, lo=-5, hi=5): {node}")
    lo, hi = node.params["lo"], node.params["hi"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
        raise UsageError(f"scale's lo and hi must be numbers: {node}")
    return Scaled(build(node.args[0], timeout, restarts), float(lo), float(hi), how="given")


_LEAVES = {"py": _python, "cmd": _command, "sh": _command, "scale": _scale}


def build_spec(spec: str, timeout: float = 300.0, restarts: int = DEFAULT_RESTARTS) -> Reward:
    """Parse and build a `--reward` spec (base.make_reward is the public entry)."""
    return build(parse_spec(spec), timeout, restarts)


@register("use-guarded")
def use_guarded() -> Reward:
    """The preset for a ReST loop: USE similarity to the source, times the copy, repeat and length guards."""
    reward = build_spec(USE_GUARDED)
    reward.name = reward.preset = "use-guarded"
    return reward


# --- the same tree from a config file ---------------------------------------------------------

def tree_from_config(value, where: str):
    """Turn a config value into the spec tree: a spec string, or a one-key table {name: ...}."""
    if isinstance(value, str):
        return parse_spec(value)
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], (int, float)):
        return Weighted(float(value[0]), tree_from_config(value[1], where))  # [weight, reward] in wsum
    if not (isinstance(value, dict) and len(value) == 1):
        raise UsageError(f"{where}: expected a spec string or a table with one key (the reward), "
                         f"got {json.dumps(value)[:80]}")
    (name, body), = value.items()
    return _node_from_config(name, body, where)


def _node_from_config(name: str, body, where: str) -> Call:
    if name in _COMBINE or name == "wsum":
        if not isinstance(body, list):
            raise UsageError(f"{where}: {name} takes a list of rewards")
        return Call(name, [tree_from_config(item, where) for item in body])
    if name in ("py", "cmd", "sh") and isinstance(body, str):
        return Call(name, [body])
    if not isinstance(body, dict) and body is not None:
        raise UsageError(f"{where}: the parameters of {name!r} must be a table, got {json.dumps(body)[:80]}")
    params = dict(body or {})
    if name in ("cmd", "sh"):
        return Call(name, [params.pop("command", None)], params)
    if name == "scale":
        return Call(name, [tree_from_config(params.pop("reward", None), where)], params)
    return Call(name, [], params)


def load_reward_config(path: str, timeout: float = 300.0, restarts: int = DEFAULT_RESTARTS) -> Reward:
    """Build the reward described under the key `reward` of a JSON or TOML file (docs/rewards.md)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"--reward-config {path}: cannot read: {err.strerror}") from None
    data = _parse_config(text, path)
    if not isinstance(data, dict) or "reward" not in data:
        raise UsageError(f"--reward-config {path}: expected a table with the key 'reward'")
    return build(tree_from_config(data["reward"], f"--reward-config {path}"), timeout, restarts)


def _parse_config(text: str, path: str):
    try:
        if path.endswith(".toml"):
            import tomllib  # Python 3.11+
            return tomllib.loads(text)
        return json.loads(text)
    except ImportError:
        raise UsageError(f"--reward-config {path}: TOML needs Python 3.11 or later; write it as JSON") from None
    except ValueError as err:  # json.JSONDecodeError and tomllib.TOMLDecodeError are both ValueErrors
        raise UsageError(f"--reward-config {path}: not valid {'TOML' if path.endswith('.toml') else 'JSON'}: "
                         f"{err}") from None


def build_reward(spec: str | None = None, config: str | None = None, value_range: str | None = None,
                 calibrate_from: str | None = None, timeout: float = 300.0, batch_size: int = 256,
                 restarts: int = DEFAULT_RESTARTS) -> Reward:
    """What `rest score` computes: a spec or a config file, optionally mapped to [0, 1] by a range.

    `value_range` is "LO:HI"; `calibrate_from` a JSONL file whose (src, ref) pairs set the range.
    """
    if (spec is None) == (config is None):
        raise UsageError("give the reward as --reward SPEC or as --reward-config FILE (one of them)")
    if value_range is not None and calibrate_from is not None:
        raise UsageError("--reward-range and --calibrate both set the range: give one")
    reward = build_spec(spec, timeout, restarts) if spec is not None else load_reward_config(config, timeout, restarts)
    try:
        return _ranged(reward, value_range, calibrate_from, batch_size)
    except BaseException:
        reward.close()
        raise


def _ranged(reward: Reward, value_range: str | None, calibrate_from: str | None, batch_size: int) -> Reward:
    if value_range is not None:
        return Scaled(reward, *parse_range(value_range), how="given")
    if calibrate_from is not None:
        return calibrate(reward, calibrate_from, batch_size)
    return reward
