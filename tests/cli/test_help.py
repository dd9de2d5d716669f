"""Help pages a newcomer can read: every command listed, types as words, choices as choices."""

import re

import pytest
import typer.main
from typer.testing import CliRunner

from rest_cli.cli.main import app
from rest_cli.models.base import scratch_presets
from rest_cli.train.objectives import objective_names

COMMAND = typer.main.get_command(app)
PAGES = [[name] for name in COMMAND.commands if name != "loop"] + \
        [["loop", name] for name in COMMAND.commands["loop"].commands]


def help_page(*words: str) -> str:
    result = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "250", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.output


def test_the_top_level_help_names_every_command():
    about = COMMAND.help
    missing = [name for name in COMMAND.commands if not re.search(rf"\b{re.escape(name)}\b", about)]
    assert missing == [], about


@pytest.mark.parametrize("words", PAGES + [[]], ids=lambda words: " ".join(words) or "rest")
def test_no_help_page_shows_python_type_names(words):
    page = help_page(*words)
    assert re.findall(r"<(?:str|int|float|bool|Path)>", page) == []


def test_choices_are_listed_and_other_values_refused():
    finetune, sample = help_page("finetune"), help_page("sample")
    assert f"[{'|'.join(scratch_presets())}]" in finetune and f"[{'|'.join(objective_names())}]" in finetune
    assert "[auto|cpu|cuda|cuda:N]" in finetune and "[auto|cpu|cuda]" in sample
    for args, option in [(["finetune", "-o", "x", "--device", "gpu"], "--device"),
                         (["finetune", "-o", "x", "--preset", "huge"], "--preset"),
                         (["sample", "-m", "m", "--device", "cuda:0x"], "--device")]:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_the_devices_finetune_takes_pass_the_check(device):
    from rest_cli.cli.finetune import _check_device

    assert _check_device(device) == device


@pytest.mark.parametrize("args, line", [
    (["smaple"], "rest: error: No such command 'smaple'. Did you mean 'sample'? (see rest --help)"),
    (["finetune", "-o", "x", "--steps", "many"], "rest finetune: error: Invalid value for '--steps': "),
    (["filter", "--tau"], "rest: error: Option '--tau' requires an argument."),  # click names no command here
    (["score", "--no-such-option"], "rest score: error: No such option: --no-such-option"),
])
def test_usage_errors_are_one_line_exit_2(args, line):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(line), result.stderr


def test_rest_alone_shows_the_help():
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 2 and "Usage: rest" in result.output and "sample" in result.output


def test_required_options_are_marked():
    assert re.search(r"\*\s+--output.*\n(.*\n)*?.*\[required\]", help_page("finetune"))
    assert "Required (or --reward-config)" in help_page("score")
    assert "Required (or --reward-config)" in help_page("rmcheck")
