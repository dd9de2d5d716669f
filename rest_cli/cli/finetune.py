"""`rest finetune`: train a policy on (src, hyp or ref) records, the Improve step of ReST (NLL by default).

Defaults come from rest_cli.train.options, which imports no torch: `rest --help` stays fast.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Literal, Optional

import typer

from rest_cli.cli.common import InputArg, SkipInvalidOpt, handles_errors, log
from rest_cli.cli.progress import Ticker, duration, interval
from rest_cli.models.base import scratch_presets
from rest_cli.train.objectives import objective_names
from rest_cli.train.objectives.settings import describe_settings
from rest_cli.train.options import FinetuneOptions

# Choices, so that help lists them and a typo fails before any work (names read from their registries).
Preset = Literal[tuple(scratch_presets())]
Objective = Literal[tuple(objective_names())]
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _check_device(value: str) -> str:
    if not _DEVICE.fullmatch(value):
        raise typer.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N")
    return value

D = FinetuneOptions()  # the defaults

_MODEL = "Model (from scratch)"
_LORA = "LoRA (a Hugging Face policy, with --init)"
_OPTIM = "Optimisation"
_VALID = "Validation"
_RUN = "Running"


@handles_errors("finetune")
def finetune(
    input: InputArg = "-",
    output: Annotated[str, typer.Option(
        "--output", "-o", help="Model directory to write (replaced when complete). Work in progress is kept "
                               "in OUTPUT.partial/; running the same command again resumes from it.")] = ...,
    init: Annotated[Optional[str], typer.Option(
        help="Continue training this model directory (the previous policy, or a Hugging Face model made a "
             "policy by rest import): its tokenizer and shape are kept.")] = None,
    valid: Annotated[Optional[str], typer.Option(
        help="JSONL validation records; the output is then the checkpoint of lowest validation loss.",
        rich_help_panel=_VALID)] = None,
    valid_every: Annotated[int, typer.Option(help="Validate every N steps (and at the end).",
                                             rich_help_panel=_VALID)] = D.valid_every,
    patience: Annotated[Optional[int], typer.Option(
        help="Stop after N validations without improvement (needs --valid).", rich_help_panel=_VALID)] = None,
    save_last: Annotated[Optional[str], typer.Option(
        help="Also write the last checkpoint to this model directory.", rich_help_panel=_VALID)] = None,
    preset: Annotated[Optional[Preset], typer.Option(
        help="Model shape, from scratch.", show_default="base", rich_help_panel=_MODEL)] = None,
    d_model: Annotated[Optional[int], typer.Option(help="Override the preset's width.",
                                                   rich_help_panel=_MODEL)] = None,
    layers: Annotated[Optional[int], typer.Option(
        help="Override the preset's encoder and decoder layers.", rich_help_panel=_MODEL)] = None,
    heads: Annotated[Optional[int], typer.Option(help="Override the preset's attention heads.",
                                                 rich_help_panel=_MODEL)] = None,
    ffn_dim: Annotated[Optional[int], typer.Option(help="Override the preset's feed-forward width.",
                                                   rich_help_panel=_MODEL)] = None,
    vocab_size: Annotated[Optional[int], typer.Option(
        help="Most SentencePiece pieces; small corpora get fewer.", show_default="8000",
        rich_help_panel=_MODEL)] = None,
    dropout: Annotated[Optional[float], typer.Option(
        help="Dropout.", show_default="the preset's 0.1, or the parent's with --init",
        rich_help_panel=_MODEL)] = None,
    lora_rank: Annotated[Optional[int], typer.Option(
        help="Train LoRA adapters of this rank instead of every weight; they are merged into the weights "
             "of the model directory written.", show_default="off: full fine-tuning",
        rich_help_panel=_LORA)] = None,
    lora_alpha: Annotated[Optional[float], typer.Option(
        help="The adapters' scale is alpha / rank.", show_default="2 x rank", rich_help_panel=_LORA)] = None,
    lora_targets: Annotated[str, typer.Option(
        help="The modules that get adapters: names, comma-separated (q_proj,v_proj), or all-linear: every "
             "linear layer but the output layer.", rich_help_panel=_LORA)] = D.lora_targets,
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps (wins over --epochs).",
                                                 rich_help_panel=_OPTIM)] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the data, if --steps is not given.",
                                                  rich_help_panel=_OPTIM)] = None,
    objective: Annotated[Objective, typer.Option(
        help="The Improve loss (docs/objectives.md): nll (behaviour cloning), rwnll (reward-weighted), gold, "
             "oac (offline actor-critic), bvmpo. All but nll and gold read each record's reward.",
        rich_help_panel=_OPTIM)] = D.objective,
    objective_options: Annotated[list[str], typer.Option(
        "--objective-opt", metavar="KEY=VALUE",
        help=f"A setting of the objective; repeat for more. {describe_settings()}.",
        show_default=False, rich_help_panel=_OPTIM)] = D.objective_options,
    lr: Annotated[float, typer.Option(
        help="Peak learning rate (the ReST loop lowers it at each Improve step).",
        rich_help_panel=_OPTIM)] = D.lr,
    warmup: Annotated[Optional[int], typer.Option(
        help="Linear warmup steps, then inverse-square-root decay; 0 keeps the rate constant.",
        show_default="10% of the steps, at most 1000", rich_help_panel=_OPTIM)] = None,
    batch_tokens: Annotated[int, typer.Option(
        help="Source + target tokens per batch, padding included.", rich_help_panel=_OPTIM)] = D.batch_tokens,
    accumulate: Annotated[int, typer.Option(
        help="Batches per optimizer step: each step is that of one batch this many times as large.",
        rich_help_panel=_OPTIM)] = D.accumulate,
    label_smoothing: Annotated[Optional[float], typer.Option(
        help="Label smoothing.", show_default="0.1 from scratch, 0.0 with --init",
        rich_help_panel=_OPTIM)] = None,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.",
                                                rich_help_panel=_OPTIM)] = D.weight_decay,
    clip_norm: Annotated[float, typer.Option(help="Clip the gradient norm to this; 0 disables.",
                                             rich_help_panel=_OPTIM)] = D.clip_norm,
    max_length: Annotated[int, typer.Option(
        help="Truncate sources and targets to this many tokens (counted on stderr).",
        rich_help_panel=_OPTIM)] = D.max_length,
    seed: Annotated[int, typer.Option(help="Seeds initialisation, batching and dropout.",
                                      rich_help_panel=_OPTIM)] = D.seed,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint to OUTPUT.partial/ every N steps.",
                                                  rich_help_panel=_RUN)] = D.checkpoint_every,
    log_every: Annotated[int, typer.Option(help="Log and record the training loss every N steps.",
                                           rich_help_panel=_RUN)] = D.log_every,
    device: Annotated[str, typer.Option(
        metavar="[auto|cpu|cuda|cuda:N]", callback=_check_device,
        help="auto: cuda when available.", rich_help_panel=_RUN)] = D.device,
    bf16: Annotated[Optional[bool], typer.Option(
        "--bf16/--no-bf16", help="bfloat16 autocast.",
        show_default="on for CUDA that supports it, off on CPU", rich_help_panel=_RUN)] = None,
    gradient_checkpointing: Annotated[bool, typer.Option(
        "--gradient-checkpointing",
        help="Recompute activations in the backward pass: less memory, more time, the same weights "
             "(Hugging Face policies whose transformers class supports it).",
        rich_help_panel=_RUN)] = D.gradient_checkpointing,
    fsdp: Annotated[bool, typer.Option(
        "--fsdp",
        help="Under torchrun, shard weights, gradients and optimizer state over the processes (FSDP2) "
             "instead of giving each process a copy (DDP): for a model too big for DDP. Writes the same "
             "checkpoints and model directory.", rich_help_panel=_RUN)] = D.fsdp,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch.",
                                                   rich_help_panel=_RUN)] = None,
    tensorboard: Annotated[Optional[str], typer.Option(
        metavar="DIR", help="Also write TensorBoard event files here: train loss, learning rate, tokens/s, "
                            "validation loss. Needs the tensorboard extra.", rich_help_panel=_RUN)] = None,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Train by NLL on `src` -> `hyp` (else `ref`), each record's token losses times its `weight`.

    From scratch a SentencePiece tokenizer is trained on the data and a --preset model built;
    with --init the previous policy is trained further: a native one, or a Hugging Face one
    (rest import), whole or through LoRA adapters (docs/models.md). Writes a model directory of
    the same kind with its CTranslate2 export and training.json. Interrupted runs resume when
    run again.
    """
    from rest_cli.train.distributed import is_main_process
    from rest_cli.train.run import finetune as train
    from rest_cli.train.tensorboard import TensorBoardLog

    options = FinetuneOptions(
        preset=preset, d_model=d_model, layers=layers, heads=heads, ffn_dim=ffn_dim, vocab_size=vocab_size,
        dropout=dropout, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_targets=lora_targets,
        objective=objective, objective_options=tuple(objective_options), lr=lr, warmup=warmup, steps=steps,
        epochs=epochs, batch_tokens=batch_tokens, accumulate=accumulate, label_smoothing=label_smoothing,
        weight_decay=weight_decay,
        clip_norm=clip_norm, max_length=max_length, seed=seed, valid_every=valid_every, patience=patience,
        checkpoint_every=checkpoint_every, log_every=log_every, device=device, bf16=bf16,
        gradient_checkpointing=gradient_checkpointing, fsdp=fsdp, threads=threads, skip_invalid=skip_invalid)
    events = TensorBoardLog(tensorboard) if tensorboard is not None else None  # fails now if not installed
    if not is_main_process():  # under torchrun, rank 0 alone reports and writes events
        train(input, output, options, valid_path=valid, init_dir=init, save_last=save_last)
        return
    say = lambda message: log("finetune", message)  # noqa: E731
    with _reporter() as report, events or contextlib.nullcontext():
        on_progress = report if events is None else lambda progress: (report(progress), events(progress))
        record = train(input, output, options, valid_path=valid, init_dir=init, save_last=save_last,
                       on_progress=on_progress, on_message=say)
    say(summary(output, record))


