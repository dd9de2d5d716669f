"""Nasty JSONL fed to every command that reads records: never a traceback, never a silent loss.

For each command and each case, the contract of docs/format.md: exit 0 with the documented
treatment, or exit 3 with one line `rest CMD: error: FILE:LINE: ...` naming the field; with
--skip-invalid, output plus the skipped count reported on stderr accounts for every record.

Commands run in this process (typer's CliRunner), so an escaping exception shows as
`result.exception` where a user would see a traceback. Most commands meet every case one by
one. `sample`, `eval` and `finetune` (which load or train a model) and the filters that read as
`--top-k` does meet one by one only the cases they refuse for their own reasons (the fields they
check) and a few of the shared reader's; every case reaches every command in one mixed file
read with --skip-invalid, where the exact skipped count shows each line refused or kept.
"""

from __future__ import annotations

import functools
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.main import get_command
from typer.testing import CliRunner

from rest_cli.cli.main import app
from tests.helpers import read_jsonl

BOM = b"\xef\xbb\xbf"
GOOD = {"src": "eins zwei", "ref": "one two", "hyp": "one two", "k": 0, "reward": 0.5}
_MISSING = object()
HUGE = "x" * (4 << 20)  # a 4 MB field: lines are not size-limited


def rec(record_id="s1", end=b"\n", **fields) -> bytes:
    """One record line: GOOD with `fields` changed (_MISSING drops one)."""
    record = {"id": record_id, **GOOD, **fields}
    return orjson.dumps({k: v for k, v in record.items() if v is not _MISSING}) + end


def raw(text: str, end=b"\n") -> bytes:
    """A line written by hand (for what orjson would never write), from a GOOD-like record."""
    return text.encode("utf-8", "surrogatepass") + end


GOOD_TAIL = '"src": "eins zwei", "ref": "one two", "hyp": "one two", "k": 0'


# --- The commands ---------------------------------------------------------------------------

@dataclass
class Command:
    name: str                                  # the subcommand, as its messages name it
    args: Callable[[str, Path, str], list[str]]  # (input, work folder, model dir) -> argv
    count: Callable[[object, Path], int]       # records of the input accounted for in the output
    needs: frozenset = frozenset()             # required fields
    checks: frozenset = frozenset()            # optional fields type-checked when present
    grouped: bool = False                      # reads candidates grouped by id
    expensive: bool = False                    # loads or trains a model
    thorough: bool = True                      # meets every case one by one (else see _one_by_one)
    loads_first: bool = False                  # loads its model before reading (each run costs)
    label: str = ""

    def __post_init__(self):
        self.label = self.label or self.name

    def refuses(self, case: "Case") -> str | None:
        """The message pattern for the case's bad line, or None if this command accepts it."""
        if case.problem:
            return case.problem
        if case.field in self.needs | self.checks:
            return f"field '{case.field}'"
        if case.missing & self.needs:
            return "field '(" + "|".join(sorted(case.missing & self.needs)) + ")' is missing"
        if self.name == "finetune" and {"hyp", "ref"} <= case.missing:
            return "neither 'hyp' nor 'ref'"
        if case.ungrouped and self.grouped:
            return "appears again after other ids: the stream is not grouped"
        return None


def _stdout_records(result, work) -> int:
    return len(read_jsonl(result.stdout_bytes))


def _filter_in(result, work) -> int:
    return int(re.search(r"rest filter: (\d+) records in", result.stderr)[1])


def _finetune_records(result, work) -> int:
    return orjson.loads((work / "model" / "training.json").read_bytes())["data"]["train"]["records"]


def _filter(label, *options, needs=("id", "reward"), thorough=True):
    return Command("filter", lambda p, w, m: ["filter", *options, p], _filter_in, frozenset(needs),
                   grouped="id" in needs, thorough=thorough, label=label)


