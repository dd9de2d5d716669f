"""A model directory that describes itself: everything `--model DIR` needs, checked on load.

    DIR/
      config.json          format name and version, the ModelConfig, the rest version
      model.safetensors    PyTorch weights (safetensors: loading never unpickles)
      spm.model            the SentencePiece tokenizer (one vocabulary for source and target)
      ctranslate2/         the CTranslate2 export, float32; quantized when loaded (int8 on CPU)
      training.json        how it was made: data, steps, losses, parent model, options

A directory is written under a temporary name beside DIR and renamed when complete, so an
interrupted save never leaves a directory that looks usable.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rest_cli import __version__
from rest_cli.errors import EXIT_BAD_INPUT, OutputError, RestError

FORMAT = "rest-model"
FORMAT_VERSION = 1
CONFIG, WEIGHTS, TOKENIZER, CT2, TRAINING = "config.json", "model.safetensors", "spm.model", "ctranslate2", "training.json"


class ModelDirError(RestError):
    """A model directory that is missing, incomplete or from an unknown format version."""

    exit_code = EXIT_BAD_INPUT


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelDirError(f"{path}: cannot read: {err}") from None


def check_model_dir(directory: str | os.PathLike, need_weights: bool = True) -> Path:
    """Return DIR as a Path if it holds a usable model, else raise ModelDirError saying what is wrong."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: no such model directory")
    needed = [CONFIG, TOKENIZER, CT2] + ([WEIGHTS] if need_weights else [])
    missing = [name for name in needed if not (directory / name).exists()]
    if missing:
        raise ModelDirError(f"{directory}: not a complete model directory, missing {', '.join(missing)}")
    config = read_json(directory / CONFIG)
    if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(f"{directory / CONFIG}: format {config.get('format')!r} version "
                            f"{config.get('format_version')!r}; this rest reads {FORMAT!r} version {FORMAT_VERSION}")
    return directory


def model_config(directory: str | os.PathLike):
    """The ModelConfig stored in DIR/config.json."""
    from rest_cli.models.native.transformer import ModelConfig

    return ModelConfig.from_dict(read_json(Path(directory) / CONFIG)["model"])


def training_info(directory: str | os.PathLike) -> dict[str, Any]:
    """DIR/training.json, or {} for a directory that has none."""
    path = Path(directory) / TRAINING
    return read_json(path) if path.exists() else {}


def ctranslate2_dir(directory: str | os.PathLike) -> Path:
    return check_model_dir(directory, need_weights=False) / CT2


def tokenizer_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / TOKENIZER


def load_model(directory: str | os.PathLike, device: str = "cpu"):
    """Rebuild the PyTorch model of DIR with its weights, on `device`, in eval mode."""
    from safetensors.torch import load_model as load_weights

    from rest_cli.models.native.transformer import Seq2SeqTransformer

    directory = check_model_dir(directory)
    config = model_config(directory)
    model = Seq2SeqTransformer.from_config(config)
    vocab = _tokenizer_size(directory)
    if vocab != config.vocab_size:
        raise ModelDirError(f"{directory}: tokenizer has {vocab} pieces but the model expects {config.vocab_size}")
    try:
        # load_model, not load_file: tied embeddings are stored once and re-tied here.
        load_weights(model, str(directory / WEIGHTS), device=device)
    except (OSError, RuntimeError, ValueError) as err:
        raise ModelDirError(f"{directory / WEIGHTS}: {err}") from None
    return model.to(device).eval()


def _tokenizer_size(directory: Path) -> int:
    from rest_cli.models.native.tokenizer import Tokenizer

    try:
        return Tokenizer(directory / TOKENIZER).vocab_size
    except (OSError, RuntimeError, ValueError) as err:
        raise ModelDirError(f"{directory / TOKENIZER}: {err}") from None


def save_model_dir(directory: str | os.PathLike, model, tokenizer_file: str | os.PathLike,
                   training: dict[str, Any]) -> Path:
    """Write model, tokenizer, CTranslate2 export and training metadata to DIR, atomically."""
    from safetensors.torch import save_model as save_weights

    from rest_cli.models.native.convert import export_ctranslate2
    from rest_cli.models.native.tokenizer import Tokenizer

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    usual_permissions(tmp)
    try:
        config = {"format": FORMAT, "format_version": FORMAT_VERSION, "rest_version": __version__,
                  "model": model.config.to_dict()}
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        save_weights(model, str(tmp / WEIGHTS))
        usual_permissions(tmp / WEIGHTS, 0o666)  # safetensors writes it private (0600)
        shutil.copyfile(tokenizer_file, tmp / TOKENIZER)
        export_ctranslate2(model, model.config, Tokenizer(tmp / TOKENIZER).vocab_tokens(), tmp / CT2)
        (tmp / TRAINING).write_text(json.dumps(training, indent=2) + "\n")
        _replace_dir(tmp, directory)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):  # a full disk, say: name the directory, not the temporary one
            raise OutputError(f"cannot write {directory}: {err.strerror or err}") from None
        raise
    return directory


def usual_permissions(path: Path, mode: int = 0o777) -> None:
    """Give `path` the permissions of a new file or folder (`mode` less the umask).

    mkdtemp makes private (0700) folders; a model directory should read like any other.
    """
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(mode & ~umask)


def _replace_dir(tmp: Path, directory: Path) -> None:
    # A rename cannot replace a non-empty directory: move the old one aside first, then drop it.
    old = None
    if directory.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
        directory.rename(old / directory.name)
    tmp.rename(directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
