"""`rest finetune` under torchrun (2 CPU processes, gloo) trains as one process does on the same batches."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.torch import load_file

from rest_cli.train.data import load_pairs
from rest_cli.train.distributed import World
from tests.helpers import REPO, rest, write_jsonl

WORDS = [("eins", "one"), ("zwei", "two"), ("drei", "three"), ("hund", "dog"), ("katze", "cat"),
         ("haus", "house")]


def _pairs(count, seed):
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(count):
        picks = rng.integers(0, len(WORDS), rng.integers(1, 7))
        records.append({"src": " ".join(WORDS[i][0] for i in picks),
                        "ref": " ".join(WORDS[i][1] for i in picks)})
    return records


def test_each_rank_keeps_its_own_slice_of_the_pairs_and_counts_them_all(tmp_path):
    records = _pairs(11, 0)
    records[4]["weight"] = 0  # dropped before slicing: slices deal out the pairs that are trained on
    path = write_jsonl(tmp_path / "train.jsonl", records)
    whole, whole_stats = load_pairs(str(path))
    slices = [load_pairs(str(path), share=(rank, 3)) for rank in range(3)]
    assert [len(pairs) for pairs, _ in slices] == [4, 3, 3]
    assert [pair for i in range(4) for pairs, _ in slices if i < len(pairs) for pair in [pairs[i]]] == whole
    assert all(stats == whole_stats for _, stats in slices)  # every rank checks, counts and hashes everything
    assert World().share == (0, 1) and World(2, 3).share == (2, 3)


@pytest.mark.torchrun
@pytest.mark.parametrize("batch_tokens", ["400", "24"])  # 24: many one-row batches, so one rank has no row
def test_two_process_ddp_matches_one_process(tmp_path, batch_tokens):
    train = write_jsonl(tmp_path / "train.jsonl", _pairs(200, 0))
    valid = write_jsonl(tmp_path / "valid.jsonl", _pairs(40, 1))
    args = ["finetune", str(train), "--preset", "tiny", "--vocab-size", "40", "--steps", "8", "--lr", "1e-3",
            "--batch-tokens", batch_tokens, "--dropout", "0", "--log-every", "1", "--valid", str(valid),
            "--valid-every", "4"]
    single = rest(*args, "--threads", "1", "--output", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", "-m", "rest_cli", *args,
                          "--output", str(tmp_path / "ddp")],
                         capture_output=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr.decode()[-3000:]

    one, two = (json.loads((tmp_path / name / "training.json").read_text()) for name in ("single", "ddp"))
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert one["tokens_seen"] == two["tokens_seen"]  # the same global batches
    assert np.allclose([v for _, v in one["train_loss"]], [v for _, v in two["train_loss"]],
                       rtol=1e-5, atol=0)
    assert np.allclose([v for _, v in one["valid_loss"]], [v for _, v in two["valid_loss"]],
                       rtol=1e-5, atol=0)
    weights_one, weights_two = (load_file(tmp_path / name / "model.safetensors")
                                for name in ("single", "ddp"))
    # Adam moves a weight by about lr a step however small its gradient, so where a gradient is
    # near zero, the two runs' summation orders can show; the losses above show the models agree.
    # All but a few weights agree closely all the same (0.13% differ by over 1e-5 with one-row batches).
    differing = sum(int(((weights_one[k] - weights_two[k]).abs() > 1e-5).sum()) for k in weights_one)
    assert differing / sum(w.numel() for w in weights_one.values()) < 0.01
    # Rank 0 alone wrote, and reported: one closing line, no work directory left behind.
    assert ddp.stderr.decode().count("rest finetune: wrote") == 1
    assert sorted(os.listdir(tmp_path)) == ["ddp", "single", "train.jsonl", "valid.jsonl"]


@pytest.mark.torchrun
def test_more_processes_than_records_is_refused_by_every_rank(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"src": "eins", "ref": "one"}])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", "-m", "rest_cli", "finetune", str(train),
                          "--preset", "tiny", "--vocab-size", "20", "--steps", "2",
                          "--output", str(tmp_path / "model")], capture_output=True, env=env, timeout=300)
    assert ddp.returncode != 0
    assert ddp.stderr.decode().count("1 usable record(s) for 2 processes; run fewer processes") == 2
    assert not (tmp_path / "model").exists()


@pytest.mark.torchrun
def test_an_interrupted_ddp_run_with_dropout_resumes_to_the_same_weights(tmp_path):
    """Each rank's random state is checkpointed: resumed ranks go on drawing their own dropout masks."""
    import signal

    from tests.helpers import interruptible

    train = write_jsonl(tmp_path / "train.jsonl", _pairs(200, 0))
    args = ["finetune", str(train), "--preset", "tiny", "--vocab-size", "40", "--steps", "6", "--lr", "1e-3",
            "--batch-tokens", "400", "--dropout", "0.3", "--log-every", "1", "--checkpoint-every", "100"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "rest_cli", *args]
    whole = subprocess.run([*command, "--output", str(tmp_path / "whole")], capture_output=True, env=env,
                           timeout=300)
    assert whole.returncode == 0, whole.stderr.decode()[-3000:]
    run = subprocess.Popen([*command, "--output", str(tmp_path / "resumed")], env=env, stderr=subprocess.PIPE,
                           text=True, preexec_fn=interruptible)
    for line in run.stderr:
        if "step 2/6" in line:
            run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=300) != 0 and (tmp_path / "resumed.partial").exists()
    resumed = subprocess.run([*command, "--output", str(tmp_path / "resumed")], capture_output=True, env=env,
                             timeout=300)
    assert resumed.returncode == 0 and b"resuming from" in resumed.stderr, resumed.stderr.decode()[-3000:]
    one, two = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "resumed"))
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-6
