"""`rest eval` without -m: the `hyp` of each record measured against its `ref`, no model; and --brief."""

import re
import subprocess
import sys

import orjson
import pytest
import sacrebleu
from typer.testing import CliRunner

from rest_cli.cli.main import app
from tests.helpers import REPO, rest, write_jsonl

REFS = ["the cat sat on the mat", "a dog runs in the park", "two birds sing in the old tree",
        "she reads a long book at night", "the house by the river is red"]
HYPS = ["the cat sat on a mat", "a dog runs in the park", "two birds sing in an old tree",
        "she reads a book at night", "the house near the river is red"]


def outputs(path, hyps=HYPS, refs=REFS, **extra):
    return write_jsonl(path, [{"id": i, "src": f"quelle {i}", "ref": ref, "hyp": hyp, **extra}
                              for i, (hyp, ref) in enumerate(zip(hyps, refs))])


def invoke(*args):
    result = CliRunner().invoke(app, ["eval", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def one_error_line(result, code: int) -> str:
    assert result.exit_code == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rest eval: error: "), lines
    return lines[0]


def test_hyp_is_measured_as_sacrebleu_measures_it(tmp_path):
    path = outputs(tmp_path / "out.jsonl")
    result = invoke(path, "-r", "chrf", "-r", "exact")
    assert result.exit_code == 0, result.stderr
    report = orjson.loads(result.stdout)
    (measured,) = report["results"]
    assert measured["model"] == f"hyp of {path}" and measured["sources"] == len(HYPS)
    assert measured["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-4)
    assert measured["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=1e-4)
    chrf_mean = sum(sacrebleu.sentence_chrf(h, [r]).score / 100 for h, r in zip(HYPS, REFS)) / len(HYPS)
    exact_mean = sum(h == r for h, r in zip(HYPS, REFS)) / len(HYPS)
    assert measured["rewards"] == {"chrf": pytest.approx(chrf_mean, abs=1e-6),
                                   "exact": pytest.approx(exact_mean)}
    assert measured["bleu_sig"].startswith("nrefs:1|") and "version:" in measured["chrf_sig"]
    assert "hyp of" in result.stderr  # the table names where the outputs came from


@pytest.mark.parametrize("field", ["hyp", "ref"])
def test_a_record_without_hyp_or_ref_is_one_line_located_error(tmp_path, field):
    records = [{"id": 0, "hyp": "a", "ref": "a"}, {"id": 1, "hyp": "b", "ref": "b"}]
    del records[1][field]
    path = write_jsonl(tmp_path / "out.jsonl", records)
    line = one_error_line(invoke(path), 3)
    assert f"{path}:2: field '{field}' is missing" in line


def test_several_outputs_of_one_source_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "cands.jsonl", [{"id": "a", "hyp": "x", "ref": "x"},
                                                  {"id": "a", "hyp": "y", "ref": "x"}])
    line = one_error_line(invoke(path), 3)
    assert f"{path}:2: id 'a' appears again" in line and "rest bestofn" in line


@pytest.mark.parametrize("option", [["--beam", "1"], ["--sample", "2"], ["--temperature", "0.8"],
                                    ["--max-length", "8"], ["--compute-type", "int8"]])
def test_decoding_options_without_a_model_are_refused(tmp_path, option):
    line = one_error_line(invoke(outputs(tmp_path / "out.jsonl"), *option), 2)  # even at its default value
    assert line.startswith(f"rest eval: error: {option[0]}: ") and "--model" in line


def test_brief_prints_one_line_and_the_same_json(tmp_path):
    path = outputs(tmp_path / "out.jsonl")
    table, brief = invoke(path, "-r", "chrf"), invoke(path, "-r", "chrf", "--brief")
    assert table.exit_code == brief.exit_code == 0 and brief.stdout == table.stdout
    (measured,) = orjson.loads(brief.stdout)["results"]
    assert brief.stderr.splitlines() == [
        f"rest eval: hyp of {path}: chrf {measured['rewards']['chrf']:.4f}, BLEU {measured['bleu']:.2f}, "
        f"chrF {measured['chrf']:.2f}, length ratio {measured['length_ratio']:.2f}"]
    assert len(table.stderr.splitlines()) > 3


def test_compare_two_files_of_outputs_flags_reward_hacking(tmp_path):
    # Nearly right everywhere, against exactly right once and far off elsewhere: `exact` rises, BLEU falls.
    near = outputs(tmp_path / "near.jsonl", [ref.rsplit(" ", 1)[0] for ref in REFS])
    hacked = outputs(tmp_path / "hacked.jsonl", [REFS[0]] + ["nothing"] * (len(REFS) - 1))
    result = invoke(near, "--compare", hacked, "-r", "exact", "--brief", "--bootstrap", "0")
    assert result.exit_code == 0, result.stderr
    report = orjson.loads(result.stdout)
    base, other = report["results"]
    (row,) = report["comparisons"]
    assert (row["model"], row["against"]) == (f"hyp of {hacked}", f"hyp of {near}")
    assert row["bleu"] == pytest.approx(other["bleu"] - base["bleu"], abs=1e-4) and row["bleu"] < -1
    assert row["reward_hacking_suspected"] and row["hacking_test"] == "threshold"
    assert result.stderr.splitlines()[-1] == (
        f"rest eval: reward hacking suspected for hyp of {hacked}: {row['why']}")
    # By default the paired bootstrap decides (given ten sources or more): one better source of ten
    # is no significant rise.
    refs = REFS * 2
    near = outputs(tmp_path / "near10.jsonl", [ref.rsplit(" ", 1)[0] for ref in refs], refs)
    hacked = outputs(tmp_path / "hacked10.jsonl", [refs[0]] + ["nothing"] * (len(refs) - 1), refs)
    tested = invoke(near, "--compare", hacked, "-r", "exact")
    report = orjson.loads(tested.stdout)
    (row,) = report["comparisons"]
    assert not row["reward_hacking_suspected"] and row["hacking_test"] == "bootstrap"
    first, second = (result["bootstrap"] for result in report["results"])
    assert "p_value" not in first["rewards"]["exact"] and second["rewards"]["exact"]["p_value"] > 0.05
    assert second["bleu"]["p_value"] < 0.05 and first["resamples"] == 1000
    table = " ".join(tested.stderr.split())  # rich wraps the table to the terminal's width
    assert "paired bootstrap, 1000 resamples" in table and re.search(r"\(-\d+\.\d{4}, p\b", table)
    assert "0.0010*)" in table  # BLEU's fall, significant


def test_compare_refuses_outputs_of_other_sources(tmp_path):
    base = outputs(tmp_path / "a.jsonl")
    other = write_jsonl(tmp_path / "b.jsonl", [{"id": 0, "src": "quelle 0", "ref": REFS[0], "hyp": "x"},
                                               {"id": 9, "src": "quelle 1", "ref": REFS[1], "hyp": "y"}])
    line = one_error_line(invoke(base, "--compare", other), 3)
    assert f"{other}:2: not the same source as record 2 of {base}" in line
    fewer = write_jsonl(tmp_path / "c.jsonl", [{"id": 0, "src": "quelle 0", "ref": REFS[0], "hyp": "x"}])
    line = one_error_line(invoke(base, "--compare", fewer), 3)
    assert f"{fewer}: 1 outputs, but {base} has {len(REFS)}" in line


@pytest.mark.subprocess
def test_evaluating_outputs_imports_neither_torch_nor_ctranslate2(tmp_path):
    path = outputs(tmp_path / "out.jsonl")
    code = ("import sys; from typer.testing import CliRunner; from rest_cli.cli.main import app; "
            f"result = CliRunner().invoke(app, ['eval', {str(path)!r}, '-r', 'chrf', '--brief']); "
            "assert result.exit_code == 0, result.stderr; "
            "assert not {'torch', 'ctranslate2'} & set(sys.modules), sorted(sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True)
    assert run.returncode == 0, run.stderr.decode()


@pytest.mark.subprocess
def test_brief_with_a_model_names_model_and_data(random_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "valid.jsonl",
                       [{"src": "eins hund", "ref": "one dog"}, {"src": "zwei", "ref": "two"}])
    args = ("eval", "-m", str(random_model_dir), "-r", "chrf", "--max-length", "8", str(data))
    table, brief = rest(*args), rest(*args, "--brief")
    assert table.returncode == brief.returncode == 0, brief.stderr
    assert brief.stdout == table.stdout  # greedy decoding: the same figures
    (measured,) = orjson.loads(brief.stdout)["results"]
    assert brief.stderr.decode().splitlines() == [
        f"rest eval: {random_model_dir} on {data}: chrf {measured['rewards']['chrf']:.4f}, "
        f"BLEU {measured['bleu']:.2f}, chrF {measured['chrf']:.2f}, "
        f"length ratio {measured['length_ratio']:.2f}"]


# Samples of two sources with their extracted answers, as an answer reward leaves them; `exact` scores
# them against ref. q1: 2 of 4 correct, majority "12" (right). q2: 1 of 4 correct, majority "8" (wrong),
# one sample without an answer. The reference of q1 (origin "ref") is not a sample and is left out.
SAMPLES = [{"id": "q1", "src": "3*4?", "ref": "12", "hyp": hyp, "hyp_answer": answer, "origin": origin}
           for hyp, answer, origin in [("12", "12", "sample"), ("13", "13", "sample"),
                                       ("12 ", "12", "sample"), ("it is 12", "12", "sample"),
                                       ("12", "12", "ref")]] + \
          [{"id": "q2", "src": "2+5?", "ref": "7", "hyp": hyp, "hyp_answer": answer}
           for hyp, answer in [("8", "8"), ("7", "7"), ("so 8", "8"), ("hmm", None)]]


def test_pass_at_k_and_majority_of_a_file_of_samples(tmp_path):
    path = write_jsonl(tmp_path / "samples.jsonl", SAMPLES)
    result = invoke(path, "-r", "exact", "--pass-at", "4,1,2", "--majority", "4")
    assert result.exit_code == 0, result.stderr
    (measured,) = orjson.loads(result.stdout)["results"]
    # exact: q1 "12", "12 " are correct (white space folded), "it is 12" is not: c = 2 of 4; q2: c = 1 of 4.
    # pass@2 = ((1 - C(2,2)/C(4,2)) + (1 - C(3,2)/C(4,2))) / 2 = (5/6 + 1/2) / 2 = 2/3.
    assert measured["sources"] == 2 and measured["rewards"] == {"exact": 0.375}
    assert "bleu" not in measured  # several outputs per source would weigh a reference several times
    assert measured["sampled"] == {"decode": "hyp given", "samples": 8, "correct_at": 1.0,
                                   "pass_at": {"exact": {"1": 0.375, "2": 0.666667, "4": 1.0}},
                                   "majority": {"exact": {"4": 0.5}}}
    assert "pass@2 exact" in result.stderr and "maj@4 exact" in result.stderr
    brief = invoke(path, "-r", "exact", "--pass-at", "1", "--majority", "4", "--brief")
    assert brief.stderr.splitlines() == [
        f"rest eval: hyp of {path}: exact 0.3750, pass@1 exact 0.3750, maj@4 exact 0.5000"]


def test_compare_files_of_samples_gives_deltas_of_pass_at_k(tmp_path):
    base = write_jsonl(tmp_path / "a.jsonl", SAMPLES)
    better = write_jsonl(tmp_path / "b.jsonl", [{**r, "hyp": r["ref"]} for r in SAMPLES])
    result = invoke(base, "--compare", better, "-r", "exact", "--pass-at", "1", "--majority", "3")
    assert result.exit_code == 0, result.stderr
    (row,) = orjson.loads(result.stdout)["comparisons"]
    assert row["pass_at"] == {"exact": {"1": 0.625}} and "majority" in row
    other = write_jsonl(tmp_path / "c.jsonl", [{**r, "id": "q9"} if r["id"] == "q2" else r for r in SAMPLES])
    line = one_error_line(invoke(base, "--compare", other, "-r", "exact", "--pass-at", "1"), 3)
    assert f"{other}:6: not the same source as source 2 of {base}" in line


@pytest.mark.parametrize("args, message", [
    (["-r", "exact", "--pass-at", "5"], "--pass-at 5 needs at least 5 samples of each source, but source "
                                        "'q1' of {path} has 4"),
    (["-r", "exact", "--majority", "2,8"], "--majority 8 needs at least 8 samples"),
    (["-r", "exact", "--pass-at", "1,x"], "--pass-at takes whole numbers >= 1 separated by commas"),
    (["-r", "exact", "--pass-at", "0"], "--pass-at takes whole numbers >= 1"),
    (["--pass-at", "1"], "--pass-at and --majority count samples whose reward is correct: give the reward"),
    (["-r", "exact", "--correct-at", "0.5"], "--correct-at: what counts as correct for --pass-at"),
    (["-r", "exact", "--pass-at", "1", "--correct-at", "2"], "--correct-at must be in [0, 1]"),
])
def test_measures_that_cannot_be_made_are_one_line_usage_errors(tmp_path, args, message):
    path = write_jsonl(tmp_path / "samples.jsonl", SAMPLES)
    line = one_error_line(invoke(path, *args), 2)
    assert line.startswith(f"rest eval: error: {message.format(path=path)}")


def test_samples_must_be_grouped_by_source(tmp_path):
    path = write_jsonl(tmp_path / "samples.jsonl", SAMPLES[5:7] + SAMPLES[:4] + SAMPLES[7:])
    line = one_error_line(invoke(path, "-r", "exact", "--pass-at", "1"), 3)
    assert f"{path}:7: id 'q2' appears again after other ids" in line
