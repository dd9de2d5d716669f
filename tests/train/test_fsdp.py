"""`rest finetune --fsdp`: the policy sharded over torchrun's processes (FSDP2, gloo on the CPU).

Two CPU processes train a tiny Llama, T5 and native Transformer sharded; each result is an
ordinary model directory that loads and samples, with the weights of one process trained on the
same batches. An interrupted sharded run resumes; its checkpoints have the unsharded format.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from typer.testing import CliRunner

from rest_cli.cli.main import app
from rest_cli.models.base import TrainingSetup, get_kind
from rest_cli.models.modeldir import load_model, training_info
from rest_cli.models.native.config import ModelConfig
from rest_cli.models.native.transformer import Seq2SeqTransformer
from rest_cli.train.sharding import (
    full_model_state,
    full_optimizer_state,
    layer_stacks,
    load_model_state,
    load_optimizer_state,
    shard,
)
from tests.helpers import REPO, interruptible, read_jsonl, rest, write_jsonl
from tests.models.hf.conftest import hf_model  # noqa: F401 - the fixture, for these tests too
from tests.models.hf.test_finetune import TRAIN
from tests.train.test_distributed import _pairs

# Where two runs take the same steps, only the order of float32 sums differs (over ranks, and
# within FSDP's reduce-scatter): measured here, the weights of a sharded and an unsharded run
# differ by 2.5e-7 at most (Llama, 6 steps at lr 1e-3) and the losses by 2e-7 relative. A wrong
# gradient (a missing shard, a wrong scale, clipping on one shard's norm) moves weights by about
# lr a step: 1e-5 is 40 times the rounding and 1% of one step.
WEIGHTS_ATOL, LOSS_RTOL = 1e-5, 1e-5
QUICK = ["--steps", "6", "--lr", "1e-3", "--max-length", "24", "--batch-tokens", "128", "--dropout", "0",
         "--log-every", "1"]


def torchrun_command(*args) -> tuple[list[str], dict[str, str]]:
    """`rest ARGS` in 2 CPU processes under torchrun, one thread each (the cores are shared)."""
    return ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
             "-m", "rest_cli", *args],
            {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})


def torchrun(*args) -> subprocess.CompletedProcess:
    command, env = torchrun_command(*args)
    return subprocess.run(command, capture_output=True, env=env, timeout=300)


def ok(result) -> str:
    stderr = result.stderr.decode() if isinstance(result.stderr, bytes) else result.stderr
    assert result.returncode == 0, stderr[-3000:]
    return stderr


def weights(directory):
    path = directory / "hf" / "model.safetensors"
    return load_file(path if path.exists() else directory / "model.safetensors")


def assert_close_weights(a, b, atol=WEIGHTS_ATOL):
    a, b = weights(a), weights(b)
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"weights differ by {worst:.3g}"


def losses(directory, key="train_loss"):
    return [loss for _, loss in training_info(directory)[key]]


# --- Refused, in one line ------------------------------------------------------------------

def test_fsdp_without_torchrun_is_one_line_and_writes_nothing(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", _pairs(20, 0))
    result = CliRunner().invoke(app, ["finetune", str(data), "--preset", "tiny", "--steps", "2", "--fsdp",
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == [
        "rest finetune: error: --fsdp shards the model over the processes torchrun starts: run it under "
        "torchrun with 2 or more (torchrun --nproc-per-node N -m rest_cli finetune ...)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


@pytest.mark.torchrun
def test_a_model_that_skips_layers_is_refused_by_every_rank(hf_model, tmp_path):  # noqa: F811
    """M2M100's LayerDrop (0.05) skips layers at random on each rank: the others would wait to gather them."""
    _, parent = hf_model("m2m100")
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    run = torchrun("finetune", str(train), "--init", str(parent), "--steps", "2", "--max-length", "24",
                   "--fsdp", "--output", str(tmp_path / "out"))
    assert run.returncode != 0
    message = ("rest finetune: error: --fsdp: this model skips layers in training (LayerDrop), which "
               "sharding cannot follow; turn it off with --dropout 0, or train without --fsdp")
    assert run.stderr.decode().count(message) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


# --- What is sharded, and the checkpoints' format ---------------------------------------------

