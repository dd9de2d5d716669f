"""The whole ReST loop through make (rest.mk), on a tiny configuration: seconds, not minutes."""

import collections
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from rest_cli.loop.layout import RunLayout
from tests.helpers import REPO

pytestmark = [pytest.mark.make, pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")]

TINY = {
    "G": "1", "I": "2", "N": "2",
    "DEMO_OPTS": "--train 240 --valid 24 --test 24",
    "BC_OPTS": "--preset tiny --vocab-size 200 --steps 40 --lr 3e-3",
    "FINETUNE_OPTS": "--batch-tokens 1024 --log-every 20",
    "IMPROVE_STEPS": "10", "CONTROL_MAX_STEPS": "20",
    "SAMPLE_OPTS": "--max-length 24", "EVAL_OPTS": "--max-length 24",
    "TEST_OPTS": "--max-length 24 --sample 2",
    "BON_N": "1,2", "SHARDS": "2",
}


def make(run, *targets, makefile="rest.mk", **overrides):
    variables = {**TINY, "RUN": str(run), "REST": f"{sys.executable} -m rest_cli", **overrides}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # --no-print-directory: under `make test` this make is a sub-make, which would add "make[1]: ..." lines
    return subprocess.run(["make", "--no-print-directory", "-f", str(REPO / makefile), *targets,
                           *(f"{k}={v}" for k, v in variables.items())],
                          capture_output=True, text=True, env=env, cwd=run.parent, timeout=600)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("loop") / "run"
    result = make(run, "rest")
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


def test_every_artefact_is_on_disk(finished_run):
    run, _ = finished_run
    for path in ["data/train.jsonl", "g0/model/config.json", "g0/model/ctranslate2/model.bin",
                 "g0/valid.json", "g1/candidates.jsonl.gz", "g1/i0/valid.json", "g1/i1/data.jsonl.gz",
                 "g1/i1/model/training.json", "g1/i1/valid.json", "g1/i2/valid.json", "g1/policy",
                 "test/bc.json", "test/g1-i1.json", "test/g1-i2.json", "test/control-converged.json",
                 "test/control-more.json", "bon/bc.json", "bon/final.json", "results.md", "results.json",
                 "results.png"]:
        assert (run / path).exists(), path
    training = json.loads((run / "g1" / "i1" / "model" / "training.json").read_text())
    assert str(run / "g0" / "model") in json.dumps(training)  # the Improve step started from BC


def test_the_layout_module_names_what_rest_mk_wrote(finished_run):
    run, _ = finished_run
    layout = RunLayout(run)
    assert layout.step_names() == ["bc", "g1-i1", "g1-i2"]
    for name in layout.step_names():
        assert layout.valid_report(name).exists() and layout.test_report(name).exists(), name
        assert layout.model(name).is_dir() or layout.skipped_mark(name).exists(), name
    assert layout.candidates(1).exists() and layout.policy_file(1).exists()
    assert [p.stem for p in layout.control_reports()] == ["control-converged", "control-more"]
    assert [p.stem for p in layout.curves()] == ["bc", "final"]
    assert all(layout.results(suffix).exists() for suffix in ("md", "json", "png"))


def test_the_sharded_grow_step_holds_every_source_once(finished_run):
    run, _ = finished_run
    with gzip.open(run / "g1" / "candidates.jsonl.gz") as joined:
        records = [json.loads(line) for line in joined]
    counts = collections.Counter(r["id"] for r in records)
    assert sorted(counts) == [f"train-{i:06d}" for i in range(240)]
    assert set(counts.values()) == {3}  # N=2 samples and the reference
    assert not list((run / "g1").glob("shard-*"))  # joined, then removed


def _grow_with_fake_rest(tmp_path, sample_exit: int, before_score: str = "", **overrides):
    """Make Grow 1's candidates with a stand-in `rest`: sample prints its arguments as a record;
    score runs the shell code `before_score`, then writes its input to its -o file."""
    fake = tmp_path / "fake-rest"
    fake.write_text("#!/bin/sh\n"
                    'if [ "$1 $2" = "loop check" ]; then exit 0; fi\n'
                    f'if [ "$1" = sample ]; then echo "{{\\"args\\": \\"$*\\"}}"; exit {sample_exit}; fi\n'
                    f"{before_score}\n"
                    'while [ "$1" != -o ]; do shift; done; cat > "$2"\n')
    fake.chmod(0o755)
    run = tmp_path / "run"
    (run / "g0").mkdir(parents=True)
    (run / "g0" / "policy").write_text("model\n")
    (tmp_path / "train.jsonl").write_text("")
    # -o: take the policy as made, so that make does not go back to train one.
    return run, make(run, "-o", str(run / "g0" / "policy"), str(run / "g1" / "candidates.jsonl.gz"),
                     REST=str(fake), TRAIN=str(tmp_path / "train.jsonl"), VALID=str(tmp_path / "train.jsonl"),
                     TEST=str(tmp_path / "train.jsonl"), **overrides)


def test_a_failing_sampler_fails_the_grow_step(tmp_path):
    """With a pipe into `rest score`, a sampler's failure must not pass as a short candidates file."""
    run, result = _grow_with_fake_rest(tmp_path, sample_exit=1)
    assert result.returncode != 0 and "shard-1.jsonl.gz] Error 1" in result.stderr, result.stderr
    assert not (run / "g1" / "candidates.jsonl.gz").exists() and not list((run / "g1").glob("shard-*"))


def test_seed_changes_every_grow_steps_draw_and_every_fine_tune(tmp_path):
    run, result = _grow_with_fake_rest(tmp_path, sample_exit=0, SHARDS="1", SEED="2")
    assert result.returncode == 0, result.stderr
    assert "--seed 2001 --shard 1/1" in (run / "g1" / "candidates.jsonl.gz").read_text()
    dry = make(tmp_path / "dry", "-n", "rest", SEED="2")
    assert dry.returncode == 0, dry.stderr
    finetunes = [line for line in dry.stdout.splitlines() if "rest_cli finetune" in line]
    assert finetunes and all("finetune --seed 2 " in line for line in finetunes)


def test_launch_runs_each_shard_and_the_slurm_recipe_parses(tmp_path):
    launcher = tmp_path / "launch"
    launcher.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "launched"}\nexec "$@"\n')
    launcher.chmod(0o755)
    run, result = _grow_with_fake_rest(tmp_path, sample_exit=0, SHARDS="3", LAUNCH=str(launcher))
    assert result.returncode == 0, result.stderr
    launched = (tmp_path / "launched").read_text().splitlines()
    assert len(launched) == 3 and all(f"--shard {k}/3" in line for k, line in zip((1, 2, 3), launched))
    joined = (run / "g1" / "candidates.jsonl.gz").read_text().splitlines()
    assert len(joined) == 3 and all("--seed 1 --shard" in line for line in joined)
    assert subprocess.run(["bash", "-n", str(REPO / "examples" / "slurm" / "rest.sbatch")]).returncode == 0


