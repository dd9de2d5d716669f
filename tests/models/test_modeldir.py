import json

import pytest
import torch

from rest_cli.models.modeldir import (
    ModelDirError,
    check_model_dir,
    ctranslate2_dir,
    load_model,
    save_model_dir,
    training_info,
)
from rest_cli.models.native.config import config_from_preset
from rest_cli.models.native.tokenizer import Tokenizer, train_tokenizer
from rest_cli.models.native.transformer import Seq2SeqTransformer, pad_batch

TEXTS = [f"{a} {b} {c}" for a in ("eins", "zwei", "drei", "one", "two") for b in ("hund", "dog", "katze")
         for c in ("läuft", "runs", "sits", "sitzt")] * 3


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("m")
    spm = train_tokenizer(TEXTS, tmp / "spm", vocab_size=40)
    torch.manual_seed(0)
    model = Seq2SeqTransformer.from_config(config_from_preset("tiny", Tokenizer(spm).vocab_size, dropout=0.0))
    directory = save_model_dir(tmp / "model", model, spm.parent, {"steps": 0, "parent": None})
    return model.eval(), directory


def test_round_trip_keeps_weights_ties_and_metadata(saved):
    model, directory = saved
    loaded = load_model(directory)
    assert loaded.lm_head.weight.data_ptr() == loaded.src_embed.weight.data_ptr()  # still tied
    src, tgt = pad_batch([[5, 6, 7], [8]]), pad_batch([[9, 10], [11, 12, 13]])
    with torch.no_grad():
        assert torch.equal(model.token_logprobs(src, tgt), loaded.token_logprobs(src, tgt))
    assert training_info(directory) == {"steps": 0, "parent": None}
    assert (ctranslate2_dir(directory) / "model.bin").exists()
    assert sorted(p.name for p in directory.parent.iterdir()) == ["model", "spm.model"]


def test_saving_again_replaces_the_directory(saved, tmp_path):
    model, directory = saved
    save_model_dir(directory, model, directory, {"steps": 1})
    assert training_info(directory) == {"steps": 1}
    assert sorted(p.name for p in directory.parent.iterdir()) == ["model", "spm.model"]


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.safetensors").unlink(), "missing model.safetensors"),
    (lambda d: (d / "config.json").write_text('{"format": "rest-model", "format_version": 99}'),
     "version 99"),
    (lambda d: (d / "config.json").write_text("{"), "cannot read"),
])
def test_damaged_directories_give_clear_errors(saved, tmp_path, damage, message):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(saved[1], copy)
    damage(copy)
    with pytest.raises(ModelDirError, match=message):
        load_model(copy)


def test_vocabulary_mismatch_is_reported(saved, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(saved[1], copy)
    config = json.loads((copy / "config.json").read_text())
    config["model"]["vocab_size"] += 1
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="tokenizer has"):
        load_model(copy)


def test_not_a_directory(tmp_path):
    with pytest.raises(ModelDirError, match="no such model directory"):
        check_model_dir(tmp_path / "nothing")


def test_model_directory_is_not_private(saved):
    for directory in (saved[1], saved[1] / "ctranslate2"):
        assert directory.stat().st_mode & 0o777 == 0o777 & ~_umask()
    assert (saved[1] / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    import os
    mask = os.umask(0)
    os.umask(mask)
    return mask
