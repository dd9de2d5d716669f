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
from rest_cli.models.base import Batch, EncodedPairs, ModelLoadError, PolicyKind, Prompt, TrainingSetup
from rest_cli.models.hf.tokenizer import HF, PROMPT_FILE, HFTokenizer, load_hf_tokenizer, quiet_transformers

WEIGHTS = f"{HF}/model.safetensors"
# The config keys that hold a dropout rate, across architectures: `--dropout` replaces them all.
DROPOUT_KEYS = ("dropout", "attention_dropout", "activation_dropout", "dropout_rate", "resid_pdrop",
                "embd_pdrop", "attn_pdrop", "summary_first_dropout", "hidden_dropout")
# LayerDrop (M2M100's default 0.05; BART, Marian, mBART, Pegasus have it too) skips whole layers in
# training: `--dropout 0` turns it off with the rest, and DDP must look for the parameters it skipped.
LAYERDROP_KEYS = ("encoder_layerdrop", "decoder_layerdrop", "layerdrop")
# Position limits, across architectures; T5's relative positions have none.
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_target_positions")
UNLIMITED = 1 << 20
# Floating-point types a checkpoint may be saved in: a fine-tune trains in float32 and saves in the parent's.
SAVED_DTYPES = ("float32", "bfloat16", "float16")


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
        _as_parent(model, Path(tokenizer_folder) / HF / "config.json")
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

    # --- training (rest_cli.models.hf.batches) ---
    def encode_pairs(self, tokenizer: HFTokenizer, sources: list[str], targets: list[str],
                     languages: list[str | None], max_length: int) -> EncodedPairs:
        """Sources as the engine reads them (prompt format, special tokens), targets after their prefix.

        Cut as at sampling: a target to `max_length` tokens, a decoder-only prompt to the positions
        the target leaves; an encoder-decoder's source keeps its special tokens when it is cut.
        """
        limit = self.position_limit(tokenizer) or UNLIMITED
        prefix = tokenizer.prefix_length
        source_room, target_room = self._rooms(limit, max_length, prefix)
        records = [{"src": src} if language is None else {"src": src, "tgt_lang": language}
                   for src, language in zip(sources, languages)]
        prompts = tokenizer.prompts(records, source_room)
        bodies = tokenizer.encode(targets)
        ids = tokenizer.vocab
        return EncodedPairs(
            [[ids[t] for t in p.tokens] if src.strip() else [] for p, src in zip(prompts, sources)],
            [[ids[t] for t in p.prefix] + body[:target_room] for p, body in zip(prompts, bodies)],
            [p.truncated for p in prompts], [len(body) > target_room for body in bodies])

    def _rooms(self, limit: int, max_length: int, prefix: int) -> tuple[int, int]:
        """The most source and target tokens: a decoder-only model reads prompt and target in one sequence;
        an encoder-decoder's decoder reads its start token and the forced prefix before the target."""
        if self.engine == "generator":
            return min(max_length, limit - max_length), max_length
        return min(max_length, limit), max(min(max_length, limit - 1 - prefix), 0)

    def collate(self, tokenizer: HFTokenizer, sources, targets, truncated, weights, device) -> Batch:
        from rest_cli.models.hf.batches import Specials, collate_causal, collate_seq2seq

        specials = Specials.of(tokenizer)
        if self.engine == "generator":
            return collate_causal(sources, targets, truncated, weights, device, specials)
        n = tokenizer.prefix_length
        return collate_seq2seq(sources, [t[n:] for t in targets], truncated, weights, device, specials,
                               [t[:n].tolist() for t in targets])

    def logits(self, model, batch: Batch):
        from rest_cli.models.hf.batches import logits

        return logits(model, batch)

    def output_layer(self, model):
        return getattr(model, "module", model).get_output_embeddings()

    def skips_layers(self, model) -> bool:
        return any(getattr(model.config, key, 0) for key in LAYERDROP_KEYS)

    def check_training(self, config: dict[str, Any], setup: TrainingSetup) -> None:
        if setup.lora_rank is not None:
            from rest_cli.models.hf.lora import check_peft

            check_peft()
        if setup.gradient_checkpointing:
            architecture = config.get("architecture", "")
            model_class = getattr(quiet_transformers(), architecture, None)
            if not getattr(model_class, "supports_gradient_checkpointing", False):
                raise UsageError(f"--gradient-checkpointing: transformers' {architecture or 'model'} does "
                                 f"not support it; train without it, or with --lora-rank to save memory")

    def for_training(self, model, setup: TrainingSetup):
        from rest_cli.models.hf.lora import with_adapters

        if setup.gradient_checkpointing:  # non-reentrant: works with frozen inputs (LoRA) and DDP
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return model if setup.lora_rank is None else with_adapters(model, setup)

    def for_saving(self, model, keep: bool = False):
        from rest_cli.models.hf.lora import merged

        return merged(model, keep)

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
        static = tokenizer.static_tokens
        return {"end_token": tokenizer.end_ids(), **({"static_prompt": static} if static else {})}

    def prompts(self, tokenizer: HFTokenizer, records: list[dict[str, Any]], max_tokens: int) -> list[Prompt]:
        """Each record's prompt after the static part, which the engine reads once (`engine_options`)."""
        static = len(tokenizer.static)
        return [Prompt(p.tokens[static:], p.prefix, p.truncated)
                for p in tokenizer.prompts(records, max_tokens)]

    def stops(self, tokenizer: HFTokenizer) -> tuple[str, ...]:
        return tokenizer.format.stop


def load_hf_model(folder: Path, auto_class: str, dropout: float | None = None, dtype: Any = "float32"):
    """The model saved in `folder`, from its safetensors only, in `dtype` ("auto": as saved)."""
    transformers = quiet_transformers()
    from safetensors import SafetensorError

    try:
        overrides = {}
        if dropout is not None:
            config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
            overrides = {key: dropout for key in DROPOUT_KEYS if hasattr(config, key)}
            if dropout == 0:
                overrides.update({key: 0.0 for key in LAYERDROP_KEYS if hasattr(config, key)})
        return getattr(transformers, auto_class).from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, dtype=dtype, **overrides)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as err:
        raise ModelLoadError(f"{folder}: cannot load the model: {err}") from None


def _as_parent(model, parent_config: Path) -> None:
    """Cast a model trained in float32 back to the dtype its parent was saved in (bfloat16, say), so
    that a fine-tune keeps the size of its parent and CTranslate2 exports it the same way."""
    import json

    import torch

    try:
        config = json.loads(parent_config.read_text())
    except (OSError, ValueError):
        return
    saved = config.get("dtype", config.get("torch_dtype"))
    if saved in SAVED_DTYPES and next(model.parameters()).dtype != getattr(torch, saved):
        model.to(getattr(torch, saved))


def describe(model) -> dict[str, Any]:
    """What rest's config.json keeps of a Hugging Face model."""
    from rest_cli.models.hf.convert import embedding_rows

    config = model.config
    positions = next((getattr(config, key) for key in POSITION_KEYS if getattr(config, key, None)), None)
    return {"architecture": type(model).__name__, "model_type": config.model_type,
            "vocab_size": embedding_rows(config), "max_positions": positions,
            "parameters": sum(p.numel() for p in model.parameters()),
            "transformers_version": sys.modules["transformers"].__version__}