def test_results_table_lists_every_policy(finished_run):
    run, _ = finished_run
    results = json.loads((run / "results.json").read_text())
    assert [s["policy"] for s in results["steps"]] == ["bc", "g1-i1", "g1-i2"]
    assert [c["policy"] for c in results["controls"]] == ["control-converged", "control-more"]
    assert all(isinstance(s["test"]["reward"], float) for s in results["steps"])
    assert set(results["best_of_n"]) == {"bc", "final"}
    table = (run / "results.md").read_text()
    assert table.count("\n| ") >= 6 and "| BC |" in table or "| **BC (final)** |" in table
    assert "| N | BC | final policy |" in table and "| ReST G1 I1" in table


def test_the_log_has_a_heading_per_step_and_ends_on_the_results(finished_run):
    run, result = finished_run
    headings = [line for line in result.stdout.splitlines() if line.startswith("== ")]
    assert any(h.startswith("== BC (Grow 0)") for h in headings)
    assert any(h.startswith("== Grow 1 (shard 2/2): 2 samples per source") for h in headings)
    assert any(h.startswith("== Grow 1 Improve 1: FILTER=tau") for h in headings)
    assert "rest loop threshold: Improve step 1: --tau " in result.stderr
    assert re.search(r"rest filter: .* out \(.*\): \d+ samples \(.*\) and \d+ references", result.stderr)
    assert result.stdout.rstrip().endswith(f"Results:\n  {run}/results.md\n  {run}/results.json\n"
                                           f"  {run}/results.png")
    assert "rm " not in result.stdout  # the shards went in their own recipe, not in make's clean-up
    assert len(result.stdout.splitlines()) + len(result.stderr.splitlines()) < 150


