"""External reward commands: the JSONL protocol, bad answers, and restarts after a crash or a hang."""

import json
import re
import shlex
import sys
import time
from pathlib import Path

import pytest

from rest_cli.errors import RestError, UsageError
from rest_cli.rewards import RewardOptions, build_reward, score_records
from rest_cli.rewards.external import DEFAULT_RESTARTS, STDERR_LINE_CHARS, ExternalCommand
from tests.helpers import read_jsonl, rest, write_jsonl

# Each launch appends a line to a file, so tests count launches and can misbehave on a given one.
# The reward is len(hyp) / 10: a batch answered for the wrong records would show.
SCORER = """
import json, sys, time
with open({launches!r}, "a") as f:
    f.write("launch\\n")
launch = len(open({launches!r}).read().split())
for n, line in enumerate(sys.stdin):
    request = json.loads(line)
    records = request["records"]
    {body}
    print(json.dumps({{"id": request["id"], "rewards": [len(r["hyp"]) / 10 for r in records]}}))
    sys.stdout.flush()
"""


class Scorer:
    """A scorer script in tmp_path: `spec` runs it, `launches` counts its starts."""

    def __init__(self, tmp_path, body: str = "pass", name: str = "scorer.py"):
        self.launch_file = tmp_path / f"{name}.launches"
        self.script = tmp_path / name
        self.script.write_text(SCORER.format(launches=str(self.launch_file), body=body))
        self.command = f"{shlex.quote(sys.executable)} {shlex.quote(str(self.script))}"
        self.spec = f"cmd:{self.command}"

    @property
    def launches(self) -> int:
        return len(self.launch_file.read_text().split()) if self.launch_file.exists() else 0

    def reward(self, **settings) -> ExternalCommand:
        messages = []
        reward = ExternalCommand(self.command, on_message=messages.append, **settings)
        reward.messages = messages
        return reward


def hyps(*lengths, **fields) -> list[dict]:
    return [{"hyp": "x" * n, **fields} for n in lengths]


# --- the protocol ------------------------------------------------------------------------------

def test_scores_batches_and_stays_running(tmp_path):
    scorer = Scorer(tmp_path)
    records = [{"hyp": "x" * n, "n": n} for n in range(7)]
    with build_reward(scorer.spec) as reward:
        out = list(score_records(records, reward, batch_size=3))
        assert reward.process.proc.poll() is None  # one process for all three batches, still running
    assert [r["reward"] for r in out] == [n / 10 for n in range(7)] and out[6]["n"] == 6
    assert out[0]["reward_sig"].startswith(f"{scorer.spec}|protocol:jsonl-batch-v2|rest:")
    assert reward.process.proc.returncode == 0 and scorer.launches == 1  # closing stdin let it finish