@pytest.mark.parametrize("name, layers", [("llama", 2), ("t5", 4), ("marian", 4), ("gpt2", 2)])
def test_the_units_are_the_layers_of_each_stack(hf_model, name, layers):  # noqa: F811
    _, directory = hf_model(name)
    model = load_model(directory)
    found = layer_stacks(model)
    assert len(found) == layers and len({type(layer) for layer in found}) <= 2  # encoder's and decoder's
    adapted = get_kind("hf-causal" if name in ("llama", "gpt2") else "hf-seq2seq").for_training(
        model, TrainingSetup(lora_rank=2, lora_alpha=4.0))
    assert layer_stacks(adapted) == found  # peft's wrapper holds the same layers


def test_the_native_transformer_shards_its_encoder_and_decoder_layers():
    model = Seq2SeqTransformer(ModelConfig(vocab_size=50, d_model=16, n_heads=2, ffn_dim=32, enc_layers=2,
                                           dec_layers=3))
    assert [type(m).__name__ for m in layer_stacks(model)] == ["TransformerEncoderLayer"] * 2 + [
        "TransformerDecoderLayer"] * 3


@pytest.fixture
def process_group(tmp_path):
    """A process group of this one process (gloo): FSDP2 shards over a world of one as over many."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _trained(model, batch):
    """`model` after one AdamW step on `batch`, and its optimizer."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, fused=True)
    model(**batch).logits.float().square().mean().backward()
    optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("name, lora", [("qwen2", None), ("llama", 2)])  # Qwen2 ties its output layer
def test_sharded_checkpoints_have_the_unsharded_format(hf_model, process_group, name, lora):  # noqa: F811
    _, directory = hf_model(name)
    setup = TrainingSetup(lora_rank=lora, lora_alpha=lora and 2.0 * lora)

    def fresh():
        torch.manual_seed(0)  # the same adapters on both
        return get_kind("hf-causal").for_training(load_model(directory).train(), setup)
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])}
    plain, plain_optimizer = _trained(fresh(), batch)
    sharded, sharded_optimizer = _trained(shard(fresh(), torch.device("cpu"), bf16=False), batch)
    model_state, optimizer_state = full_model_state(sharded), full_optimizer_state(sharded, sharded_optimizer)
    assert_same_state(model_state, plain.state_dict())
    assert_same_state(optimizer_state, plain_optimizer.state_dict())
    # Loaded back into a fresh sharded model, they give the same state again.
    again = shard(fresh(), torch.device("cpu"), bf16=False)
    again_optimizer = torch.optim.AdamW([p for p in again.parameters() if p.requires_grad], lr=1e-2,
                                        fused=True)
    load_model_state(again, plain.state_dict())
    load_optimizer_state(again, again_optimizer, plain_optimizer.state_dict())
    assert_same_state(full_model_state(again), plain.state_dict())
    assert_same_state(full_optimizer_state(again, again_optimizer), plain_optimizer.state_dict())