def test_policy_is_the_best_validated_step(finished_run):
    run, _ = finished_run
    reports = [json.loads((run / "g1" / f"i{i}" / "valid.json").read_text())["results"][0] for i in range(3)]
    best = max(range(3), key=lambda i: (reports[i]["rewards"]["numbers"], -i))
    assert (run / "g1" / "policy").read_text().strip() == reports[best]["model"]


def test_a_finished_loop_is_up_to_date_and_a_stopped_one_redoes_only_what_is_missing(finished_run):
    run, _ = finished_run
    assert make(run, "-q", str(run / "results.md")).returncode == 0  # nothing left to do
    rerun = make(run, "rest")  # ... and `make rest` says where the results are
    assert rerun.returncode == 0 and f"Results:\n  {run}/results.md" in rerun.stdout
    assert "finetune" not in rerun.stdout + rerun.stderr and "| ReST G1 I1" in rerun.stdout
    bc_time = (run / "g0" / "model" / "config.json").stat().st_mtime_ns
    for path in ("results.md", "test/control-more.json", "bon/final.json"):
        (run / path).unlink()
    again = make(run, "rest")
    assert again.returncode == 0, again.stderr[-3000:]
    # only the Best-of-N sampling re-ran
    assert "finetune" not in again.stdout and "sample -m" in again.stdout
    assert (run / "g0" / "model" / "config.json").stat().st_mtime_ns == bc_time
    assert (run / "results.md").exists()


def _improve_with_fake_rest(tmp_path, rising: str):
    """Improve 1 of Grow 1 with a stand-in `rest` whose `loop rising` runs the shell code `rising`."""
    fake = tmp_path / "fake-rest"
    fake.write_text("#!/bin/sh\n"
                    'if [ "$1 $2" = "loop check" ]; then exit 0; fi\n'
                    f'if [ "$1 $2" = "loop rising" ]; then {rising}; fi\n'
                    'echo "unexpected: $*" >&2; exit 9\n')
    fake.chmod(0o755)
    run = tmp_path / "run"
    for path in ("g1/candidates.jsonl.gz", "g1/i0/valid.json"):
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        (run / path).write_text("{}\n")
    target = run / "g1" / "i1" / "valid.json"
    made = ["-o", str(run / "g1" / "candidates.jsonl.gz"), "-o", str(run / "g1" / "i0" / "valid.json")]
    result = make(run, *made, str(target), REST=str(fake))
    return run, target, result


@pytest.mark.parametrize("failure", ["exit 1", "exit 3", "echo garbage; exit 2"])
def test_a_failing_decision_fails_the_step_and_marks_nothing(tmp_path, failure):
    run, target, result = _improve_with_fake_rest(tmp_path, failure)
    assert result.returncode != 0, result.stdout
    assert not target.exists() and not (run / "g1" / "i1" / "skipped").exists()


def test_a_stopped_decision_marks_the_step_skipped(tmp_path):
    run, target, result = _improve_with_fake_rest(tmp_path, "echo stopped; exit 0")
    assert result.returncode == 0, result.stderr
    assert (run / "g1" / "i1" / "skipped").exists() and target.read_text() == "{}\n"


