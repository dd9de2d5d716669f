"""Sweep CTranslate2 settings for `rest sample`-style decoding, in-process, on one model and input.

    .venv/bin/python benchmarks/bench_sample_tuning.py                        # 256 sources, 3 repeats
    .venv/bin/python benchmarks/bench_sample_tuning.py --sources 512 --repeats 4

Builds the random `base` policy of bench_sample.py (tokenizer trained on the sources, seed 0) and
decodes the sources, pre-tokenized, with the options `rest sample` passes (N samples at
temperature T, the full distribution, scores, up to --max-length tokens) under settings varied
one axis at a time around the current defaults (32 examples per batch, intra_threads 0 = CTranslate2
decides, inter_threads 1, int8):
  batch size in examples (8 .. 128) and in tokens (512 .. 4096; source tokens, CTranslate2's
  count for translate_iterable); intra x inter threads with at most 2 in all (the machine's
  cores); compute types this CTranslate2 supports on the CPU.
Every setting has its own Translator (seeded alike); one repeat runs all of them in an order
rotated each repeat, so drift hits them all. Phase 2 combines the best of each axis and times it
against the defaults again, interleaved, for the recommendation. Reports median tokens/s
(generated tokens, EOS excluded), the best run, and each setting's ratio to the defaults.
Takes about 8 minutes with the defaults on 2 cores shared with other jobs (13 under heavy load).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sample import build_model, load_sources  # noqa: E402


@dataclass(frozen=True)
class Setting:
    batch_size: int = 32
    batch_type: str = "examples"
    intra: int = 0
    inter: int = 1
    compute_type: str = "int8"

    def label(self) -> str:
        return (f"batch {self.batch_size} {self.batch_type}, intra {self.intra} x inter {self.inter}, "
                f"{self.compute_type}")


DEFAULT = Setting()


def sweep(compute_types: list[str]) -> dict[str, list[Setting]]:
    """Settings per axis, each varying one thing from DEFAULT (threads pinned to 2 on the other axes)."""
    two = replace(DEFAULT, intra=2)
    return {
        "batch (examples)": [replace(two, batch_size=b) for b in (8, 16, 32, 64, 128)],
        "batch (tokens)": [replace(two, batch_size=b, batch_type="tokens") for b in (512, 1024, 2048, 4096)],
        "threads": [replace(DEFAULT, intra=i, inter=j) for i, j in ((0, 1), (1, 1), (2, 1), (1, 2))],
        "compute type": [replace(two, compute_type=c) for c in compute_types],
    }


def run(translator, pieces: list[list[str]], setting: Setting, options: dict) -> tuple[float, int, int]:
    """Seconds, candidates and generated tokens for one pass over the sources."""
    start = time.perf_counter()
    results = list(translator.translate_iterable(pieces, max_batch_size=setting.batch_size,
                                                 batch_type=setting.batch_type, **options))
    seconds = time.perf_counter() - start
    hypotheses = [h for r in results for h in r.hypotheses]
    return seconds, len(hypotheses), sum(map(len, hypotheses))


def interleaved(settings: list[Setting], model_path: Path, pieces, options,
                repeats: int) -> dict[Setting, list]:
    """Time every setting `repeats` times, rotating the order each repeat."""
    import ctranslate2

    translators = {}
    for s in settings:
        ctranslate2.set_random_seed(0)  # before the Translator exists, or it has no effect
        translators[s] = ctranslate2.Translator(str(model_path), device="cpu", compute_type=s.compute_type,
                                                intra_threads=s.intra, inter_threads=s.inter)
    runs = {s: [] for s in settings}
    for repeat in range(repeats):
        shift = repeat * len(settings) // max(repeats, 1)
        for s in settings[shift:] + settings[:shift]:
            runs[s].append(run(translators[s], pieces, s, options))
        print(f"  repeat {repeat + 1}/{repeats} done", file=sys.stderr, flush=True)
    return runs


def rate(results: list) -> tuple[float, float]:
    """Median and best tokens/s of a setting's runs."""
    rates = [tokens / seconds for seconds, _, tokens in results]
    return statistics.median(rates), max(rates)