COMMANDS = [
    Command("score", lambda p, w, m: ["score", "-r", "exact", p], _stdout_records, frozenset({"hyp", "ref"})),
    _filter("filter-tau", "--tau", "0.1", needs=("reward",)),
    _filter("filter-percentile", "--percentile", "50", thorough=False),  # reads as --top-k does
    _filter("filter-gamma", "--gamma", "0.5", thorough=False),
    _filter("filter-top-k", "--top-k", "1"),
    _filter("filter-dedup", "--dedup", needs=("id", "reward", "hyp")),
    Command("bestofn", lambda p, w, m: ["bestofn", p],
            lambda r, w: sum(x["best_of"] for x in read_jsonl(r.stdout_bytes)),
            frozenset({"id", "reward"}), grouped=True),
    Command("rmcheck", lambda p, w, m: ["rmcheck", "-r", "exact", "-p", "empty", "--threshold", "0", "-d", p],
            lambda r, w: orjson.loads(r.stdout_bytes)["pairs"], frozenset({"src", "ref"})),
    Command("sample", lambda p, w, m: ["sample", "-m", m, "-n", "2", "--max-length", "4", p],
            lambda r, w: len(read_jsonl(r.stdout_bytes)) // 2, frozenset({"src"}), frozenset({"id"}),
            expensive=True, loads_first=True),
    Command("eval", lambda p, w, m: ["eval", "-m", m, "--max-length", "4", p],
            lambda r, w: orjson.loads(r.stdout_bytes)["results"][0]["sources"], frozenset({"src"}),
            frozenset({"id", "ref"}), expensive=True),
    Command("finetune", lambda p, w, m: ["finetune", "--preset", "tiny", "--steps", "1", "--vocab-size", "40",
                                         "-o", str(w / "model"), p],
            _finetune_records, frozenset({"src"}), frozenset({"hyp", "ref", "weight"}), expensive=True),
]
BY_LABEL = {c.label: c for c in COMMANDS}


# --- The cases -------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    lines: list[bytes]           # the case's own lines, line ends included
    records: int = 1             # records among them (blank lines are not)
    bad: int = 0                 # index in `lines` of the line a command may refuse
    problem: str = ""            # refused by every command (the shared reader), with this message
    field: str | None = None     # or: this field has a wrong type or value
    missing: frozenset = frozenset()  # or: these fields are left out
    ungrouped: bool = False      # or: an id comes back after another
    where: str = "middle"        # first: must open the file; last: must end it
    representative: bool = False  # a reader case that the expensive commands meet one by one too
    mixable: bool = True         # goes into the mixed file

    def file(self) -> tuple[bytes, int, int]:
        """The case between good records; the line number of its `bad` line; the records in all."""
        before = [] if self.where == "first" else [rec("s0")]
        after = [] if self.where == "last" else [rec("s9")]
        return (b"".join(before + self.lines + after), len(before) + self.bad + 1,
                len(before) + self.records + len(after))


def _reader(name, line, problem, **kw):
    return Case(name, [line], problem=problem, **kw)


def _field(name, value, **fields):
    return Case(f"{name}", [rec(**{name.split("-")[0]: value}, **fields)], field=name.split("-")[0])