def test_every_target_written_by_a_redirect_is_written_whole():
    """A killed `cmd > $@` leaves an empty target that make takes as done: redirect to a temporary name."""
    recipes = [line for line in (REPO / "rest.mk").read_text().splitlines() if line.startswith("\t")]
    redirects = [line for line in recipes if re.search(r">\s*\$+\(?@\)?(?!\S*\.tmp)", line)]
    assert redirects == []
    assert any("> $@.tmp && mv $@.tmp $@" in line for line in recipes)  # the check sees the real form


def test_a_composed_reward_reaches_rest_as_one_argument(tmp_path):
    """The README's REWARD="product(use, copy-guard)" has parentheses and spaces, and a quote may come too."""
    reward = "product(use, copy-guard, cmd(\"python it's.py\"))"
    _, result = _grow_with_fake_rest(tmp_path, 0, before_score=f'printf "%s\\n" "$3" > {tmp_path / "reward"}',
                                     REWARD=reward)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "reward").read_text() == reward + "\n"


def test_bad_settings_fail_in_seconds_before_any_work(tmp_path):
    run = tmp_path / "run"
    result = make(run, "rest", G="0", LRS="1e-4")
    assert result.returncode == 2
    assert "rest loop check: error: G=0: must be at least 1, got 0 / LRS=1e-4: needs a learning rate " \
           "per Improve step: I=2 but 1 given" in result.stderr
    assert not run.exists()  # not even the demo data was made


def test_init_and_a_trained_bc_together_are_refused(tmp_path):
    result = make(tmp_path / "run", "rest", INIT=str(tmp_path), BC=str(tmp_path))
    assert result.returncode == 2 and "give INIT (a model BC fine-tunes) or BC" in result.stderr


def test_data_given_in_part_is_refused(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"src": "a", "ref": "b"}\n')
    result = make(tmp_path / "run", "rest", TRAIN=str(tmp_path / "train.jsonl"))
    assert result.returncode == 2 and "give TRAIN, VALID and TEST together" in result.stderr


def test_plain_text_files_relative_to_the_users_directory_become_records(tmp_path):
    """`make -C CHECKOUT ... TRAIN="train.de train.en"` from the data's folder: the paths are the user's."""
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.de").write_text("ein\tHund\nzwei Katzen\n")
        (tmp_path / f"{split}.en").write_text("a dog\ntwo cats\n")
    text = {"TRAIN": "train.de train.en", "VALID": "val.de val.en", "TEST": "test.de test.en"}
    variables = {**TINY, "REST": f"{sys.executable} -m rest_cli", "RUN": "myrun", **text}
    env = {**os.environ, "PYTHONPATH": str(REPO), "PWD": str(tmp_path)}
    plan = subprocess.run(["make", "-C", str(REPO), "-f", "rest.mk", "-n", "rest",
                           *(f"{k}={v}" for k, v in variables.items())],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert plan.returncode == 0, plan.stderr
    for split, data in (("train", "train"), ("val", "valid"), ("test", "test")):  # each split is made first
        command = (f"from-text {tmp_path}/{split}.de {tmp_path}/{split}.en "
                   f"-o {tmp_path}/myrun/data/{data}.jsonl")
        assert command in plan.stdout, plan.stdout
    made = subprocess.run(["make", "-C", str(REPO), "-f", "rest.mk", str(tmp_path / "myrun/data/train.jsonl"),
                           *(f"{k}={v}" for k, v in variables.items())],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert made.returncode == 0, made.stderr
    converted = (tmp_path / "myrun" / "data" / "train.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in converted] == [{"id": 1, "src": "ein\tHund", "ref": "a dog"},
                                                        {"id": 2, "src": "zwei Katzen", "ref": "two cats"}]
    assert not (REPO / "myrun").exists()


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "rest").exists(),
                    reason="the checkout's .venv is not installed")
