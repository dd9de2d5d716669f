"""Fine-tuning Hugging Face policies: `rest finetune --init` trains them whole or through LoRA.

What a batch trains is what CTranslate2 scores (the prompt format, special tokens and target-language
token are those of sampling), the prompt is read but never learnt, the loss falls, the re-exported
model agrees with transformers again, an interrupted run resumes to the same weights, and LoRA trains
its adapters alone and merges them into a plain model directory.
"""

import os
import signal
import subprocess
import sys

import ctranslate2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rest_cli.cli.main import app
from rest_cli.models.base import TrainingSetup, get_kind
from rest_cli.models.modeldir import (
    ctranslate2_dir,
    kind_of,
    load_model,
    load_tokenizer,
    model_config,
    training_info,
)
from rest_cli.train.data import DataStats, Pair, collate, tokenize_pairs
from rest_cli.train.objectives import get_objective
from rest_cli.train.options import FinetuneOptions
from rest_cli.train.run import finetune, partial_dir
from rest_cli.train.trainer import validation_loss
from tests.helpers import REPO, rest, write_jsonl
from tests.models.hf.test_agreement import RECORDS, TOLERANCE, _decoder_only, _encoder_decoder
from tests.models.hf.tiny import DECODER_ONLY, WORDS
from tests.train.test_training import assert_accumulation_is_one_big_batch

# Word for word: German numbers and nouns to English; a continuation starts with a space, as sampled.
PAIRS = [(de, en) for de, en in zip(WORDS[:10], WORDS[10:20])]
TRAIN = [{"src": f"{a} {b}", "ref": f" {x} {y}"} for a, x in PAIRS[:5] for b, y in PAIRS[5:]]


def options(**overrides):
    """A few quick steps on the tiny models: the loss falls visibly within them. One thread: on shared
    cores torch's threads spin waiting for each other (20x slower here for these tiny matrices)."""
    quick = dict(steps=12, lr=3e-3, warmup=0, max_length=24, batch_tokens=256, dropout=0.0, log_every=4,
                 checkpoint_every=4, valid_every=4, threads=1)
    return FinetuneOptions(**{**quick, **overrides})


def hf_weights(directory):
    return load_file(directory / "hf" / "model.safetensors")


def agreement(directory) -> float:
    """The largest difference of per-token log-probs between CTranslate2 (float32) and transformers."""
    tokenizer, model = load_tokenizer(directory), load_model(directory)
    worst = 0.0
    for record, prompt in zip(RECORDS, tokenizer.prompts(RECORDS, 1024)):
        source = tokenizer.hf.convert_tokens_to_ids(prompt.tokens)
        if tokenizer.encoder_decoder:
            worst = max(worst, _encoder_decoder(directory, tokenizer, model, source, prompt, record["ref"]))
        else:
            worst = max(worst, _decoder_only(directory, tokenizer, model, source, record["ref"]))
    return worst


def training_loss(directory, records) -> float:
    """The NLL per trained token of `directory`'s model on `records`, in eval mode."""
    kind, tokenizer = kind_of(directory), load_tokenizer(directory)
    pairs = [Pair(r["src"], r["ref"], 1.0, r.get("tgt_lang")) for r in records]
    data = tokenize_pairs(pairs, kind, tokenizer, 24, DataStats("x"))
    return validation_loss(load_model(directory), kind, tokenizer, data, 4096)


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3", "mistral", "m2m100", "t5", "marian"])
def test_a_finetune_lowers_the_loss_and_the_export_agrees_again(hf_model, tmp_path, name):
    _, parent = hf_model(name)
    records = [{**r, "tgt_lang": "fr"} if name == "m2m100" and i % 3 == 0 else r for i, r in enumerate(TRAIN)]
    train = write_jsonl(tmp_path / "train.jsonl", records)
    record = finetune(str(train), tmp_path / "child", options(), init_dir=parent)
    child = tmp_path / "child"
    before, after = training_loss(parent, records), training_loss(child, records)
    print(f"\n{name}: training loss {before:.3f} -> {after:.3f}; "
          f"agreement after fine-tuning {agreement(child):.2e}")
    assert after < before - 0.5
    assert agreement(child) < TOLERANCE
    assert record["parent"] == str(parent) and record["steps"] == 12
    assert (child / "prompt.json").read_text() == (parent / "prompt.json").read_text()
    assert model_config(child)["architecture"] == model_config(parent)["architecture"]
    assert not partial_dir(child).exists()


def _batch(directory, records):
    """A training batch of `records` as `rest finetune` builds it, and the prompts `rest sample` reads."""
    kind, tokenizer = kind_of(directory), load_tokenizer(directory)
    pairs = [Pair(r["src"], r["ref"], 1.0, r.get("tgt_lang")) for r in records]
    data = tokenize_pairs(pairs, kind, tokenizer, 64, DataStats("x"))
    return kind, tokenizer, collate(data, np.arange(len(records)), kind, tokenizer)


