"""`rest eval --compare --plot`: each figure of each system with its bootstrap interval, drawn."""

import pytest

from rest_cli.errors import UsageError
from rest_cli.eval.evaluate import with_significance
from rest_cli.eval.plot import TITLE_WIDTH, panel_title, panels, plot_comparison, short_label
from tests.eval.test_eval_outputs import REFS, invoke, one_error_line, outputs
from tests.eval.test_significance import corpus, evaluations

PNG = b"\x89PNG\r\n\x1a\n"


def compared(sources=40):
    refs, base = corpus(7, sources, 0.4)
    _, better = corpus(7, sources, 0.1)
    return with_significance(evaluations([(base, [0.4] * sources), (better, [0.8] * sources)], refs), 200)


def test_a_panel_per_figure_holds_each_systems_estimate_in_order():
    results = compared()
    found = panels(results)
    assert [title for title, _ in found] == ["reward judge", "BLEU", "chrF"]
    reward = found[0][1]
    assert [e["mean"] for e in reward] == pytest.approx([0.4, 0.8]) and "p_value" in reward[1]
    assert found[1][1][1] == results[1]["bootstrap"]["bleu"]


def test_a_long_reward_spec_is_broken_into_lines_that_fit_its_panel():
    spec = "reward product(use, copy-guard, repeat-guard, length-guard, lang-guard)"
    lines = panel_title(spec).split("\n")
    assert len(lines) > 1 and all(len(line) <= TITLE_WIDTH for line in lines)
    assert " ".join(lines) == spec
    assert panel_title("BLEU") == "BLEU"


def test_the_picture_is_a_png_written_whole(tmp_path):
    path = tmp_path / "compare.png"
    plot_comparison(compared(), path)
    assert path.read_bytes().startswith(PNG) and path.stat().st_size > 5000
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left beside it


def test_results_without_intervals_cannot_be_drawn(tmp_path):
    refs, hyps = corpus(3, 5, 0.2)  # under MIN_SOURCES: no bootstrap
    results = with_significance(evaluations([(hyps, [0.5] * 5), (hyps, [0.6] * 5)], refs), 200)
    with pytest.raises(UsageError, match="no bootstrap intervals to draw; they need at least 10 sources"):
        plot_comparison(results, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("model, label", [
    ("runs/m30k/chrf/s1/g2/i3/model", "g2/i3"), ("runs/m30k/chrf/s1/control/more", "control/more"),
    ("bc", "bc"), ("/abs/model", "abs"), ("out.jsonl", "out.jsonl")])
def test_a_system_is_labelled_by_the_end_of_its_path(model, label):
    assert short_label(model) == label


def test_the_command_draws_the_comparison_of_two_output_files(tmp_path):
    refs = REFS * 4
    base = outputs(tmp_path / "base.jsonl", [r.rsplit(" ", 1)[0] for r in refs], refs)
    same = outputs(tmp_path / "same.jsonl", refs, refs)
    result = invoke(base, "--compare", same, "-r", "exact", "--bootstrap", "100",
                    "--plot", tmp_path / "c.png")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "c.png").read_bytes().startswith(PNG)


@pytest.mark.parametrize("extra", [[], ["--compare", "{base}", "--bootstrap", "0"]])
def test_a_plot_that_could_show_nothing_is_refused_before_any_work(tmp_path, extra):
    base = outputs(tmp_path / "base.jsonl")
    args = [a.format(base=base) for a in extra]
    line = one_error_line(invoke(base, *args, "--plot", tmp_path / "c.png"), 2)
    assert "--plot draws the bootstrap intervals of --compare" in line
    assert not (tmp_path / "c.png").exists()
