"""The Improve objectives: each loss on a batch small enough to compute by hand, GOLD's lagged copy,
the value head, and what a run with another objective still guarantees (its inputs checked, the
same export, an exact resume)."""

import json
import math
import os
import random
import signal
import subprocess
import sys

import pytest
import torch

from rest_cli.correlation import kendall_tau, spearman
from rest_cli.errors import InputError, UsageError
from rest_cli.models.base import Batch
from rest_cli.train.objectives import get_objective, objective_names
from rest_cli.train.objectives.base import Context
from rest_cli.train.objectives.bvmpo import BVMPO
from rest_cli.train.objectives.gold import GOLD
from rest_cli.train.objectives.oac import OfflineActorCritic
from rest_cli.train.objectives.rwnll import RewardWeightedNLL
from rest_cli.train.objectives.settings import BVMPOSettings, GoldSettings, RWNLLSettings, ValueSettings
from rest_cli.train.objectives.value import discounted_returns, value_correlations
from rest_cli.train.options import FinetuneOptions
from rest_cli.train.run import finetune, partial_dir
from tests.helpers import REPO, rest, write_jsonl
from tests.train.test_training import assert_same_weights, weights

# Two records over a vocabulary of 3: the first trains 3 tokens at weight 1, the second 2 at weight 2.
P = [[[0.5, 0.25, 0.25], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]],
     [[0.1, 0.8, 0.1], [0.4, 0.4, 0.2], [1 / 3, 1 / 3, 1 / 3]]]  # the policy's distributions
LABELS = [[0, 2, 1], [1, 0, 0]]
TRAINED = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
W = [1.0, 2.0]


def batch(rewards=(0.8, 0.4)) -> Batch:
    mask = torch.tensor([[True, True, True], [True, True, False]])
    return Batch({}, torch.tensor(LABELS), mask, torch.tensor(W), 5, {"reward": torch.tensor(rewards)})


def logits() -> torch.Tensor:
    return torch.tensor(P).log().requires_grad_()  # log-softmax of log p is log p


def nll(b, t):
    return -math.log(P[b][t][LABELS[b][t]])


def smooth(b, t):  # the mean NLL over the vocabulary
    return -sum(math.log(p) for p in P[b][t]) / 3


def test_rwnll_weighs_each_record_by_exp_reward_over_beta():
    total, nll_sum, count = RewardWeightedNLL(RWNLLSettings(beta=0.5)).loss(logits(), batch((1.0, 0.5)))
    v = [1.0 * math.exp((1.0 - 1) / 0.5), 2.0 * math.exp((0.5 - 1) / 0.5)]  # w_i exp((r_i - 1) / beta)
    expected = v[0] * (nll(0, 0) + nll(0, 1) + nll(0, 2)) + v[1] * (nll(1, 0) + nll(1, 1))
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert count.item() == pytest.approx(3 * v[0] + 2 * v[1], rel=1e-6)
    assert nll_sum.item() == pytest.approx(expected, rel=1e-6)
    # A huge beta is NLL: the shift by the top reward cancels in the ratio.
    wide, _, wide_count = RewardWeightedNLL(RWNLLSettings(beta=1e6)).loss(logits(), batch((1.0, 0.5)))
    plain, _, plain_count = get_objective("nll").loss(logits(), batch())
    assert (wide / wide_count).item() == pytest.approx((plain / plain_count).item(), rel=1e-5)


