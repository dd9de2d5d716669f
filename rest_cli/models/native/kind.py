"""The native policy kind: rest's own pre-norm Transformer over one shared SentencePiece vocabulary.

The only kind that trains from scratch. torch and ctranslate2 are imported by the methods that
need them, so that reading a model directory's kind costs nothing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from rest_cli.errors import RestError, UsageError
from rest_cli.models.base import Batch, ModelLoadError, PolicyKind, padded
from rest_cli.models.native.config import PRESETS, ModelConfig, config_from_preset

WEIGHTS, TOKENIZER = "model.safetensors", "spm.model"


class NativeKind(PolicyKind):
    name = "native"
    engine = "translator"
    weight_files = (WEIGHTS,)
    tokenizer_files = (TOKENIZER,)

    def tokenizer(self, directory: str | os.PathLike):
        from rest_cli.models.native.tokenizer import Tokenizer

        return Tokenizer(Path(directory) / TOKENIZER)

    def train_tokenizer(self, texts: list[str], folder: Path, vocab_size: int, seed: int) -> Path:
        from rest_cli.models.native.tokenizer import train_tokenizer

        try:
            # A folder gets spm.model, written whole: a resumed run finds a complete tokenizer or none.
            train_tokenizer(texts, folder, vocab_size, seed=seed)
        except RuntimeError as err:
            raise RestError(f"cannot train the tokenizer: {err}") from None
        return folder

    def check_new_model(self, shape: dict[str, Any]) -> None:
        preset = PRESETS.get(shape.get("preset") or "base")
        if preset is None:
            raise UsageError(f"unknown preset {shape['preset']!r}; choose from {', '.join(PRESETS)}")
        width, heads = shape.get("d_model") or preset["d_model"], shape.get("n_heads") or preset["n_heads"]
        if width % heads or width % 2:  # heads split the width; sinusoidal positions pair sin and cos
            raise UsageError(f"--d-model must be even and divisible by the heads ({heads}), got {width}")

    def new_model(self, vocab_size: int, shape: dict[str, Any]):
        from rest_cli.models.native.transformer import Seq2SeqTransformer

        overrides = {key: value for key, value in shape.items() if key != "preset" and value is not None}
        return Seq2SeqTransformer(config_from_preset(shape.get("preset") or "base", vocab_size, **overrides))

    def load_model(self, directory: Path, device: str = "cpu", dropout: float | None = None):
        from safetensors import SafetensorError
        from safetensors.torch import load_model as load_weights

        from rest_cli.models.native.transformer import Seq2SeqTransformer

        config = self.config(directory)
        if dropout is not None:  # rates are fixed when the layers are built: build with the new one
            config = replace(config, dropout=dropout)
        try:
            vocab = self.tokenizer(directory).vocab_size
        except (OSError, RuntimeError, ValueError) as err:
            raise ModelLoadError(f"{Path(directory) / TOKENIZER}: {err}") from None
        if vocab != config.vocab_size:
            raise ModelLoadError(f"{directory}: tokenizer has {vocab} pieces but the model expects "
                                 f"{config.vocab_size}")
        model = Seq2SeqTransformer(config)
        try:
            # load_model, not load_file: tied embeddings are stored once and re-tied here.
            load_weights(model, str(Path(directory) / WEIGHTS), device=device)
        except (OSError, RuntimeError, ValueError, SafetensorError) as err:
            raise ModelLoadError(f"{Path(directory) / WEIGHTS}: {err}") from None
        return model.to(device).eval()

    def config(self, directory: Path) -> ModelConfig:
        from rest_cli.models.modeldir import CONFIG, model_config

        try:
            return ModelConfig.from_dict(model_config(directory))
        except TypeError as err:  # a key missing, or one of the wrong kind
            where = Path(directory) / CONFIG
            raise ModelLoadError(f"{where}: its 'model' is not a native config: {err}") from None

    def save_model(self, model, tokenizer_folder: Path, directory: Path) -> dict[str, Any]:
        from safetensors.torch import save_model as save_weights

        save_weights(model, str(directory / WEIGHTS))
        shutil.copyfile(Path(tokenizer_folder) / TOKENIZER, directory / TOKENIZER)
        return model.config.to_dict()

    def holds(self, model) -> bool:
        from rest_cli.models.native.transformer import Seq2SeqTransformer

        return isinstance(model, Seq2SeqTransformer)

    def max_positions(self, config: dict[str, Any]) -> int:
        return ModelConfig.from_dict({"vocab_size": 0, **config}).max_positions

    def collate(self, tokenizer, sources, targets, truncated, weights, device) -> Batch:
        import torch

        from rest_cli.models.native.tokenizer import PAD_ID
        from rest_cli.models.native.transformer import teacher_forcing

        (src, _), (tgt, _) = padded(sources, PAD_ID), padded(targets, PAD_ID)
        tgt_in, labels = teacher_forcing(tgt)
        cut = torch.from_numpy(truncated)
        if cut.any():  # a truncated target does not end there: do not teach EOS
            rows = cut.nonzero().squeeze(1)
            labels[rows, tgt[rows].ne(PAD_ID).sum(dim=1)] = PAD_ID
        mask = labels.ne(PAD_ID)
        tokens = int(src.ne(PAD_ID).sum() + mask.sum())
        return Batch({"src_ids": src.to(device), "tgt_in_ids": tgt_in.to(device)}, labels.to(device),
                     mask.to(device), torch.from_numpy(weights).to(device), tokens)

    def logits(self, model, batch: Batch):
        return model(**batch.inputs)

    def output_layer(self, model):
        return getattr(model, "module", model).lm_head

    def export(self, model, folder: Path, out: Path) -> None:
        from rest_cli.models.native.convert import native_converter

        native_converter(model, self.tokenizer(folder).vocab_tokens()).convert(str(out), force=True)
