"""One training run, start to finish: `finetune()`, behind `rest finetune`.

It reads and tokenizes the data, opens the work folder OUTPUT.partial/ (tokenizer, checkpoints,
and run.json, whose fingerprint of options, data and parent refuses a resume of another run),
builds or loads the policy, trains it with signals deferred to the end of a step, and writes the
model directory, which replaces the work folder. The same call after a stop resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from rest_cli import __version__
from rest_cli.errors import InputError, RestError, UsageError
from rest_cli.io.atomic import sole_writer, write_file
from rest_cli.io.shards import derived_seed
from rest_cli.models import modeldir
from rest_cli.models.base import SCRATCH_KIND, PolicyKind, get_kind
from rest_cli.train.data import DataStats, Pair, TokenizedPairs, load_pairs, tokenize_pairs
from rest_cli.train.distributed import World, device_of, join_world
from rest_cli.train.objectives import objective_class
from rest_cli.train.options import (
    NOT_FINGERPRINTED,
    FinetuneOptions,
    new_model_shape,
    resolve_options,
    training_setup,
)
from rest_cli.train.trainer import Trainer, TrainProgress


def finetune(train_path: str, output_dir: str | os.PathLike, options: FinetuneOptions | None = None,
             valid_path: str | None = None, init_dir: str | os.PathLike | None = None,
             save_last: str | os.PathLike | None = None,
             on_progress: Callable[[TrainProgress], None] | None = None,
             on_message: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a model on `train_path` and write it to `output_dir` as a model directory.

    From scratch a tokenizer and a preset model are built; with `init_dir` the parent model
    and its tokenizer are trained further. With `valid_path` the output is the checkpoint of
    best validation loss, else the last. A run that stops (SIGINT, SIGTERM, or on_progress
    raising KeyboardInterrupt) checkpoints into OUTPUT.partial/ and raises KeyboardInterrupt;
    the same call then resumes from there. Returns what training.json holds.
    """
    options = resolve_options(options or FinetuneOptions(), init_dir)
    modeldir.check_output_dir(output_dir, "--output")
    if save_last is not None:
        modeldir.check_output_dir(save_last, "--save-last")
    world = join_world(options.device, options.fsdp)
    try:
        return _finetune(train_path, output_dir, options, valid_path, init_dir, save_last,
                         on_progress if world.is_main else None, on_message if world.is_main else None, world)
    finally:
        world.close()


def _finetune(train_path, output_dir, options: FinetuneOptions, valid_path, init_dir, save_last, on_progress,
              on_message, world: World) -> dict[str, Any]:
    say = on_message or (lambda message: None)
    kind = (get_kind(SCRATCH_KIND) if init_dir is None
            else modeldir.kind_of(modeldir.check_model_dir(init_dir)))
    parent = modeldir.model_config(init_dir) if init_dir is not None else {}
    _check_max_length(options, kind, parent)
    kind.check_training(parent, training_setup(options))  # before anything is written
    device, bf16 = _setup_torch(options, world)
    if options.steps and options.epochs:
        say("--steps and --epochs both given: --steps wins")
        options = replace(options, epochs=None)
    pairs, stats = _read(train_path, valid_path, options, say, world, device)
    work = partial_dir(output_dir)
    # Rank 0 holds the work folder until the run ends: a second run writing the same output (two
    # make targets in parallel that both need it) is refused instead of sharing its checkpoints.
    with _work_folder_claimed(work) if world.is_main else contextlib.nullcontext():
        fingerprint = _fingerprint(options, stats, init_dir)
        # Rank 0 creates the work directory and tokenizer; the other ranks then find them in place.
        resuming = _main_first(world, lambda: _open_work_dir(work, fingerprint))
        # From scratch, the tokenizer learns from every training text: under torchrun rank 0 reads them all.
        vocabulary_pairs = (lambda: load_pairs(train_path, options.skip_invalid)[0]) if world.distributed \
            else (lambda: pairs["train"])
        with _removed_on_error(work, keep=resuming or not world.is_main):
            tokenizer_folder = _main_first(
                world, lambda: _tokenizer_folder(kind, work, init_dir, vocabulary_pairs, options))
            tokenizer = kind.tokenizer(tokenizer_folder)
            data = {name: _tokenize(pairs[name], kind, tokenizer, options, stats[name], say,
                                    _holders(name, world), device, _reads(name, options).numbers)
                    for name in pairs}
            model = _build_model(kind, init_dir, tokenizer.vocab_size, options)
            if world.distributed:  # the same initial weights everywhere, then each rank its own dropout
                torch.manual_seed(derived_seed(options.seed, "rank", world.rank))
            trainer = Trainer(model, kind, tokenizer, data["train"], data.get("valid"), options, work,
                              fingerprint, device, bf16, on_progress, say, world)
            _start(trainer, resuming, say)
        if device.type == "cpu" and options.threads is None:
            _warn_if_cores_are_busy(say)
        if device.type == "cpu" and options.bf16 is None and _cpu_multiplies_in_bf16():
            say("this CPU has bfloat16 matrix units: --bf16 trained 1.3x (demo) to 2.5x (iwslt) faster here, "
                "with the same loss (docs/benchmarks.md)")
        with _deferred_interrupts(trainer.request_stop):
            trainer.run()
        record = _training_record(trainer, stats, init_dir, device, bf16)
        last = _unsharded(trainer, lambda: _build_model(kind, init_dir, tokenizer.vocab_size, options))
        if world.is_main:
            _write_outputs(trainer, last, output_dir, tokenizer_folder, record, save_last)
        world.barrier()  # the model directory is complete before any rank reports success
    return record