def test_gold_weighs_tokens_by_clamped_old_probabilities_times_floored_returns():
    old = torch.tensor([[0.1, 0.5, 0.9], [1.0, 0.05, 0.7]])  # pi_old(a_t | s_t)
    mle = torch.tensor([[0.6, 0.05, 0.3], [0.9, 0.2, 0.8]])  # p_MLE(a_t | s_t)
    settings = GoldSettings(lower=0.2, horizon=2, gamma=0.5, floor=0.1)
    total, nll_sum, count = GOLD(settings).loss(logits(), batch(), old, mle)
    w = {(0, 0): 0.2, (0, 1): 0.5, (0, 2): 0.9, (1, 0): 1.0, (1, 1): 0.2}  # clamp(old, 0.2, 1)
    # r = max(mle, 0.1), and 0.1 past the end; Q_t = r_t + 0.5 r_t+1 + 0.25 r_t+2
    q = {(0, 0): 0.6 + 0.5 * 0.1 + 0.25 * 0.3, (0, 1): 0.1 + 0.5 * 0.3 + 0.25 * 0.1,
         (0, 2): 0.3 + 0.5 * 0.1 + 0.25 * 0.1, (1, 0): 0.9 + 0.5 * 0.2 + 0.25 * 0.1,
         (1, 1): 0.2 + 0.5 * 0.1 + 0.25 * 0.1}
    expected = sum(W[b] * w[b, t] * q[b, t] * nll(b, t) for b, t in TRAINED)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert count.item() == 1 + 1 + 1 + 2 + 2
    assert nll_sum.item() == pytest.approx(sum(W[b] * nll(b, t) for b, t in TRAINED), rel=1e-6)
    smoothed, _, _ = GOLD(settings, label_smoothing=0.1).loss(logits(), batch(), old, mle)
    expected = sum(W[b] * (0.9 * w[b, t] * q[b, t] * nll(b, t) + 0.1 * smooth(b, t)) for b, t in TRAINED)
    assert smoothed.item() == pytest.approx(expected, rel=1e-6)


def test_gold_p_rewards_are_log_probabilities_over_the_baseline_floored():
    gold = GOLD(GoldSettings(variant="p", horizon=1, baseline=-10.0, floor=0.1))
    q = gold.returns(torch.tensor([[1e-6, 0.5, 0.9]]), torch.tensor([[True, True, False]]))
    r = [max(math.log(1e-6) + 10, 0.1), math.log(0.5) + 10, 0.1]  # log(1e-6) + 10 = -3.8: floored
    assert q[0].tolist() == pytest.approx([r[0] + r[1], r[1] + r[2], r[2] + 0.1], rel=1e-5)


class LinearKind:
    """Just enough of a policy kind for GOLD's copies: logits are the model applied to `x`."""

    def logits(self, model, batch):
        return model(batch.inputs["x"])


def test_gold_refreshes_its_lagged_policy_every_sync_period_and_keeps_it_in_its_state():
    torch.manual_seed(0)
    policy, kind = torch.nn.Linear(2, 3), LinearKind()
    gold = GOLD(GoldSettings(sync_every=3))
    gold.setup(Context(kind, policy, torch.device("cpu")))
    x = Batch({"x": torch.randn(1, 2, 2)}, torch.tensor([[0, 2]]), torch.ones(1, 2, dtype=torch.bool),
              torch.ones(1), 2)
    parent, close = policy.weight.detach().clone(), lambda a, b: torch.allclose(a, b, atol=1e-6)
    seen = []
    for step in range(8):
        gold.on_step(step, 8)
        seen.append(None if gold.lagged is None else gold.lagged.weight.clone())
        with torch.no_grad():
            policy.weight.add_(1.0)  # an optimizer step
    assert seen[:3] == [None] * 3  # pi_old is the parent (the reference) until step 3
    assert close(seen[3], parent + 3) and close(seen[5], parent + 3)
    assert close(seen[6], parent + 6) and torch.equal(gold.reference.weight, parent)
    again = GOLD(GoldSettings(sync_every=3))
    again.setup(Context(kind, policy, torch.device("cpu")))
    again.load_state_dict(gold.state_dict())
    assert torch.equal(again.lagged.weight, gold.lagged.weight) and again.synced_at == 6
    assert not again.lagged.weight.requires_grad and gold.batch_loss(kind, policy, x)[0].requires_grad


def test_returns_are_the_final_reward_discounted_back_from_the_last_trained_token():
    returns = discounted_returns(torch.tensor([0.8, 0.4]), batch().mask, 0.5)
    assert returns.flatten().tolist() == pytest.approx([0.8 * 0.25, 0.8 * 0.5, 0.8, 0.4 * 0.5, 0.4, 0.0])


