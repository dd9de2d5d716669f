"""The trainer: it learns, it is seeded, it resumes exactly, and its loss weighs records as documented."""

import json
import os
import random
import re
import shutil
import signal
from pathlib import Path

import ctranslate2
import numpy as np
import pytest
import torch

from rest_cli.errors import InputError, RestError, UsageError
from rest_cli.models.base import get_kind
from rest_cli.models.modeldir import load_model, training_info
from rest_cli.models.native.tokenizer import EOS_ID, PAD_ID, Tokenizer
from rest_cli.train.data import DataStats, Pair, collate, load_pairs, make_batches, tokenize_pairs
from rest_cli.train.objectives import get_objective
from rest_cli.train.options import FinetuneOptions
from rest_cli.train.run import finetune, partial_dir
from rest_cli.train.trainer import Trainer, lr_factor
from tests.helpers import write_jsonl

NATIVE = get_kind("native")
WORDS = "ab cd ef gh ij kl mn op qr st uv wx".split()


def copy_pairs(n, seed=0):
    """Copy task: 1 to 5 distinct words; learnable by a one-layer model."""
    rng = random.Random(seed)
    texts = [" ".join(rng.sample(WORDS, rng.randint(1, 5))) for _ in range(n)]
    return [{"src": t, "ref": t} for t in texts]


def tiny(**overrides):
    """Options for a tiny model that trains in seconds on two cores."""
    return FinetuneOptions(**{**dict(preset="tiny", vocab_size=48, dropout=0.0, label_smoothing=0.0, lr=3e-3,
                                     warmup=50, batch_tokens=512, log_every=50), **overrides})


def weights(directory):
    return {k: v.clone() for k, v in load_model(directory).state_dict().items()}


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=atol), name


@pytest.fixture(scope="module")
def copy_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("copy")
    train = write_jsonl(tmp / "train.jsonl", copy_pairs(2000))
    record = finetune(str(train), tmp / "model", tiny(steps=400, seed=1))
    return tmp / "model", record


@pytest.mark.slow  # trains the copy model (400 steps) first
def test_a_tiny_model_learns_to_copy(copy_model):
    directory, record = copy_model
    losses = [loss for _, loss in record["train_loss"]]
    assert losses[0] > 1.0 and losses[-1] < 0.1  # an untrained model is at ln(vocab) ~ 3.9
    held_out = [r["src"] for r in copy_pairs(200, seed=99)]
    tokenizer = Tokenizer(directory / "spm.model")
    translator = ctranslate2.Translator(str(directory / "ctranslate2"), compute_type="float32")
    results = translator.translate_batch(tokenizer.encode_pieces(held_out), beam_size=1)
    outputs = tokenizer.decode([r.hypotheses[0] for r in results])
    assert np.mean([out == src for out, src in zip(outputs, held_out)]) >= 0.9
    assert not partial_dir(directory).exists()


@pytest.mark.slow  # trains the copy model (400 steps) first
def test_training_json_says_how_the_model_was_made(copy_model):
    directory, record = copy_model
    info = training_info(directory)
    assert info == json.loads(json.dumps(record))
    assert info["parent"] is None and info["steps"] == 400 and info["output"] == "last"
    assert info["data"]["train"]["records"] == info["data"]["train"]["used"] == 2000
    assert info["options"]["warmup"] == 50 and info["options"]["preset"] == "tiny"
    assert info["tokens_seen"] > 0 and info["wall_time_s"] > 0 and info["rest_version"]


@pytest.mark.slow  # trains the copy model (400 steps) first
def test_init_continues_the_parent_at_the_given_rate(copy_model, tmp_path):
    parent, _ = copy_model
    train = write_jsonl(tmp_path / "train.jsonl", copy_pairs(50, seed=5))
    record = finetune(str(train), tmp_path / "child", FinetuneOptions(steps=1, lr=1e-4, warmup=0),
                      init_dir=parent)
    assert record["parent"] == str(parent) and record["options"]["label_smoothing"] == 0.0
    assert (tmp_path / "child" / "spm.model").read_bytes() == (parent / "spm.model").read_bytes()
    # Adam's first step moves each parameter with a gradient by the learning rate, no more.
    before, after = weights(parent), weights(tmp_path / "child")
    largest = max((after[k] - before[k]).abs().max().item() for k in before)
    assert largest == pytest.approx(1e-4, rel=0.01)


