"""rest.mk's variables checked before any work: `rest_cli.loop.settings` and `rest loop check`."""

import pytest

from rest_cli.errors import UsageError
from rest_cli.loop.settings import check, problems
from tests.helpers import rest

GOOD = {"G": "2", "I": "3", "N": "4", "IMPROVE_STEPS": "200", "CONTROL_MAX_STEPS": "2000",
        "CONTROL_PATIENCE": "2", "SHARDS": "1", "FILTER": "tau", "SCHEDULE": "0.0 0.7 0.8 0.9 0.95 0.99",
        "LRS": "3e-4 2e-4 1.5e-4", "BON_N": "1,2,4,8,16", "CONTROLS": "converged more",
        "REWARD": "product(use, copy-guard, length-guard(max_ratio=2))", "TASK": "translation",
        "IMPROVE_FROM": "previous"}
# TASK=arithmetic's defaults (ReST-EM).
ARITHMETIC = {**GOOD, "TASK": "arithmetic", "G": "3", "I": "1", "N": "8", "SCHEDULE": "0.5", "LRS": "2e-4",
              "IMPROVE_STEPS": "300", "IMPROVE_FROM": "previous", "REWARD": "answer", "BON_N": "1,2,4,8",
              "CONTROLS": "more"}


def test_the_defaults_of_rest_mk_pass():
    assert problems(GOOD) == []
    assert problems({**GOOD, "CONTROLS": ""}) == []  # CONTROLS= skips the control arms
    assert problems(ARITHMETIC) == []


@pytest.mark.parametrize("name, value, message", [
    ("G", "0", "G=0: must be at least 1, got 0"),
    ("I", "two", "I=two: must be a whole number, got 'two'"),
    ("N", "-1", "N=-1: must be at least 1, got -1"),
    ("SHARDS", "1.5", "SHARDS=1.5: must be a whole number"),
    ("FILTER", "top-k", "FILTER=top-k: must be one of tau, percentile, gamma"),
    ("SCHEDULE", "0.9 0.7", "SCHEDULE=0.9 0.7: must rise"),
    ("SCHEDULE", "0.5 1.5", "SCHEDULE=0.5 1.5: must lie in [0, 1] for FILTER=tau"),
    ("SCHEDULE", "", "SCHEDULE=: is empty"),
    ("LRS", "3e-4 2e-4", "LRS=3e-4 2e-4: needs a learning rate per Improve step: I=3 but 2 given"),
    ("LRS", "3e-4 0 1e-4", "learning rates must be above 0"),
    ("BON_N", "1,2,x", "BON_N=1,2,x: must be whole numbers separated by commas"),
    ("CONTROLS", "converged fewer", "CONTROLS=converged fewer: must be some of converged, more; got 'fewer'"),
    ("REWARD", "chfr", "REWARD=chfr: unknown reward 'chfr'"),
    ("TASK", "maths", "TASK=maths: must be one of translation, arithmetic; got 'maths'"),
    ("IMPROVE_FROM", "bc", "IMPROVE_FROM=bc: must be one of previous, base; got 'bc'"),
    ("REWARD", "product(use,", "REWARD=product(use,: "),
    ("OBJECTIVES", "nll glod", "OBJECTIVES=nll glod: must be some of "),
    ("SEEDS", "1 2 1", "SEEDS=1 2 1: names a seed twice"),
    ("SEEDS", "1 x", "SEEDS=1 x: must be a whole number, got 'x'"),
    ("SEEDS", "", "SEEDS=: is empty"),
])
def test_each_wrong_value_is_one_line_naming_the_variable(name, value, message):
    found = problems({**GOOD, name: value})
    assert len(found) == 1 and message in found[0], found


def test_a_percentile_schedule_lives_in_0_to_100():
    assert problems({**GOOD, "FILTER": "percentile", "SCHEDULE": "50 70 90"}) == []
    assert "must lie in [0, 100]" in problems({**GOOD, "FILTER": "percentile", "SCHEDULE": "50 170"})[0]


def test_data_files_are_one_jsonl_or_two_text_files_that_exist(tmp_path):
    (tmp_path / "a.de").write_text("x\n")
    (tmp_path / "a.en").write_text("y\n")
    pair = f"{tmp_path / 'a.de'} {tmp_path / 'a.en'}"
    assert problems({"TRAIN": pair, "VALID": str(tmp_path / "a.de")}) == []
    assert problems({"TEST": str(tmp_path / "missing.jsonl")}) == [
        f"TEST={tmp_path / 'missing.jsonl'}: no such file: {tmp_path / 'missing.jsonl'}"]
    assert "got 3 words" in problems({"TRAIN": f"{pair} {pair.split()[0]}"})[0]


def test_init_is_a_folder_with_a_config(tmp_path):
    assert problems({"INIT": str(tmp_path)}) == [
        f"INIT={tmp_path}: must be a policy directory or a folder saved with save_pretrained "
        f"(no {tmp_path / 'config.json'})"]
    (tmp_path / "config.json").write_text("{}")
    assert problems({"INIT": str(tmp_path)}) == []


def test_bc_is_a_policy_directory_rest_wrote(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # enough for INIT (an import reads it), not for BC
    [problem] = problems({"BC": str(tmp_path)})
    assert problem.startswith(f"BC={tmp_path}: must be a policy directory that rest finetune or rest "
                              f"import wrote: {tmp_path / 'config.json'}: format None version None")
    assert problems({"BC": str(tmp_path / "none")}) == [
        f"BC={tmp_path / 'none'}: must be a policy directory that rest finetune or rest import wrote: "
        f"{tmp_path / 'none'}: no such model directory"]


def test_every_problem_is_reported_at_once():
    with pytest.raises(UsageError) as caught:
        check({**GOOD, "G": "0", "N": "0", "FILTER": "best"})
    assert str(caught.value).splitlines() == [
        "G=0: must be at least 1, got 0", "N=0: must be at least 1, got 0",
        "FILTER=best: must be one of tau, percentile, gamma; got 'best'"]


def test_an_unknown_variable_is_a_problem_not_ignored():
    assert "not a variable rest loop check knows" in problems({"GG": "2"})[0]


@pytest.mark.subprocess
def test_the_command_is_silent_when_fine_and_one_line_exit_2_when_not():
    fine = rest("loop", "check", *(f"{k}={v}" for k, v in GOOD.items()))
    assert (fine.returncode, fine.stdout, fine.stderr) == (0, b"", b"")
    wrong = rest("loop", "check", "G=0", "LRS=1e-4", "I=2")
    assert wrong.returncode == 2
    assert wrong.stderr.decode() == ("rest loop check: error: G=0: must be at least 1, got 0 / LRS=1e-4: "
                                     "needs a learning rate per Improve step: I=2 but 1 given\n")
    assert rest("loop", "check", "G").returncode == 2
