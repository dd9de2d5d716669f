"""Paired bootstrap resampling in `rest eval --compare`: sacrebleu's test for BLEU and chrF, the
same resamples for each mean reward, and the reward-hacking flag built on them."""

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rest_cli.eval.evaluate import Evaluation, compare, outputs_of, with_significance
from rest_cli.eval.significance import MIN_SOURCES, Outputs, corpus_estimates, reward_estimates
from rest_cli.rewards import RewardOptions, build_reward

WORDS = "a the cat dog sat on mat house red blue green small big old new".split()


def corpus(seed: int, sources: int, noise: float) -> tuple[list[str], list[str]]:
    """References, and outputs with a share `noise` of their words replaced."""
    rng = random.Random(seed)
    refs = [" ".join(rng.choices(WORDS, k=rng.randint(4, 12))) for _ in range(sources)]
    hyps = [" ".join(w if rng.random() > noise else rng.choice(WORDS) for w in ref.split()) for ref in refs]
    return refs, hyps


Figure = tuple[float, float, float, float | None]  # score, bootstrap mean, ci, p-value


def sacrebleu_paired_bs(tmp_path: Path, refs, *systems) -> list[list[Figure]]:
    """sacrebleu's own command line on the same files: per system, (score, mean, ci, p) of BLEU and chrF."""
    ref = tmp_path / "ref.txt"
    ref.write_text("\n".join(refs) + "\n")
    files = []
    for k, hyps in enumerate(systems):
        files.append(tmp_path / f"sys{k}.txt")
        files[-1].write_text("\n".join(hyps) + "\n")
    binary = shutil.which("sacrebleu", path=str(Path(sys.executable).parent)) or "sacrebleu"
    # JSON output breaks on numpy floats in sacrebleu 2.6 with --paired-bs; LaTeX has every figure.
    out = subprocess.run([binary, str(ref), "-i", *map(str, files), "-m", "bleu", "chrf", "--paired-bs",
                          "-w", "4", "--format", "latex"], capture_output=True, text=True, check=True)
    figure = re.compile(r"([\d.]+) \(([\d.]+) ± ([\d.]+)\)(?: \(p = ([\d.]+)\))?")
    rows = [line for line in out.stdout.splitlines() if "±" in line and "CI" not in line]
    return [[(float(a), float(b), float(c), float(d) if d else None) for a, b, c, d in figure.findall(row)]
            for row in rows]


@pytest.mark.subprocess
def test_bleu_and_chrf_agree_with_sacrebleus_own_paired_bootstrap(tmp_path):
    refs, base = corpus(1, 120, 0.3)
    _, better = corpus(1, 120, 0.2)  # same references (same seed), fewer words replaced
    _, alike = corpus(1, 120, 0.29)
    systems = [Outputs(hyps, refs, {}) for hyps in (base, better, alike)]
    ours = corpus_estimates(systems)
    theirs = sacrebleu_paired_bs(tmp_path, refs, base, better, alike)
    for k in range(3):
        for column, metric in enumerate(("bleu", "chrf")):
            score, mean, ci, p = theirs[k][column]
            estimate = ours[metric][k]
            assert estimate.mean == pytest.approx(mean, abs=6e-5)
            assert estimate.ci == pytest.approx(ci, abs=6e-5)
            assert (estimate.p_value is None) == (p is None)
            if p is not None:
                assert estimate.p_value == pytest.approx(p, abs=6e-5)
    assert ours["bleu"][1].p_value < 0.05 and ours["bleu"][2].p_value > 0.05  # the test tells them apart