def test_the_checkouts_makefile_passes_the_users_directory_down(tmp_path):
    """`make -C CHECKOUT rest RUN=run` from elsewhere: the shell between the two makes resets PWD."""
    variables = {**TINY, "RUN": "run"}
    result = subprocess.run(["make", "-C", str(REPO), "-n", "rest",
                             *(f"{k}={v}" for k, v in variables.items())],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={**os.environ, "PWD": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert f"demo-data {tmp_path}/run/data " in result.stdout


@pytest.mark.parametrize("name, import_opts", [("llama", "--prompt-template 'Q: {src} A:'"), ("t5", "")])
def test_the_loop_starts_from_a_pretrained_hugging_face_model(tmp_path, name, import_opts):
    """`make rest INIT=HF_FOLDER`: imported, fine-tuned on TRAIN as BC, then Grow and Improve as ever."""
    pytest.importorskip("transformers")
    from tests.models.hf import tiny

    folder = tiny.BUILDERS[name](tmp_path / "hf")
    run = tmp_path / "run"
    result = make(run, "rest", INIT=str(folder), IMPORT_OPTS=import_opts, G="1", I="2", N="2", SHARDS="1",
                  DEMO_OPTS="--train 120 --valid 12 --test 12", BC_OPTS="--steps 10 --lr 1e-3",
                  FINETUNE_OPTS="--batch-tokens 1024 --max-length 40 --threads 1", IMPROVE_STEPS="5",
                  CONTROLS="", SAMPLE_OPTS="--max-length 16", EVAL_OPTS="--max-length 16",
                  TEST_OPTS="--max-length 16 --sample 2", BON_N="1,2")
    assert result.returncode == 0, result.stderr[-3000:]
    kind = "hf-causal" if name in tiny.DECODER_ONLY else "hf-seq2seq"
    for model in ("init", "g0/model"):
        assert json.loads((run / model / "config.json").read_text())["kind"] == kind, model
    training = json.loads((run / "g0" / "model" / "training.json").read_text())
    assert str(run / "init") in json.dumps(training)  # BC started from the imported model
    results = json.loads((run / "results.json").read_text())
    assert [s["policy"] for s in results["steps"]][:2] == ["bc", "g1-i1"] and results["final_policy"]
    assert f"== Import: {folder} as a policy ==" in result.stdout


def test_the_arithmetic_demo_runs_rest_em(tmp_path):
    """`make rest TASK=arithmetic`: a Llama built by demo-data, trained by BC, then ReST-EM's choices:
    each Grow step's Improve from BC, a binary threshold, distinct answers capped per source, pass@k."""
    pytest.importorskip("transformers")
    run = tmp_path / "run"
    result = make(run, "rest", TASK="arithmetic", IMPROVE_FROM="base", G="2", I="1", N="4", SHARDS="1",
                  DEMO_OPTS="--task arithmetic --train 200 --valid 20 --test 20",
                  BC_OPTS="--steps 20 --lr 2e-3", IMPROVE_STEPS="5", CONTROL_MAX_STEPS="10",
                  FINETUNE_OPTS="--batch-tokens 1024 --max-length 16 --threads 1",
                  SAMPLE_OPTS="--max-length 8", EVAL_OPTS="--max-length 8",
                  TEST_OPTS="--max-length 8 --sample 4 --pass-at 1,4 --majority 4", BON_N="1,4",
                  FILTER_OPTS="--dedup --max-per-source 2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "init" / "config.json").read_text())["kind"] == "hf-causal"
    for grow in (1, 2):  # IMPROVE_FROM=base: every Grow step's Improve starts from BC
        training = json.loads((run / f"g{grow}" / "i1" / "model" / "training.json").read_text())
        assert training["parent"] == str(run / "g0" / "model"), training
        assert f"== Grow {grow} Improve 1: FILTER=tau from SCHEDULE, then 5 steps at lr 2e-4 from BC " \
               f"(IMPROVE_FROM=base) ==" in result.stdout
        with gzip.open(run / f"g{grow}" / "i1" / "data.jsonl.gz", "rt") as data:
            kept = [json.loads(line) for line in data]
        per_source = collections.Counter(r["id"] for r in kept)
        assert all(r["reward"] == 1.0 for r in kept) and max(per_source.values(), default=0) <= 2
        assert len({(r["id"], r["hyp"]) for r in kept}) == len(kept)  # distinct answers only
    results = json.loads((run / "results.json").read_text())
    test = {row["policy"]: row["test"] for row in results["steps"] + results["controls"]}
    assert set(test) == {"bc", "g1-i1", "g2-i1", "control-more"}
    assert all(set(t["pass_at"]) == {"1", "4"} and set(t["majority"]) == {"4"} for t in test.values())
    assert "| test pass@1 | test pass@4 | test maj@4 |" in (run / "results.md").read_text()


def test_losses_mk_compares_the_improve_losses_over_seeds(tmp_path):
    """losses.mk, the paper's Figure 5: per seed a BC, one Grow step, BC G=1 I=0 on all of it, and one
    Improve step per loss on the same filtered data, each from that seed's BC for the same steps."""
    run = tmp_path / "run"
    result = make(run, "losses", makefile="losses.mk", SEEDS="1 2", OBJECTIVES="nll gold bvmpo",
                  I0_OBJECTIVES="nll rwnll")
    assert result.returncode == 0, result.stderr[-3000:]
    arms = ["nll-g0-i0", "nll-g1-i0", "rwnll-g1-i0", "nll-g1-i1", "gold-g1-i1", "bvmpo-g1-i1"]
    for seed in (1, 2):
        bc = run / f"s{seed}" / "nll-g0-i0"
        for arm in arms[1:]:
            assert (run / f"s{seed}" / arm / "config.json").exists()  # models stay, not make's intermediates
            training = json.loads((run / f"s{seed}" / arm / "training.json").read_text())
            assert training["parent"] == str(bc) and training["steps"] == 10, training
            expected = "candidates" if arm.endswith("-i0") else "kept"
            assert training["data"]["train"]["path"].endswith(f"s{seed}/g1/{expected}.jsonl.gz"), training
            assert training["objective"] == arm.split("-")[0]
        gold = json.loads((run / f"s{seed}" / "gold-g1-i1" / "training.json").read_text())
        # A quarter of the 10 steps, rounded up.
        assert gold["options"]["objective_options"] == ["sync_every=3"]
    results = json.loads((run / "losses.json").read_text())
    assert [arm["name"] for arm in results["arms"]] == arms
    assert all(sorted(arm["seeds"]) == ["1", "2"] for arm in results["arms"])
    table = (run / "losses.md").read_text()
    assert "| BC G=0 I=0 | 2 |" in table and "| GOLD G=1 I=1 | 2 |" in table
    assert table in result.stdout and (run / "losses.png").exists()
    assert "== Seed 2: gold G=1 I=1, one Improve step by gold ==" in result.stdout


def test_the_multi30k_recipe_trains_bc_until_validation_stops_improving(tmp_path):
    """examples/multi30k/m30k.mk on six sentences: the splits converted, BC with early stopping."""
    data = tmp_path / "m30k"
    data.mkdir()
    pairs = {"train": 24, "val": 6, "test_2016_flickr": 12}
    for split, count in pairs.items():
        (data / f"{split}.de").write_text("".join(f"Satz {k} hier.\n" for k in range(count)))
        (data / f"{split}.en").write_text("".join(f"Sentence {k} here.\n" for k in range(count)))
    run = tmp_path / "run"
    variables = {"M30K": str(data), "RUN": str(run), "REST": f"{sys.executable} -m rest_cli",
                 "MAX_STEPS": "6", "VALID_EVERY": "2",
                 "BC_OPTS": "--preset tiny --vocab-size 60 --lr 1e-3 --batch-tokens 256"}
    recipe = str(REPO / "examples/multi30k/m30k.mk")
    result = subprocess.run(["make", "--no-print-directory", "-f", recipe, "bc", "data",
                             *(f"{k}={v}" for k, v in variables.items())],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [len((run / "data" / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "valid", "test")] \
        == [24, 6, 12]
    training = json.loads((run / "bc" / "training.json").read_text())
    assert training["options"]["patience"] == 3 and training["options"]["valid_every"] == 2
    assert training["best_step"] is not None and training["steps"] <= 6

    # A fresh copy of the same corpus (newer timestamps) converts the data again but keeps the BC.
    later = time.time() + 10
    for path in data.iterdir():
        os.utime(path, (later, later))
    dry = subprocess.run(["make", "-n", "--no-print-directory", "-f", recipe, "bc",
                          *(f"{k}={v}" for k, v in variables.items())],
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "from-text" in dry.stdout and "finetune" not in dry.stdout

    # ReST from that BC (BC= in rest.mk: copied in, not trained again), references kept beside
    # the samples that pass each source's percentile.
    loop = {"G": "1", "I": "1", "N": "4", "IMPROVE_STEPS": "2", "SCHEDULE": "50", "LRS": "1e-4",
            "LOOP_VARS": "CONTROL_PATIENCE=1 BON_N=1,2"}
    result = subprocess.run(["make", "--no-print-directory", "-f", recipe, "rest-chrf",
                             *(f"{k}={v}" for k, v in {**variables, **loop}.items())],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"== BC (Grow 0): {run / 'bc'}, trained already ==" in result.stdout
    assert (run / "chrf" / "s1" / "g0" / "model" / "training.json").read_bytes() == \
        (run / "bc" / "training.json").read_bytes()
    results = json.loads((run / "chrf" / "s1" / "results.json").read_text())
    assert [s["policy"] for s in results["steps"]] == ["bc", "g1-i1"]
    data = results["steps"][1]["improve_data"]
    assert data["references_out"] == 24 and data["samples_out"] > 0
    assert sorted(c["policy"] for c in results["controls"]) == ["control-converged", "control-more"]

    # The reference-free run: the same loop in its own folder, FREE_N samples per source.
    dry = subprocess.run(["make", "-n", "--no-print-directory", "-f", recipe, "rest-free", "FREE_N=3",
                          *(f"{k}={v}" for k, v in {**variables, **loop}.items())],
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert f"RUN={run}/free/s1 " in dry.stdout and " N=3 " in dry.stdout
    assert "REWARD='product(use, copy-guard, repeat-guard, length-guard, lang-guard)'" in dry.stdout
    variant = subprocess.run(["make", "-n", "--no-print-directory", "-f", recipe, "compare-free",
                              "FREE_NAME=free-len", *(f"{k}={v}" for k, v in {**variables, **loop}.items())],
                             capture_output=True, text=True, timeout=120)
    assert f"RUN={run}/free-len/s1 " in variant.stdout and f"{run}/free/" not in variant.stdout

    # The test-set comparison against the converged control, with its picture.
    result = subprocess.run(["make", "--no-print-directory", "-f", recipe, "compare-chrf",
                             "FREE_REWARD=product(copy-guard, repeat-guard)",
                             *(f"{k}={v}" for k, v in {**variables, **loop}.items())],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run / "chrf" / "s1" / "compare.json").read_text())
    seed_run = run / "chrf" / "s1"
    assert [r["model"] for r in report["results"]] == [
        str(seed_run / "control" / "converged"), str(run / "bc"), str(seed_run / "control" / "more"),
        (seed_run / "g1" / "policy").read_text().strip()]
    assert set(report["results"][3]["bootstrap"]["rewards"]) == {"chrf", "product(copy-guard, repeat-guard)"}
    assert "p_value" in report["results"][3]["bootstrap"]["chrf"]
    assert (run / "chrf" / "s1" / "compare.png").read_bytes().startswith(b"\x89PNG")