def summary(output: str, record: dict) -> str:
    """The closing line: where the model went and how it was trained."""
    parts = [f"wrote {output}: {record['steps']} steps, {record['tokens_seen']:,} tokens"]
    if record["train_loss"]:
        parts.append(f"train loss {record['train_loss'][-1][1]:.3f}")
    if record["best_step"] is not None:
        parts.append(f"best valid {record['best_valid_loss']:.3f} at step {record['best_step']}")
    return ", ".join(parts) + f", {duration(record['wall_time_s'])}"


def describe(progress) -> str:
    """One progress line: `step 100/1000 loss 2.345 valid 2.100 tok/s 12345 eta 1m20s`."""
    return f"step {progress.step}/{progress.total} {_metrics(progress)}"


def _metrics(progress) -> str:
    text = f"loss {progress.loss:.3f} " if progress.loss is not None else ""
    text += f"valid {progress.valid:.3f} " if progress.valid is not None else ""
    return text + f"tok/s {progress.tokens_per_s:.0f} eta {duration(progress.eta_s)}"


@contextlib.contextmanager
def _reporter(ticker: Ticker | None = None) -> Iterator[Callable]:
    """A progress callback: a rich bar on a terminal; in a log, a line at the end of each log interval
    and validation, and between them one every REST_PROGRESS_INTERVAL seconds (the first after 10 s)."""
    if not sys.stderr.isatty():
        ticker = ticker or Ticker(interval())
        yield lambda progress: log("finetune", describe(progress)) if ticker.due(progress.logged) else None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("finetune"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("finetune", total=None, info="")

        def update(progress) -> None:
            bar.update(task, completed=progress.step, total=progress.total, info=_metrics(progress))
            if progress.logged:
                bar.console.print(f"rest finetune: {describe(progress)}", highlight=False)
        yield update
