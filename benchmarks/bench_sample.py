"""`rest sample` against raw CTranslate2 on the same model, settings and inputs.

    .venv/bin/python benchmarks/bench_sample.py [--sources 256] [-n 8] [--preset base]

Builds a random policy (tokenizer trained on the sources) as a model directory, then times
  1. raw CTranslate2: translate_iterable on pre-tokenized pieces, in-process, nothing written;
  2. `rest sample` end to end in a subprocess: JSONL in, tokenization, decoding, JSONL out.
Both use the same seed, so they draw the same tokens. Prints tokens/s and candidates/s of
each and the ratio (rest / raw). Sources: the Multi30k German validation set when
../shared/data is present, else synthetic sentences.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
MULTI30K = REPO.parent / "shared" / "data" / "multi30k-de-en" / "val.de"


def load_sources(count: int) -> list[str]:
    if MULTI30K.exists():
        lines = [line.strip() for line in MULTI30K.read_text().splitlines() if line.strip()]
        return (lines * (count // len(lines) + 1))[:count]
    rng = random.Random(0)
    words = "ein Mann eine Frau Hund läuft springt über den roten Ball im Park mit zwei Kindern".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 16))) for _ in range(count)]


def build_model(directory: Path, texts: list[str], preset: str) -> Path:
    import torch

    from rest_cli.models.modeldir import save_model_dir
    from rest_cli.models.native.config import config_from_preset
    from rest_cli.models.native.tokenizer import Tokenizer, train_tokenizer
    from rest_cli.models.native.transformer import Seq2SeqTransformer

    spm = train_tokenizer(texts, directory / "spm", vocab_size=8000)
    torch.manual_seed(0)
    model = Seq2SeqTransformer.from_config(config_from_preset(preset, Tokenizer(spm).vocab_size, dropout=0.0))
    return save_model_dir(directory / "model", model, spm, {"note": "random, for benchmarks"})


def raw_ctranslate2(model_dir: Path, texts: list[str], args) -> tuple[float, int, int]:
    """Seconds, candidates and tokens for CTranslate2 alone (tokenized beforehand, untimed)."""
    import ctranslate2

    from rest_cli.models.native.tokenizer import Tokenizer
    from rest_cli.sampling import DecodeOptions

    pieces = Tokenizer(model_dir / "spm.model").encode_pieces(texts)
    ctranslate2.set_random_seed(0)
    translator = ctranslate2.Translator(str(model_dir / "ctranslate2"), device="cpu",
                                        compute_type=args.compute_type, intra_threads=args.threads)
    options = DecodeOptions(n=args.n, max_length=args.max_length).ctranslate2_kwargs()
    start = time.perf_counter()
    results = list(translator.translate_iterable(pieces, max_batch_size=args.batch_size, **options))
    elapsed = time.perf_counter() - start
    hypotheses = [h for r in results for h in r.hypotheses]
    return elapsed, len(hypotheses), sum(map(len, hypotheses))


def rest_sample(model_dir: Path, source_file: Path, args) -> tuple[float, int, int]:
    """Seconds, candidates and tokens for the whole `rest sample` command (start-up included)."""
    command = [sys.executable, "-m", "rest_cli", "sample", "-m", str(model_dir), "-n", str(args.n),
               "--max-length", str(args.max_length), "--compute-type", args.compute_type,
               "--threads", str(args.threads), "--batch-size", str(args.batch_size), str(source_file)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, check=True, cwd=REPO)
    elapsed = time.perf_counter() - start
    stderr = result.stderr.decode()
    tokens = int(stderr.split(" candidates, ")[1].split(" tokens")[0])
    return elapsed, result.stdout.count(b"\n"), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, default=256)
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts = load_sources(args.sources)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp), texts, args.preset)
        source_file = Path(tmp) / "src.jsonl"
        source_file.write_bytes(b"".join(orjson.dumps({"id": i, "src": t}) + b"\n"
                                         for i, t in enumerate(texts)))
        print(f"{args.sources} sources x {args.n} samples, preset {args.preset}, {args.compute_type}, "
              f"{args.threads} threads, batch {args.batch_size}, up to {args.max_length} tokens")
        raw = min((raw_ctranslate2(model_dir, texts, args) for _ in range(args.repeats)), key=lambda r: r[0])
        ours = min((rest_sample(model_dir, source_file, args) for _ in range(args.repeats)),
                   key=lambda r: r[0])
    for name, (seconds, candidates, tokens) in (("raw CTranslate2", raw), ("rest sample", ours)):
        print(f"{name:16} {seconds:7.2f} s {tokens / seconds:9.0f} tokens/s "
              f"{candidates / seconds:8.1f} candidates/s")
    print(f"rest sample / raw CTranslate2: tokens/s ratio {ours[2] / ours[0] / (raw[2] / raw[0]):.3f} "
          f"(same tokens drawn: {ours[2] == raw[2]})")


if __name__ == "__main__":
    main()
