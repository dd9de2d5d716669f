"""The reward spec language: a small, safe grammar for reward trees, and the same tree from a config file.

    product(use, copy-guard, repeat-guard)       min(chrf, length-guard(max_ratio=2.0))
    wsum(0.7*use-ref, 0.3*chrf)                  scale(py:my_rewards:logprob_bonus, lo=-5, hi=5)
    py:my_rewards:score                          cmd:python my_scorer.py --fast     (whole spec)

The parser reads tokens with one regular expression and builds a tree by recursive descent;
nothing is evaluated. `--reward-config FILE` (JSON or TOML) describes the same tree as data.
docs/rewards.md has the grammar; build.py turns a tree into a reward.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from rest_cli.errors import UsageError
from rest_cli.rewards.user import exact_number

# The combinators of the language; composite.Composite computes them.
COMBINATORS = ("product", "min", "max", "mean", "wsum")


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
        inner = [unparse(a) for a in self.args] + [f"{k}={unparse(v)}" for k, v in self.params.items()]
        return f"{self.name}({', '.join(inner)})" if inner else self.name


@dataclass
class Weighted:
    """`0.7*reward`, a term of `wsum`."""

    weight: float
    node: Call

    def __str__(self) -> str:
        return f"{exact_number(self.weight)}*{self.node}"


def unparse(value) -> str:
    """A node or a literal as it is written in a spec."""
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


# --- the same tree from a config file ---------------------------------------------------------

def parse_config_file(path: str) -> Call | Weighted:
    """The tree under the key `reward` of a JSON or TOML file (docs/rewards.md)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"--reward-config {path}: cannot read: {err.strerror}") from None
    data = _parse_config(text, path)
    if not isinstance(data, dict) or "reward" not in data:
        raise UsageError(f"--reward-config {path}: expected a table with the key 'reward'")
    return tree_from_config(data["reward"], f"--reward-config {path}")


def _parse_config(text: str, path: str):
    try:
        if path.endswith(".toml"):
            import tomllib  # Python 3.11+
            return tomllib.loads(text)
        return json.loads(text)
    except ImportError:
        raise UsageError(f"--reward-config {path}: TOML needs Python 3.11 or later; "
                         f"write it as JSON") from None
    except ValueError as err:  # json.JSONDecodeError and tomllib.TOMLDecodeError are both ValueErrors
        kind = "TOML" if path.endswith(".toml") else "JSON"
        raise UsageError(f"--reward-config {path}: not valid {kind}: {err}") from None


def tree_from_config(value, where: str) -> Call | Weighted:
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
    if name in COMBINATORS:
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
