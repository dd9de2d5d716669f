"""`rest import`: the model directory it writes, and one line for each thing it cannot take."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rest_cli.cli.main import app
from rest_cli.models.base import get_kind, kind_of_model
from rest_cli.models.modeldir import (
    FORMAT_VERSION,
    ModelDirError,
    check_model_dir,
    kind_of,
    load_model,
    save_model_dir,
    training_info,
)
from rest_cli.sampling import DecodeOptions, EngineOptions, Sampler, SampleStats
from tests.models.hf import tiny


def import_command(*args):
    return CliRunner().invoke(app, ["import", *map(str, args)])


def assert_one_error_line(result, exit_code, *parts):
    lines = result.stderr.splitlines()
    assert result.exit_code == exit_code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("rest import: error: "), result.stderr
    assert all(part in lines[0] for part in parts), lines[0]


@pytest.mark.parametrize("name, kind", [("qwen2", "hf-causal"), ("marian", "hf-seq2seq")])
def test_the_model_directory_keeps_the_hugging_face_files_and_says_how_it_was_made(hf_model, name, kind):
    source, directory = hf_model(name)
    config = json.loads((directory / "config.json").read_text())
    assert (config["format_version"], config["kind"]) == (FORMAT_VERSION, kind)
    assert config["model"]["architecture"] == {"qwen2": "Qwen2ForCausalLM", "marian": "MarianMTModel"}[name]
    parts = {"hf/model.safetensors", "hf/config.json", "prompt.json", "ctranslate2/model.bin"}
    assert parts <= set(config["files"])
    assert list((directory / "hf").glob("*.bin")) == []  # no pickles
    assert training_info(directory)["imported_from"] == str(source.resolve())
    assert check_model_dir(directory) == directory and kind_of(directory) is get_kind(kind)
    model = load_model(directory)
    assert kind_of_model(model) is get_kind(kind) and not model.training
    saved = load_file(source / "model.safetensors")
    assert all(torch.equal(model.state_dict()[key], value) for key, value in saved.items())


def test_a_resaved_policy_keeps_its_prompt_format_and_samples_the_same(hf_model, tmp_path):
    """What a fine-tune will do: save the model with its parent's tokenizer; the export agrees again."""
    _, directory = hf_model("qwen2")
    again = save_model_dir(tmp_path / "again", load_model(directory), directory, {"steps": 0})
    assert (again / "prompt.json").read_text() == (directory / "prompt.json").read_text()
    options, engine = DecodeOptions(n=3, max_length=8), EngineOptions(compute_type="float32")
    records = [{"id": 0, "src": "eins hund"}]
    assert (list(Sampler(str(again), engine).sample(records, options, SampleStats()))
            == list(Sampler(str(directory), engine).sample(records, options, SampleStats())))


def test_a_changed_prompt_format_is_refused(hf_model, tmp_path):
    copy = shutil.copytree(hf_model("llama")[1], tmp_path / "copy")
    (copy / "prompt.json").write_text(json.dumps({"template": "{src} and more"}))
    with pytest.raises(ModelDirError, match=r"copy/prompt\.json: not the file saved with this model"):
        Sampler(str(copy))


def test_not_a_model(hf_model, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_error_line(import_command(tmp_path / "empty", "-o", tmp_path / "out"), 3,
                          "empty: not a Hugging Face model directory (no config.json")
    assert_one_error_line(import_command(tmp_path / "nothing", "-o", tmp_path / "out"), 3, "no such folder")
    assert_one_error_line(import_command(hf_model("gpt2")[1], "-o", tmp_path / "out"), 3,
                          "already a rest model directory")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text('{"hello": 1}')
    (tmp_path / "junk" / "model.safetensors").write_bytes(b"")
    assert_one_error_line(import_command(tmp_path / "junk", "-o", tmp_path / "out"), 3,
                          "junk/config.json: not a Hugging Face model config")
    assert not (tmp_path / "out").exists()


def test_weights_only_in_a_pickle_are_refused(hf_model, tmp_path):
    folder = shutil.copytree(hf_model("gpt2")[0], tmp_path / "old")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"never unpickled")
    assert_one_error_line(import_command(folder, "-o", tmp_path / "out"), 3,
                          "weights only in pytorch_model.bin, a pickle", "safe_serialization=True")


def test_an_architecture_ctranslate2_does_not_convert_is_named_with_those_it_does(tmp_path):
    from transformers import BioGptConfig, BioGptForCausalLM

    BioGptForCausalLM(BioGptConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64)).save_pretrained(tmp_path / "biogpt")
    result = import_command(tmp_path / "biogpt", "-o", tmp_path / "out")
    assert_one_error_line(result, 1, "CTranslate2 cannot convert a BioGptForCausalLM (model type 'biogpt')",
                          "it converts these model types: bart, bloom", "llama", "m2m_100", "marian", "qwen2")


def test_a_tokenizer_that_does_not_fit_is_refused_before_conversion(hf_model, tmp_path, monkeypatch):
    from ctranslate2.converters import Converter
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = shutil.copytree(hf_model("gpt2")[0], tmp_path / "small")  # a tokenizer of 300 tokens
    GPT2LMHeadModel(GPT2Config(vocab_size=200, n_embd=32, n_layer=1, n_head=2)).save_pretrained(folder)
    monkeypatch.setattr(Converter, "convert", lambda *a, **k: pytest.fail("converted"))
    assert_one_error_line(import_command(folder, "-o", tmp_path / "out"), 1,
                          "the tokenizer has ids up to 299 (300 tokens) but the model's embeddings have "
                          "200 rows")


def test_a_marian_model_without_pad_last_is_refused(tmp_path):
    folder = tiny.marian(tmp_path / "marian", pad_last=False)
    assert_one_error_line(import_command(folder, "-o", tmp_path / "out"), 1,
                          "drops the last row of the embeddings", "<pad> has id 2", "<pad> last")


@pytest.mark.parametrize("name, options, message", [
    ("llama", ["--chat-template"], "the tokenizer has no chat template (--chat-template)"),
    ("t5", ["--chat-template"], "--chat-template, --prompt-prefix-file, --system-prompt and --stop are for "
                                "decoder-only models"),
    ("llama", ["--prompt-template", "Q: A:"], "--prompt-template must contain {src}"),
    ("m2m100", ["--target-lang", "xx"], "target language 'xx': the tokenizer has no token __xx__ or xx"),
    ("gpt2", ["--target-lang", "de"], "target language 'de': this model takes no target-language token"),
])
def test_a_prompt_format_the_tokenizer_cannot_give_is_refused(hf_model, tmp_path, name, options, message):
    assert_one_error_line(import_command(hf_model(name)[0], "-o", tmp_path / "out", *options), 2, message)
    assert not (tmp_path / "out").exists()


def test_the_output_must_be_new_or_a_model_directory(hf_model, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("{}\n")
    assert_one_error_line(import_command(hf_model("gpt2")[0], "-o", tmp_path / "data"), 2,
                          "holds files that are not a rest model directory")
    assert (tmp_path / "data" / "train.jsonl").exists()
