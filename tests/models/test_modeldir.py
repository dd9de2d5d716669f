import json
import shutil

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


def _as_version_1(directory):
    """A directory as rest wrote it before parts were recorded: only the loaders can catch damage."""
    config = json.loads((directory / "config.json").read_text())
    config.pop("files", None)
    (directory / "config.json").write_text(json.dumps({**config, "format_version": 1}))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# What is damaged, the file the error must name, and who reads it: sampling, or loading the weights.
DAMAGE = {
    "model.bin truncated": (lambda d: _truncate(d / "ctranslate2" / "model.bin"), "ctranslate2", "sample"),
    "model.bin missing": (lambda d: (d / "ctranslate2" / "model.bin").unlink(), "ctranslate2", "sample"),
    "spm.model corrupt": (lambda d: (d / "spm.model").write_bytes(b"not a tokenizer"), "spm.model", "both"),
    "safetensors truncated": (lambda d: _truncate(d / "model.safetensors"), "model.safetensors", "load"),
    "config.json a list": (lambda d: (d / "config.json").write_text("[]"), "config.json", "both"),
    "config.json without model": (lambda d: (d / "config.json").write_text(
        '{"format": "rest-model", "format_version": 1}'), "config.json", "load"),
    "config.json model without vocab": (lambda d: (d / "config.json").write_text(
        '{"format": "rest-model", "format_version": 1, "model": {"d_model": 64}}'), "config.json", "load"),
}


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("damage", DAMAGE)
def test_every_damage_is_one_line_naming_the_file(random_model_dir, tmp_path, damage, version):
    from rest_cli.sampling import Sampler

    copy = shutil.copytree(random_model_dir, tmp_path / "copy")
    if version == 1:
        _as_version_1(copy)
    harm, named, readers = DAMAGE[damage]
    harm(copy)
    loaders = {"sample": lambda: Sampler(str(copy)), "load": lambda: load_model(copy)}
    for reader in (loaders if readers == "both" else [readers]):
        with pytest.raises(ModelDirError) as caught:
            loaders[reader]()
        message = str(caught.value)
        assert named in message and "\n" not in message, (reader, message)