G = [[0.2, 0.4, 0.8], [0.2, 0.4, 0.0]]  # the returns above: rewards (0.8, 0.4), gamma 0.5


def test_oac_is_the_advantage_weighted_nll_plus_the_value_loss_which_alone_trains_v():
    values = torch.tensor([[0.1, 0.3, 0.5], [0.1, 0.6, 0.0]], requires_grad=True)
    oac = OfflineActorCritic(ValueSettings(gamma=0.5))
    total, _, count = oac.loss(logits(), batch(), values, torch.tensor(G))
    a = {(b, t): G[b][t] - values[b, t].item() for b, t in TRAINED}  # 0.1, 0.1, 0.3, 0.1, -0.2
    value = sum(W[b] * 0.5 * a[b, t] ** 2 for b, t in TRAINED)
    policy = sum(W[b] * a[b, t] * nll(b, t) for b, t in TRAINED)
    assert total.item() == pytest.approx(policy + value, rel=1e-5)
    assert count.item() == 7
    total.backward()
    expected = [W[b] * -a.get((b, t), 0.0) for b in range(2) for t in range(3)]  # w (V - G)
    assert values.grad.flatten().tolist() == pytest.approx(expected, abs=1e-6)
    oac.policy_scale = 0.0  # the value head's warmup: the policy's part is 0
    assert oac.loss(logits(), batch(), values, torch.tensor(G))[0].item() == pytest.approx(value, rel=1e-5)


def test_bvmpo_weighs_the_top_half_by_a_softmax_of_advantages_and_adds_the_eta_and_kl_terms():
    a = {(0, 0): 0.3, (0, 1): -0.1, (0, 2): 0.2, (1, 0): 0.5, (1, 1): -0.4}
    values = torch.tensor([[G[b][t] - a.get((b, t), 0.0) for t in range(3)] for b in range(2)])
    reference = [[[0.4, 0.4, 0.2], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]],
                 [[0.2, 0.6, 0.2], [0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]]]  # pi_BC
    bvmpo = BVMPO(BVMPOSettings(eta=1.0, eps_eta=0.01))
    bvmpo.kl_weight = 0.5
    total, _, count = bvmpo.loss(logits(), batch(), values, torch.tensor(G), torch.tensor(reference).log())
    # The top 3 of 5 trained tokens: A = 0.5 (weight 2), 0.3, 0.2.
    e = {(1, 0): 2 * math.exp(0.5), (0, 0): math.exp(0.3), (0, 2): math.exp(0.2)}
    z = sum(e.values())
    l_pi = sum(e[k] / z * nll(*k) for k in e)
    l_eta = 1.0 * 0.01 + 1.0 * math.log(z / (2 + 1 + 1))
    kl = {(b, t): sum(q * math.log(q / p) for q, p in zip(reference[b][t], P[b][t])) for b, t in TRAINED}
    value = sum(W[b] * 0.5 * a[b, t] ** 2 for b, t in TRAINED)
    n = 7
    expected = n * (l_pi + l_eta) + sum(W[b] * 0.5 * kl[b, t] for b, t in TRAINED) + value
    assert count.item() == n and total.item() == pytest.approx(expected, rel=1e-5)
    total.backward()  # eta's gradient: n (eps + log mean w exp(A / eta) - sum psi A / eta) d eta / d raw
    d_eta = n * (0.01 + math.log(z / 4) - sum(e[k] / z * a[k] for k in e))
    assert bvmpo.temperature.raw.grad.item() == pytest.approx(d_eta * (1 - 1 / math.e), rel=1e-4)