@pytest.mark.parametrize("name", ["qwen2", "llama", "m2m100", "t5"])
def test_what_finetune_trains_is_what_ctranslate2_scores(hf_model, name):
    """Per record, the trained tokens' log-probs add up to the exported model's score of prompt and target."""
    _, directory = hf_model(name)
    records = [RECORDS[0], {**RECORDS[1], "tgt_lang": "fr"} if name == "m2m100" else RECORDS[1]]
    kind, tokenizer, batch = _batch(directory, records)
    with torch.no_grad():
        logprobs = torch.log_softmax(kind.logits(load_model(directory), batch).float(), -1)
    picked = logprobs.gather(-1, batch.labels[..., None])[..., 0]
    ours = [picked[i][batch.mask[i]].sum().item() for i in range(len(records))]
    prompts = tokenizer.prompts(records, 64)
    targets = [tokenizer.hf.convert_ids_to_tokens(t) for t in tokenizer.encode([r["ref"] for r in records])]
    path = str(ctranslate2_dir(directory))
    if name in DECODER_ONLY:
        end = tokenizer.hf.convert_ids_to_tokens(tokenizer.eos_id)
        results = ctranslate2.Generator(path, compute_type="float32").score_batch(
            [p.tokens + t + [end] for p, t in zip(prompts, targets)])
        theirs = [sum(r.log_probs[len(p.tokens) - 1:]) for r, p in zip(results, prompts)]
    else:
        results = ctranslate2.Translator(path, compute_type="float32").score_batch(
            [p.tokens for p in prompts], [p.prefix + t for p, t in zip(prompts, targets)])
        theirs = [sum(r.log_probs[len(p.prefix):]) for r, p in zip(results, prompts)]
        if name == "m2m100":
            assert [p.prefix for p in prompts] == [["__de__"], ["__fr__"]]
    assert ours == pytest.approx(theirs, abs=1e-4)


@pytest.mark.parametrize("name", ["qwen2", "llama"])
def test_the_prompt_gets_no_gradient(hf_model, name):
    _, directory = hf_model(name)
    kind, _, batch = _batch(directory, RECORDS)
    model, objective = load_model(directory).train(), get_objective("nll")
    prompt = torch.zeros_like(batch.mask)
    for i, length in enumerate(batch.mask.int().argmax(1).tolist()):
        prompt[i, :length] = True  # the positions before the first trained one read the prompt
    assert prompt.sum() > 10  # the chat template and the template write prompts of several tokens
    out = kind.logits(model, batch)
    out.retain_grad()
    loss, _, count = objective.loss(out, batch)
    (loss / count).backward()
    per_position = out.grad.abs().sum(-1)
    assert per_position[prompt].max().item() == 0 and (per_position[batch.mask] > 0).all()
    # The loss does not read the labels of the prompt's positions at all.
    with torch.no_grad():
        changed = batch.labels.clone()
        changed[prompt] = (changed[prompt] + 7) % 50
        again = objective.loss(out, type(batch)(batch.inputs, changed, batch.mask, batch.weights, 0))[0]
    assert again.item() == loss.item()


def _stopped_at(step):
    def stop(progress):
        if progress.step == step:  # SIGTERM arrives mid-run; the trainer stops at the next step boundary
            os.kill(os.getpid(), signal.SIGTERM)
    return stop


@pytest.mark.parametrize("name, lora", [("llama", None), ("m2m100", 4)])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(hf_model, tmp_path, name, lora):
    _, parent = hf_model(name)
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    valid = write_jsonl(tmp_path / "valid.jsonl", TRAIN[::4])
    settings = options(steps=10, dropout=0.1, lora_rank=lora)
    whole = finetune(str(train), tmp_path / "whole", settings, valid_path=str(valid), init_dir=parent)
    output = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        finetune(str(train), output, settings, valid_path=str(valid), init_dir=parent,
                 on_progress=_stopped_at(6))
    assert not output.exists() and (partial_dir(output) / "checkpoint.pt").exists()
    messages = []
    resumed = finetune(str(train), output, settings, valid_path=str(valid), init_dir=parent,
                       on_message=messages.append)
    assert any("resuming from" in m and "at step 6/10" in m for m in messages), messages
    a, b = hf_weights(tmp_path / "whole"), hf_weights(output)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
    for key in ("train_loss", "valid_loss", "best_step", "tokens_seen", "steps"):
        assert resumed[key] == whole[key], key
    assert resumed["resumed"] == 1 and not partial_dir(output).exists()