@contextlib.contextmanager
def _removed_on_error(work: Path, keep: bool) -> Iterator[None]:
    """A fresh run that fails before training (bad data, a tokenizer that cannot be trained, a model
    that cannot be loaded or prepared) leaves nothing to resume: its work folder goes, so that it
    cannot block the corrected command."""
    try:
        yield
    except RestError:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        raise


@contextlib.contextmanager
def _work_folder_claimed(work: Path) -> Iterator[None]:
    work.mkdir(parents=True, exist_ok=True)
    with sole_writer(work / ".lock", work):
        yield


def _main_first(world: World, make: Callable[[], Any]) -> Any:
    """`make()` on rank 0, then on the other ranks, which find what rank 0 made."""
    result = make() if world.is_main else None
    world.barrier()
    return result if world.is_main else make()


def _read(train_path, valid_path, options, say, world: World,
          device: torch.device) -> tuple[dict[str, list[Pair]], dict[str, DataStats]]:
    """Training pairs (a rank's slice under torchrun) and validation pairs (all of them, on every rank)."""
    paths = {"train": train_path, **({"valid": valid_path} if valid_path else {})}
    pairs, stats = {}, {}
    for name, path in paths.items():
        part, reads = _holders(name, world), _reads(name, options)
        needed_by = "finetune" if reads.name == "nll" else f"finetune --objective {reads.name}"
        pairs[name], stats[name] = load_pairs(path, options.skip_invalid, part.share,
                                              (reads.required, reads.optional), reads.numbers, needed_by)
        if stats[name].skipped:
            say(f"skipped {stats[name].skipped} invalid record(s); first: {stats[name].first_problem}")
        usable = part.sum([sum(1 for pair in pairs[name] if pair.src.strip())], device)[0]
        if not usable:  # checked here, before anything is written
            raise InputError(stats[name].path, None,
                             f"no record to {'train' if name == 'train' else 'validate'} on"
                             " (records need a non-empty src and a weight above 0)")
    return pairs, stats


def _reads(name: str, options: FinetuneOptions):
    """The objective whose fields a data set's records need: validation measures NLL alone, so its
    records need no more than NLL's (no reward, say)."""
    return objective_class(options.objective if name == "train" else "nll")


def _holders(name: str, world: World) -> World:
    """The ranks that share a data set: training pairs are split over them, validation pairs are
    whole on each."""
    return world if name == "train" else World()


def _tokenize(pairs: list[Pair], kind: PolicyKind, tokenizer, options: FinetuneOptions, stats: DataStats,
              say: Callable[[str], None], world: World, device: torch.device,
              numbers: tuple[str, ...] = ()) -> TokenizedPairs:
    data = tokenize_pairs(pairs, kind, tokenizer, options.max_length, stats, numbers)
    # Under torchrun each rank counted its own slice: the report and training.json give the totals.
    stats.used, stats.truncated, stats.empty_src, idle = (int(n) for n in world.sum(
        [stats.used, stats.truncated, stats.empty_src, not len(data)], device))
    if stats.truncated:
        say(f"{stats.path}: truncated {stats.truncated} record(s) "
            f"to --max-length {options.max_length} tokens")
    if stats.empty_src:
        say(f"{stats.path}: left out {stats.empty_src} record(s) with an empty source")
    if not stats.used:
        raise InputError(stats.path, None, "no record has a non-empty source")
    if idle:  # some rank holds no record; all ranks know it, so all stop together
        raise UsageError(f"{stats.path}: {stats.used} usable record(s) for {world.size} processes; "
                         f"run fewer processes")
    return data