def table(title: str, groups: dict[str, list[Setting]], runs: dict[Setting, list], baseline: Setting) -> None:
    base_median, base_best = rate(runs[baseline])
    print(f"\n{title}\n| axis | setting | tokens/s median | [best] | candidates/s | mean length "
          "| vs defaults (median) | [best] |")
    print("|---|---|---|---|---|---|---|---|")
    for axis, settings in groups.items():
        for s in settings:
            median, best = rate(runs[s])
            cands = statistics.median(c / sec for sec, c, _ in runs[s])
            mean_len = sum(r[2] for r in runs[s]) / sum(r[1] for r in runs[s])
            mark = " (defaults)" if s == baseline else ""
            print(f"| {axis} | {s.label()}{mark} | {median:,.0f} | [{best:,.0f}] | {cands:,.1f} | "
                  f"{mean_len:.2f} | {median / base_median:.3f} | [{best / base_best:.3f}] |")


def best_of_axes(groups: dict[str, list[Setting]], runs: dict[Setting, list]) -> Setting:
    """DEFAULT with each axis's fastest value (by median tokens/s)."""
    pick = {axis: max(settings, key=lambda s: rate(runs[s])[0]) for axis, settings in groups.items()}
    batch = max((pick["batch (examples)"], pick["batch (tokens)"]), key=lambda s: rate(runs[s])[0])
    threads, compute = pick["threads"], pick["compute type"]
    return Setting(batch.batch_size, batch.batch_type, threads.intra, threads.inter, compute.compute_type)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, default=256)
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--final-repeats", type=int, default=4, help="repeats of phase 2 (best vs defaults)")
    args = parser.parse_args()
    import ctranslate2

    from rest_cli.models.native.tokenizer import Tokenizer
    from rest_cli.sampling import DecodeOptions

    supported = ctranslate2.get_supported_compute_types("cpu")
    compute_types = [c for c in ("int8", "int8_float32", "float32") if c in supported]
    options = DecodeOptions(n=args.n, max_length=args.max_length).ctranslate2_kwargs()
    texts = load_sources(args.sources)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp), texts, args.preset)
        pieces = Tokenizer(model_dir / "spm.model").encode_pieces(texts)
        print(f"CTranslate2 {ctranslate2.__version__}, CPU compute types supported: "
              f"{', '.join(sorted(supported))}; preset {args.preset}, {args.sources} sources "
              f"(mean {sum(map(len, pieces)) / len(pieces):.1f} tokens) "
              f"x {args.n} samples, T={DecodeOptions().temperature}, up to {args.max_length} tokens")
        groups = sweep(compute_types)
        settings = list(dict.fromkeys(s for group in groups.values() for s in group))
        print(f"phase 1: {len(settings)} settings x {args.repeats} repeats", file=sys.stderr)
        runs = interleaved(settings, model_dir / "ctranslate2", pieces, options, args.repeats)
        table(f"Phase 1: one axis at a time, {args.repeats} repeats interleaved", groups, runs, DEFAULT)

        best = best_of_axes(groups, runs)
        finalists = list(dict.fromkeys([DEFAULT, best, replace(DEFAULT, intra=2)]))
        print(f"phase 2: {len(finalists)} settings x {args.final_repeats} repeats", file=sys.stderr)
        final = interleaved(finalists, model_dir / "ctranslate2", pieces, options, args.final_repeats)
        table(f"Phase 2: best of each axis against the defaults, {args.final_repeats} repeats interleaved",
              {"final": finalists}, final, DEFAULT)
    median, best_run = rate(final[best])
    base_median, base_best = rate(final[DEFAULT])
    print(f"\nrecommended: {best.label()}: {median / base_median:.3f}x the defaults' tokens/s "
          f"(medians; best runs {best_run / base_best:.3f}x)")


if __name__ == "__main__":
    main()
