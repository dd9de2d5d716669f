"""`rest sample` on imported Hugging Face models against transformers' `generate` and raw CTranslate2.

    .venv/bin/python benchmarks/bench_hf_sample.py [--models llama,marian] [--prompts 64] [-n 4]
        [--max-length 64] [--threads 1] [--batch-size 32] [--repeats 3] [--size small|tiny]

Two random-weight models are built from a config (nothing is downloaded), each with a tokenizer
trained here on Multi30k (../shared/data, else synthetic sentences), saved with `save_pretrained`
and imported with `rest_cli.models.hf.importing.import_model`, the function behind `rest import`:
  - `llama`: LlamaForCausalLM (hf-causal, CTranslate2's Generator), byte-level BPE of 8,000 tokens,
    d 384, 6 layers, 6 heads, ffn 1024: 16.8M parameters;
  - `marian`: MarianMTModel (hf-seq2seq, CTranslate2's Translator), OPUS-MT's layout (one
    SentencePiece model of 8,000 pieces, <pad> last), d 384, 3+3 layers, ffn 1536: 15.9M parameters.
The prompts are Multi30k German validation sentences (the Llama reads each as it is, after <s>).

Timed on the same prompts, N samples each at T=0.8 from the full distribution, up to
--max-length new tokens, batches of --batch-size prompts (x N sequences), --threads threads on
every side (torch.set_num_threads, CTranslate2's intra_threads, `rest sample --threads`):
  1. transformers: `model.generate(do_sample=True, num_return_sequences=N, temperature=0.8,
     top_k=0, top_p=1.0, max_new_tokens=L)`, float32, in-process, model loaded and prompts
     tokenized beforehand (the same token ids rest gives CTranslate2), batches of prompts sorted by
     length (left padding for the Llama), KV cache on; Marian's <pad> is suppressed, as
     CTranslate2 drops it from the vocabulary;
  2. raw CTranslate2: `Generator.generate_iterable` / `Translator.translate_iterable` on the
     same token strings with rest's own decoding options, in-process, model loaded beforehand,
     nothing written; int8 and float32;
  3. `rest sample`, the whole command in a child process (what a user gets: interpreter start-up,
     imports, loading tokenizer and model, reading and tokenizing JSONL, decoding, writing JSONL
     to a file); int8 (its CPU default) and float32. It runs `rest_cli.cli.main.main()` as
     `python -m rest_cli` does, with one addition (TIMED_REST): its SampleStats also reports the
     CPU time from the model loaded to the last record written ("decoding"); whole - decoding is
     the start-up;
  4. `rest sample`'s library path in-process (`Sampler.sample` over the records, the sampler
     built beforehand): the command without its start-up and writing;
  5. transformers' start-up in a child process (import, AutoTokenizer, from_pretrained), so that
     the whole command can also be set against a transformers user's whole run.
All variants of one model run interleaved, `--repeats` times in rotating order; the tables give
medians. Every span is measured in wall time and in the CPU time of the process that ran it
(time.process_time in-process, user + system from /usr/bin/time for children): on a shared
machine the CPU time barely moves when other jobs take the cores, so the ratios use it.

Tokens are counted the same way everywhere: the generated tokens of each sample up to and
including its end token, neither prompt nor padding (a sample cut at --max-length has exactly
--max-length). Random weights rarely end early (EOS is one token of 8,000), but when they do
that sample costs fewer steps; counting each sample's own tokens keeps the comparison exact
whatever the lengths. CTranslate2 returns samples without their end token: one ending before
--max-length gets one token added. rest reports its count without end tokens; with the same
seed and batching it draws exactly what raw CTranslate2 draws, which the script checks (equal
counts), and it then gets the same end tokens added.

Peak RSS of each child comes from /usr/bin/time (%M; ru_maxrss from os.wait4 would count this
large process's pages, which a child holds between fork and exec), beside the model's files on
disk and the floor of children that only import ctranslate2 and load the policy's tokenizer: as
rest does (`load_tokenizer`), and with the class tokenizer_config.json names, loaded directly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
MULTI30K = REPO.parent / "shared" / "data" / "multi30k-de-en"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Model shapes: `small` is what the docs report, `tiny` a smoke test of seconds.
SHAPES = {
    "small": {"llama": dict(vocab=8000, hidden=384, layers=6, heads=6, ffn=1024),
              "marian": dict(vocab=8000, hidden=384, layers=3, heads=6, ffn=1536)},
    "tiny": {"llama": dict(vocab=500, hidden=64, layers=2, heads=4, ffn=128),
             "marian": dict(vocab=500, hidden=64, layers=2, heads=4, ffn=128)},
}
POSITIONS = 512


# --- Texts, tokenizers and models ----------------------------------------------------------

def load_texts(split: str, language: str, count: int) -> list[str]:
    """`count` Multi30k sentences of `split` in `language` (de, en), or synthetic ones without the data."""
    path = MULTI30K / f"{split}.{language}"
    if path.exists():
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return (lines * (count // len(lines) + 1))[:count]
    rng = random.Random(f"{split}{language}")
    words = ("ein Mann eine Frau Hund läuft springt über den roten Ball im Park mit zwei Kindern a man woman "
             "dog runs jumps over the red ball in park with two children").split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 16))) for _ in range(count)]


def tokenizer_corpus(count: int = 20000) -> list[str]:
    """German and English training sentences: what the tokenizers learn from."""
    return load_texts("train", "de", count // 2) + load_texts("train", "en", count // 2)


def _byte_bpe(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer as Llama's: <unk> <s> </s> first, <s> before every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def _save(folder: Path, model, tokenizer) -> Path:
    from transformers.utils import logging

    logging.disable_progress_bar()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_llama(folder: Path, texts: list[str], shape: dict, seed: int = 0) -> Path:
    """A random LlamaForCausalLM of `shape` with a BPE tokenizer trained on `texts`, saved in `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=_byte_bpe(texts, shape["vocab"]), bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=shape["hidden"], intermediate_size=shape["ffn"],
                         num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                         num_key_value_heads=shape["heads"], max_position_embeddings=POSITIONS,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    return _save(folder, LlamaForCausalLM(config), tok)


def build_marian(folder: Path, texts: list[str], shape: dict, seed: int = 0) -> Path:
    """A random MarianMTModel of `shape` in OPUS-MT's layout (one SentencePiece model for both sides,
    vocab.json with </s> <unk> first and <pad> last), saved in `folder`."""
    import io

    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=proto, model_type="unigram",
                                   vocab_size=shape["vocab"] - 1, hard_vocab_limit=False, minloglevel=2,
                                   unk_id=1, eos_id=0, bos_id=-1, pad_id=-1)  # <pad> comes last, below
    processor = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    tokens = list(dict.fromkeys(["</s>", "<unk>", *pieces, "<pad>"]))
    staging = folder.with_name(folder.name + "-tokenizer")
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    for side in ("source.spm", "target.spm"):
        (staging / side).write_bytes(proto.getvalue())
    with warnings.catch_warnings():  # it recommends sacremoses
        warnings.simplefilter("ignore")
        tok = MarianTokenizer(*(str(staging / name) for name in ("source.spm", "target.spm", "vocab.json")))
    pad = tok.pad_token_id
    config = MarianConfig(vocab_size=len(tok), d_model=shape["hidden"], encoder_layers=shape["layers"],
                          decoder_layers=shape["layers"], encoder_attention_heads=shape["heads"],
                          decoder_attention_heads=shape["heads"], encoder_ffn_dim=shape["ffn"],
                          decoder_ffn_dim=shape["ffn"], max_position_embeddings=POSITIONS, pad_token_id=pad,
                          eos_token_id=tok.eos_token_id, decoder_start_token_id=pad, forced_eos_token_id=None,
                          share_encoder_decoder_embeddings=True)
    torch.manual_seed(seed)
    return _save(folder, MarianMTModel(config), tok)


BUILDERS = {"llama": build_llama, "marian": build_marian}


def build_policy(name: str, work: Path, size: str) -> Path:
    """The Hugging Face folder of model `name` imported as a rest model directory (`rest import`)."""
    from rest_cli.models.hf.importing import import_model
    from rest_cli.models.hf.tokenizer import PromptFormat

    hf = BUILDERS[name](work / f"{name}-hf", tokenizer_corpus(), SHAPES[size][name])
    return import_model(hf, work / f"{name}-rest", PromptFormat())


def model_files(policy: Path) -> dict[str, int]:
    """Sizes on disk of the Hugging Face weights and the CTranslate2 model."""
    return {"safetensors": (policy / "hf" / "model.safetensors").stat().st_size,
            "ctranslate2": (policy / "ctranslate2" / "model.bin").stat().st_size}


def parameters(policy: Path) -> int:
    from rest_cli.models.modeldir import model_config

    return model_config(policy)["parameters"]


# --- Counting ------------------------------------------------------------------------------

@dataclass
class Run:
    """One timed run: wall and CPU seconds, samples, generated tokens (end tokens included), samples
    that ended before --max-length."""

    seconds: float
    cpu: float  # CPU seconds of the process (all its threads), over the same span
    samples: int
    tokens: int
    ended: int
    rss: int | None = None  # peak RSS of the child, bytes
    decoding_s: float | None = None  # rest sample (command): wall and CPU seconds from its model loaded
    decoding_cpu: float | None = None  # to its last record written; the rest is start-up

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


class Clock:
    """Wall and process CPU time of a span: CPU time barely moves when other jobs take the cores."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def ct2_counts(sequences: list[list[str]], max_length: int) -> tuple[int, int]:
    """Tokens and ended samples of CTranslate2's samples: those below max_length ended with an end token."""
    ended = sum(len(s) < max_length for s in sequences)
    return sum(map(len, sequences)) + ended, ended


def hf_counts(generated, ends: list[int]) -> tuple[int, int]:
    """Tokens up to and including the first end token of each row of `generated` [rows, steps], and how
    many rows have one (after it come pad tokens, not counted)."""
    import torch

    is_end = torch.isin(generated, torch.tensor(ends))
    has_end = is_end.any(dim=1)
    first = torch.where(has_end, is_end.int().argmax(dim=1) + 1, generated.shape[1])
    return int(first.sum()), int(has_end.sum())


# --- The sides -----------------------------------------------------------------------------

@dataclass
class Setup:
    """What every side reads: the policy, its prompts as rest makes them, and the settings."""

    policy: Path
    records: list[dict]
    prompts: list  # rest_cli.models.base.Prompt per record: token strings, target prefix
    source_file: Path
    args: argparse.Namespace
    kind: object = None
    tokenizer: object = None
    hf_model: object = None

    @property
    def encoder_decoder(self) -> bool:
        return self.kind.engine == "translator"


def make_setup(policy: Path, work: Path, args) -> Setup:
    from rest_cli.models.modeldir import kind_of, load_model, load_tokenizer

    texts = load_texts("val", "de", args.prompts)
    records = [{"id": i, "src": t} for i, t in enumerate(texts)]
    source_file = work / f"{policy.name}-prompts.jsonl"
    source_file.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    kind, tokenizer = kind_of(policy), load_tokenizer(policy)
    prompts = kind.prompts(tokenizer, records, 1 << 20)
    if any(p.prefix for p in prompts):
        raise RuntimeError("a model with a target prefix: not what this benchmark compares")
    return Setup(policy, records, prompts, source_file, args, kind, tokenizer, load_model(policy).eval())


def decode_options(args):
    from rest_cli.sampling import DecodeOptions

    return DecodeOptions(n=args.n, temperature=0.8, top_k=0, top_p=1.0, max_length=args.max_length)


def run_transformers(setup: Setup, seed: int) -> Run:
    """transformers' generate on the same token ids, batches of prompts sorted by length."""
    import torch
    from transformers import GenerationConfig

    args, tok, model = setup.args, setup.tokenizer, setup.hf_model
    torch.set_num_threads(args.threads)
    ids = [tok.hf.convert_tokens_to_ids(p.tokens) for p in setup.prompts]
    ends = tok.end_ids()
    pad = tok.pad_id if tok.pad_id >= 0 else ends[0]
    config = GenerationConfig(do_sample=True, num_beams=1, num_return_sequences=args.n, temperature=0.8,
                              top_k=0, top_p=1.0, max_new_tokens=args.max_length, min_new_tokens=0,
                              eos_token_id=ends, pad_token_id=pad, use_cache=True)
    if setup.encoder_decoder:  # Marian: the decoder starts from <pad>, which CTranslate2 cannot produce
        config.decoder_start_token_id = model.config.decoder_start_token_id
        config.suppress_tokens = [tok.pad_id]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = [[ids[i] for i in order[s:s + args.batch_size]] for s in range(0, len(order), args.batch_size)]
    tensors = [_padded(batch, pad, left=not setup.encoder_decoder) for batch in batches]
    torch.manual_seed(seed)
    tokens = ended = samples = 0
    with Clock() as clock, torch.inference_mode():
        for input_ids, mask in tensors:
            out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
            generated = out[:, 1:] if setup.encoder_decoder else out[:, input_ids.shape[1]:]
            t, e = hf_counts(generated, ends)
            tokens, ended, samples = tokens + t, ended + e, samples + out.shape[0]
    return Run(clock.wall, clock.cpu, samples, tokens, ended)


def _padded(batch: list[list[int]], pad: int, left: bool):
    import torch

    width = max(map(len, batch))
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, span], mask[row, span] = torch.tensor(seq), 1
    return ids, mask


def run_ctranslate2(setup: Setup, compute_type: str) -> Run:
    """CTranslate2 alone, with rest's decoding options and batching, on pre-made token strings."""
    import ctranslate2

    from rest_cli.models.modeldir import CT2

    args, options = setup.args, decode_options(setup.args)
    ctranslate2.set_random_seed(0)  # as rest sample does: the same draws
    engine = getattr(ctranslate2, "Translator" if setup.encoder_decoder else "Generator")(
        str(setup.policy / CT2), device="cpu", compute_type=compute_type, intra_threads=args.threads)
    batching = dict(max_batch_size=args.batch_size, batch_type="examples",
                    **setup.kind.engine_options(setup.tokenizer))
    tokens = [p.tokens for p in setup.prompts]
    with Clock() as clock:
        if setup.encoder_decoder:
            results = engine.translate_iterable(tokens, **batching, **options.ctranslate2_kwargs())
            sequences = [h for r in results for h in r.hypotheses]
        else:
            results = engine.generate_iterable(tokens, **batching, **options.generator_kwargs())
            sequences = [s for r in results for s in r.sequences]
    return Run(clock.wall, clock.cpu, len(sequences), *ct2_counts(sequences, args.max_length))


def run_rest_library(setup: Setup, compute_type: str) -> Run:
    """`rest sample`'s library path in-process: records in, candidate records out; the sampler (tokenizer
    and model) is loaded beforehand. Tokens as rest counts them (no end tokens)."""
    from rest_cli.sampling import EngineOptions, Sampler, SampleStats, with_ids

    args = setup.args
    sampler = Sampler(str(setup.policy), EngineOptions(device="cpu", compute_type=compute_type,
                                                       threads=args.threads, batch_size=args.batch_size))
    stats = SampleStats()
    with Clock() as clock:
        candidates = sum(1 for _ in sampler.sample(with_ids(iter(setup.records)), decode_options(args),
                                                   stats))
    return Run(clock.wall, clock.cpu, candidates, stats.tokens, -1)


# `rest sample` as `python -m rest_cli` runs it, with one addition: its SampleStats (created once the
# model is loaded, summarised after the last record is written) also reports the CPU time between.
TIMED_REST = """
import sys, time
import rest_cli.sampling as sampling

class TimedStats(sampling.SampleStats):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cpu_started = time.process_time()

    def summary(self):
        return super().summary() + f" [cpu {time.process_time() - self.cpu_started:.4f} s]"

sampling.SampleStats = TimedStats
from rest_cli.cli.main import main
sys.argv = ["rest", *sys.argv[1:]]
main()
"""


def run_rest_command(setup: Setup, compute_type: str, out: Path) -> Run:
    """The whole `rest sample` command in a child process; tokens as it reports them (no end tokens).

    `decoding_s` is the command's own measure (its last line: tokens and tokens/s from the moment the
    model is loaded to the last record written); the rest of the wall time is start-up.
    """
    args = setup.args
    command = [sys.executable, "-c", TIMED_REST, "sample", "-m", str(setup.policy), "-n", str(args.n),
               "--max-length", str(args.max_length), "--temperature", "0.8", "--top-k", "0",
               "--device", "cpu", "--compute-type", compute_type, "--threads", str(args.threads),
               "--batch-size", str(args.batch_size), "-o", str(out), str(setup.source_file)]
    seconds, cpu, rss, stderr = run_child(command)
    # "32 sources, 128 candidates, 8192 tokens in 5.1 s: 6.3 sources/s, 1612 tokens/s [cpu 5.0123 s]"
    summary = stderr.strip().splitlines()[-1]
    tokens = int(summary.split(" candidates, ")[1].split(" tokens")[0])
    rate = float(summary.split(" sources/s, ")[1].split(" tokens/s")[0])
    decoding_cpu = float(summary.split("[cpu ")[1].split(" s]")[0])
    return Run(seconds, cpu, out.read_bytes().count(b"\n"), tokens, -1, rss, tokens / rate, decoding_cpu)


def run_child(command: list[str]) -> tuple[float, float | None, int | None, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS (bytes) and stderr of a child process;
    fails on exit != 0.

    CPU time and peak RSS come from /usr/bin/time: ru_maxrss from os.wait4 would count the pages of
    this (large) process that the child holds between fork and exec. None without /usr/bin/time.
    """
    timer = Path("/usr/bin/time")
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as usage:
        prefix = [str(timer), "-f", "%M %U %S", "-o", usage.name] if timer.exists() else []
        start = time.perf_counter()
        child = subprocess.run(prefix + command, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        seconds = time.perf_counter() - start
        err.seek(0)
        stderr = err.read().decode()
        measured = usage.read().split()[-3:] if prefix else None
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:5])}... exited {child.returncode}:\n{stderr[-2000:]}")
    if measured is None:
        return seconds, None, None, stderr
    return seconds, float(measured[1]) + float(measured[2]), int(measured[0]) * 1024, stderr


def floor_rss(policy: Path) -> dict[str, tuple[float, int | None]]:
    """Seconds and peak RSS of children that load only the policy's tokenizer (and import ctranslate2):
    as rest does (`load_tokenizer`: AutoTokenizer, which imports the model's config class and with it
    torch), and with the tokenizer class its tokenizer_config.json names, loaded directly."""
    rest = (f"import ctranslate2\nfrom rest_cli.models.modeldir import load_tokenizer\n"
            f"load_tokenizer({str(policy)!r})\n")
    direct = (f"import ctranslate2, json, transformers\nfolder = {str(policy / 'hf')!r}\n"
              f"name = json.load(open(folder + '/tokenizer_config.json'))['tokenizer_class']\n"
              f"getattr(transformers, name).from_pretrained(folder, local_files_only=True)\n")
    return {name: run_child([sys.executable, "-W", "ignore", "-c", code])[:3]
            for name, code in (("rest load_tokenizer", rest), ("tokenizer class directly", direct))}


def transformers_startup(policy: Path) -> Run:
    """A child that does what a transformers user does before generate: imports, tokenizer, model."""
    code = (f"import transformers\nfolder = {str(policy / 'hf')!r}\n"
            f"transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)\n"
            f"auto = transformers.AutoModelForSeq2SeqLM if transformers.AutoConfig.from_pretrained("
            f"folder).is_encoder_decoder else transformers.AutoModelForCausalLM\n"
            f"auto.from_pretrained(folder, local_files_only=True, dtype='float32').eval()\n")
    seconds, cpu, rss, _ = run_child([sys.executable, "-W", "ignore", "-c", code])
    return Run(seconds, cpu, 0, 0, 0, rss)


# --- The comparison ------------------------------------------------------------------------

VARIANTS = ("transformers generate, fp32", "raw CTranslate2, int8", "raw CTranslate2, float32",
            "rest sample (library), int8", "rest sample (library), float32",
            "rest sample (command), int8", "rest sample (command), float32", "transformers start-up")


def compare(name: str, work: Path, args) -> dict:
    policy = build_policy(name, work, args.size)
    setup = make_setup(policy, work, args)
    runs: dict[str, list[Run]] = {v: [] for v in VARIANTS}
    sides = {
        VARIANTS[0]: lambda r: run_transformers(setup, seed=r),
        VARIANTS[1]: lambda r: run_ctranslate2(setup, "int8"),
        VARIANTS[2]: lambda r: run_ctranslate2(setup, "float32"),
        VARIANTS[3]: lambda r: run_rest_library(setup, "int8"),
        VARIANTS[4]: lambda r: run_rest_library(setup, "float32"),
        VARIANTS[5]: lambda r: run_rest_command(setup, "int8", work / f"{name}-int8.jsonl"),
        VARIANTS[6]: lambda r: run_rest_command(setup, "float32", work / f"{name}-float32.jsonl"),
        VARIANTS[7]: lambda r: transformers_startup(policy),
    }
    print(f"\n[{name}] {parameters(policy) / 1e6:.1f}M parameters, vocabulary {setup.tokenizer.vocab_size}; "
          f"{len(setup.records)} prompts (mean {statistics.mean(len(p.tokens) for p in setup.prompts):.1f} "
          f"tokens) x {args.n} samples, up to {args.max_length} tokens, {args.threads} thread(s), "
          f"batches of {args.batch_size} prompts", flush=True)
    for repeat in range(args.repeats):
        names = list(VARIANTS[repeat % len(VARIANTS):] + VARIANTS[:repeat % len(VARIANTS)])
        for variant in (names if repeat % 2 == 0 else names[::-1]):
            run = sides[variant](repeat)
            runs[variant].append(run)
            print(f"  repeat {repeat + 1} {variant:32} {run.seconds:6.2f} s (CPU {run.cpu:6.2f} s)"
                  + (f" {run.tokens_per_s:6.0f} tokens/s" if run.tokens else "")
                  + (f", decoding {run.decoding_s:.2f} s (CPU {run.decoding_cpu:.2f} s)"
                     if run.decoding_s else "")
                  + (f", peak RSS {run.rss / 2**20:.0f} MiB" if run.rss else ""), flush=True)
    add_end_tokens(runs)
    return {"name": name, "parameters": parameters(policy), "files": model_files(policy),
            "floor": floor_rss(policy), "runs": runs}


def add_end_tokens(runs: dict[str, list[Run]]) -> None:
    """rest counts tokens without end tokens: with the same seed and batching it draws what raw
    CTranslate2 draws (checked), so it gets raw CTranslate2's end tokens added."""
    for compute in ("int8", "float32"):
        draws = {(r.tokens - r.ended, r.ended) for r in runs[f"raw CTranslate2, {compute}"]}
        if len(draws) != 1:
            raise RuntimeError(f"raw CTranslate2 ({compute}) drew differently from one repeat to the next")
        ((drawn, ended),) = draws
        for side in ("library", "command"):
            for run in runs[f"rest sample ({side}), {compute}"]:
                if run.tokens != drawn:
                    raise RuntimeError(f"rest sample ({side}, {compute}) drew {run.tokens} tokens, raw "
                                       f"CTranslate2 {drawn}: not the same draws")
                run.tokens, run.ended = drawn + ended, ended


def median(values) -> float:
    return statistics.median(values)


@dataclass
class Row:
    label: str
    runs: list[Run]
    wall: list[float]
    cpu: list[float]

    def speed(self, clock: str) -> float:
        """Median tokens per wall (or CPU) second."""
        spans = self.wall if clock == "wall" else self.cpu
        return median([r.tokens / span for r, span in zip(self.runs, spans)])


def rows_of(runs: dict[str, list[Run]]) -> list[Row]:
    rows = [Row(v, runs[v], [r.seconds for r in runs[v]], [r.cpu for r in runs[v]]) for v in VARIANTS[:5]]
    for compute in ("int8", "float32"):
        v = f"rest sample (command), {compute}"
        rows += [Row(f"{v}: decoding", runs[v], [r.decoding_s for r in runs[v]],
                     [r.decoding_cpu for r in runs[v]]),
                 Row(f"{v}: whole", runs[v], [r.seconds for r in runs[v]], [r.cpu for r in runs[v]])]
    generate, startup = runs[VARIANTS[0]], runs[VARIANTS[7]]
    rows.append(Row("transformers: start-up (child) + generate", generate,
                    [g.seconds + median([s.seconds for s in startup]) for g in generate],
                    [g.cpu + median([s.cpu for s in startup]) for g in generate]))
    return rows


def report(results: list[dict], args, elapsed: float) -> None:
    import ctranslate2
    import torch
    import transformers

    print(f"\n=== Results: torch {torch.__version__}, transformers {transformers.__version__}, ctranslate2 "
          f"{ctranslate2.__version__}, {os.cpu_count()} cores, {args.threads} thread(s) per side; "
          f"{args.prompts} prompts x {args.n} samples, up to {args.max_length} tokens; "
          f"{args.repeats} repeats, medians; whole run {elapsed:.0f} s ===")
    print("Speeds are tokens per second of wall time and per second of the process's CPU time (which other "
          "jobs on the machine barely move); the ratios use CPU time.")
    for result in results:
        runs, files, rows = result["runs"], result["files"], rows_of(result["runs"])
        by = {row.label: row for row in rows}
        base = by[VARIANTS[0]].speed("cpu")
        print(f"\n[{result['name']}] {result['parameters'] / 1e6:.1f}M parameters; on disk: safetensors "
              f"{files['safetensors'] / 2**20:.1f} MiB, CTranslate2 model.bin "
              f"{files['ctranslate2'] / 2**20:.1f} MiB")
        print(f"  {'variant':44} {'wall s':>6} {'tok/s':>6} {'tok/CPU s':>9} {'x generate':>10} "
              f"{'x raw CT2':>9} {'tokens':>6} {'ended':>5} {'peak RSS':>8}")
        for row in rows:
            compute = "int8" if "int8" in row.label else "float32"
            raw = by[f"raw CTranslate2, {compute}"].speed("cpu")
            of_raw = f"{row.speed('cpu') / raw:9.3f}" if row.label.startswith("rest") else f"{'-':>9}"
            rss = f"{median([r.rss for r in row.runs]) / 2**20:4.0f} MiB" if row.runs[0].rss else f"{'-':>8}"
            print(f"  {row.label:44} {median(row.wall):6.2f} {row.speed('wall'):6.0f} "
                  f"{row.speed('cpu'):9.0f} {row.speed('cpu') / base:10.2f} {of_raw} "
                  f"{row.runs[0].tokens:6d} {row.runs[0].ended:5d} {rss}")
        for compute in ("int8", "float32"):
            vr = runs[f"rest sample (command), {compute}"]
            print(f"  rest sample start-up ({compute}; whole - decoding): "
                  f"{median([r.seconds - r.decoding_s for r in vr]):.2f} s, CPU "
                  f"{median([r.cpu - r.decoding_cpu for r in vr]):.2f} s")
        startup = runs[VARIANTS[7]]
        print(f"  transformers start-up (child: import, AutoTokenizer, from_pretrained): "
              f"{median([r.seconds for r in startup]):.2f} s, CPU {median([r.cpu for r in startup]):.2f} s, "
              f"peak RSS {median([r.rss or 0 for r in startup]) / 2**20:.0f} MiB")
        for name, (seconds, cpu, rss) in result["floor"].items():
            print(f"  floor, tokenizer only ({name}): {seconds:.2f} s, CPU {cpu or math.nan:.2f} s, peak RSS "
                  f"{rss / 2**20 if rss else math.nan:.0f} MiB")
        decoding = by["rest sample (command), int8: decoding"].speed("cpu") / base
        whole = by["rest sample (command), int8: whole"].speed("cpu") / by[rows[-1].label].speed("cpu")
        print(f"  rest sample int8 / transformers generate: {decoding:.2f}x decoding (target >= 3x: "
              f"{'met' if decoding >= 3 else 'NOT met'}); whole command / start-up + generate: {whole:.2f}x")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="llama,marian", help="comma-separated: llama, marian")
    parser.add_argument("--size", default="small", choices=sorted(SHAPES),
                        help="model shapes (tiny: a smoke test of seconds)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("-n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-length", type=int, default=64, help="most new tokens per sample")
    parser.add_argument("--threads", type=int, default=1, help="threads of every side")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per batch (rest's default)")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = [compare(name, Path(tmp), args) for name in args.models.split(",") if name]
    report(results, args, time.perf_counter() - started)


if __name__ == "__main__":
    main()
