"""The settings of a training run: defaults, checks, and the defaults that depend on the mode.

No torch here: `rest finetune --help` takes its defaults from this one place.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

from rest_cli.errors import UsageError
from rest_cli.models.base import SCRATCH_KIND, TrainingSetup, get_kind
from rest_cli.train.objectives import objective_names
from rest_cli.train.objectives.settings import parse_settings

# Options that do not change the weights: a run may resume with other values.
# Gradient checkpointing recomputes the same activations (dropout's random draws included); a
# sharded run takes the steps of an unsharded one and writes the same checkpoints, so, as with
# another number of processes, a run may resume sharded or not.
NOT_FINGERPRINTED = {"threads", "device", "checkpoint_every", "log_every", "skip_invalid",
                     "gradient_checkpointing", "fsdp"}


@dataclass
class FinetuneOptions:
    """Settings of one training run; None means "the default for this mode" (see resolve_options)."""

    # The model, from scratch only: a preset, optional shape overrides and the tokenizer's size.
    preset: str | None = None  # tiny / small / base / iwslt; "base" when None
    d_model: int | None = None
    layers: int | None = None  # encoder and decoder layers each
    heads: int | None = None
    ffn_dim: int | None = None
    vocab_size: int | None = None  # upper bound on SentencePiece pieces; 8000 when None
    dropout: float | None = None  # None keeps the preset's (0.1) or the parent's
    # LoRA, for a Hugging Face parent (--init): adapters train, merged into the weights when saved.
    lora_rank: int | None = None  # None: full fine-tuning
    lora_alpha: float | None = None  # the adapters' scale is alpha / rank; None = 2 x rank
    lora_targets: str = "all-linear"  # module names, comma-separated, or every linear layer but the output
    # Optimisation.
    objective: str = "nll"  # the Improve loss, by name (rest_cli/train/objectives)
    objective_options: tuple[str, ...] = ()  # its settings, KEY=VALUE (docs/objectives.md)
    lr: float = 5e-4  # peak rate; the ReST loop passes a lower one at each Improve step
    warmup: int | None = None  # linear warmup steps, then inverse-sqrt decay; 0 = constant rate;
    # None = 10% of the steps, at most 1000 (an Improve step of 400 steps warms up for 40)
    steps: int | None = None  # wins over epochs when both are given
    epochs: int | None = None
    batch_tokens: int = 4096  # source + target tokens per batch, padding included
    accumulate: int = 1  # batches per optimizer step: the step of one batch accumulate x as large
    label_smoothing: float | None = None  # 0.1 from scratch, 0.0 from a parent (behaviour cloning)
    weight_decay: float = 0.0
    clip_norm: float = 1.0  # 0 disables clipping
    max_length: int = 256  # tokens kept per side; longer sources and targets are truncated
    seed: int = 0
    # Validation and early stopping.
    valid_every: int = 500
    patience: int | None = None  # stop after this many validations without improvement
    # Running: none of these change the weights, so a run may resume with other values.
    checkpoint_every: int = 200
    log_every: int = 100
    device: str = "auto"  # cuda when available, else cpu
    bf16: bool | None = None  # autocast to bfloat16; None = on for CUDA that supports it
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower
    fsdp: bool = False  # under torchrun, shard the model over the processes (FSDP2) instead of DDP's copies
    threads: int | None = None
    skip_invalid: bool = False


# Shape options of a new model, as the native kind's config names them.
_SHAPE = {"d_model": "d_model", "layers": "enc_layers", "heads": "n_heads", "ffn_dim": "ffn_dim"}


def resolve_options(options: FinetuneOptions, init_dir: str | os.PathLike | None = None) -> FinetuneOptions:
    """Check the options against each other and fill in the mode-dependent defaults."""
    shaping = [name for name in ("preset", "vocab_size", *_SHAPE) if getattr(options, name) is not None]
    if init_dir is not None and shaping:
        flags = ", ".join("--" + name.replace("_", "-") for name in shaping)
        raise UsageError(f"{flags}: not with --init, which keeps the parent's model shape and tokenizer")
    if options.steps is None and options.epochs is None:
        raise UsageError("give --steps or --epochs")
    if options.patience is not None and options.patience < 1:
        raise UsageError(f"--patience must be at least 1, got {options.patience}")
    _check_objective(options, init_dir)
    _check_ranges(options)
    if init_dir is None:
        get_kind(SCRATCH_KIND).check_new_model(new_model_shape(options))
    _check_lora(options)
    scratch = init_dir is None
    return replace(options, preset=(options.preset or "base") if scratch else None,
                   lora_alpha=(2.0 * options.lora_rank if options.lora_alpha is None and options.lora_rank
                               else options.lora_alpha),
                   vocab_size=(options.vocab_size or 8000) if scratch else None,
                   label_smoothing=options.label_smoothing if options.label_smoothing is not None
                   else (0.1 if scratch else 0.0))


def _check_objective(options: FinetuneOptions, init_dir) -> None:
    """The objective's name and settings, and what it needs: a parent to read, no sharding."""
    if options.objective not in objective_names():
        raise UsageError(f"unknown objective {options.objective!r}; "
                         f"choose from {', '.join(objective_names())}")
    settings = parse_settings(options.objective, options.objective_options)
    if settings.needs_parent and init_dir is None:
        raise UsageError(f"--objective {options.objective} reads the parent policy (the BC policy) as a "
                         f"frozen reference: give --init")
    if options.fsdp and not settings.shardable:
        raise UsageError(f"--fsdp: --objective {options.objective} keeps copies of the model or a value head "
                         f"on every process, which sharding does not split; train it without --fsdp (DDP)")


