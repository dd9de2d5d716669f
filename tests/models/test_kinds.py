"""Policy kinds: the registry, and model directories naming their kind (format 2) or not (format 1)."""

import json
import shutil

import pytest
import torch

from rest_cli.errors import UsageError
from rest_cli.models.base import KINDS, get_kind, kind_of_model
from rest_cli.models.modeldir import (
    FORMAT_VERSION,
    ModelDirError,
    check_model_dir,
    kind_of,
    load_model,
    model_config,
)
from rest_cli.sampling import DecodeOptions, Sampler, SampleStats


def test_a_new_directory_names_its_kind(random_model_dir):
    config = json.loads((random_model_dir / "config.json").read_text())
    assert (config["format_version"], config["kind"]) == (FORMAT_VERSION, "native") == (2, "native")
    assert kind_of(random_model_dir) is get_kind("native")
    assert kind_of_model(load_model(random_model_dir)) is get_kind("native")


def test_a_version_1_directory_loads_and_samples_as_native(random_model_dir, tmp_path):
    old = shutil.copytree(random_model_dir, tmp_path / "v1")
    config = json.loads((old / "config.json").read_text())
    del config["kind"]
    config["format_version"] = 1
    (old / "config.json").write_text(json.dumps(config))
    assert kind_of(old).name == "native" and model_config(old) == model_config(random_model_dir)
    sources = [{"id": 0, "src": "eins zwei"}]
    options = DecodeOptions(n=2, beam=2)
    new = list(Sampler(str(random_model_dir)).sample(sources, options, SampleStats()))
    assert list(Sampler(str(old)).sample(sources, options, SampleStats())) == new


def test_an_unknown_kind_is_one_line_naming_the_config(random_model_dir, tmp_path):
    other = shutil.copytree(random_model_dir, tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "kind": "from-the-future"}))
    with pytest.raises(ModelDirError, match=r"other/config\.json: unknown policy kind 'from-the-future'"):
        check_model_dir(other)


def test_the_registry_refuses_unknown_names_and_foreign_models():
    assert "native" in KINDS
    with pytest.raises(UsageError, match="unknown policy kind 'nope'"):
        get_kind("nope")
    with pytest.raises(TypeError, match="no policy kind holds a dict"):
        kind_of_model({})


def test_only_the_native_kind_trains_from_scratch():
    native = get_kind("native")
    native.check_new_model({"preset": "tiny"})
    with pytest.raises(UsageError, match="unknown preset 'huge'"):
        native.check_new_model({"preset": "huge"})


@pytest.mark.parametrize("part", ["spm.model", "ctranslate2/model.bin", "model.safetensors"])
def test_a_part_from_another_model_is_refused(random_model_dir, tmp_path, part):
    """A tokenizer or an export copied in from another model would sample garbage with exit 0."""
    from rest_cli.models.modeldir import save_model_dir

    mine = shutil.copytree(random_model_dir, tmp_path / "mine")
    model = load_model(random_model_dir)
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    other = save_model_dir(tmp_path / "other", model, random_model_dir, {})
    if part == "spm.model":  # another tokenizer of the same size: one more text learned
        from rest_cli.models.native.tokenizer import train_tokenizer
        from tests.conftest import CORPUS
        train_tokenizer([*CORPUS, "ganz andere wörter"], tmp_path / "spm", vocab_size=60)
        shutil.copyfile(tmp_path / "spm.model", other / "spm.model")
    shutil.copyfile(other / part, mine / part)
    with pytest.raises(ModelDirError, match=rf"mine/{part}: not the file saved with this model"):
        if part == "model.safetensors":
            load_model(mine)
        else:
            Sampler(str(mine))
