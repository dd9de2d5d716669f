"""The Grow step's engine: sample (or decode) candidates from a policy with CTranslate2.

The policy's kind names the engine: a `Translator` for encoder-decoder models (`src` is the
source), a `Generator` for decoder-only ones (`src` becomes the prompt, the candidate is its
continuation). Records stream through the engine's `translate_iterable` or `generate_iterable`,
which batch, sort locally by length and prefetch while keeping input order; only the records in
flight are held in memory. The kind turns each record into what the engine reads (`prompts`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice, tee
from pathlib import Path
from typing import Any

from rest_cli.errors import RestError, UsageError
from rest_cli.io.records import Record

# Sources tokenized per tokenizer call: batching the tokenizer keeps its cost in the noise.
_TOKENIZE_CHUNK = 512
# The CTranslate2 class that decodes each kind of engine a policy kind names (models/base.py).
_ENGINES = {"translator": "Translator", "generator": "Generator"}
# Fields a candidate gets afresh: a source record that carries them (say, a scored file fed back
# in) must not pass a stale reward on to new candidates.
_CANDIDATE_FIELDS = ("hyp", "k", "logprob", "origin", "reward", "reward_name", "reward_sig")


@dataclass(frozen=True)
class DecodeOptions:
    """How candidates are drawn. `beam=None` samples; `beam=B` runs beam search (1 = greedy)."""

    n: int = 4                    # candidates per source
    temperature: float = 0.8      # the paper's Grow temperature
    top_k: int = 0                # 0 = the full distribution (CTranslate2's own default of 1 is greedy)
    top_p: float = 1.0
    beam: int | None = None
    max_length: int = 256         # longest candidate, in tokens
    max_input_length: int = 1024  # longer sources are truncated, and counted

    def __post_init__(self):
        if self.n < 1:
            raise UsageError(f"-n must be at least 1, got {self.n}")
        if self.beam is not None and not 1 <= self.n <= self.beam:
            raise UsageError("beam search returns at most --beam candidates: "
                             f"-n {self.n} > --beam {self.beam}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise UsageError("need --temperature > 0, 0 < --top-p <= 1 and --top-k >= 0")

    def ctranslate2_kwargs(self, prefix_length: int = 0) -> dict:
        """Options for translate_iterable. Scores are total log-probs (length_penalty 0).

        A target prefix of `prefix_length` tokens counts in CTranslate2's decoding length, not in
        the candidate's (nor in its score).
        """
        common = dict(num_hypotheses=self.n, max_decoding_length=self.max_length + prefix_length,
                      return_scores=True,
                      length_penalty=0.0, min_decoding_length=0, max_input_length=0)
        return dict(common, **self._search())

    def generator_kwargs(self) -> dict:
        """The same options for generate_iterable: the candidate is the continuation, not the prompt."""
        common = dict(num_hypotheses=self.n, max_length=self.max_length, return_scores=True,
                      length_penalty=0.0, min_length=0, include_prompt_in_result=False)
        return dict(common, **self._search())

    def _search(self) -> dict:
        if self.beam is not None:
            return dict(beam_size=self.beam)
        return dict(beam_size=1, sampling_temperature=self.temperature, sampling_topk=self.top_k,
                    sampling_topp=self.top_p)

    def describe(self) -> str:
        if self.beam is not None:
            return f"beam:{self.beam}|n:{self.n}|max_len:{self.max_length}"
        return (f"sample|n:{self.n}|T:{self.temperature:g}|top_k:{self.top_k}|top_p:{self.top_p:g}|"
                f"max_len:{self.max_length}")


@dataclass(frozen=True)
class EngineOptions:
    """Where and how CTranslate2 runs."""

    device: str = "auto"          # auto: cuda when CTranslate2 sees a GPU, else cpu
    compute_type: str = "auto"    # auto: int8 on CPU, int8_float16 on CUDA
    threads: int = 0              # intra-op threads per translator (0: CTranslate2 decides)
    inter_threads: int = 1        # batches decoded in parallel, per device
    device_indices: tuple[int, ...] = (0,)  # GPUs: one worker (or inter_threads workers) on each
    batch_size: int = 32
    batch_type: str = "examples"  # or "tokens"
    seed: int = 0

    def __post_init__(self):
        if self.batch_type not in ("examples", "tokens"):
            raise UsageError(f"--batch-type must be examples or tokens, got {self.batch_type!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if not self.device_indices or any(index < 0 for index in self.device_indices):
            raise UsageError(f"--device-index needs GPU numbers >= 0, got {self.device_indices}")
        if self.device == "cpu" and self.device_indices != (0,):
            raise UsageError("--device-index picks GPUs: it needs --device cuda (or auto on a GPU machine)")


@dataclass
class SampleStats:
    sources: int = 0
    candidates: int = 0
    tokens: int = 0
    truncated_sources: int = 0
    started: float = field(default_factory=time.perf_counter)

    def summary(self) -> str:
        seconds = max(time.perf_counter() - self.started, 1e-9)
        return (f"{self.sources} sources, {self.candidates} candidates, "
                f"{self.tokens} tokens in {seconds:.1f} s: "
                f"{self.sources / seconds:.1f} sources/s, {self.tokens / seconds:.0f} tokens/s"
                + (f"; {self.truncated_sources} sources truncated" if self.truncated_sources else ""))


def resolve_engine(options: EngineOptions) -> tuple[str, str]:
    """The concrete device and compute type for `options` on this machine."""
    import ctranslate2

    device = options.device
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute_type = options.compute_type
    if compute_type == "auto":
        compute_type = "int8_float16" if device == "cuda" else "int8"
    return device, compute_type


class Sampler:
    """A policy loaded for decoding: its tokenizer and its CTranslate2 engine (`translator`, which is a
    Translator or a Generator as the policy's kind says)."""

    def __init__(self, model_dir: str, engine: EngineOptions = EngineOptions()):
        import ctranslate2

        from rest_cli.models.modeldir import CT2, ModelDirError, kind_of, load_tokenizer

        self.engine = engine
        self.device, self.compute_type = resolve_engine(engine)
        if self.device == "cpu" and engine.device_indices != (0,):
            raise UsageError("--device-index picks GPUs, and CTranslate2 sees none here")
        self.tokenizer = load_tokenizer(model_dir)  # checks the directory first, for a clear error
        self.kind = kind_of(model_dir)
        self.stops = self.kind.stops(self.tokenizer)
        self.kind_options = self.kind.engine_options(self.tokenizer)  # end tokens, a cached static prompt
        model_path, engine_class = Path(model_dir) / CT2, _ENGINES[self.kind.engine]
        # The seed must be set before the translator exists; later calls have no effect.
        ctranslate2.set_random_seed(engine.seed)
        try:
            self.translator = getattr(ctranslate2, engine_class)(
                str(model_path), device=self.device, device_index=list(engine.device_indices),
                compute_type=self.compute_type, intra_threads=engine.threads,
                inter_threads=engine.inter_threads)
        except (RuntimeError, ValueError, OSError) as err:
            raise ModelDirError(f"{model_path}: cannot load the CTranslate2 model: {err}") from None

    @property
    def parallel_workers(self) -> int:
        """Translator replicas decoding batches at the same time."""
        return self.engine.inter_threads * (len(self.engine.device_indices) if self.device == "cuda" else 1)

    def _input_room(self, options: DecodeOptions) -> int:
        """The longest source or prompt, in tokens: --max-input-length, within the model's positions."""
        limit = self.kind.position_limit(self.tokenizer)
        if limit is None:
            return options.max_input_length
        if options.max_length >= limit:
            raise UsageError(f"--max-length {options.max_length}: this policy reads at most {limit} positions"
                             + (", its prompt included" if self.kind.engine == "generator" else ""))
        # A decoder-only model reads the prompt and the candidate in the same positions.
        room = limit - options.max_length if self.kind.engine == "generator" else limit
        return min(options.max_input_length, room)

    def _prompts(self, records: Iterable[Record], pending: deque, options: DecodeOptions, room: int,
                 stats: SampleStats) -> Iterator[Any]:
        """What the engine reads per record; each record waits in `pending` until its result is back."""
        iterator = iter(records)
        while chunk := list(islice(iterator, _TOKENIZE_CHUNK)):
            prompts = self.kind.prompts(self.tokenizer, chunk, room)
            for record, prompt in zip(chunk, prompts):
                stats.truncated_sources += prompt.truncated
                pending.append((record, prompt))
                yield prompt

    def sample(self, records: Iterable[Record], options: DecodeOptions, stats: SampleStats,
               include_ref: bool = False) -> Iterator[Record]:
        """Yield `options.n` candidate records per source record, grouped by source, in input order.

        Each candidate copies its source record and adds `hyp`, `k`, `logprob` (total log-prob
        under the policy, EOS included) and `origin: "sample"`. With `include_ref`, a source's
        `ref` follows as one more candidate with `origin: "ref"` and no `logprob`.
        """
        pending: deque[tuple[Record, Any]] = deque()
        prompts = self._prompts(records, pending, options, self._input_room(options), stats)
        batching = dict(max_batch_size=self.engine.batch_size, batch_type=self.engine.batch_type,
                        **self.kind_options)
        if self.kind.engine == "generator":
            results = self.translator.generate_iterable((p.tokens for p in prompts), **batching,
                                                        **options.generator_kwargs())
        elif (first := next(prompts, None)) is not None and first.prefix:  # a policy's prompts all have one
            # Sources and target prefixes are read in step (zip_longest), so the copy holds one prompt.
            sources, prefixes = tee(chain([first], prompts))
            results = self.translator.translate_iterable(
                (p.tokens for p in sources), (p.prefix for p in prefixes), **batching,
                **options.ctranslate2_kwargs(prefix_length=len(first.prefix)))
        else:
            results = self.translator.translate_iterable(
                (p.tokens for p in chain([first] if first else [], prompts)), **batching,
                **options.ctranslate2_kwargs())
        for result in results:
            source, prompt = pending.popleft()
            stats.sources += 1
            yield from self._candidates(source, prompt, result, include_ref, stats)

    def _candidates(self, source: Record, prompt, result, include_ref: bool,
                    stats: SampleStats) -> Iterator[Record]:
        source = {key: value for key, value in source.items() if key not in _CANDIDATE_FIELDS}
        # A Translator's hypotheses start with the target prefix it was given; a candidate does not.
        candidates = (result.sequences if self.kind.engine == "generator"
                      else [tokens[len(prompt.prefix):] for tokens in result.hypotheses])
        texts, scores = self.tokenizer.decode(candidates), result.scores
        if self.stops:
            candidates, texts, scores = self._cut_at_stops(prompt, candidates, texts, scores)
        for k, (text, pieces, score) in enumerate(zip(texts, candidates, scores)):
            if not math.isfinite(score):  # JSON has no NaN: it would be written as null, a non-number
                raise RestError(f"the policy gave the log-probability {score} to a candidate of source "
                                f"{source.get('id')!r}: its weights are not finite numbers (damaged, or "
                                f"trained into overflow)")
            stats.candidates += 1
            stats.tokens += len(pieces)
            yield {**source, "hyp": text, "k": k, "logprob": score, "origin": "sample"}
        if include_ref and "ref" in source:
            stats.candidates += 1
            yield {**source, "hyp": source["ref"], "k": len(texts), "origin": "ref"}


    def _cut_at_stops(self, prompt, candidates: list[list[str]], texts: list[str], scores: list[float]):
        """Candidates that ran past a stop string end before it, and are scored again through the tokens
        that wrote it (as an end token is scored); then ranked again by score, best first.

        CTranslate2 stops only at single tokens, so a longer stop string is found in the text afterwards.
        """
        cut = [i for i, text in enumerate(texts) if any(stop in text for stop in self.stops)]
        if not cut:
            return candidates, texts, scores
        candidates, texts, scores = list(candidates), list(texts), list(scores)
        for i in cut:
            candidates[i] = candidates[i][:self._tokens_through_stop(candidates[i])]
            text = self.tokenizer.decode([candidates[i]])[0]
            texts[i] = text[:min(text.find(s) for s in self.stops if s in text)]
        start = self.kind_options.get("static_prompt", []) + prompt.tokens
        rescored = self.translator.score_batch([start + candidates[i] for i in cut])
        for i, result in zip(cut, rescored):
            scores[i] = math.fsum(result.log_probs[len(result.log_probs) - len(candidates[i]):])
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [candidates[i] for i in order], [texts[i] for i in order], [scores[i] for i in order]

    def _tokens_through_stop(self, pieces: list[str]) -> int:
        """The fewest leading tokens whose text holds a stop string (a binary search over prefixes)."""
        low, high = 1, len(pieces)
        while low < high:
            middle = (low + high) // 2
            text = self.tokenizer.decode([pieces[:middle]])[0]
            if any(stop in text for stop in self.stops):
                high = middle
            else:
                low = middle + 1
        return low


def with_ids(records: Iterable[Record]) -> Iterator[Record]:
    """Give records without an `id` their 0-based position in the input, so candidates can be grouped."""
    for index, record in enumerate(records):
        if "id" not in record:
            record = {"id": index, **record}
        yield record