def _check_ranges(options: FinetuneOptions) -> None:
    at_least_one = ("steps", "epochs", "batch_tokens", "accumulate", "max_length", "valid_every",
                    "checkpoint_every", "log_every", "threads", "vocab_size", "lora_rank", *_SHAPE)
    for name in at_least_one:
        value = getattr(options, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if options.seed < 0:
        raise UsageError(f"--seed must be at least 0, got {options.seed}")
    bounded = (("dropout", options.dropout, 0.0, 1.0), ("label-smoothing", options.label_smoothing, 0.0, 1.0),
               ("lr", options.lr, 0.0, math.inf), ("warmup", options.warmup, 0, math.inf))
    for name, value, low, high in bounded:
        if value is not None and not low <= value < high:
            raise UsageError(f"--{name} must be in [{low:g}, {high:g}), got {value:g}")


def _check_lora(options: FinetuneOptions) -> None:
    if options.lora_rank is None:
        changed = [name for name, value in (("alpha", options.lora_alpha), ("targets", options.lora_targets))
                   if value != getattr(FinetuneOptions, f"lora_{name}")]
        if changed:
            raise UsageError(f"--lora-{changed[0]}: give --lora-rank too (LoRA is off without it)")
        return
    if options.lora_alpha is not None and not options.lora_alpha > 0:
        raise UsageError(f"--lora-alpha must be above 0, got {options.lora_alpha:g}")
    if not options.lora_targets.strip(" ,"):
        raise UsageError("--lora-targets: name at least one module, or give all-linear")


def training_setup(options: FinetuneOptions) -> TrainingSetup:
    """What the policy kind needs to prepare its model for training."""
    return TrainingSetup(options.lora_rank, options.lora_alpha, options.lora_targets,
                         options.gradient_checkpointing)


def new_model_shape(options: FinetuneOptions) -> dict:
    """The shape options of a model trained from scratch, as the kind's `new_model` takes them."""
    shape = {_SHAPE[k]: getattr(options, k) for k in _SHAPE if getattr(options, k) is not None}
    if options.layers is not None:
        shape["dec_layers"] = options.layers
    if options.dropout is not None:
        shape["dropout"] = options.dropout
    return {"preset": options.preset, **shape}