CASES = [
    # Lines that are not records: every command refuses them (the reader's checks).
    _reader("invalid-utf8-in-string", raw('{"id": "s1", "src": "caf', b"") + b'\xe9", "ref": "x", '
            b'"hyp": "x", "reward": 0.5}\n', "invalid UTF-8 at byte 25", representative=True),
    _reader("invalid-utf8-bytes-before", b"\xff\xfe" + rec(), r"invalid UTF-8 at byte 1"),
    _reader("nan-literal", raw(f'{{"id": "s1", {GOOD_TAIL}, "reward": NaN}}'), "NaN is not JSON",
            representative=True),
    _reader("infinity-literal", raw(f'{{"id": "s1", {GOOD_TAIL}, "reward": Infinity}}'),
            "Infinity is not JSON"),
    _reader("minus-infinity-literal", raw(f'{{"id": "s1", {GOOD_TAIL}, "reward": -Infinity}}'),
            "Infinity is not JSON"),
    _reader("nan-in-a-field-no-command-reads", raw(f'{{"id": "s1", {GOOD_TAIL}, "reward": 0.5, "x": NaN}}'),
            "NaN is not JSON"),
    _reader("number-overflowing-a-double", raw(f'{{"id": "s1", {GOOD_TAIL}, "reward": 1e999}}'),
            "number is infinity"),
    _reader("lone-surrogate-escape", raw(f'{{"id": "s1", {GOOD_TAIL}, "reward": 0.5, "src": "a\\ud800"}}'),
            "surrogate"),
    _reader("json-array", b'["s1", "eins zwei", "one two"]\n', "expected a JSON object, got list",
            representative=True),
    _reader("line-separators-in-the-value-shown", raw('"eins\u2028zwei\x85drei"'),
            r"got str .eins\\u2028zwei"),
    _reader("json-number", b"42\n", "expected a JSON object, got int"),
    _reader("json-string", b'"eins zwei"\n', "expected a JSON object, got str"),
    _reader("json-null", b"null\n", "expected a JSON object, got null"),
    _reader("json-true", b"true\n", "expected a JSON object, got bool"),
    _reader("trailing-garbage", rec(end=b" x\n"), "unexpected content after document"),
    _reader("two-objects-on-one-line", rec(end=b"") + rec("s2"), "unexpected content after document"),
    _reader("nul-byte-after-object", rec(end=b"\x00\n"), "unexpected content after document"),
    _reader("nesting-too-deep", b'{"id": "s1", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}\n",
            "depth limit exceeded"),
    _reader("bom-mid-file", BOM + rec(), "byte-order mark .BOM. is allowed only at the start"),
    _reader("bom-then-not-an-object", BOM + b"null\n", "expected a JSON object, got null", where="first",
            mixable=False),
    Case("truncated-last-line", [rec(end=b"")[:30]], problem="invalid JSON: unexpected end of data",
         where="last", representative=True, mixable=False),

    # Accepted by every command (documented treatments).
    Case("bom-at-start", [BOM + rec()], where="first"),
    Case("crlf-line-ends", [rec(end=b"\r\n"), rec("s2", end=b"\r\n")], records=2),
    Case("last-line-without-newline", [rec(end=b"")], where="last", mixable=False),
    Case("blank-and-whitespace-lines", [b"\n", b"  \t\r\n", rec(), b"\x0c\n"], bad=2),
    Case("huge-line", [rec(blob=HUGE)]),
    Case("duplicate-ids-in-a-row", [rec(), rec(hyp="a dog")], records=2),
    Case("duplicate-keys-last-wins", [raw(f'{{"id": "s1", "src": 1, {GOOD_TAIL}, "reward": 0.5}}')]),
    Case("empty-src", [rec(src="")]),
    Case("whitespace-only-src", [rec(src=" \t ")]),
    Case("odd-unicode", [rec(src="eins \u2028\u0000\ufeff\U0001F600 zwei", hyp="one \u2029 two")]),
    Case("integer-beyond-64-bits-elsewhere", [raw(f'{{"id": "s1", {GOOD_TAIL}, "reward": 0.5, '
                                                 f'"n": 123456789012345678901234567890}}')]),

    # A field of the wrong type: refused by the commands that read or check it, carried by the others.
    _field("src-object", {"text": "eins"}),
    _field("src-null", None),
    _field("hyp-list", ["one two"]),
    _field("hyp-bool", True),
    _field("hyp-list-of-line-separators", ["\u2028", "\u2029", "\x85"]),
    _field("ref-number", 7),
    _field("ref-object", {}),
    _field("id-float", 1.5),
    _field("id-null", None),
    _field("id-list", ["s1"]),
    Case("id-beyond-64-bits", [raw(f'{{"id": 123456789012345678901234567890, {GOOD_TAIL}, "reward": 0.5}}')],
         field="id"),
    _field("reward-string", "0.5"),
    _field("reward-bool", True),
    _field("reward-above-one", 1.5),
    _field("reward-negative", -0.1),
    _field("reward-null", None),
    _field("weight-string", "1"),
    _field("weight-bool", True),
    _field("weight-negative", -1.0),
    Case("huge-wrong-field", [rec(hyp=[HUGE])], field="hyp"),

    # A field left out.
    *[Case(f"no-{name}", [rec(**{name: _MISSING})], missing=frozenset({name}))
      for name in ("src", "hyp", "ref", "reward", "id")],
    Case("no-hyp-nor-ref", [rec(hyp=_MISSING, ref=_MISSING)], missing=frozenset({"hyp", "ref"})),

    # An id that comes back: refused by per-source commands, whatever --skip-invalid says.
    Case("id-reappears", [rec("s1"), rec("s0")], records=2, bad=1, ungrouped=True, mixable=False),
]
WHOLE_FILES = {"empty-file": b"", "blank-lines-only": b"\n \n\r\n\t\n", "bom-only": BOM + b"\n"}


