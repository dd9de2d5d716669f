"""`rest sample`: the Grow step, N candidates per source from a policy (CTranslate2)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..records import RecordReader, RecordWriter
from .common import InputArg, OutputOpt, SkipInvalidOpt, handles_errors, log, progress, report_skipped

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model directory (from `rest finetune`).")]


@handles_errors("sample")
def sample(
    input: InputArg = "-",
    model: ModelOpt = ...,
    n: Annotated[int, typer.Option("-n", help="Candidates per source.")] = 4,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (the paper's Grow uses 0.8).")] = 0.8,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample from the K most likely tokens; 0 = all.")] = 0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass.")] = 1.0,
    beam: Annotated[Optional[int], typer.Option(
        help="Beam search with this beam instead of sampling (1 = greedy); returns the -n best.")] = None,
    max_length: Annotated[int, typer.Option(help="Longest candidate, in tokens.")] = 256,
    max_input_length: Annotated[int, typer.Option(help="Longer sources are truncated (and counted).")] = 1024,
    include_ref: Annotated[bool, typer.Option(
        "--include-ref", help="Also emit each source's `ref` as a candidate (origin: ref).")] = False,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same samples.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    compute_type: Annotated[str, typer.Option(help="auto (int8 on CPU, int8_float16 on CUDA), float32, ...")] = "auto",
    threads: Annotated[int, typer.Option(help="Threads per translator (0: CTranslate2 decides).")] = 0,
    inter_threads: Annotated[int, typer.Option(help="Translators in parallel.")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Sources per batch (see --batch-type).")] = 32,
    batch_type: Annotated[str, typer.Option(help="examples or tokens.")] = "examples",
    output: OutputOpt = "-",
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Write N candidates per source record (`hyp`, `k`, `logprob`), grouped by source, in input order."""
    from ..sampling import DecodeOptions, EngineOptions, SampleStats, Sampler, with_ids

    decode = DecodeOptions(n=n, temperature=temperature, top_k=top_k, top_p=top_p, beam=beam,
                           max_length=max_length, max_input_length=max_input_length)
    engine = EngineOptions(device=device, compute_type=compute_type, threads=threads, inter_threads=inter_threads,
                           batch_size=batch_size, batch_type=batch_type, seed=seed)
    reader = RecordReader(input, required=["src"] + (["ref"] if include_ref else []), optional=["id"],
                          skip_invalid=skip_invalid, needed_by="rest sample")
    sampler = Sampler(model, engine)
    log("sample", f"{model}: {decode.describe()} on {sampler.device} ({sampler.compute_type})")
    stats = SampleStats()
    with RecordWriter(output) as writer:
        writer.write_all(progress(sampler.sample(with_ids(reader), decode, stats, include_ref), "sampling"))
    report_skipped("sample", reader)
    log("sample", stats.summary())
