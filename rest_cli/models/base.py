"""What a policy kind is: everything that differs between kinds of model, behind one small interface.

A model directory names its kind in config.json. The rest of `rest` asks the kind, never the
model class, for:
  - the tokenizer (encode, decode, special ids);
  - training batches built from tokenized records, and the forward pass to logits over them;
  - building a new model (from scratch), loading and saving one;
  - the export to CTranslate2 (through a CTranslate2 `Converter`, whose `_load()` maps the weights
    into a spec; validation, quantization and saving are CTranslate2's);
  - which CTranslate2 engine decodes it: a `Translator` (encoder-decoder) or a `Generator`
    (decoder-only), what that engine reads for each record (`prompts`: source or prompt tokens,
    and a target prefix), and the engine options the model needs (`engine_options`: stop tokens).

Kinds are registered by name and imported only when asked for; a kind's module imports torch
and ctranslate2 inside the methods that need them, so `rest sample` and `rest --help` stay light.
A new kind is a package under models/ with a class implementing PolicyKind, and a line in KINDS.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from rest_cli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import torch

# name -> "module:Class", imported on first use.
KINDS: dict[str, str] = {
    "native": "rest_cli.models.native.kind:NativeKind",
    "hf-seq2seq": "rest_cli.models.hf.kind:Seq2SeqKind",
    "hf-causal": "rest_cli.models.hf.kind:CausalKind",
}
# The kind `rest finetune` builds when it trains from scratch, and the shapes it comes in
# (`--preset`), named without importing torch so that `rest finetune --help` can list them.
SCRATCH_KIND = "native"
SCRATCH_PRESETS = "rest_cli.models.native.config:PRESETS"


def scratch_presets() -> list[str]:
    """The names `rest finetune --preset` takes, smallest first."""
    module, _, name = SCRATCH_PRESETS.partition(":")
    return list(getattr(importlib.import_module(module), name))


class ModelLoadError(ValueError):
    """Weights or a tokenizer that cannot be read or do not fit the config (modeldir names the directory)."""


class Tokenizer(Protocol):
    """What training and sampling need of a tokenizer."""

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, without special tokens."""

    def encode_pieces(self, texts: list[str]) -> list[list[str]]:
        """Tokens per text as the CTranslate2 engine takes them."""

    def decode(self, batch: list[list[int]] | list[list[str]]) -> list[str]:
        """Texts from lists of ids or of tokens."""


@dataclass(frozen=True)
class Prompt:
    """What the decoding engine reads for one record.

    `tokens`: the source (encoder-decoder) or the prompt (decoder-only), special tokens included,
    as the engine takes them. `prefix`: tokens every candidate must start with (NLLB's and
    M2M100's target-language token), given to the Translator as `target_prefix` and left out of
    the candidate; empty for most models. `truncated`: the source was cut to fit.
    """

    tokens: list[str]
    prefix: list[str] = field(default_factory=list)
    truncated: bool = False