# --- Running ---------------------------------------------------------------------------------

@functools.cache
def _command():
    return get_command(app)


def invoke(args: list[str]):
    """Run the CLI in-process; an exception that escapes is what a user would see as a traceback."""
    # Building the click command from the typer app is 3/4 of a run: build it once.
    with mock.patch("typer.testing._get_command", lambda _: _command()):
        result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback for {args}: {result.exception!r}") from result.exception
    assert "Traceback" not in result.stderr
    return result


def assert_one_error_line(result, command: str, path: Path, line: int | None, pattern: str) -> None:
    """Exit 3 and one line `rest CMD: error: FILE:LINE: ...`, the last on stderr."""
    assert result.exit_code == 3, result.stderr
    lines = result.stderr.splitlines()
    errors = [text for text in lines if ": error: " in text]
    assert errors == lines[-1:], result.stderr
    where = f"{re.escape(str(path))}" + (f":{line}" if line else "")
    assert re.match(rf"rest {command}: error: {where}: .*{pattern}", errors[0]), errors[0]
    assert len(errors[0]) < 300  # a huge line is not echoed


def run_case(command: Command, case: Case, work: Path, model: str) -> None:
    data, line, records = case.file()
    path = work / "in.jsonl"
    path.write_bytes(data)
    result = invoke(command.args(str(path), work, model))
    refused = command.refuses(case)
    if refused:
        assert_one_error_line(result, command.name, path, line, refused)
    else:
        assert result.exit_code == 0, result.stderr
        assert command.count(result, work) == records


def _one_by_one(command: Command) -> list[Case]:
    """The cases a command meets one by one: all, or those it refuses for its own reasons and a few more."""
    if command.thorough and not command.expensive:
        return CASES
    chosen, kinds = [], set()
    for case in CASES:
        kind = (case.field, case.missing, case.ungrouped)
        own = not case.problem and command.refuses(case) is not None
        if case.representative or (own and not (command.loads_first and kind in kinds)):
            chosen.append(case)
            kinds.add(kind)
    return chosen


MATRIX = [pytest.param(c, k, id=f"{c.label}-{k.name}") for c in COMMANDS for k in _one_by_one(c)]


@pytest.mark.parametrize("command, case", MATRIX)
def test_each_case(command, case, tmp_path, random_model_dir):
    run_case(command, case, tmp_path, str(random_model_dir))


def mixed_file(cases: list[Case]) -> tuple[bytes, int]:
    """All mixable cases in one file, each under its own ids (so the stream stays grouped)."""
    parts = [c for c in cases if c.where == "first"] + [c for c in cases if c.where == "middle"]
    lines = [rec("s0")] if parts[0].where != "first" else []
    for index, case in enumerate(parts):
        lines += [line.replace(b'"s1"', f'"c{index}"'.encode()) for line in case.lines]
    lines.append(rec("s9", end=b""))  # and a last line without a newline
    return b"".join(lines), sum(c.records for c in parts) + 1 + (parts[0].where != "first")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.label)
def test_skip_invalid_accounts_for_every_record(command, tmp_path, random_model_dir):
    cases = [c for c in CASES if c.mixable]
    data, total = mixed_file(cases)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(data)
    refused = sum(1 for c in cases if command.refuses(c))
    result = invoke(command.args(str(path), tmp_path, str(random_model_dir)) + ["--skip-invalid"])
    assert result.exit_code == 0, result.stderr
    assert f"rest {command.name}: skipped {refused} invalid record(s); first: {path}:" in result.stderr
    assert command.count(result, tmp_path) == total - refused


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.name not in ("eval", "rmcheck", "finetune")],
                         ids=lambda c: c.label)
@pytest.mark.parametrize("name", WHOLE_FILES)
def test_files_without_records_give_empty_output(command, name, tmp_path, random_model_dir):
    path = tmp_path / "in.jsonl"
    path.write_bytes(WHOLE_FILES[name])
    result = invoke(command.args(str(path), tmp_path, str(random_model_dir)))
    assert result.exit_code == 0, result.stderr
    assert command.count(result, tmp_path) == 0 and result.stdout_bytes == b""