def test_lora_trains_the_adapters_alone_and_merges_them_into_a_plain_model(hf_model, tmp_path):
    _, parent = hf_model("llama")
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    valid = write_jsonl(tmp_path / "valid.jsonl", [{"src": "eins hund", "ref": " vier drei zwei haus maus"}])
    settings = options(lora_rank=4, lora_targets="q_proj,v_proj", lr=1e-2, patience=1)
    record = finetune(str(train), tmp_path / "child", settings, init_dir=parent, valid_path=str(valid),
                      save_last=tmp_path / "last")
    assert record["options"]["lora_alpha"] == 8.0  # 2 x rank by default
    # German targets grow less likely as English ones are learnt: the best step is not the last.
    assert record["output"] == "best" and record["best_step"] < record["steps"]
    before = hf_weights(parent)
    for output in ("child", "last"):
        after = hf_weights(tmp_path / output)
        assert before.keys() == after.keys()  # a plain model: no adapter weights, no peft names
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        assert changed == {k for k in before if k.endswith(("q_proj.weight", "v_proj.weight"))}
        # Each merged change is the product of the adapters: of rank 4 at most.
        for key in changed:
            assert torch.linalg.matrix_rank(after[key] - before[key], atol=1e-6) <= 4
        assert agreement(tmp_path / output) < TOLERANCE
    assert training_loss(tmp_path / "last", TRAIN) < training_loss(parent, TRAIN)
    assert not torch.equal(hf_weights(tmp_path / "child")["model.layers.0.self_attn.q_proj.weight"],
                           hf_weights(tmp_path / "last")["model.layers.0.self_attn.q_proj.weight"])


def test_a_bfloat16_parent_trains_in_float32_and_is_saved_in_bfloat16(hf_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rest_cli.models.hf.importing import import_model
    from rest_cli.models.hf.tokenizer import PromptFormat

    source, _ = hf_model("llama")
    AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path / "bf16")
    parent = import_model(tmp_path / "bf16", tmp_path / "parent", PromptFormat())
    assert {t.dtype for t in hf_weights(parent).values()} == {torch.bfloat16}
    finetune(str(write_jsonl(tmp_path / "train.jsonl", TRAIN)), tmp_path / "child", options(steps=2),
             init_dir=parent)
    child = hf_weights(tmp_path / "child")
    assert {t.dtype for t in child.values()} == {torch.bfloat16}
    assert any(not torch.equal(child[k], hf_weights(parent)[k]) for k in child)


def optimizer_state_bytes(model, setup: TrainingSetup) -> tuple[int, int]:
    """(trainable parameters, bytes of AdamW's state after one step) of `model` prepared as `setup` says."""
    model = get_kind("hf-causal").for_training(model, setup)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable)
    for p in trainable:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if torch.is_tensor(t) and t.dim() > 0)
    return sum(p.numel() for p in trainable), state


def test_lora_keeps_optimizer_state_for_the_adapters_only(hf_model):
    _, directory = hf_model("llama")
    full = optimizer_state_bytes(load_model(directory), TrainingSetup())
    lora = optimizer_state_bytes(load_model(directory), TrainingSetup(lora_rank=8, lora_alpha=16.0))
    total = sum(p.numel() for p in load_model(directory).parameters())
    print(f"\nllama tiny ({total} parameters): AdamW state full {full[1]} bytes ({full[0]} trained), "
          f"LoRA rank 8 all-linear {lora[1]} bytes ({lora[0]} trained)")
    assert full == (total, 8 * total)  # two float32 moments per parameter
    assert lora[1] == 8 * lora[0] and lora[0] < total / 4


def test_bf16_gradient_checkpointing_accumulation_and_lora_together(hf_model, tmp_path):
    _, parent = hf_model("qwen2")
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    settings = options(steps=3, bf16=True, gradient_checkpointing=True, accumulate=2, lora_rank=4)
    record = finetune(str(train), tmp_path / "child", settings, init_dir=parent)
    assert record["bf16"] and record["steps"] == 3
    assert agreement(tmp_path / "child") < TOLERANCE


@pytest.mark.parametrize("name", ["llama", "m2m100"])
def test_an_accumulated_step_is_the_step_of_one_batch_holding_them_all(hf_model, tmp_path, name):
    _, directory = hf_model(name)
    kind, tokenizer = kind_of(directory), load_tokenizer(directory)
    pairs = [Pair(r["src"], r["ref"], w) for r, w in zip(TRAIN[::4], (1, 2, 1, 0.5, 1, 3, 1))]
    data = tokenize_pairs(pairs, kind, tokenizer, 24, DataStats("x"))
    fresh = lambda: load_model(directory, dropout=0.0)  # noqa: E731 - M2M100's dropout would differ
    assert_accumulation_is_one_big_batch(fresh, kind, tokenizer, data, tmp_path)