@pytest.mark.parametrize("answer, message", [
    ('{"id": 1, "rewards": [0.5]}', "returned 1 values for 2 records"),
    ('{"id": 1, "rewards": [0.5, 0.5, 0.5]}', "returned 3 values for 2 records"),
    ('{"id": 1, "rewards": ["good", 0.5]}', "returned 'good' (str) for record 1 of the batch, not a finite"),
    ('{"id": 1, "rewards": [0.5, NaN]}', "returned nan (float) for record 2 of the batch, not a finite"),
    ('{"id": 1, "rewards": [-Infinity, 0.5]}', "returned -inf (float) for record 1"),
    ('{"id": 1, "rewards": [0.5, 1e400]}', "returned inf (float) for record 2"),
    ('{"id": 1, "rewards": [true, 0.5]}', "returned True (bool) for record 1"),
    ('{"id": 1, "rewards": [0.5, null]}', "returned None (NoneType) for record 2"),
    ('{"id": 1, "rewards": 0.5}', "returned float, not a list of 2 numbers"),
    ('{"id": 1, "rewards": [0.5, 3]}', "returned 3.0, outside [0, 1]: give its range"),
    ('{"id": 1, "rewards": [-0.1, 0.5]}', "returned -0.1, outside [0, 1]"),
    ('0.5 0.5', "answered batch 1 (records 1-2) with invalid JSON (unexpected content after document"),
    ('[0.5, 0.5]', "answered batch 1 (records 1-2) without a \"rewards\" list"),
    ('{"id": 1}', "answered batch 1 (records 1-2) without a \"rewards\" list"),
    ('{"error": "model not loaded"}', "reported an error on batch 1 (records 1-2): model not loaded"),
    ('{"rewards": [0.5, 0.5]}', "answered batch 1 (records 1-2) without an \"id\": protocol jsonl-batch-v2 "
                                "needs each answer to echo its request's id, as "
                                "{\"id\": 1, \"rewards\": [...]} (see docs/rewards.md)"),
    ('{"id": 2, "rewards": [0.5, 0.5]}', "answered batch 1 (records 1-2), sent as id 1, with the id 2: "
                                         "an answer line arrived late or twice"),
    ('{"id": true, "rewards": [0.5, 0.5]}', "with the id True"),
    ('{"id": "1", "rewards": [0.5, 0.5]}', "with the id '1'"),
])
def test_a_bad_answer_refuses_the_batch_without_a_restart(tmp_path, answer, message):
    # A live command that answers wrongly would answer the same batch the same way: no restart.
    scorer = Scorer(tmp_path, f"print({answer!r}); sys.stdout.flush(); continue")
    reward = scorer.reward()
    with pytest.raises(RestError, match=re.escape(f"reward command {scorer.command!r}")) as caught:
        list(score_records(hyps(1, 2), reward))
    assert message in str(caught.value)
    assert scorer.launches == 1 and reward.messages == []
    reward.close()