def _fingerprint(options: FinetuneOptions, stats: dict[str, DataStats], init_dir) -> str:
    """A hash of what determines the weights: options, data and parent model."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in asdict(options).items()
                                        if k not in NOT_FINGERPRINTED}, sort_keys=True).encode())
    for name in sorted(stats):
        digest.update(f"{name}:{stats[name].sha256}".encode())
    if init_dir is not None:
        for path in modeldir.state_files(init_dir):
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _open_work_dir(work: Path, fingerprint: str) -> bool:
    """Create WORK, or check that the run it holds is this one; return whether it is resumed."""
    meta = work / "run.json"
    if meta.exists():
        stored = modeldir.read_json(meta).get("fingerprint")
        if stored != fingerprint:
            raise UsageError(f"{work} holds an interrupted run with other options, data or parent model; "
                             f"delete it to start afresh, or rerun that run's command to resume it")
        return True
    work.mkdir(parents=True, exist_ok=True)
    write_file(meta, (json.dumps({"fingerprint": fingerprint, "rest_version": __version__}, indent=2)
                      + "\n").encode())
    return False


def _setup_torch(options: FinetuneOptions, world: World) -> tuple[torch.device, bool]:
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        device = torch.device("cuda" if options.device == "auto" and torch.cuda.is_available()
                              else "cpu" if options.device == "auto" else options.device)
    except RuntimeError as err:
        raise UsageError(f"--device {options.device!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {options.device}: CUDA is not available")
    device = device_of(world, device)
    bf16 = (options.bf16 if options.bf16 is not None
            else device.type == "cuda" and torch.cuda.is_bf16_supported())
    return device, bf16


def _warn_if_cores_are_busy(say: Callable[[str], None]) -> None:
    """torch's threads wait for each other by spinning: on cores other work is using, a step takes
    2-6x longer than with one thread (benchmarks/bench_threads.py), so say so when the machine is busy."""
    threads, load = torch.get_num_threads(), os.getloadavg()[0]
    if threads > 1 and load > (os.cpu_count() or 1) - 1:
        say(f"the machine is busy (load {load:.1f} on {os.cpu_count()} cores): torch's {threads} threads "
            f"slow down badly when other work shares the cores; --threads 1 trained 2-6x faster then "
            f"(docs/benchmarks.md)")


def _cpu_multiplies_in_bf16() -> bool:
    # Off by default all the same: without these units bf16 is emulated and slower, and a default
    # that depends on the CPU would make the same command train differently on two machines.
    probes = (getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(probe is not None and probe() for probe in probes)


def _tokenizer_folder(kind: PolicyKind, work: Path, init_dir, pairs: Callable[[], list[Pair]],
                      options: FinetuneOptions) -> Path:
    """The parent's tokenizer, or one trained on the training texts (kept in WORK for a resumed run)."""
    if init_dir is not None:
        return Path(init_dir)
    if not all((work / name).exists() for name in kind.tokenizer_files):
        # Each distinct text once: N samples of one source should not weigh N times in the vocabulary.
        texts = [t for t in dict.fromkeys(text for p in pairs() for text in (p.src, p.tgt)) if t]
        kind.train_tokenizer(texts, work, options.vocab_size, options.seed)
    return work


def _build_model(kind: PolicyKind, init_dir, vocab_size: int, options: FinetuneOptions) -> torch.nn.Module:
    torch.manual_seed(options.seed)  # the initial weights (adapters too), then dropout, follow the seed
    model = (kind.new_model(vocab_size, new_model_shape(options)) if init_dir is None
             else modeldir.load_model(init_dir, dropout=options.dropout))
    return kind.for_training(model.train(), training_setup(options))


