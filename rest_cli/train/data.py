"""Training data for `rest finetune`: pairs read from JSONL, tokenized, and cut into batches.

Batches are length-bucketed: the records are shuffled, sorted by length within large chunks,
cut into batches of at most `batch_tokens` tokens including padding, and the batch order is
shuffled again; all of it from (seed, epoch), so a run is reproducible and can be resumed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import orjson
import torch

from rest_cli.io.records import RecordReader
from rest_cli.models.base import Batch, PolicyKind, Tokenizer

# Weights the float32 loss can hold: weight x tokens x NLL stays finite, and no weight rounds to 0.
MIN_WEIGHT, MAX_WEIGHT = 1e-30, 1e30
_CHUNK = 16384  # records sorted together: long enough to bucket well, short enough to keep batches varied
_ENCODE_CHUNK = 8192


# --- Data ----------------------------------------------------------------------------------

@dataclass
class Pair:
    """One training example: source text, target text, loss weight."""

    src: str
    tgt: str
    weight: float = 1.0
    tgt_lang: str | None = None  # the target language, for a model that is told it (NLLB, M2M100)
    numbers: tuple[float, ...] = ()  # the record's numbers the objective reads (its `numbers`), in that order


@dataclass
class DataStats:
    """What became of one input file's records; goes into training.json."""

    path: str
    records: int = 0  # valid records read
    used: int = 0  # records trained on
    skipped: int = 0  # invalid records passed over with skip_invalid
    first_problem: str | None = None
    zero_weight: int = 0
    empty_src: int = 0  # no source tokens: nothing for the encoder to attend to
    truncated: int = 0  # source or target cut to max_length tokens
    sha256: str = ""  # of the (src, target, weight) triples, so a resumed run can tell it has the same data


def load_pairs(path: str, skip_invalid: bool = False, share: tuple[int, int] = (0, 1),
               fields: tuple[tuple[str, ...], tuple[str, ...]] = (("src",), ("hyp", "ref", "weight")),
               numbers: tuple[str, ...] = (), needed_by: str = "finetune") -> tuple[list[Pair], DataStats]:
    """Read the training pairs of a JSONL file (or '-'), dropping weight-0 records.

    The target is `hyp` if present, else `ref`; a record with neither, or a negative weight,
    is an InputError at its line (counted instead with `skip_invalid`). With `share=(k, n)`
    only pairs k, k + n, k + 2n, ... are kept (a rank's slice under torchrun); every record is
    still checked, counted and hashed. `fields` are the (required, optional) fields the
    objective reads, checked on every record (a missing one is named with `needed_by`); `numbers`,
    of the required fields, those kept in each Pair (and hashed with it).
    """
    reader = RecordReader(path, required=fields[0], optional=fields[1], skip_invalid=skip_invalid,
                          needed_by=needed_by)
    stats, pairs, digest, seen = DataStats(reader.name), [], hashlib.sha256(), 0
    for record in reader:
        pair = _pair(record, reader, numbers)
        if pair is None:
            continue
        stats.records += 1
        hashed = ([pair.src, pair.tgt, pair.weight] + ([pair.tgt_lang] if pair.tgt_lang is not None else [])
                  + list(pair.numbers))
        digest.update(orjson.dumps(hashed, option=orjson.OPT_APPEND_NEWLINE))
        if pair.weight == 0:
            stats.zero_weight += 1
            continue
        if seen % share[1] == share[0]:
            pairs.append(pair)
        seen += 1
    stats.skipped, stats.first_problem, stats.sha256 = (reader.skipped, reader.first_problem,
                                                         digest.hexdigest())
    return pairs, stats


def _pair(record: dict, reader: RecordReader, numbers: tuple[str, ...] = ()) -> Pair | None:
    target = record.get("hyp", record.get("ref"))
    weight, language = record.get("weight", 1.0), record.get("tgt_lang")
    if target is None:
        problem = "the record has neither 'hyp' nor 'ref' (finetune trains on hyp, else ref)"
    elif language is not None and not isinstance(language, str):
        problem = f"field 'tgt_lang' must be a string, got {language!r}"
    elif weight < 0:
        problem = f"field 'weight' must not be negative, got {weight!r}"
    elif weight != 0 and not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        problem = (f"field 'weight' must be 0 or between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}, got {weight!r} "
                   f"(the loss is computed in float32)")
    else:
        return Pair(record["src"], target, float(weight), language, tuple(float(record[n]) for n in numbers))
    return reader.reject(problem)


@dataclass
class TokenizedPairs:
    """Pairs as token ids, each side stored flat with offsets so that large sets stay small in memory."""

    src: np.ndarray  # int32, all sources concatenated
    src_start: np.ndarray  # int64 [n + 1]: source i is src[src_start[i]:src_start[i + 1]]
    tgt: np.ndarray
    tgt_start: np.ndarray
    weights: np.ndarray  # float32 [n]
    cut: np.ndarray  # bool [n]: target truncated, so its EOS is not trained
    # int64 [n]: each record's position in the pairs it was made from (empty sources leave gaps)
    origin: np.ndarray
    numbers: dict[str, np.ndarray] = field(default_factory=dict)  # float32 [n] per number the objective reads

    def __len__(self) -> int:
        return len(self.weights)

    @property
    def src_lengths(self) -> np.ndarray:
        return np.diff(self.src_start)

    @property
    def tgt_lengths(self) -> np.ndarray:
        return np.diff(self.tgt_start)