def test_a_bad_answer_names_its_batch_and_ids(tmp_path):
    scorer = Scorer(tmp_path, 'if n == 1: print(json.dumps({"id": request["id"], "rewards": [0.5]})); '
                              'sys.stdout.flush(); continue')
    reward = scorer.reward()
    records = [{"id": i // 2, "hyp": "x"} for i in range(6)]
    stream = score_records(records, reward, batch_size=2)
    assert [next(stream)["reward"] for _ in range(2)] == [0.1, 0.1]
    with pytest.raises(RestError, match=re.escape(f"reward command {scorer.command!r} on batch 2 "
                                                  f"(records 3-4, id 1) returned 1 values for 2 records")):
        next(stream)
    assert records[2].keys() == {"id", "hyp"}  # nothing attached to the refused batch
    reward.close()


def test_extra_output_lines_are_refused(tmp_path):
    scorer = Scorer(tmp_path, 'print(json.dumps({"id": request["id"], "rewards": [0.5] * len(records)})); '
                              'print("debug: done"); sys.stdout.flush(); continue')
    with scorer.reward() as reward:
        assert reward.score(hyps(1)) == [0.5]
        for _ in range(500):  # let the stray line arrive (up to 5 s); a wait, not a timing assertion
            if not reward.process.answers.empty():
                break
            time.sleep(0.01)
        with pytest.raises(RestError, match="wrote a line nobody asked for: b'debug: done"):
            reward.score(hyps(1))
        assert scorer.launches == 1


def test_a_late_answer_is_never_taken_for_the_next_request(tmp_path):
    # Batch 1's answer comes again, late: after request 2 was sent, before the answer to it. Matched by
    # order, it would be taken for batch 2's answer (the count fits) and its rewards land on batch 2.
    late = 'print(json.dumps({"id": request["id"] - 1, "rewards": [0.1, 0.2]})); sys.stdout.flush()'
    scorer = Scorer(tmp_path, f"if n == 1: {late}")
    records = [{"hyp": "x" * n} for n in (1, 2, 3, 4)]
    with pytest.raises(RestError, match=re.escape(
            f"reward command {scorer.command!r} answered batch 2 (records 3-4), sent as id 2, with the id 1: "
            "an answer line arrived late or twice")):
        with scorer.reward() as reward:
            for record in score_records(records, reward, batch_size=2):
                assert record["reward"] == len(record["hyp"]) / 10
    assert [r.get("reward") for r in records] == [0.1, 0.2, None, None]


def test_a_line_left_unread_at_the_end_is_an_error(tmp_path):
    # The answer printed twice: the second copy is still unread when the input ends.
    scorer = Scorer(tmp_path, 'print(json.dumps({"id": request["id"], "rewards": [0.5] * len(records)}))')
    reward = scorer.reward()
    assert reward.score(hyps(1, 2)) == [0.5, 0.5]  # the first line answers; the second comes after it
    with pytest.raises(RestError, match=re.escape(f"reward command {scorer.command!r} wrote a line nobody "
                                                  "asked for after its last answer: b'{\"id\": 1, ")):
        reward.close()
    reward.close()  # closing again is quiet: the line was reported once


def test_an_error_while_closing_does_not_hide_the_error_under_way(tmp_path):
    scorer = Scorer(tmp_path, 'print(json.dumps({"id": request["id"], "rewards": [0.5] * len(records)}))')
    with pytest.raises(ValueError, match="the first error"):
        with scorer.reward() as reward:
            reward.score(hyps(1))
            raise ValueError("the first error")


def test_shell_only_when_asked(tmp_path):
    scorer = Scorer(tmp_path)
    with build_reward(f"sh:{scorer.command} | cat") as reward:
        assert reward.score(hyps(3)) == [0.3] and reward.name.startswith("sh:")
    # no shell: '|' is an argument, the program is missing
    with pytest.raises(UsageError, match="cannot start"):
        build_reward("cmd:no-such-program-xyz | cat")


@pytest.mark.parametrize("settings, message", [
    ({"timeout": 0}, "timeout must be a number of seconds > 0, got 0"),
    ({"restarts": -1}, "restarts must be a whole number >= 0, got -1"),
    ({"restarts": 1.5}, "restarts must be a whole number >= 0, got 1.5"),
    ({"restarts": True}, "restarts must be a whole number >= 0, got True"),
])
def test_settings_are_checked(settings, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        ExternalCommand("true", **settings)


def test_timeout_in_a_spec():
    with pytest.raises(UsageError, match="timeout must be a number of seconds > 0"):
        build_reward('cmd("true", timeout=0)')


# --- restarts ------------------------------------------------------------------------------------

def test_a_crash_on_the_first_run_is_restarted_and_the_batch_retried(tmp_path):
    scorer = Scorer(tmp_path, 'if launch == 1 and n == 1: print("CUDA out of memory", file=sys.stderr); '
                              'sys.exit(1)')
    reward = scorer.reward()
    records = [{"hyp": "x" * n, "n": n} for n in range(7)]
    out = list(score_records(records, reward, batch_size=3))
    reward.close()
    assert [(r["n"], r["reward"]) for r in out] == [(n, n / 10) for n in range(7)]
    assert scorer.launches == 2
    assert reward.messages == [f"reward command {scorer.command!r} failed on batch 2 (records 4-6), "
                               f"restarting it (1 of {DEFAULT_RESTARTS}): it exited with status 1 before "
                               f"answering; its stderr ends: CUDA out of memory"]


def test_a_command_killed_by_a_signal_is_restarted(tmp_path):
    scorer = Scorer(tmp_path, "if launch == 1: import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    with scorer.reward() as reward:
        assert reward.score(hyps(1, 2)) == [0.1, 0.2]
    assert scorer.launches == 2
    assert "restarting it (1 of 2): it was killed by signal 9 before answering; it wrote nothing on stderr" \
        in reward.messages[0]


def test_an_answer_cut_short_by_a_crash_is_a_crash_not_a_bad_answer(tmp_path):
    scorer = Scorer(tmp_path, 'if launch == 1: sys.stdout.write(\'{"rewards": [0.\'); sys.stdout.flush(); '
                              'import os; os._exit(1)')
    with scorer.reward() as reward:
        assert reward.score(hyps(1, 2)) == [0.1, 0.2]
    assert scorer.launches == 2
    assert "restarting it (1 of 2): it exited with status 1 in the middle of its answer" in reward.messages[0]


@pytest.mark.parametrize("restarts", [0, 1, DEFAULT_RESTARTS])
def test_a_command_that_always_crashes_fails_after_exactly_its_restarts(tmp_path, restarts):
    scorer = Scorer(tmp_path,
                    'print(f"loading model, try {launch}", file=sys.stderr); raise SystemExit("boom")')
    reward = scorer.reward(restarts=restarts)
    done = f"{restarts} restart{'' if restarts == 1 else 's'}"
    message = (f"reward command {scorer.command!r} failed on batch 1 (records 1-2) after {done}: "
               f"it exited with status 1 before answering; its stderr ends: loading model, "
               f"try {restarts + 1} / boom")
    with pytest.raises(RestError, match=f"^{re.escape(message)}$"):
        reward.score(hyps(1, 2))
    reward.close()
    assert scorer.launches == restarts + 1 and len(reward.messages) == restarts
    for i, logged in enumerate(reward.messages, 1):
        assert (f"failed on batch 1 (records 1-2), restarting it ({i} of {restarts}): "
                "it exited with status 1") in logged


def test_restarts_are_counted_per_batch(tmp_path):
    # Each process answers one batch and exits: every batch after the first needs a restart, one each.
    scorer = Scorer(tmp_path, "if n == 1: sys.exit(0)")
    reward = scorer.reward(restarts=1)
    out = list(score_records(hyps(*range(8)), reward, batch_size=2))
    reward.close()
    assert [r["reward"] for r in out] == [n / 10 for n in range(8)]
    assert scorer.launches == 4 and len(reward.messages) == 3
    assert ("failed on batch 4 (records 7-8), restarting it (1 of 1): it exited with status 0"
            in reward.messages[-1])


def test_a_command_that_hangs_once_recovers(tmp_path):
    scorer = Scorer(tmp_path, "if launch == 1: time.sleep(60)")
    reward = scorer.reward(timeout=1.5)  # the fresh process must answer within it: room for a slow start
    assert [r["reward"] for r in score_records(hyps(1, 2, 3), reward)] == [0.1, 0.2, 0.3]
    reward.close()
    assert scorer.launches == 2
    assert reward.messages == [f"reward command {scorer.command!r} failed on batch 1 (records 1-3), "
                               f"restarting it (1 of 2): it gave no answer within 1.5 s, so rest stopped it "
                               f"(raise --reward-timeout if it is just slow)"]


def test_a_command_that_always_hangs_fails_after_its_restarts(tmp_path):
    scorer = Scorer(tmp_path, "time.sleep(60)")
    reward = scorer.reward(timeout=0.5, restarts=1)
    with pytest.raises(RestError, match=re.escape("failed on batch 1 (record 1) after 1 restart: "
                                                  "it gave no answer within 0.5 s, so rest stopped it")):
        reward.score(hyps(1))
    assert reward.process.proc.poll() is not None and scorer.launches == 2
    reward.close()


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped by init, counts as dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _gone(pid: int) -> bool:
    for _ in range(500):  # a wait of up to 5 s, not a timing assertion
        if not _alive(pid):
            return True
        time.sleep(0.01)
    return False


def test_a_crash_is_reported_at_once_though_a_child_keeps_the_output_open(tmp_path):
    # The scorer starts a helper that inherits its stdout, then dies: its output stays open, so only
    # watching the scorer itself tells that it is gone (else: "no answer" after the whole timeout).
    helper = tmp_path / "helper.pid"
    scorer = Scorer(tmp_path, f'import subprocess; child = subprocess.Popen(["sleep", "1000"]); '
                              f'open({str(helper)!r}, "w").write(str(child.pid)); '
                              f'sys.exit("model failed to load")')
    reward = ExternalCommand(scorer.command, shell=True, timeout=20, restarts=0)  # sh:, as a user would
    started = time.monotonic()
    with pytest.raises(RestError, match=re.escape("failed on batch 1 (record 1) after 0 restarts: it exited "
                                                  "with status 1 before answering; its stderr ends: "
                                                  "model failed to load")):
        reward.score(hyps(1))
    assert time.monotonic() - started < 15  # far below the timeout; the message above is the real check
    assert _gone(int(helper.read_text())), "what the failed command started is still running"
    reward.close()


def test_closing_stops_what_the_command_left_running(tmp_path):
    helper = tmp_path / "helper.pid"
    scorer = Scorer(tmp_path, f'if n == 0: import subprocess; child = subprocess.Popen(["sleep", "1000"]); '
                              f'open({str(helper)!r}, "w").write(str(child.pid))')
    with scorer.reward() as reward:
        assert reward.score(hyps(1)) == [0.1]
        assert _alive(int(helper.read_text()))
    assert reward.process.proc.returncode == 0  # the command itself ended on its own, at the end of input
    assert _gone(int(helper.read_text())), "the command's child outlived the reward"


def test_a_huge_stderr_line_is_cut_in_the_error(tmp_path):
    scorer = Scorer(tmp_path, 'sys.stderr.write("x" * 10_000_000); sys.stderr.flush(); sys.exit(1)')
    reward = scorer.reward(restarts=0)
    with pytest.raises(RestError) as caught:
        reward.score(hyps(1))
    message = str(caught.value)
    assert message.endswith(f"its stderr ends: {'x' * STDERR_LINE_CHARS}...") and len(message) < 1000
    assert all(len(line) <= STDERR_LINE_CHARS + 3 for line in reward.process.stderr)


def test_a_command_that_never_reads_its_input_still_times_out(tmp_path):
    script = tmp_path / "deaf.py"
    script.write_text("import time; time.sleep(60)\n")
    reward = build_reward(f'cmd("{sys.executable} {script}", timeout=0.5)')
    reward.restarts = 0  # one timeout is the point here, not three
    with pytest.raises(RestError, match="gave no answer within 0.5 s"):
        reward.score([{"hyp": "x" * 1_000_000}])  # larger than a pipe buffer: the write blocks
    reward.close()


# --- through `rest score` ----------------------------------------------------------------------

@pytest.fixture
def records(tmp_path):
    return write_jsonl(tmp_path / "in.jsonl", [{"id": i, "hyp": "x" * i} for i in range(5)])


@pytest.mark.subprocess
def test_score_recovers_from_a_crash_and_writes_every_record_in_order(records, tmp_path):
    scorer = Scorer(tmp_path, 'if launch == 1 and n == 1: sys.exit("killed by the OOM killer")')
    result = rest("score", "-r", scorer.spec, "--batch-size", "2", str(records), "-o",
                  str(tmp_path / "out.jsonl"))
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 0 and len(lines) == 1, lines
    assert lines[0].startswith(f"rest: reward command {scorer.command!r} failed on batch 2 "
                               f"(records 3-4, ids 2 to 3), restarting it (1 of 2): "
                               f"it exited with status 1")
    out = read_jsonl((tmp_path / "out.jsonl").read_bytes())
    assert [(r["id"], r["reward"]) for r in out] == [(i, i / 10) for i in range(5)]


@pytest.mark.subprocess
def test_score_refuses_a_wrong_length_answer_and_writes_no_file(records, tmp_path):
    scorer = Scorer(tmp_path, 'if n == 1: print(json.dumps({"id": request["id"], "rewards": [0.5]})); '
                              'sys.stdout.flush(); continue')
    result = rest("score", "-r", scorer.spec, "--batch-size", "2", str(records), "-o",
                  str(tmp_path / "out.jsonl"))
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and lines == [
        f"rest score: error: reward command {scorer.command!r} on batch 2 (records 3-4, ids 2 to 3) returned "
        f"1 values for 2 records"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "scorer.py", "scorer.py.launches"]
    assert scorer.launches == 1


@pytest.mark.subprocess
def test_score_refuses_an_answer_printed_twice_and_writes_no_file(records, tmp_path):
    scorer = Scorer(tmp_path, 'print(json.dumps({"id": request["id"], "rewards": [0.5] * len(records)}))')
    result = rest("score", "-r", scorer.spec, "--batch-size", "5", str(records), "-o",
                  str(tmp_path / "out.jsonl"))
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"rest score: error: reward command {scorer.command!r} wrote a line nobody "
                               f"asked for after its last answer: ")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.subprocess
def test_score_to_stdout_stops_at_the_failed_batch_and_exits_non_zero(records, tmp_path):
    scorer = Scorer(tmp_path, "if launch > 1 or n == 1: sys.exit(3)")
    result = rest("score", "-r", scorer.spec, "--batch-size", "2", str(records))
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and len(lines) == 3, lines
    assert [r["id"] for r in read_jsonl(result.stdout)] == [0, 1]  # batch 1 only: none of batch 2
    assert lines[2] == (f"rest score: error: reward command {scorer.command!r} failed on batch 2 "
                        f"(records 3-4, ids 2 to 3) after 2 restarts: it exited with status 3 before "
                        f"answering; it wrote nothing on stderr")
    assert scorer.launches == 3


# --- the settings (in a spec, a config file, the options, and --reward-restarts) ----------------

def test_the_options_give_the_defaults_and_a_spec_overrides_them(tmp_path):
    scorer = Scorer(tmp_path)
    assert (RewardOptions().timeout, RewardOptions().restarts) == (300.0, DEFAULT_RESTARTS)
    with build_reward(scorer.spec, RewardOptions(timeout=7.5, restarts=4)) as reward:
        assert (reward.timeout, reward.restarts) == (7.5, 4)
    spec = f'product(copy-guard, cmd("{scorer.command}", timeout=3))'
    with build_reward(spec, RewardOptions(timeout=7.5, restarts=4)) as reward:
        command = reward.parts[1]
        assert (command.timeout, command.restarts) == (3.0, 4)  # deep in a tree, too


def test_restarts_in_a_spec_and_a_config_file(tmp_path):
    scorer = Scorer(tmp_path)
    with build_reward(f'cmd("{scorer.command}", restarts=0)') as reward:
        assert reward.restarts == 0
    with build_reward(f"cmd:{scorer.command}", RewardOptions(restarts=5)) as reward:
        assert reward.restarts == 5
    config = tmp_path / "reward.json"
    config.write_text(json.dumps({"reward": {"cmd": {"command": scorer.command, "restarts": 1}}}))
    with build_reward(config=str(config), options=RewardOptions(restarts=4)) as reward:
        assert reward.restarts == 1  # the command's own setting wins over the default
    with pytest.raises(UsageError, match="restarts must be a whole number >= 0"):
        build_reward(f'cmd("{scorer.command}", restarts=-1)')


@pytest.mark.subprocess
def test_reward_restarts_option(records, tmp_path):
    scorer = Scorer(tmp_path, "sys.exit(3)")
    result = rest("score", "-r", scorer.spec, "--reward-restarts", "1", str(records))
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and len(lines) == 2, lines
    assert lines[1].endswith("failed on batch 1 (records 1-5, ids 0 to 4) after 1 restart: "
                             "it exited with status 3 before answering; it wrote nothing on stderr")
    assert scorer.launches == 2