def test_gradient_checkpointing_recomputes_the_same_steps(hf_model, tmp_path):
    _, parent = hf_model("llama")
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    plain = finetune(str(train), tmp_path / "plain", options(steps=3, dropout=0.1), init_dir=parent)
    saved = finetune(str(train), tmp_path / "saved",
                     options(steps=3, dropout=0.1, gradient_checkpointing=True), init_dir=parent)
    losses = [[loss for _, loss in run["train_loss"]] for run in (plain, saved)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    a, b = hf_weights(tmp_path / "plain"), hf_weights(tmp_path / "saved")
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)


def test_the_command_trains_a_hugging_face_policy(hf_model, tmp_path):
    _, parent = hf_model("gpt2")
    data = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    result = CliRunner().invoke(app, ["finetune", "--init", str(parent), "--steps", "2", "--max-length", "32",
                                      "--lora-rank", "2", "-o", str(tmp_path / "out"), str(data)])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"rest finetune: wrote {tmp_path / 'out'}: 2 steps")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "train.jsonl"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "config.json", "ctranslate2", "hf", "prompt.json", "training.json"]


@pytest.mark.parametrize("name, args, message", [
    ("gpt2", ["--max-length", "128"], "--max-length must be below the model's max_positions (128)"),
    ("llama", ["--lora-alpha", "4"], "--lora-alpha: give --lora-rank too"),
    ("llama", ["--lora-rank", "2", "--lora-targets", "nothing_here"], "--lora-targets 'nothing_here': "),
    ("m2m100", ["--preset", "tiny"], "--preset: not with --init"),
])
def test_bad_settings_are_one_line_and_leave_nothing_behind(hf_model, tmp_path, name, args, message):
    _, parent = hf_model(name)
    data = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    result = CliRunner().invoke(app, ["finetune", "--init", str(parent), "--steps", "2", "--max-length", "32",
                                      *args, "-o", str(tmp_path / "out"), str(data)])
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rest finetune: error: {message}"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


def test_a_record_without_a_target_language_for_a_model_that_needs_one(hf_model, tmp_path):
    source, _ = hf_model("m2m100")
    from rest_cli.models.hf.importing import import_model
    from rest_cli.models.hf.tokenizer import PromptFormat

    parent = import_model(source, tmp_path / "no-default", PromptFormat())
    data = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    result = CliRunner().invoke(app, ["finetune", "--init", str(parent), "--steps", "2", "--max-length", "32",
                                      "-o", str(tmp_path / "out"), str(data)])
    assert result.exit_code == 2, result.stderr
    assert "give a tgt_lang field, or import with --target-lang" in result.stderr.splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-default", "train.jsonl"]


@pytest.mark.torchrun
@pytest.mark.parametrize("name, lora", [("llama", []), ("m2m100", ["--lora-rank", "4"])])
def test_two_process_ddp_trains_as_one_process_does(hf_model, tmp_path, name, lora):
    _, parent = hf_model(name)
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    args = ["finetune", str(train), "--init", str(parent), "--steps", "4", "--lr", "1e-3", "--max-length",
            "24", "--batch-tokens", "128", "--dropout", "0", "--log-every", "1", *lora]
    single = rest(*args, "--threads", "1", "--output", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr.decode()[-3000:]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                          "2", "-m", "rest_cli", *args, "--output", str(tmp_path / "ddp")],
                         capture_output=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr.decode()[-3000:]
    one, two = (training_info(tmp_path / name) for name in ("single", "ddp"))
    assert (one["world_size"], two["world_size"]) == (1, 2) and one["tokens_seen"] == two["tokens_seen"]
    losses = [[loss for _, loss in run["train_loss"]] for run in (one, two)]
    assert np.allclose(*losses, rtol=1e-5, atol=0)
    a, b = hf_weights(tmp_path / "single"), hf_weights(tmp_path / "ddp")
    # As for the native kind: Adam can magnify summation-order noise where a gradient is near zero.
    differing = sum(int(((a[k] - b[k]).abs() > 1e-5).sum()) for k in a)
    assert differing / sum(w.numel() for w in a.values()) < 0.01
    assert ddp.stderr.decode().count("rest finetune: wrote") == 1
    assert sorted(os.listdir(tmp_path)) == ["ddp", "single", "train.jsonl"]


@pytest.mark.torchrun
def test_ddp_trains_a_model_that_skips_layers(hf_model, tmp_path):
    """M2M100 keeps its dropout and LayerDrop (0.05): a rank's step may leave a layer without gradients."""
    _, parent = hf_model("m2m100")
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = ["finetune", str(train), "--init", str(parent), "--steps", "12", "--max-length", "24",
            "--batch-tokens", "64", "--output", str(tmp_path / "ddp")]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                          "2", "-m", "rest_cli", *args], capture_output=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr.decode()[-3000:]
    assert training_info(tmp_path / "ddp")["steps"] == 12