def test_bvmpo_anneals_lambda_geometrically_over_the_policy_steps():
    bvmpo = BVMPO(BVMPOSettings(value_warmup=0.2))
    lambdas, scales = [], []
    for step in range(11):
        bvmpo.on_step(step, 11)
        lambdas.append(bvmpo.kl_weight), scales.append(bvmpo.policy_scale)
    assert scales == [0.0, 0.0] + [1.0] * 9  # int(0.2 x 11) = 2 steps fit the value head alone
    assert lambdas[2] == 1.0 and lambdas[10] == pytest.approx(1e-5)
    assert lambdas[6] == pytest.approx(math.sqrt(1e-5))  # halfway from step 2 to step 10


def test_rank_correlations_match_their_definitions():
    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    # 10 pairs, 2 discordant: tau = (8 - 2) / 10; d^2 = 1 + 1 + 1 + 1 + 0: rho = 1 - 6 x 4 / (5 x 24)
    assert kendall_tau(x, y) == pytest.approx(0.6) and spearman(x, y) == pytest.approx(0.8)
    assert kendall_tau(x, x[::-1]) == pytest.approx(-1.0)
    # ties: tau-b = (C - D) / sqrt((n0 - tx)(n0 - ty)) = (5 - 0) / sqrt(6 x 5)
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))


# --- Runs -------------------------------------------------------------------------------------

WORDS = "ab cd ef gh ij kl mn op qr st uv wx".split()
SCORES = {word: i / (len(WORDS) - 1) for i, word in enumerate(WORDS)}


def scored(n, seed=0):
    """Copy records rewarded with the mean score of their words: a return a value head can learn."""
    rng = random.Random(seed)
    texts = [rng.sample(WORDS, rng.randint(1, 5)) for _ in range(n)]
    return [{"src": " ".join(t), "hyp": " ".join(t), "reward": sum(SCORES[w] for w in t) / len(t)}
            for t in texts]


def options(**overrides):
    return FinetuneOptions(**{**dict(lr=1e-3, warmup=0, batch_tokens=256, log_every=2, threads=1,
                                     checkpoint_every=5), **overrides})