def _check_max_length(options: FinetuneOptions, kind: PolicyKind, parent: dict[str, Any]) -> None:
    # The decoder reads BOS + max_length tokens: one position more than the longest target.
    limit = kind.max_positions(parent)
    if options.max_length >= limit:
        raise UsageError(f"--max-length must be below the model's max_positions ({limit}), "
                         f"got {options.max_length}")


def _start(trainer: Trainer, resuming: bool, say: Callable[[str], None]) -> None:
    if trainer.resume():
        say(f"resuming from {trainer.work} at step {trainer.state.step}/{trainer.total}")
    elif resuming:
        say(f"resuming in {trainer.work} (no checkpoint yet: starting at step 0)")


def _training_record(trainer: Trainer, stats: dict[str, DataStats], init_dir, device,
                     bf16: bool) -> dict[str, Any]:
    """The contents of training.json."""
    s, total_train = trainer.state, len(trainer.plan_src)
    return {
        "rest_version": __version__, "objective": trainer.options.objective,
        "torch_version": torch.__version__, "parent": str(init_dir) if init_dir is not None else None,
        "data": {name: asdict(value) for name, value in stats.items()},
        "options": asdict(trainer.options), "device": str(device), "bf16": bf16,
        "steps": s.step, "epochs": s.epoch + s.batch_index / max(len(trainer.epoch_batches(s.epoch)), 1),
        "tokens_seen": s.tokens, "train_records": total_train,
        "train_loss": s.train_loss, "valid_loss": s.valid_loss, "best_step": s.best_step,
        "best_valid_loss": s.best_loss, "stopped_early": s.stopped_early,
        "output": "best" if trainer.best_weights is not None else "last",
        "resumed": s.resumed, "wall_time_s": round(trainer.wall_time(), 3), "world_size": trainer.world.size,
    }


def _unsharded(trainer: Trainer, build: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
    """The trained module as one whole module, for rank 0 to save.

    A sharded module cannot be put back together in place: its shards are gathered on rank 0
    into a new module as `build` makes it (every rank takes part; the others get None).
    """
    if not trainer.world.sharded:
        return trainer.model
    state = trainer.model_state()
    if not trainer.world.is_main:
        return None
    model = build()
    model.load_state_dict(state)
    return model


def _write_outputs(trainer: Trainer, model: torch.nn.Module, output_dir, tokenizer_folder: Path, record: dict,
                   save_last) -> dict[str, Any]:
    # The trained module may carry adapters: each model directory gets the plain model, adapters merged.
    model, kind, plain = model.eval().cpu(), trainer.kind, None
    if save_last is not None:
        plain = kind.for_saving(model, keep=trainer.best_weights is not None)
        modeldir.save_model_dir(save_last, plain, tokenizer_folder, {**record, "output": "last"})
        _write_modules(save_last, {file: trainer.module_states()[name]
                                   for name, file in trainer.objective.saved_modules.items()})
    if trainer.best_weights is not None:
        model.load_state_dict(trainer.best_weights)
        plain = None
    modeldir.save_model_dir(output_dir, plain or kind.for_saving(model), tokenizer_folder, record)
    _write_modules(output_dir, trainer.saved_modules())
    shutil.rmtree(trainer.work, ignore_errors=True)
    return record


def _write_modules(directory, states: dict[str, dict[str, torch.Tensor]]) -> None:
    """The objective's modules (a value head) beside the policy, each file written whole. The model
    directory, complete without them, is in place first; the CTranslate2 export never has them."""
    from rest_cli.train.objectives.base import safetensors_bytes

    for file, state in states.items():
        write_file(Path(directory) / file, safetensors_bytes(state))


def partial_dir(output_dir: str | os.PathLike) -> Path:
    """The work directory of a run writing `output_dir`: its sibling `NAME.partial`."""
    output = Path(output_dir)
    return output.with_name(output.name + ".partial")


@contextlib.contextmanager
def _deferred_interrupts(request_stop: Callable[[int], None]) -> Iterator[None]:
    """Turn a first SIGINT or SIGTERM into a stop request honoured between steps.

    An interrupt inside optimizer.step() would leave half-updated weights to checkpoint;
    a second signal interrupts at once (the last periodic checkpoint stays).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in sigs}

    def first(signum, frame):
        request_stop(signum)
        for sig in sigs:
            signal.signal(sig, signal.default_int_handler)

    for sig in sigs:
        signal.signal(sig, first)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


