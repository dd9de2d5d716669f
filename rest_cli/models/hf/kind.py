"""The Hugging Face policy kinds: a model saved with `save_pretrained`, decoded by CTranslate2.

`hf-seq2seq` (T5, Marian, M2M100 and NLLB, BART...) decodes with a Translator, `hf-causal` (GPT-2,
Llama, Mistral, Qwen, Gemma, Phi...) with a Generator. Their model directory:

    DIR/config.json        rest's: format, kind, the model's description, the parts' hashes
    DIR/hf/                as save_pretrained writes it: config.json, generation_config.json,
                           model.safetensors (one file), tokenizer files, chat template
    DIR/prompt.json        how a record becomes the model's input (rest_cli.models.hf.tokenizer)
    DIR/ctranslate2/       CTranslate2's TransformersConverter of DIR/hf
    DIR/training.json      the import, or the fine-tune that made it

Weights are read from safetensors only, never unpickled, and from local files only.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, ClassVar

from rest_cli.errors import UsageError
from rest_cli.models.base import Batch, ModelLoadError, PolicyKind, Prompt
from rest_cli.models.hf.tokenizer import HF, PROMPT_FILE, HFTokenizer, load_hf_tokenizer, quiet_transformers

WEIGHTS = f"{HF}/model.safetensors"
# The config keys that hold a dropout rate, across architectures: `--dropout` replaces them all.
DROPOUT_KEYS = ("dropout", "attention_dropout", "activation_dropout", "dropout_rate", "resid_pdrop",
                "embd_pdrop", "attn_pdrop", "summary_first_dropout", "hidden_dropout")
# Position limits, across architectures; T5's relative positions have none.
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_target_positions")
UNLIMITED = 1 << 20
NOT_YET = ("fine-tuning Hugging Face policies comes next: today they sample, evaluate and rank "
           "(rest sample, eval, bestofn); see docs/models.md")


class HFKind(PolicyKind):
    """What both Hugging Face kinds share; they differ in the engine and the transformers class."""

    weight_files = (WEIGHTS,)
    tokenizer_files = (PROMPT_FILE, f"{HF}/config.json", f"{HF}/tokenizer_config.json")
    auto_class: ClassVar[str]

    def tokenizer(self, directory: str | os.PathLike) -> HFTokenizer:
        return HFTokenizer(directory)

    def load_model(self, directory: Path, device: str = "cpu", dropout: float | None = None):
        model = load_hf_model(Path(directory) / HF, self.auto_class, dropout=dropout)
        return model.to(device).eval()

    def save_model(self, model, tokenizer_folder: Path, directory: Path) -> dict[str, Any]:
        hf = Path(directory) / HF
        # One weights file whatever the size, so that a model directory always has the same parts.
        model.save_pretrained(hf, max_shard_size="100000GB")
        load_hf_tokenizer(Path(tokenizer_folder) / HF).save_pretrained(hf)
        shutil.copyfile(Path(tokenizer_folder) / PROMPT_FILE, Path(directory) / PROMPT_FILE)
        return describe(model)

    def holds(self, model) -> bool:
        transformers = sys.modules.get("transformers")  # a transformers model cannot exist without it
        return (transformers is not None and isinstance(model, transformers.PreTrainedModel)
                and bool(model.config.is_encoder_decoder) == (self.engine == "translator"))

    def max_positions(self, config: dict[str, Any]) -> int:
        return config.get("max_positions") or UNLIMITED

    def collate(self, sources, targets, truncated, weights, device) -> Batch:
        raise UsageError(NOT_YET)

    def logits(self, model, batch: Batch):
        raise UsageError(NOT_YET)

    def export(self, model, folder: Path, out: Path) -> None:
        from rest_cli.models.hf.convert import check_marian_start, check_vocabulary, export

        hf = Path(folder) / HF
        check_vocabulary(load_hf_tokenizer(hf), model.config, hf)
        check_marian_start(model, hf)
        export(hf, out)

    def prompts(self, tokenizer: HFTokenizer, records: list[dict[str, Any]], max_tokens: int) -> list[Prompt]:
        return tokenizer.prompts(records, max_tokens)

    def position_limit(self, tokenizer: HFTokenizer) -> int | None:
        # Learned or sinusoidal position tables end there (CTranslate2 then fails mid-run); rotary
        # models degrade past it; T5's relative positions have no limit.
        config = tokenizer.model_config
        return next((config[key] for key in POSITION_KEYS if config.get(key)), None)


class Seq2SeqKind(HFKind):
    name = "hf-seq2seq"
    engine = "translator"
    auto_class = "AutoModelForSeq2SeqLM"


class CausalKind(HFKind):
    name = "hf-causal"
    engine = "generator"
    auto_class = "AutoModelForCausalLM"

    def engine_options(self, tokenizer: HFTokenizer) -> dict[str, Any]:
        return {"end_token": tokenizer.end_ids()}


def load_hf_model(folder: Path, auto_class: str, dropout: float | None = None, dtype: Any = "float32"):
    """The model saved in `folder`, from its safetensors only, in `dtype` ("auto": as saved)."""
    transformers = quiet_transformers()
    from safetensors import SafetensorError

    try:
        overrides = {}
        if dropout is not None:
            config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
            overrides = {key: dropout for key in DROPOUT_KEYS if hasattr(config, key)}
        return getattr(transformers, auto_class).from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, dtype=dtype, **overrides)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as err:
        raise ModelLoadError(f"{folder}: cannot load the model: {err}") from None


def describe(model) -> dict[str, Any]:
    """What rest's config.json keeps of a Hugging Face model."""
    from rest_cli.models.hf.convert import embedding_rows

    config = model.config
    positions = next((getattr(config, key) for key in POSITION_KEYS if getattr(config, key, None)), None)
    return {"architecture": type(model).__name__, "model_type": config.model_type,
            "vocab_size": embedding_rows(config), "max_positions": positions,
            "parameters": sum(p.numel() for p in model.parameters()),
            "transformers_version": sys.modules["transformers"].__version__}