def padded(rows, value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded int64 tensor [B, longest] of the id arrays `rows`, and a bool mask of where the ids are.

    What every kind's `collate` needs; numpy fills it, so that torch is asked for one tensor.
    """
    import numpy as np
    import torch

    longest = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), longest), value, dtype=np.int64)
    present = np.zeros((len(rows), longest), dtype=bool)
    for i, row in enumerate(rows):
        out[i, :len(row)], present[i, :len(row)] = row, True
    return torch.from_numpy(out), torch.from_numpy(present)


@dataclass
class Batch:
    """One training batch, whatever the kind: the kind's model inputs, and which token each position trains.

    `labels[i, t]` is the token to predict at position t of row i; `mask` says which positions
    are trained (padding, and for decoder-only models the prompt, are not). Objectives need
    nothing else from the kind.
    """

    inputs: dict[str, torch.Tensor]  # keyword arguments of the kind's forward pass
    labels: torch.Tensor  # [B, T] int64
    mask: torch.Tensor  # [B, T] bool
    weights: torch.Tensor  # [B] float32, each record's loss weight
    tokens: int  # real input and trained tokens, for throughput
    # Numbers of each record that the objective reads besides the text (e.g. "reward"), [B] float32
    # each; the training data fills them in, not the kind.
    fields: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class EncodedPairs:
    """Training pairs as token ids, in the form the kind's `collate` takes them, cut to fit.

    An empty source means the record has nothing to read: training leaves it out (and counts it).
    """

    sources: list[list[int]]
    targets: list[list[int]]
    cut_sources: list[bool]
    cut_targets: list[bool]  # a cut target does not end there: its end token is not trained


@dataclass(frozen=True)
class TrainingSetup:
    """How a kind prepares its model for training, besides the optimizer's settings."""

    lora_rank: int | None = None  # LoRA adapters of this rank, merged into the weights before saving
    lora_alpha: float | None = None  # their scale is alpha / rank
    lora_targets: str = "all-linear"  # the modules that get adapters: comma-separated names, or all-linear
    gradient_checkpointing: bool = False  # recompute activations in the backward pass, to save memory


class PolicyKind(ABC):
    """One kind of policy. Instances hold no state: one per kind is enough."""

    name: ClassVar[str]
    engine: ClassVar[str]  # "translator" (encoder-decoder) or "generator" (decoder-only)
    weight_files: ClassVar[tuple[str, ...]]  # in the model directory
    tokenizer_files: ClassVar[tuple[str, ...]]

    # --- tokenizer ---
    @abstractmethod
    def tokenizer(self, directory: str | os.PathLike) -> Tokenizer:
        """The tokenizer of a model directory (or of a folder holding its tokenizer files)."""

    def train_tokenizer(self, texts: list[str], folder: Path, vocab_size: int, seed: int) -> Path:
        """Train a tokenizer for a new model into `folder`; return the folder to load it from."""
        raise UsageError(f"policies of kind {self.name!r} cannot be trained from scratch: give --init")

    # --- models ---
    def check_new_model(self, shape: dict[str, Any]) -> None:
        """Refuse (UsageError) a shape for `new_model` that cannot be built."""
        raise UsageError(f"policies of kind {self.name!r} cannot be trained from scratch: give --init")

    def new_model(self, vocab_size: int, shape: dict[str, Any]) -> torch.nn.Module:
        """A freshly initialised model (torch's seed decides the weights)."""
        raise UsageError(f"policies of kind {self.name!r} cannot be trained from scratch: give --init")

    @abstractmethod
    def load_model(self, directory: Path, device: str = "cpu",
                   dropout: float | None = None) -> torch.nn.Module:
        """The model of a checked directory, on `device`, in eval mode; `dropout` replaces the saved rate."""

    @abstractmethod
    def save_model(self, model: torch.nn.Module, tokenizer_folder: Path, directory: Path) -> dict[str, Any]:
        """Write weights and tokenizer files into `directory`; return the config to keep in config.json."""

    @abstractmethod
    def holds(self, model: torch.nn.Module) -> bool:
        """Whether `model` is a model of this kind."""

    @abstractmethod
    def max_positions(self, config: dict[str, Any]) -> int:
        """The longest sequence (source, or target plus its start token) the PyTorch model accepts."""

    # --- training ---
    def encode_pairs(self, tokenizer: Tokenizer, sources: list[str], targets: list[str],
                     languages: list[str | None], max_length: int) -> EncodedPairs:
        """Token ids of training pairs, each side cut to `max_length` tokens; `languages`: their tgt_lang."""
        srcs, tgts = tokenizer.encode(sources), tokenizer.encode(targets)
        return EncodedPairs([s[:max_length] for s in srcs], [t[:max_length] for t in tgts],
                            [len(s) > max_length for s in srcs], [len(t) > max_length for t in tgts])

    @abstractmethod
    def collate(self, tokenizer: Tokenizer, sources: list[np.ndarray], targets: list[np.ndarray],
                truncated: np.ndarray, weights: np.ndarray, device: torch.device | str) -> Batch:
        """The batch of these records (ids from `encode_pairs`); `truncated`: targets cut, no end to learn."""

    @abstractmethod
    def logits(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """Logits [B, T, V] at the positions of `batch.labels` (model may be wrapped, e.g. in DDP)."""

    def output_layer(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module that turns the last hidden states into logits (`model` may be wrapped, e.g. in DDP)."""
        raise UsageError(f"policies of kind {self.name!r} do not give their hidden states, which objectives "
                         f"with a value head (oac, bvmpo) read")

    def logits_and_hidden(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, T, V] and the last hidden states [B, T, d] they are computed from, in one forward
        pass: the input of `output_layer`, caught on its way in."""
        caught: list = []
        hook = self.output_layer(model).register_forward_hook(lambda layer, args, out: caught.append(args[0]))
        try:
            logits = self.logits(model, batch)
        finally:
            hook.remove()
        return logits, caught[-1]

    def skips_layers(self, model: torch.nn.Module) -> bool:
        """Whether a training step may leave parameters without a gradient (LayerDrop): DDP must know."""
        return False

    def check_training(self, config: dict[str, Any], setup: TrainingSetup) -> None:
        """Refuse (UsageError), before any work, a setup this kind's model (`config`) cannot train with."""
        if setup.lora_rank is not None:
            raise UsageError(f"--lora-rank: LoRA is for Hugging Face policies (rest import), not for "
                             f"policies of kind {self.name!r}")
        if setup.gradient_checkpointing:
            raise UsageError(f"--gradient-checkpointing: policies of kind {self.name!r} do not support it")

    def for_training(self, model: torch.nn.Module, setup: TrainingSetup) -> torch.nn.Module:
        """The module to train: `model` itself, or `model` with adapters (checked by `check_training`)."""
        return model

    def for_saving(self, model: torch.nn.Module, keep: bool = False) -> torch.nn.Module:
        """The plain model of a trained module, adapters merged in; `keep`: leave `model` as it is."""
        return model

    # --- decoding ---
    def prompts(self, tokenizer: Tokenizer, records: list[dict[str, Any]], max_tokens: int) -> list[Prompt]:
        """What the engine reads for each record: its `src` as tokens, cut to `max_tokens`."""
        pieces = tokenizer.encode_pieces([record["src"] for record in records])
        return [Prompt(p[:max_tokens], truncated=len(p) > max_tokens) for p in pieces]

    def engine_options(self, tokenizer: Tokenizer) -> dict[str, Any]:
        """Options the engine needs for this model whatever the decoding settings (e.g. `end_token`)."""
        return {}

    def stops(self, tokenizer: Tokenizer) -> tuple[str, ...]:
        """Strings that end a candidate (cut from its text, the tokens through the stop scored); none here."""
        return ()

    def position_limit(self, tokenizer: Tokenizer) -> int | None:
        """The most positions the exported model reads (a source; a prompt with its candidate), or None."""
        return None

    # --- export ---
    @abstractmethod
    def export(self, model: torch.nn.Module, folder: Path, out: Path) -> None:
        """Write the CTranslate2 model of `model` into the new directory `out`.

        `folder` is the model directory being written: `save_model` has just put the weights and
        tokenizer files there, so a kind may convert from those files rather than from `model`
        (CTranslate2's converters for Hugging Face models take a saved folder, and take apart a
        live model they are given). `out` does not exist yet.
        """


_loaded: dict[str, PolicyKind] = {}


def get_kind(name: str) -> PolicyKind:
    """The kind registered as `name`."""
    if name not in KINDS:
        raise UsageError(f"unknown policy kind {name!r}; known kinds: {', '.join(sorted(KINDS))}")
    if name not in _loaded:
        module, _, cls = KINDS[name].partition(":")
        _loaded[name] = getattr(importlib.import_module(module), cls)()
    return _loaded[name]


def kind_of_model(model: Any) -> PolicyKind:
    """The kind a PyTorch model belongs to."""
    for name in KINDS:
        kind = get_kind(name)
        if kind.holds(model):
            return kind
    raise TypeError(f"no policy kind holds a {type(model).__name__}")