def test_a_mean_rewards_interval_and_p_value_on_a_constructed_case():
    sources = 400
    constant = [0.5] * sources
    coin = [float(k % 2) for k in range(sources)]  # mean 0.5, standard deviation 0.5
    higher = [0.6] * sources
    base, same_mean, better = reward_estimates(
        [Outputs([""] * sources, None, {"r": values}) for values in (constant, coin, higher)], "r")
    assert base.mean == pytest.approx(0.5) and base.ci == pytest.approx(0.0, abs=1e-12)
    # The normal approximation: half-width 1.96 * 0.5 / sqrt(400) = 0.049.
    assert same_mean.ci == pytest.approx(1.96 * 0.5 / sources ** 0.5, abs=0.006)
    assert same_mean.mean == pytest.approx(0.5, abs=0.005)
    assert same_mean.p_value == 1.0  # no difference in the means: nothing to explain
    assert better.p_value == pytest.approx(1 / 1001)  # a difference no resample comes near


def test_no_difference_at_all_has_p_value_1():
    refs, hyps = corpus(2, 30, 0.3)
    estimates = corpus_estimates([Outputs(hyps, refs, {}), Outputs(list(hyps), refs, {})])
    assert estimates["bleu"][1].p_value == 1.0 and estimates["chrf"][1].p_value == 1.0


def evaluations(systems: list[tuple[list[str], list[float]]], refs: list[str]) -> list[Evaluation]:
    """Evaluations of outputs with a given reward per source (a `py:` reward would do the same)."""
    found = []
    for k, (hyps, rewards) in enumerate(systems):
        outputs = Outputs(hyps, refs, {"judge": rewards})
        chrf_bleu = outputs_of([{"hyp": h, "ref": r} for h, r in zip(hyps, refs)],
                               [build_reward("chrf", RewardOptions())])
        from rest_cli.eval.evaluate import candidate_metrics

        result = {"model": f"system {k}", **candidate_metrics(chrf_bleu, [])}
        result["rewards"] = {"judge": sum(rewards) / len(rewards)}
        found.append(Evaluation(result, outputs))
    return found


def test_the_flag_fires_when_reward_rises_and_bleu_falls_both_significantly():
    refs, good = corpus(3, 200, 0.1)
    _, bad = corpus(3, 200, 0.6)
    rng = random.Random(0)
    fair = [rng.uniform(0.4, 0.6) for _ in refs]
    hacked = [value + 0.2 for value in fair]  # the reward likes the worse outputs
    results = with_significance(evaluations([(good, fair), (bad, hacked), (good, hacked)], refs), 1000)
    hacking, honest = compare(results)
    assert hacking["reward_hacking_suspected"] and hacking["hacking_test"] == "bootstrap"
    assert re.fullmatch(r"judge \(p = 0\.0010\) up while bleu \(p = 0\.0010\), chrf \(p = 0\.0010\) down",
                        hacking["why"]), hacking["why"]
    assert not honest["reward_hacking_suspected"]  # the reward rose, the outputs are the same
    assert results[1]["bootstrap"]["rewards"]["judge"]["p_value"] < 0.05
    assert "p_value" not in results[0]["bootstrap"]["rewards"]["judge"]


def test_a_fall_within_noise_is_not_flagged_though_the_threshold_rule_would():
    refs, base = corpus(4, 12, 0.3)
    worse = ["house", "dog", *base[2:]]  # two short, wrong outputs: BLEU falls by 2 points, on 12 sources
    systems = [(base, [0.5] * 12), (worse, [0.5] * 11 + [0.6])]
    with_test = compare(with_significance(evaluations(systems, refs), 1000))[0]
    without = compare(with_significance(evaluations(systems, refs), 0))[0]
    assert without["bleu"] < -1 and without["reward_hacking_suspected"]  # the old rule
    assert with_test["bleu"] == without["bleu"] and not with_test["reward_hacking_suspected"]
    assert without["hacking_test"] == "threshold"


def test_too_few_sources_get_no_test():
    refs, base = corpus(5, MIN_SOURCES - 1, 0.3)
    _, other = corpus(5, MIN_SOURCES - 1, 0.6)
    systems = [(base, [0.5] * len(refs)), (other, [0.9] * len(refs))]
    results = with_significance(evaluations(systems, refs), 1000)
    assert all("bootstrap" not in result for result in results)
    assert compare(results)[0]["hacking_test"] == "threshold"  # one source: any difference would look certain