def tokenize_pairs(pairs: list[Pair], kind: PolicyKind, tokenizer: Tokenizer, max_length: int,
                   stats: DataStats, numbers: tuple[str, ...] = ()) -> TokenizedPairs:
    """Encode pairs as the policy kind trains them, truncating each side to `max_length` tokens and
    dropping empty sources (counted in stats); `numbers` names the pairs' numbers, kept per record."""
    parts = ([_encode(pairs[start:start + _ENCODE_CHUNK], start, kind, tokenizer, max_length, stats)
              for start in range(0, len(pairs), _ENCODE_CHUNK)]
             or [_encode([], 0, kind, tokenizer, max_length, stats)])
    src, src_lengths, tgt, tgt_lengths, weights, cut, origin = (np.concatenate(column)
                                                                 for column in zip(*parts))
    stats.used = len(weights)
    kept = {name: np.array([pairs[i].numbers[j] for i in origin.tolist()], dtype=np.float32)
            for j, name in enumerate(numbers)}
    return TokenizedPairs(src, _starts(src_lengths), tgt, _starts(tgt_lengths), weights, cut, origin, kept)


def _encode(pairs: list[Pair], start: int, kind: PolicyKind, tokenizer: Tokenizer, max_length: int,
            stats: DataStats) -> tuple[np.ndarray, ...]:
    # One chunk at a time, flattened at once: token lists as Python ints would take 10x the memory.
    ids = kind.encode_pairs(tokenizer, [p.src for p in pairs], [p.tgt for p in pairs],
                            [p.tgt_lang for p in pairs], max_length)
    kept = [i for i, src in enumerate(ids.sources) if src]
    stats.empty_src += len(pairs) - len(kept)
    stats.truncated += sum(ids.cut_sources[i] or ids.cut_targets[i] for i in kept)
    weights = np.array([pairs[i].weight for i in kept], dtype=np.float32)
    cut = np.array([ids.cut_targets[i] for i in kept], dtype=bool)
    origin = np.array([start + i for i in kept], dtype=np.int64)
    return (*_flat([ids.sources[i] for i in kept]), *_flat([ids.targets[i] for i in kept]), weights, cut,
            origin)


def _flat(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """All ids in one int32 array, and each sequence's length."""
    ids = np.fromiter((t for seq in seqs for t in seq), dtype=np.int32)
    return ids, np.array([len(seq) for seq in seqs], dtype=np.int64)


def _starts(lengths: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    return starts


# --- Batches ----------------------------------------------------------------------

def make_batches(src_lengths: np.ndarray, tgt_lengths: np.ndarray, batch_tokens: int, seed: int = 0,
                 epoch: int = 0, shuffle: bool = True, chunk: int = _CHUNK) -> list[np.ndarray]:
    """Index batches whose padded size, rows * (longest source + longest target + 1), fits batch_tokens.

    A record longer than the budget gets a batch of its own. With `shuffle`, the records, then
    the batches, are shuffled by a generator seeded from (seed, epoch): same inputs, same batches.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(src_lengths)) if shuffle else np.arange(len(src_lengths))
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        # stable: ties keep the shuffled order
        part = part[np.lexsort((src_lengths[part], tgt_lengths[part]))]
        batches.extend(_fill(part, src_lengths[part].tolist(), (tgt_lengths[part] + 1).tolist(),
                             batch_tokens))
    return [batches[i] for i in rng.permutation(len(batches))] if shuffle else batches


def _fill(order: np.ndarray, src_lens: list[int], tgt_lens: list[int], budget: int) -> list[np.ndarray]:
    batches, first, longest_src, longest_tgt = [], 0, 0, 0
    for i, (s, t) in enumerate(zip(src_lens, tgt_lens)):
        s, t = max(longest_src, s), max(longest_tgt, t)
        if i > first and (i - first + 1) * (s + t) > budget:
            batches.append(order[first:i])
            first, s, t = i, src_lens[i], tgt_lens[i]
        longest_src, longest_tgt = s, t
    if first < len(order):
        batches.append(order[first:])
    return batches


def collate(data: TokenizedPairs, indices: np.ndarray, kind: PolicyKind, tokenizer: Tokenizer,
            device: torch.device | str = "cpu") -> Batch:
    """The batch of the records `indices`, as the policy kind builds it, with their numbers."""
    sources = [data.src[data.src_start[i]:data.src_start[i + 1]] for i in indices.tolist()]
    targets = [data.tgt[data.tgt_start[i]:data.tgt_start[i + 1]] for i in indices.tolist()]
    batch = kind.collate(tokenizer, sources, targets, data.cut[indices], data.weights[indices], device)
    batch.fields = {name: torch.from_numpy(values[indices]).to(device)
                    for name, values in data.numbers.items()}
    return batch