def copy_model(tmp, steps: int, records: int):
    """A tiny native policy trained from scratch to copy `records` scored pairs."""
    train = write_jsonl(tmp / "train.jsonl", scored(records, seed=1))
    run = FinetuneOptions(preset="tiny", vocab_size=48, dropout=0.0, steps=steps, lr=3e-3, warmup=steps // 8,
                          batch_tokens=512, threads=1)
    finetune(str(train), tmp / "model", run)
    return tmp / "model"


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A tiny copy model, barely trained: the --init of the runs below."""
    return copy_model(tmp_path_factory.mktemp("parent"), 40, 300)


@pytest.mark.slow  # trains a copy model (400 steps), then the head (400 more)
def test_the_value_head_learns_a_known_return(tmp_path):
    parent = copy_model(tmp_path, 400, 2000)
    train = write_jsonl(tmp_path / "train.jsonl", scored(1500, seed=2))
    held_out = write_jsonl(tmp_path / "held_out.jsonl", scored(200, seed=3))
    settings = ("value_warmup=0.9", "value_lr=3e-3")  # the policy stays put: its features do
    run = options(objective="oac", steps=400, lr=1e-6, batch_tokens=1024, objective_options=settings)
    record = finetune(str(train), tmp_path / "m", run, init_dir=parent)
    found = value_correlations(tmp_path / "m", str(held_out))
    assert found["records"] == 200 and record["objective"] == "oac"
    assert found["kendall_last"] > 0.9 and found["spearman_last"] > 0.9, found


@pytest.mark.parametrize("objective", [name for name in objective_names() if name != "nll"])
def test_no_objective_changes_the_exported_policy(parent, tmp_path, objective):
    train = write_jsonl(tmp_path / "train.jsonl", scored(60))
    finetune(str(train), tmp_path / "nll", options(steps=3), init_dir=parent)
    finetune(str(train), tmp_path / objective, options(steps=3, objective=objective), init_dir=parent)
    plain, other = tmp_path / "nll" / "ctranslate2", tmp_path / objective / "ctranslate2"
    assert sorted(p.name for p in plain.iterdir()) == sorted(p.name for p in other.iterdir())
    for name in (p.name for p in plain.iterdir()):  # the weights differ, not their layout
        a, b = plain / name, other / name
        if name == "model.bin":
            assert a.stat().st_size == b.stat().st_size
        else:
            assert a.read_bytes() == b.read_bytes(), name
    names = [{p.name for p in (tmp_path / run).iterdir()} for run in ("nll", objective)]
    assert names[1] - names[0] == ({"value_head.safetensors"} if objective in ("oac", "bvmpo") else set())
    parts = [json.loads((tmp_path / run / "config.json").read_text())["files"] for run in ("nll", objective)]
    assert parts[0].keys() == parts[1].keys()  # the value head is no part of the policy


@pytest.mark.parametrize("objective", ["rwnll", "oac", "bvmpo"])
def test_a_record_without_the_reward_its_objective_reads_is_an_error_at_its_line(parent, tmp_path, objective):
    records = scored(5)
    del records[2]["reward"]
    train = write_jsonl(tmp_path / "train.jsonl", records)
    expected = rf"train\.jsonl:3: field 'reward' is missing \(finetune --objective {objective} needs it\)"
    with pytest.raises(InputError, match=expected):
        finetune(str(train), tmp_path / "m", options(steps=2, objective=objective), init_dir=parent)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


@pytest.mark.subprocess
def test_the_command_names_the_missing_field_in_one_line(parent, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"src": "ab", "hyp": "ab"}])
    done = rest("finetune", str(train), "--init", str(parent), "--steps", "1", "--objective", "rwnll",
                "--objective-opt", "beta=0.5", "-o", str(tmp_path / "m"))
    assert done.returncode == 3
    assert done.stderr.decode().strip().splitlines() == [
        f"rest finetune: error: {train}:1: field 'reward' is missing (finetune --objective rwnll needs it)"]


def test_validation_records_need_no_reward(parent, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", scored(40))
    valid = write_jsonl(tmp_path / "valid.jsonl", [{"src": "ab cd", "ref": "ab cd"}] * 3)
    record = finetune(str(train), tmp_path / "m", options(steps=2, objective="rwnll", valid_every=2),
                      valid_path=str(valid), init_dir=parent)
    assert record["valid_loss"] and record["output"] == "best"


@pytest.mark.parametrize("objective, settings, message", [
    ("gold", (), "--objective gold reads the parent policy .* give --init"),
    ("bvmpo", (), "--objective bvmpo reads the parent policy"),
    ("rwnll", ("beta=0.001",), r"--objective-opt: rwnll: beta must be at least 0.02"),
    ("gold", ("lower=x",), r"--objective-opt 'lower=x': expected float"),
    ("nll", ("beta=1",), r"--objective-opt 'beta=1': not a setting of objective nll \(it takes none\)"),
    ("oac", ("eta=1",), r"not a setting of objective oac \(it takes gamma, value_lr, value_warmup"),
])
def test_objectives_refuse_what_they_cannot_run_before_any_work(tmp_path, objective, settings, message):
    train = write_jsonl(tmp_path / "train.jsonl", scored(5))
    with pytest.raises(UsageError, match=message):
        finetune(str(train), tmp_path / "m", FinetuneOptions(preset="tiny", steps=1, objective=objective,
                                                             objective_options=settings))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


def test_objectives_with_copies_or_a_head_refuse_fsdp():
    from rest_cli.train.options import resolve_options
    for objective in ("gold", "oac", "bvmpo"):
        with pytest.raises(UsageError, match=f"--fsdp: --objective {objective} keeps copies"):
            resolve_options(FinetuneOptions(steps=1, objective=objective, fsdp=True), "parent")
    resolve_options(FinetuneOptions(steps=1, objective="rwnll", fsdp=True), "parent")


@pytest.mark.parametrize("objective, settings", [("gold", ("sync_every=4",)),
                                                 ("bvmpo", ("value_warmup=0.2",))])
def test_a_resumed_run_ends_as_an_uninterrupted_one(parent, tmp_path, objective, settings):
    train = write_jsonl(tmp_path / "train.jsonl", scored(200))
    valid = write_jsonl(tmp_path / "valid.jsonl", scored(20, seed=9))
    run = options(steps=14, objective=objective, objective_options=settings, dropout=0.1, valid_every=5)
    whole = finetune(str(train), tmp_path / "whole", run, valid_path=str(valid), init_dir=parent)

    def terminate_at_9(progress):
        if progress.step == 9:  # after GOLD's refresh at step 8 and BVMPO's value warmup
            os.kill(os.getpid(), signal.SIGTERM)
    output = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        finetune(str(train), output, run, valid_path=str(valid), init_dir=parent, on_progress=terminate_at_9)
    saved = torch.load(partial_dir(output) / "checkpoint.pt", weights_only=True)
    assert saved["state"]["step"] == 9
    assert saved["objective"]["state"].get("synced_at", 8) == 8  # GOLD's pi_old, refreshed at step 8
    resumed = finetune(str(train), output, run, valid_path=str(valid), init_dir=parent)
    assert resumed["resumed"] == 1 and resumed["best_step"] == whole["best_step"]
    losses = [[loss for _, loss in run["train_loss"]] for run in (whole, resumed)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    assert_same_weights(weights(tmp_path / "whole"), weights(output), atol=1e-6)
    if objective == "bvmpo":
        from safetensors.torch import load_file
        heads = [load_file(d / "value_head.safetensors") for d in (tmp_path / "whole", output)]
        assert_same_weights(*heads, atol=1e-6)


@pytest.mark.torchrun
@pytest.mark.parametrize("objective", ["rwnll", "oac"])
def test_two_process_ddp_matches_one_process(parent, tmp_path, objective):
    """The value head's gradients, outside DDP, are summed over the processes as the policy's are."""
    train = write_jsonl(tmp_path / "train.jsonl", scored(200, seed=4))
    args = ["finetune", str(train), "--init", str(parent), "--steps", "6", "--lr", "1e-3", "--warmup", "0",
            "--batch-tokens", "300", "--log-every", "1", "--objective", objective]
    single = rest(*args, "--threads", "1", "--output", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                          "2", "-m", "rest_cli", *args, "--output", str(tmp_path / "ddp")],
                         capture_output=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr.decode()[-3000:]
    one, two = (json.loads((tmp_path / name / "training.json").read_text()) for name in ("single", "ddp"))
    assert two["world_size"] == 2 and one["tokens_seen"] == two["tokens_seen"]
    assert [v for _, v in one["train_loss"]] == pytest.approx([v for _, v in two["train_loss"]], rel=1e-5)
    if objective == "oac":
        from safetensors.torch import load_file
        heads = [load_file(tmp_path / name / "value_head.safetensors") for name in ("single", "ddp")]
        assert_same_weights(*heads, atol=1e-5)


@pytest.mark.parametrize("name", ["llama", "t5"])
def test_hugging_face_policies_give_the_value_head_their_last_hidden_states(tmp_path, name):
    from safetensors.torch import load_file

    from rest_cli.models.hf.importing import import_model
    from rest_cli.models.hf.tokenizer import PromptFormat
    from rest_cli.models.modeldir import kind_of, load_model
    from tests.models.hf import tiny

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    fmt = PromptFormat(template="Q: {src}\nA:") if name == "llama" else PromptFormat()
    directory = import_model(tiny.BUILDERS[name](tmp_path / "hf"), tmp_path / "rest", fmt)
    train = write_jsonl(tmp_path / "train.jsonl", scored(20))
    finetune(str(train), tmp_path / "m", options(steps=2, objective="oac", batch_tokens=512, max_length=32),
             init_dir=directory)
    d_model = kind_of(directory).output_layer(load_model(directory)).weight.shape[1]
    assert load_file(tmp_path / "m" / "value_head.safetensors")["hidden.weight"].shape[1] == 2 * d_model
    assert value_correlations(tmp_path / "m", str(train))["records"] == 20
