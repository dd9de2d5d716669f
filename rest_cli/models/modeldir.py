"""A model directory that describes itself: everything `--model DIR` needs, checked on load.

    DIR/
      config.json          format name and version, the policy kind, its config, the rest version,
                           and the size and hash of every other file (parts saved together)
      (weights)            the kind's files: for `native`, model.safetensors (loading never unpickles);
                           for the Hugging Face kinds, hf/ as save_pretrained writes it
      (tokenizer)          the kind's files: for `native`, spm.model; for the Hugging Face kinds, the
                           tokenizer files in hf/ and prompt.json (how a record becomes the prompt)
      ctranslate2/         the CTranslate2 export; quantized when loaded (int8 on CPU)
      training.json        how it was made: data, steps, losses, parent model, options (or the import)

Format version 2 names the kind; a version-1 directory (no kind) holds a `native` policy. A
directory is written whole or not at all (rest_cli.io.atomic).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from rest_cli import __version__
from rest_cli.errors import EXIT_BAD_INPUT, RestError, UsageError
from rest_cli.io.atomic import cannot_write, replacing_dir, usual_permissions
from rest_cli.models.base import ModelLoadError, PolicyKind, get_kind, kind_of_model

FORMAT = "rest-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CONFIG, CT2, TRAINING = "config.json", "ctranslate2", "training.json"
VERSION_1_KIND = "native"


class ModelDirError(RestError):
    """A model directory that is missing, incomplete or from an unknown format version."""

    exit_code = EXIT_BAD_INPUT


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelDirError(f"{path}: cannot read: {err}") from None


def _config(directory: Path) -> dict[str, Any]:
    config = read_json(directory / CONFIG)
    if not isinstance(config, dict) or not isinstance(config.get("model", {}), dict):
        raise ModelDirError(f"{directory / CONFIG}: not a model directory's config (a JSON object whose "
                            f"'model' is an object)")
    if config.get("format") != FORMAT or config.get("format_version") not in READABLE_VERSIONS:
        raise ModelDirError(f"{directory / CONFIG}: format {config.get('format')!r} version "
                            f"{config.get('format_version')!r}; this rest reads {FORMAT!r} versions "
                            f"{', '.join(map(str, READABLE_VERSIONS))}")
    return config


def kind_of(directory: str | os.PathLike, config: dict[str, Any] | None = None) -> PolicyKind:
    """The policy kind a model directory holds (`config`: its config.json, when already read)."""
    config = _config(Path(directory)) if config is None else config
    name = config.get("kind", VERSION_1_KIND)
    try:
        return get_kind(name)
    except UsageError as err:  # a directory from a newer rest, say: name the file
        raise ModelDirError(f"{Path(directory) / CONFIG}: {err}") from None


def check_model_dir(directory: str | os.PathLike, need_weights: bool = True) -> Path:
    """Return DIR as a Path if it holds a usable model, else raise ModelDirError saying what is wrong."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: no such model directory")
    if not (directory / CONFIG).exists():
        raise ModelDirError(f"{directory}: not a complete model directory, missing {CONFIG}")
    config = _config(directory)
    kind = kind_of(directory, config)
    needed = [*kind.tokenizer_files, CT2, *(kind.weight_files if need_weights else ())]
    missing = [name for name in needed if not (directory / name).exists()]
    if missing:
        raise ModelDirError(f"{directory}: not a complete model directory, missing {', '.join(missing)}")
    skipped = () if need_weights else kind.weight_files
    _check_parts(directory, config.get("files", {}), skipped)
    return directory


# Files up to this size are hashed whole when a directory is checked; larger ones (the weights of
# a big model) by their size and their first and last MiB, so that loading stays fast.
WHOLE_HASH_LIMIT = 1 << 30
_EDGE = 1 << 20


def _parts(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and hash of every file of a model directory but config.json and training.json."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return {name: {"size": (folder / name).stat().st_size, "sha256": _digest(folder / name)}
            for name in files if name not in (CONFIG, TRAINING)}


