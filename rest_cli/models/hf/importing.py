"""`rest import`: a Hugging Face model directory on disk becomes a rest model directory.

Everything is checked before the weights are read, each problem in one line: a folder that is not
a Hugging Face model, weights only in pickle files, an architecture CTranslate2 does not convert,
a tokenizer that does not fit the model, a prompt format the tokenizer cannot give.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from rest_cli import __version__
from rest_cli.errors import EXIT_BAD_INPUT, RestError, UsageError
from rest_cli.models.base import ModelLoadError, get_kind
from rest_cli.models.hf.tokenizer import HF, HFTokenizer, PromptFormat, load_hf_tokenizer, quiet_transformers

# What save_pretrained writes besides the tokenizer: the tokenizer adapter reads them.
_MODEL_FILES = ("config.json", "generation_config.json")


class NotAModelError(RestError):
    """A folder that is not a Hugging Face model directory rest can read."""

    exit_code = EXIT_BAD_INPUT


def import_model(hf_dir: str | os.PathLike, output: str | os.PathLike, prompt: PromptFormat) -> Path:
    """Write the rest model directory `output` for the Hugging Face model saved in `hf_dir`."""
    from rest_cli.models.hf.convert import check_convertible, check_marian_start, check_vocabulary
    from rest_cli.models.hf.kind import load_hf_model
    from rest_cli.models.modeldir import check_output_dir, save_model_dir

    hf_dir = Path(hf_dir)
    check_output_dir(output)
    _check_files(hf_dir)
    config = _config(hf_dir)
    check_convertible(config, hf_dir)
    tokenizer = _tokenizer(hf_dir)
    check_vocabulary(tokenizer, config, hf_dir)
    kind = get_kind("hf-seq2seq" if config.is_encoder_decoder else "hf-causal")
    _check_prompt(prompt, tokenizer, kind.engine, hf_dir)
    with tempfile.TemporaryDirectory(prefix="rest-import-") as staging:
        staging = Path(staging)
        tokenizer.save_pretrained(staging / HF)
        for name in _MODEL_FILES:
            if (hf_dir / name).exists():
                shutil.copyfile(hf_dir / name, staging / HF / name)
        prompt.save(staging)
        HFTokenizer(staging).check()
        try:
            model = load_hf_model(hf_dir, kind.auto_class, dtype="auto")
        except ModelLoadError as err:
            raise NotAModelError(str(err)) from None
        check_marian_start(model, hf_dir)
        return save_model_dir(output, model, staging, _record(hf_dir, model))


def _check_files(hf_dir: Path) -> None:
    if not hf_dir.is_dir():
        raise NotAModelError(f"{hf_dir}: no such folder")
    if not (hf_dir / "config.json").is_file():
        raise NotAModelError(f"{hf_dir}: not a Hugging Face model directory (no config.json; "
                             f"save one with save_pretrained)")
    if _is_rest_model(hf_dir):
        raise NotAModelError(f"{hf_dir}: already a rest model directory: give it to -m as it is")
    if not any(hf_dir.glob("*.safetensors")):
        pickles = sorted(p.name for p in hf_dir.glob("*.bin")) + sorted(p.name for p in hf_dir.glob("*.pt"))
        if pickles:
            raise NotAModelError(f"{hf_dir}: weights only in {pickles[0]}, a pickle, which rest never loads; "
                                 f"re-save the model with save_pretrained(DIR, safe_serialization=True)")
        raise NotAModelError(f"{hf_dir}: no weights (model.safetensors)")


def _is_rest_model(hf_dir: Path) -> bool:
    from rest_cli.models.modeldir import FORMAT

    try:
        return json.loads((hf_dir / "config.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _config(hf_dir: Path):
    transformers = quiet_transformers()
    try:
        return transformers.AutoConfig.from_pretrained(str(hf_dir), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise NotAModelError(f"{hf_dir}/config.json: not a Hugging Face model config: "
                             f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def _tokenizer(hf_dir: Path):
    try:
        return load_hf_tokenizer(hf_dir)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise NotAModelError(f"{hf_dir}: cannot load its tokenizer: "
                             f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def _check_prompt(prompt: PromptFormat, tokenizer, engine: str, hf_dir: Path) -> None:
    if prompt.decoder_only and engine != "generator":
        raise UsageError("--chat-template, --prompt-prefix-file, --system-prompt and --stop are for "
                         "decoder-only models; this one is an encoder-decoder")
    if prompt.chat and not getattr(tokenizer, "chat_template", None):
        raise UsageError(f"{hf_dir}: the tokenizer has no chat template (--chat-template); "
                         f"give --prompt-template with {{src}} instead")


def _record(hf_dir: Path, model) -> dict:
    """training.json of an imported model."""
    import ctranslate2
    import transformers

    return {"rest_version": __version__, "imported_from": str(hf_dir.resolve()),
            "architecture": type(model).__name__, "transformers_version": transformers.__version__,
            "ctranslate2_version": ctranslate2.__version__, "steps": 0, "parent": None}
