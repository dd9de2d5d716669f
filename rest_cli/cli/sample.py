"""`rest sample`: the Grow step, N candidates per source from a policy (CTranslate2)."""

from __future__ import annotations

from dataclasses import asdict, replace
from itertools import islice
from typing import Annotated, Literal, Optional

import typer

from rest_cli.cli.common import (
    InputArg,
    OutputOpt,
    SkipInvalidOpt,
    handles_errors,
    log,
    report_skipped,
)
from rest_cli.cli.progress import count_lines, progress
from rest_cli.errors import UsageError
from rest_cli.io.records import RecordReader, RecordWriter
from rest_cli.io.resumable import ResumableOutput, file_identity
from rest_cli.io.shards import Shard, derived_seed, shard_records
from rest_cli.models.modeldir import ctranslate2_dir

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model directory (from `rest finetune`).")]


@handles_errors("sample")
def sample(
    input: InputArg = "-",
    model: ModelOpt = ...,
    n: Annotated[int, typer.Option("-n", help="Candidates per source.")] = 4,
    temperature: Annotated[float, typer.Option(
        help="Sampling temperature (the paper's Grow uses 0.8).")] = 0.8,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample from the K most likely tokens; 0 = all.")] = 0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass.")] = 1.0,
    beam: Annotated[Optional[int], typer.Option(
        help="Beam search with this beam instead of sampling (1 = greedy); returns the -n best.")] = None,
    max_length: Annotated[int, typer.Option(help="Longest candidate, in tokens.")] = 256,
    max_input_length: Annotated[int, typer.Option(help="Longer sources are truncated (and counted).")] = 1024,
    include_ref: Annotated[bool, typer.Option(
        "--include-ref", help="Also emit each source's `ref` as a candidate (origin: ref).")] = False,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same samples.")] = 0,
    device: Annotated[Literal["auto", "cpu", "cuda"], typer.Option(
        help="auto: cuda when available.")] = "auto",
    compute_type: Annotated[str, typer.Option(
        help="auto (int8 on CPU, int8_float16 on CUDA), float32, ...")] = "auto",
    threads: Annotated[int, typer.Option(help="Threads per translator (0: CTranslate2 decides).")] = 0,
    inter_threads: Annotated[int, typer.Option(
        help="Batches decoded in parallel (per GPU with --device-index).")] = 1,
    device_index: Annotated[str, typer.Option(
        help="GPUs to sample on, comma-separated (e.g. 0,1,2,3): one worker per GPU.")] = "0",
    shard: Annotated[Optional[str], typer.Option(
        help="K/N: only the K-th of N round-robin shares of the sources, with its own seed derived from "
             "--seed. The N shards together hold every source once.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Keep candidates in OUT.partial as they come; rerun the same command to continue "
                         "an interrupted run. Needs -o.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Sources per batch (see --batch-type).")] = 32,
    batch_type: Annotated[str, typer.Option(help="examples or tokens.")] = "examples",
    output: OutputOpt = "-",
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Write N candidates per source record (`hyp`, `k`, `logprob`), grouped by source, in input order."""
    from rest_cli.sampling import DecodeOptions, EngineOptions, Sampler, SampleStats, with_ids

    decode = DecodeOptions(n=n, temperature=temperature, top_k=top_k, top_p=top_p, beam=beam,
                           max_length=max_length, max_input_length=max_input_length)
    part = Shard.parse(shard) if shard is not None else None
    engine = EngineOptions(device=device, compute_type=compute_type, threads=threads,
                           inter_threads=inter_threads, device_indices=_indices(device_index),
                           batch_size=batch_size, batch_type=batch_type,
                           seed=part.seed(seed) if part else seed)
    reader = RecordReader(input, required=["src"] + (["ref"] if include_ref else []), optional=["id"],
                          skip_invalid=skip_invalid, needed_by="rest sample")
    # Ids come from positions in the whole input, before sharding, so shards keep the ids of one run.
    sources = shard_records(with_ids(reader), part)
    resumable = _resumable(output, input, model, decode, engine, part, include_ref) if resume else None
    if resumable is not None and (done := resumable.open()):
        log("sample", f"resuming {resumable.partial}: {done} sources done")
        sources = islice(sources, done, None)  # the rest draw from their own seed: no sample is drawn twice
        engine = replace(engine, seed=derived_seed(engine.seed, "resume", done))
    sampler = Sampler(model, engine)
    _announce(sampler, model, decode, part)
    stats = SampleStats()
    candidates = sampler.sample(sources, decode, stats, include_ref)
    total = _candidates_expected(input, part, resumable, decode.n + include_ref)
    _write(progress(candidates, "sample", "candidates", total), output, resumable)
    report_skipped("sample", reader)
    log("sample", stats.summary())


def _announce(sampler, model: str, decode, part: Shard | None) -> None:
    log("sample", f"{model}: {decode.describe()} on {sampler.device} ({sampler.compute_type})"
        + (f", shard {part}" if part else ""))
    if sampler.parallel_workers > 1 and decode.beam is None:
        log("sample", f"{sampler.parallel_workers} workers: which batch each one draws depends on timing, so "
                      "the samples are not reproducible from --seed (shards are: --shard K/N)")


def _candidates_expected(input: str, part: Shard | None, resumable: ResumableOutput | None,
                         per_source: int) -> int | None:
    """The candidates this run will write, for progress: None when the input is a stream."""
    sources = count_lines(input)
    if sources is None:
        return None
    if part is not None:
        sources = len(range(part.index - 1, sources, part.count))
    done = resumable.groups_done if resumable is not None else 0
    return max(sources - done, 0) * per_source


def _write(candidates, output: str, resumable: ResumableOutput | None) -> None:
    if resumable is None:
        with RecordWriter(output) as writer:
            writer.write_all(candidates)
    else:
        resumable.write_groups(candidates)
        resumable.finish()


def _indices(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--device-index takes GPU numbers separated by commas, got {text!r}") from None


def _resumable(output: str, input: str, model: str, decode, engine, part,
               include_ref: bool) -> ResumableOutput:
    """OUT.partial, with what identifies the run: resuming with anything else changed is refused.

    Threads, batch size and device may change between tries (a resumed run may land on another
    machine); what decides which candidates are drawn may not.
    """
    if output == "-":
        raise UsageError("--resume needs -o FILE: stdout cannot be continued")
    if input == "-":
        raise UsageError("--resume needs the input as a file: standard input cannot be checked to be "
                         "the same when the run is resumed")
    run = {"input": file_identity(input),
           "model": file_identity(ctranslate2_dir(model) / "model.bin"),
           "decode": asdict(decode), "seed": engine.seed, "shard": str(part), "include_ref": include_ref}
    return ResumableOutput(output, group_size=decode.n + include_ref, run=run)