def _digest(path: Path) -> str:
    status = path.stat()
    return _cached_digest(str(path), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _cached_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of the file (of its size and first and last MiB, past WHOLE_HASH_LIMIT)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= WHOLE_HASH_LIMIT:
            for block in iter(lambda: handle.read(_EDGE), b""):
                digest.update(block)
        else:
            digest.update(f"{size}:".encode() + handle.read(_EDGE))
            handle.seek(size - _EDGE)
            digest.update(handle.read(_EDGE))
    return digest.hexdigest()


def _check_parts(directory: Path, recorded: dict[str, dict[str, Any]], skipped: tuple[str, ...]) -> None:
    """Refuse parts that are not the ones saved together (a tokenizer or an export from another model)."""
    for name, expected in recorded.items():
        if name in skipped:
            continue
        path = directory / name
        if not path.is_file():
            raise ModelDirError(f"{path}: missing (config.json lists it as part of the model)")
        if path.stat().st_size != expected.get("size") or _digest(path) != expected.get("sha256"):
            raise ModelDirError(f"{path}: not the file saved with this model (its size or content differs "
                                f"from what {directory / CONFIG} records); restore it, or save the model "
                                f"again")


def check_output_dir(directory: str | os.PathLike, option: str = "--output") -> Path:
    """Refuse (UsageError) to write a model directory where that would replace what is not ours.

    Only a model directory of this tool, an empty folder or a new name may be replaced: never a
    folder of other files (say, the one holding the training data), a file, a link, `.` or `/`.
    """
    path = Path(directory)
    if str(directory) in ("", ".", "..") or path.name in ("", ".", ".."):
        raise UsageError(f"{option} {str(directory)!r}: name a new folder or a model directory")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise UsageError(f"{option} {path}: exists and is not a folder; "
                         f"name a new folder or a model directory")
    if path.is_dir() and any(path.iterdir()) and not _is_model_dir(path):
        raise UsageError(f"{option} {path}: holds files that are not a rest model directory; "
                         f"name a new folder, or delete it first if it is yours to delete")
    return path


def _is_model_dir(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def model_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The kind's config stored in DIR/config.json."""
    config = _config(Path(directory))
    if "model" not in config:
        raise ModelDirError(f"{Path(directory) / CONFIG}: lacks the key 'model' (the model's shape)")
    return config["model"]


def state_files(directory: str | os.PathLike) -> list[Path]:
    """The files that hold a model's weights and tokenizer: what a training run hashes of its parent."""
    kind = kind_of(directory)
    return [Path(directory) / name for name in (*kind.weight_files, *kind.tokenizer_files)]


def training_info(directory: str | os.PathLike) -> dict[str, Any]:
    """DIR/training.json, or {} for a directory that has none."""
    path = Path(directory) / TRAINING
    return read_json(path) if path.exists() else {}


def ctranslate2_dir(directory: str | os.PathLike) -> Path:
    return check_model_dir(directory, need_weights=False) / CT2


def load_tokenizer(directory: str | os.PathLike):
    """The tokenizer of a checked model directory."""
    directory = check_model_dir(directory, need_weights=False)
    kind = kind_of(directory)
    try:
        return kind.tokenizer(directory)
    except (OSError, RuntimeError, ValueError) as err:
        files = ", ".join(str(directory / name) for name in kind.tokenizer_files)
        raise ModelDirError(f"{files}: cannot load the tokenizer: {err}") from None


def load_model(directory: str | os.PathLike, device: str = "cpu", dropout: float | None = None):
    """Rebuild the PyTorch model of DIR with its weights, on `device`, in eval mode."""
    directory = check_model_dir(directory)
    try:
        return kind_of(directory).load_model(directory, device, dropout)
    except ModelLoadError as err:
        raise ModelDirError(str(err)) from None


def save_model_dir(directory: str | os.PathLike, model, tokenizer_folder: str | os.PathLike,
                   training: dict[str, Any]) -> Path:
    """Write model, tokenizer, CTranslate2 export and training metadata to DIR, whole or not at all.

    `tokenizer_folder` holds the kind's tokenizer files (a model directory, or a run's work folder).
    """
    kind = kind_of_model(model)
    check_output_dir(directory)
    with replacing_dir(directory) as folder:
        try:
            _fill(folder, kind, model, Path(tokenizer_folder), training)
        except OSError as err:  # a full disk, say: name the directory, not the temporary one
            raise cannot_write(directory, err) from None
    return Path(directory)


def _fill(folder: Path, kind: PolicyKind, model, tokenizer_folder: Path, training: dict[str, Any]) -> None:
    config = kind.save_model(model, tokenizer_folder, folder)
    for name in kind.weight_files:  # safetensors writes them private (0600)
        usual_permissions(folder / name, 0o666)
    kind.export(model, folder, folder / CT2)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind.name,
              "rest_version": __version__}
    record = {**header, "model": config, "files": _parts(folder)}
    (folder / CONFIG).write_text(json.dumps(record, indent=2) + "\n")
    (folder / TRAINING).write_text(json.dumps(training, indent=2) + "\n")