def assert_same_state(got, expected):
    """Nested dicts and lists of the same keys, numbers and (within rounding) tensors."""
    if isinstance(expected, dict):
        assert sorted(got, key=str) == sorted(expected, key=str)
        for key in expected:
            assert_same_state(got[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected)
        for item, expected_item in zip(got, expected):
            assert_same_state(item, expected_item)
    elif torch.is_tensor(expected):
        assert not hasattr(got, "full_tensor") and got.shape == expected.shape
        torch.testing.assert_close(got.float(), expected.float(), rtol=0, atol=1e-6)
    else:
        assert got == expected


# --- Two processes ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama_runs(hf_model, tmp_path_factory):  # noqa: F811
    """A tiny Llama fine-tuned by one process, and sharded over two: (folder, args, outputs)."""
    _, parent = hf_model("llama")
    root = tmp_path_factory.mktemp("llama-fsdp")
    train, valid = write_jsonl(root / "train.jsonl", TRAIN), write_jsonl(root / "valid.jsonl", TRAIN[::4])
    args = ["finetune", str(train), "--init", str(parent), *QUICK, "--valid", str(valid),
            "--valid-every", "3"]
    single = rest(*args, "--threads", "1", "--output", str(root / "single"))
    ok(single)
    sharded = torchrun(*args, "--fsdp", "--output", str(root / "sharded"))
    return root, args, ok(sharded)


@pytest.mark.torchrun
def test_two_sharded_processes_train_as_one_process_does(llama_runs):
    root, _, stderr = llama_runs
    one, two = training_info(root / "single"), training_info(root / "sharded")
    assert (one["world_size"], two["world_size"], two["options"]["fsdp"]) == (1, 2, True)
    assert one["tokens_seen"] == two["tokens_seen"] and two["best_step"] == one["best_step"]
    for key in ("train_loss", "valid_loss"):
        assert np.allclose(losses(root / "single", key), losses(root / "sharded", key),
                           rtol=LOSS_RTOL, atol=0)
    assert_close_weights(root / "single", root / "sharded")
    # An ordinary model directory, written once by rank 0, that loads and samples.
    assert stderr.count("rest finetune: wrote") == 1 and not (root / "sharded.partial").exists()
    assert sorted(p.name for p in (root / "sharded").iterdir()) == [
        "config.json", "ctranslate2", "hf", "prompt.json", "training.json"]
    assert sum(p.numel() for p in load_model(root / "sharded").parameters()) == 112448  # whole, not a shard
    sources = write_jsonl(root / "sources.jsonl", [{"src": "eins hund"}, {"src": "zwei katze"}])
    sampled = CliRunner().invoke(app, ["sample", str(sources), "-m", str(root / "sharded"), "-n", "2",
                                       "--max-length", "8"])
    assert sampled.exit_code == 0, sampled.stderr
    assert [(r["src"], r["k"]) for r in read_jsonl(sampled.stdout)] == [
        ("eins hund", 0), ("eins hund", 1), ("zwei katze", 0), ("zwei katze", 1)]


@pytest.mark.torchrun
def test_an_interrupted_sharded_run_resumes_to_the_same_weights(llama_runs):
    root, args, _ = llama_runs
    output = root / "resumed"
    args = [*args, "--fsdp", "--checkpoint-every", "100", "--output", str(output)]
    # SIGTERM to torchrun, which passes it on to both ranks: they agree on a step, save and stop.
    command, env = torchrun_command(*args)
    run = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    lines = []
    for line in run.stderr:
        lines.append(line)
        if "step 1/6" in line:
            run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=300) != 0
    stopped = [line for line in lines if "stopped at step" in line]
    assert len(stopped) == 1 and not output.exists(), "".join(lines)[-3000:]
    step = int(stopped[0].split("stopped at step ")[1].split(";")[0])
    resumed = ok(torchrun(*args))
    assert f"resuming from {output}.partial at step {step}/6" in resumed
    assert_close_weights(root / "sharded", output, atol=1e-6)  # the same ranks, the same sums
    for key in ("train_loss", "valid_loss", "best_step", "tokens_seen"):
        assert training_info(output)[key] == training_info(root / "sharded")[key], key
    assert training_info(output)["resumed"] == 1 and not (root / "resumed.partial").exists()


@pytest.mark.torchrun
def test_lora_accumulation_and_gradient_checkpointing_shard_a_seq2seq_model(hf_model, tmp_path):  # noqa: F811
    _, parent = hf_model("t5")
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    args = ["finetune", str(train), "--init", str(parent), *QUICK, "--lora-rank", "4", "--accumulate", "2",
            "--gradient-checkpointing"]
    ok(rest(*args, "--threads", "1", "--output", str(tmp_path / "single")))
    ok(torchrun(*args, "--fsdp", "--output", str(tmp_path / "sharded")))
    assert np.allclose(losses(tmp_path / "single"), losses(tmp_path / "sharded"), rtol=LOSS_RTOL, atol=0)
    assert_close_weights(tmp_path / "single", tmp_path / "sharded")
    parent_weights, trained = weights(parent), weights(tmp_path / "sharded")
    assert trained.keys() == parent_weights.keys()  # adapters merged: a plain model
    assert any(not torch.equal(trained[k], parent_weights[k]) for k in trained)


@pytest.mark.torchrun
def test_the_native_kind_shards_in_bfloat16(tmp_path):
    """--bf16 gathers the layers in bfloat16 (FSDP's mixed precision): a little more is computed in
    bfloat16 than under autocast alone, so the losses agree to bfloat16's precision, not float32's."""
    train = write_jsonl(tmp_path / "train.jsonl", _pairs(200, 0))
    args = ["finetune", str(train), "--preset", "tiny", "--vocab-size", "40", "--steps", "8", "--lr", "1e-3",
            "--batch-tokens", "400", "--dropout", "0", "--log-every", "1", "--bf16"]
    ok(rest(*args, "--threads", "1", "--output", str(tmp_path / "single")))
    ok(torchrun(*args, "--fsdp", "--output", str(tmp_path / "sharded")))
    one, two = losses(tmp_path / "single"), losses(tmp_path / "sharded")
    assert np.allclose(one, two, rtol=1e-2, atol=0) and two[-1] < two[0]
    info = json.loads((tmp_path / "sharded" / "training.json").read_text())
    assert info["bf16"] and info["world_size"] == 2
    assert {t.dtype for t in weights(tmp_path / "sharded").values()} == {torch.float32}