@pytest.mark.slow  # trains the copy model (400 steps) first
def test_init_refuses_a_new_shape(copy_model, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", copy_pairs(5))
    with pytest.raises(UsageError, match="--preset: not with --init"):
        finetune(str(train), tmp_path / "child", FinetuneOptions(preset="tiny", steps=1),
                 init_dir=copy_model[0])


def test_same_seed_same_weights_and_another_seed_others(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", copy_pairs(200))
    runs = [finetune(str(train), tmp_path / f"m{i}", tiny(steps=15, dropout=0.1, seed=seed))
            for i, seed in enumerate((3, 3, 4))]
    assert runs[0]["train_loss"] == runs[1]["train_loss"]
    assert_same_weights(weights(tmp_path / "m0"), weights(tmp_path / "m1"))
    assert not torch.equal(weights(tmp_path / "m0")["lm_head.weight"],
                           weights(tmp_path / "m2")["lm_head.weight"])


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", copy_pairs(300))
    valid = write_jsonl(tmp_path / "valid.jsonl", copy_pairs(30, seed=7))
    options = tiny(steps=24, dropout=0.1, label_smoothing=0.1, valid_every=5, log_every=4, checkpoint_every=5)
    whole = finetune(str(train), tmp_path / "whole", options, valid_path=str(valid))

    def terminate_at_13(progress):
        if progress.step == 13:  # SIGTERM arrives mid-run; the trainer stops at the next step boundary
            os.kill(os.getpid(), signal.SIGTERM)
    output = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        finetune(str(train), output, options, valid_path=str(valid), on_progress=terminate_at_13)
    assert not output.exists() and (partial_dir(output) / "checkpoint.pt").exists()
    messages = []
    resumed = finetune(str(train), output, options, valid_path=str(valid), on_message=messages.append)
    assert "resuming from" in messages[0] and "at step 13/24" in messages[0]
    assert_same_weights(weights(tmp_path / "whole"), weights(output), atol=1e-6)
    for key in ("train_loss", "valid_loss", "best_step", "tokens_seen", "steps"):
        assert resumed[key] == whole[key], key
    assert resumed["resumed"] == 1 and not partial_dir(output).exists()


def _stopped_at_the_first_step(tmp_path) -> Path:
    """Training data, and a run on it into tmp_path/m stopped after one step."""
    train = write_jsonl(tmp_path / "train.jsonl", copy_pairs(100))

    def stop(progress):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        finetune(str(train), tmp_path / "m", tiny(steps=10), on_progress=stop)
    return train


def test_resuming_with_other_options_is_refused(tmp_path):
    train = _stopped_at_the_first_step(tmp_path)
    with pytest.raises(UsageError, match=r"m\.partial holds an interrupted run .* delete it"):
        finetune(str(train), tmp_path / "m", tiny(steps=10, lr=1e-3))
    assert not (tmp_path / "m").exists()


def test_a_second_run_on_the_same_output_is_refused_while_the_first_trains(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", copy_pairs(100))
    refusals = []

    def start_another_at_step_2(progress):
        if progress.step == 2:
            with pytest.raises(UsageError) as refused:
                finetune(str(train), tmp_path / "m", tiny(steps=10))
            refusals.append(str(refused.value))
    record = finetune(str(train), tmp_path / "m", tiny(steps=10), on_progress=start_another_at_step_2)
    assert len(refusals) == 1
    assert re.fullmatch(r".*m\.partial is being written by another run of this command; .*", refusals[0])
    assert record["steps"] == 10 and (tmp_path / "m" / "config.json").exists()
    assert not partial_dir(tmp_path / "m").exists()


def test_a_damaged_checkpoint_is_one_clear_error(tmp_path):
    train = _stopped_at_the_first_step(tmp_path)
    checkpoint = partial_dir(tmp_path / "m") / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # cut short, as by a crash mid-copy
    with pytest.raises(RestError,
                       match=r"checkpoint\.pt: cannot load .* delete .*m\.partial to start afresh"):
        finetune(str(train), tmp_path / "m", tiny(steps=10))


def test_best_validation_checkpoint_is_the_output_and_patience_stops(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", copy_pairs(200))
    # Validating on a different task: the loss rises as the copy is learnt, so the first
    # checkpoint stays best.
    valid = write_jsonl(tmp_path / "valid.jsonl", [{"src": "ab cd", "ref": "wx wx wx wx wx wx"}] * 4)
    record = finetune(str(train), tmp_path / "m", tiny(steps=200, valid_every=5, patience=2),
                      valid_path=str(valid), save_last=tmp_path / "last")
    assert record["stopped_early"] and record["steps"] == 15 and record["best_step"] == 5
    assert record["output"] == "best" and training_info(tmp_path / "last")["output"] == "last"
    assert not torch.equal(weights(tmp_path / "m")["lm_head.weight"],
                           weights(tmp_path / "last")["lm_head.weight"])


def test_a_weight_zero_record_changes_nothing(tmp_path):
    pairs = copy_pairs(100)
    plain = write_jsonl(tmp_path / "plain.jsonl", pairs)
    ignored = {"src": "zz yy", "hyp": "yy", "weight": 0}
    extra = write_jsonl(tmp_path / "extra.jsonl", pairs[:50] + [ignored] + pairs[50:])
    finetune(str(plain), tmp_path / "a", tiny(steps=8))
    b = finetune(str(extra), tmp_path / "b", tiny(steps=8))
    assert b["data"]["train"]["zero_weight"] == 1
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from rest_cli.models.native.tokenizer import train_tokenizer
    return Tokenizer(train_tokenizer([p["src"] for p in copy_pairs(300)],
                                     tmp_path_factory.mktemp("spm") / "spm", 48))


def test_the_loss_is_weighted_per_token_as_documented(tokenizer):
    from rest_cli.models.native.config import config_from_preset
    from rest_cli.models.native.transformer import Seq2SeqTransformer
    torch.manual_seed(0)
    model = Seq2SeqTransformer(config_from_preset("tiny", tokenizer.vocab_size, dropout=0.0)).eval()
    a, b = Pair("ab cd ef", "ab cd ef"), Pair("gh", "gh")

    def loss(pairs):
        data = tokenize_pairs(pairs, NATIVE, tokenizer, 256, DataStats("x"))
        with torch.no_grad():
            batch = collate(data, np.arange(len(pairs)), NATIVE, tokenizer)
            total, nll_sum, count = get_objective("nll").loss(NATIVE.logits(model, batch), batch)
        return total / count, nll_sum, count
    weighted, nll_sum, count = loss([Pair(a.src, a.tgt, 2.0), b])
    assert count.item() == 2 * 4 + 2  # two weights x (3 tokens + EOS), plus 1 token + EOS
    # weight 2 = the record twice
    assert weighted.item() == pytest.approx(loss([a, a, b])[0].item(), abs=1e-5)
    assert weighted.item() == pytest.approx(nll_sum.item() / count.item(), abs=1e-6)
    assert loss([a, Pair(b.src, b.tgt, 0.0)])[0].item() == pytest.approx(loss([a])[0].item(), abs=1e-5)


def step_gradients(model, kind, tokenizer, data, groups, tmp_path, **settings) -> list[torch.Tensor]:
    """The gradients the optimizer steps with, over `groups` of rows of `data` (clipping off)."""
    trainer = Trainer(model, kind, tokenizer, data, None, tiny(steps=1, clip_norm=0.0, warmup=0, **settings),
                      tmp_path, "-", torch.device("cpu"), False, None, print)
    trainer._step(groups)
    return [p.grad.clone() for p in trainer.trainable]


def assert_accumulation_is_one_big_batch(new_model, kind, tokenizer, data, tmp_path):
    """Two batches of different sizes and weights accumulated give the gradient of one batch of both, so
    the same optimizer step (Adam's first step is no test of it: it moves every weight by about lr)."""
    first, second = np.arange(0, 2), np.arange(2, len(data))
    split = step_gradients(new_model(), kind, tokenizer, data, [first, second], tmp_path, accumulate=2)
    whole = step_gradients(new_model(), kind, tokenizer, data, [np.arange(len(data))], tmp_path)
    alone = step_gradients(new_model(), kind, tokenizer, data, [first], tmp_path)
    largest = max(g.abs().max().item() for g in whole)
    worst = max((a - b).abs().max().item() for a, b in zip(split, whole))
    assert worst < 1e-5 * largest, (worst, largest)
    assert max((a - b).abs().max().item() for a, b in zip(alone, whole)) > 0.01 * largest  # it can fail


def test_an_accumulated_step_is_the_step_of_one_batch_holding_them_all(tokenizer, tmp_path):
    from rest_cli.models.native.config import config_from_preset
    from rest_cli.models.native.transformer import Seq2SeqTransformer

    def new_model():
        torch.manual_seed(0)
        return Seq2SeqTransformer(config_from_preset("tiny", tokenizer.vocab_size, dropout=0.0))
    pairs = [Pair(r["src"], r["ref"], w) for r, w in zip(copy_pairs(7, seed=3), (1, 2, 1, 1, 0.5, 1, 3))]
    data = tokenize_pairs(pairs, NATIVE, tokenizer, 256, DataStats("x"))
    assert_accumulation_is_one_big_batch(new_model, NATIVE, tokenizer, data, tmp_path)


def test_accumulate_makes_fewer_steps_per_epoch(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", copy_pairs(100))
    one, two = (finetune(str(train), tmp_path / f"m{n}", tiny(epochs=1, batch_tokens=64, accumulate=n))
                for n in (1, 2))
    assert two["steps"] == -(-one["steps"] // 2) and two["tokens_seen"] == one["tokens_seen"]
    assert two["epochs"] == one["epochs"] == 1.0


def test_truncated_targets_keep_max_length_tokens_and_learn_no_eos(tokenizer):
    stats = DataStats("x")
    data = tokenize_pairs([Pair("ab cd ef gh", "ab cd ef gh"), Pair("ab", "ab"), Pair("", "ab")],
                          NATIVE, tokenizer, 2, stats)
    assert (stats.truncated, stats.empty_src, len(data)) == (1, 1, 2)
    batch = collate(data, np.arange(2), NATIVE, tokenizer)
    assert batch.inputs["src_ids"].shape == (2, 2)
    assert (not batch.mask[0, 2] and batch.labels.tolist()[0][2] == PAD_ID
            and EOS_ID in batch.labels.tolist()[1])


def test_load_pairs_prefers_hyp_and_locates_bad_records(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [{"src": "a", "ref": "r", "hyp": "h", "weight": 0.5},
                                                {"src": "b", "ref": "r"}, {"src": "", "hyp": ""}])
    pairs, stats = load_pairs(str(good))
    assert pairs == [Pair("a", "h", 0.5), Pair("b", "r", 1.0), Pair("", "", 1.0)] and stats.records == 3
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"src": "a", "ref": "r"}, {"src": "b"},
                                              {"src": "c", "hyp": "h", "weight": -1}])
    with pytest.raises(InputError, match=r"bad\.jsonl:2: the record has neither 'hyp' nor 'ref'"):
        load_pairs(str(bad))
    pairs, stats = load_pairs(str(bad), skip_invalid=True)
    assert len(pairs) == 1 and stats.skipped == 2 and stats.first_problem.startswith(f"{bad}:2: ")


def test_batches_fit_the_budget_cover_every_record_once_and_follow_the_seed():
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(1, 40, 500), rng.integers(0, 40, 500)
    batches = make_batches(src, tgt, 300, seed=1, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * (src[batch].max() + tgt[batch].max() + 1) <= 300
    again = make_batches(src, tgt, 300, seed=1, epoch=0)
    assert all(np.array_equal(x, y) for x, y in zip(batches, again))
    other = make_batches(src, tgt, 300, seed=1, epoch=1)
    assert not all(np.array_equal(x, y) for x, y in zip(batches, other))
    assert make_batches(np.array([200]), np.array([150]), 300) == [np.array([0])]  # too long: alone


def test_learning_rate_warms_up_linearly_then_decays_as_inverse_sqrt():
    assert [lr_factor(s, 4) for s in (1, 2, 4, 16)] == [0.25, 0.5, 1.0, 0.5]
    assert lr_factor(1, 0) == lr_factor(10_000, 0) == 1.0


@pytest.mark.parametrize("options, message", [
    (FinetuneOptions(), "give --steps or --epochs"),
    (FinetuneOptions(steps=1, preset="huge"), "unknown preset 'huge'"),
    (FinetuneOptions(steps=1, dropout=1.5), "--dropout must be in"),
    (FinetuneOptions(steps=1, batch_tokens=0), "--batch-tokens must be at least 1"),
    (FinetuneOptions(steps=1, patience=0), "--patience must be at least 1"),
    (FinetuneOptions(steps=1, max_length=1024), "--max-length must be below the model's max_positions"),
    (FinetuneOptions(steps=1, preset="tiny", d_model=63),
     "--d-model must be even and divisible by the heads"),
])
def test_bad_options_are_usage_errors_before_any_work(tmp_path, options, message):
    train = write_jsonl(tmp_path / "train.jsonl", copy_pairs(5))
    with pytest.raises(UsageError, match=message):
        finetune(str(train), tmp_path / "m", options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


def test_epochs_count_whole_passes_and_steps_win_over_them(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", copy_pairs(100))
    by_epochs = finetune(str(train), tmp_path / "a", tiny(epochs=2))
    assert by_epochs["epochs"] == 2.0 and by_epochs["steps"] > 2
    messages = []
    both = finetune(str(train), tmp_path / "b", tiny(epochs=2, steps=3), on_message=messages.append)
    assert both["steps"] == 3 and "steps wins" in messages[0]
    shutil.rmtree(tmp_path / "a")


def test_data_with_nothing_to_train_on_fails_before_anything_is_written(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl",
                        [{"src": "", "ref": "a"}, {"src": "b", "ref": "b", "weight": 0}])
    with pytest.raises(InputError, match="no record to train on"):
        finetune(str(train), tmp_path / "m", tiny(steps=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


@pytest.mark.parametrize("weight", [1e39, 1e-50])
def test_weights_beyond_float32_are_refused_at_their_line(tmp_path, weight):
    records = [*copy_pairs(5), {"src": "ab", "ref": "ab", "weight": weight}]
    data = write_jsonl(tmp_path / "train.jsonl", records)
    expected = r"train\.jsonl:6: field 'weight' must be 0 or between 1e-30 and 1e\+30"
    with pytest.raises(InputError, match=expected):
        finetune(str(data), tmp_path / "model", tiny(steps=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


def test_a_loss_that_overflows_stops_training_and_writes_nothing(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", copy_pairs(200))
    expected = r"training stopped at step \d+: the (loss|gradient norm) is (nan|inf)"
    with pytest.raises(RestError, match=expected):  # checkpoints every step: none may hold a NaN
        finetune(str(data), tmp_path / "model", tiny(steps=20, lr=1e30, clip_norm=0.0, warmup=0,
                                                     checkpoint_every=1))
    assert not (tmp_path / "model").exists()
    checkpoint = torch.load(partial_dir(tmp_path / "model") / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())  # no NaN was saved


@pytest.mark.parametrize("load, threads, warned", [(8.0, None, True), (0.0, None, False), (8.0, 1, False)])
def test_busy_cores_are_reported_with_the_way_out(tmp_path, monkeypatch, load, threads, warned):
    import rest_cli.train.run as run

    monkeypatch.setattr(run.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(run.torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(run.torch, "set_num_threads", lambda n: None)  # keep this process's threads
    messages = []
    data = write_jsonl(tmp_path / "train.jsonl", copy_pairs(20))
    finetune(str(data), tmp_path / "model", tiny(steps=1, threads=threads), on_message=messages.append)
    busy = [m for m in messages if m.startswith("the machine is busy")]
    assert bool(busy) == warned and all("--threads 1" in m for m in busy)