@pytest.mark.parametrize("name", WHOLE_FILES)
def test_finetune_without_records_is_an_input_error(name, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(WHOLE_FILES[name])
    result = invoke(["finetune", "--preset", "tiny", "--steps", "1", "-o", tmp_path / "model", path])
    assert_one_error_line(result, "finetune", path, None, "no record to train on")
    assert not (tmp_path / "model").exists()


# --- Sets with nothing to work on, and fields a reward needs -------------------------------

@pytest.mark.parametrize("name", ["empty-file"])
def test_rmcheck_without_pairs_is_an_input_error(name, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(WHOLE_FILES[name])
    result = invoke(BY_LABEL["rmcheck"].args(str(path), tmp_path, ""))
    assert_one_error_line(result, "rmcheck", path, None, "no")


def test_eval_without_sources_is_an_input_error(tmp_path, random_model_dir):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"")
    result = invoke(["eval", "-m", random_model_dir, "-r", "exact", path])
    assert_one_error_line(result, "eval", path, None, "no")


def test_eval_reward_fields_are_checked_on_input(tmp_path, random_model_dir):
    path = tmp_path / "in.jsonl"
    path.write_bytes(rec("s0") + rec(ref=_MISSING))
    result = invoke(["eval", "-m", random_model_dir, "--max-length", "4", "-r", "exact", path])
    assert_one_error_line(result, "eval", path, 2, "field 'ref' is missing")


def test_finetune_input_error_leaves_no_work_directory(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(rec(src="\u200b"))  # a source that tokenizes to nothing
    result = invoke(["finetune", "--preset", "tiny", "--steps", "1", "-o", tmp_path / "model", path])
    assert result.exit_code == 3, result.stderr
    assert not (tmp_path / "model.partial").exists()


# --- Generated lines -------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
texts = st.text(max_size=12)
records = st.fixed_dictionaries({}, optional={
    "id": st.integers(0, 3) | texts | json_values, "src": texts | json_values, "ref": texts | json_values,
    "hyp": texts | json_values, "reward": st.floats(0, 1) | json_values,
    "weight": st.floats(0, 2) | json_values, "k": st.integers(0, 3) | json_values})
lines = st.one_of(records.map(orjson.dumps), records.map(orjson.dumps), json_values.map(orjson.dumps),
                  st.binary(max_size=24).map(lambda b: b.replace(b"\n", b"")))
files = st.lists(lines, max_size=6).map(lambda ls: b"\n".join(ls))


def record_lines(data: bytes) -> int:
    """How many lines of `data` are records (blank lines, and a lone BOM at the start, are not)."""
    count = 0
    for number, line in enumerate(data.split(b"\n"), 1):
        if number == 1 and line.startswith(BOM):
            line = line[len(BOM):]
        count += bool(line.strip())
    return count


def check_generated(command: Command, data: bytes, model: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        path = work / "in.jsonl"
        path.write_bytes(data)
        plain = invoke(command.args(str(path), work, model))
        assert plain.exit_code in ((0, 1, 3) if command.name == "rmcheck" else (0, 3)), plain.stderr
        if plain.exit_code == 3:
            assert_one_error_line(plain, command.name, path,
                                  r"\d+" if "no record" not in plain.stderr else None, "")
        if command.name == "finetune":
            return  # the lenient run trains again; the mixed-file test covers its counting
        lenient = invoke(command.args(str(path), work, model) + ["--skip-invalid"])
        if lenient.exit_code == 3:  # not one record's fault: an ungrouped stream, or none left to work on
            assert (command.grouped and "appears again" in lenient.stderr) or "no record" in lenient.stderr, \
                lenient.stderr
            return
        assert (lenient.exit_code in (0, 1) if command.name == "rmcheck"
                else lenient.exit_code == 0), lenient.stderr
        found = re.search(r"skipped (\d+) invalid record\(s\)", lenient.stderr)
        assert command.count(lenient, work) + (int(found[1]) if found else 0) == record_lines(data)


CHEAP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
COSTLY = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("command", [c for c in COMMANDS if not c.expensive], ids=lambda c: c.label)
@CHEAP
@given(data=files)
def test_generated_lines(command, data, random_model_dir):
    check_generated(command, data, str(random_model_dir))


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.expensive], ids=lambda c: c.label)
@COSTLY
@given(data=files)
def test_generated_lines_with_a_model(command, data, random_model_dir):
    check_generated(command, data, str(random_model_dir))
