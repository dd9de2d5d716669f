"""Hugging Face models to CTranslate2, through CTranslate2's own `TransformersConverter`.

The converter is always given a saved folder, never a live model: its decoder-only loaders
(Llama, Mistral, Qwen, Gemma, Phi-3) delete each layer's attention and MLP from the model object
they convert. It writes into a fresh directory (its `force=True` would delete the folder first).

What the converter would get wrong silently, or report as a traceback, is checked here first, in
one line each: an architecture it has no loader for (with the list it has), a tokenizer whose ids
do not fit the model's embeddings or leave gaps (CTranslate2 maps tokens to ids by their order),
and a Marian model whose <pad> is not its last token (the Marian loader drops the last row of the
embeddings, taking <pad> for it, and starts the decoder from a zero vector where transformers
starts from <pad>'s embedding, so that row must be zero).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rest_cli.errors import RestError
from rest_cli.models.hf.tokenizer import full_vocab, load_hf_tokenizer, quiet_transformers


class ConversionError(RestError):
    """A Hugging Face model CTranslate2 cannot convert, or would convert into a different model."""


def convertible() -> dict[str, str]:
    """Config class -> model type, for each text model CTranslate2 converts to a Translator or Generator."""
    from ctranslate2.converters.transformers import _MODEL_LOADERS
    from transformers.models.auto import configuration_auto, modeling_auto

    # The loaders that build a text decoder (not Bert's encoder, not Whisper's audio model).
    text_classes = {"AutoModelForCausalLM", *(
        name for mapping in (modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                             modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)
        for names in mapping.values() for name in ([names] if isinstance(names, str) else names))}
    types = {config: model_type for model_type, config in configuration_auto.CONFIG_MAPPING_NAMES.items()}
    return {config: types[config] for config, loader in _MODEL_LOADERS.items()
            if config in types and loader.architecture_name in text_classes}


def check_convertible(config, where: Path) -> None:
    """Refuse an architecture CTranslate2's converter has no loader for, naming those it has."""
    supported = convertible()
    if type(config).__name__ not in supported:
        architecture = ", ".join(getattr(config, "architectures", None) or [type(config).__name__])
        raise ConversionError(f"{where}: CTranslate2 cannot convert a {architecture} (model type "
                              f"{config.model_type!r}); it converts these model types: "
                              f"{', '.join(sorted(set(supported.values())))}")


def embedding_rows(config) -> int:
    return int(config.get_text_config().vocab_size)


def check_vocabulary(tokenizer, config, where: Path) -> None:
    """Refuse a tokenizer whose ids the model's embeddings cannot hold, or whose ids leave a gap."""
    ids = sorted(full_vocab(tokenizer).values())
    rows = embedding_rows(config)
    if ids and ids[-1] >= rows:
        raise ConversionError(f"{where}: the tokenizer has ids up to {ids[-1]} ({len(ids)} tokens) but the "
                              f"model's embeddings have {rows} rows: not this model's tokenizer")
    gaps = [i for i, expected in zip(ids, range(len(ids))) if i != expected]
    if gaps:
        raise ConversionError(f"{where}: the tokenizer has no token with id {gaps[0] - 1}; CTranslate2 "
                              f"numbers tokens by their order, so every id after it would change")
    if config.model_type == "marian":
        _check_marian(tokenizer, rows, where)


def _check_marian(tokenizer, rows: int, where: Path) -> None:
    pad = tokenizer.pad_token_id
    if pad != rows - 1:
        raise ConversionError(f"{where}: CTranslate2's Marian converter drops the last row of the "
                              f"embeddings ({rows - 1}), taking it for <pad>, but <pad> has id {pad}: "
                              f"give the model a vocabulary with <pad> last, as OPUS-MT models have")


def check_marian_start(model, where: Path) -> None:
    """Marian's decoder starts from <pad>'s embedding in transformers and from zeros in CTranslate2."""
    if model.config.model_type != "marian":
        return
    row = model.get_decoder().embed_tokens.weight[model.config.decoder_start_token_id]
    if row.abs().max().item() != 0:
        raise ConversionError(f"{where}: the embedding of the decoder's start token ({row.shape[0]} values) "
                              f"is not zero; CTranslate2 starts Marian's decoder from a zero vector, so "
                              f"the exported model would differ")


def export(hf_folder: Path, out: Path) -> None:
    """Convert the saved Hugging Face model in `hf_folder` into the new CTranslate2 directory `out`."""
    quiet_transformers()
    from ctranslate2.converters import TransformersConverter

    class Converter(TransformersConverter):
        """CTranslate2's converter, reading local safetensors only and the full vocabulary."""

        def load_model(self, model_class, path, **kwargs):
            model = super().load_model(model_class, path, local_files_only=True, use_safetensors=True,
                                       **kwargs)
            _compatible(model.config)
            return model

        def load_tokenizer(self, tokenizer_class, path, **kwargs):
            tokenizer = load_hf_tokenizer(path)
            vocab = full_vocab(tokenizer)
            tokenizer.get_vocab = lambda: dict(vocab)  # the loaders read the vocabulary from here
            return tokenizer

    try:
        Converter(str(hf_folder)).convert(str(out))
    except OSError:
        raise  # a full disk, say: the model directory reports it as a write error
    except Exception as err:  # noqa: BLE001 - the converter raises many kinds; the user gets one line
        raise ConversionError(f"{hf_folder}: CTranslate2 cannot convert this model: "
                              f"{type(err).__name__}: {err}") from None


def _compatible(config: Any) -> None:
    """Fill in what CTranslate2's loaders read but transformers 5 no longer writes."""
    if config.model_type == "bart" and not hasattr(config, "normalize_before"):
        config.normalize_before = False  # BART normalises after each block
