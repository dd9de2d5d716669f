"""A PyTorch sampler with a key/value cache against CTranslate2, on the same policy and inputs.

    .venv/bin/python benchmarks/bench_sample_torch.py                      # base preset, 256 sources x 8
    .venv/bin/python benchmarks/bench_sample_torch.py --preset iwslt --sources 64 --draws inverse-cdf

Builds the same random policy as bench_sample.py (tokenizer trained on the sources, seed 0), then:
  1. checks the PyTorch sampler: its per-step log-probs for given prefixes match the model's full
     forward (Seq2SeqTransformer) within 1e-4 in float32, also after finished sources are dropped,
     and each way of drawing a token follows softmax(logits / T);
  2. times the ways of drawing one token from the full distribution on real logits (multinomial,
     Gumbel-max, exponential race, inverse CDF), interleaved; the fastest and multinomial (the
     earlier sampler's draw) are the PyTorch variants timed below, unless --draws names others;
  3. times, interleaved over repeats, PyTorch (float32) against CTranslate2's translate_iterable in
     int8 and float32 on the model directory's export: N samples per source at temperature T, the
     full distribution, up to --max-length tokens, scores returned, 2 threads, batches of 32 sources.
Reports medians of tokens/s (generated tokens, EOS excluded) and candidates/s, the mean candidate
length of each engine (a random model's lengths differ between engines) and the ratios to PyTorch.
With --fixed-length every engine draws exactly --max-length tokens (EOS can never be drawn).

The PyTorch sampler: the encoder runs once per batch; cross-attention keys and values are
computed once per layer; self-attention keys and values go into preallocated buffers, so a step
costs one token per row; the N samples of a source attend to its memory as N queries of one
batched matmul (the memory is never copied N times); a source whose N samples all ended is
dropped from the batch; sources are sorted by length, as CTranslate2 does.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sample import MULTI30K, build_model, load_sources  # noqa: E402

from rest_cli.models.native.tokenizer import BOS_ID, EOS_ID, PAD_ID  # noqa: E402

NEG_INF = float("-inf")


# --- the sampler ---------------------------------------------------------------------------------

@dataclass
class DecoderLayer:
    """One pre-norm decoder layer as plain tensors; query weights pre-scaled by 1/sqrt(head_dim)."""

    norm1: tuple
    qkv_w: torch.Tensor  # [3d, d]
    qkv_b: torch.Tensor
    self_out: torch.nn.Linear
    norm2: tuple
    q_w: torch.Tensor  # [d, d]
    q_b: torch.Tensor
    kv_w: torch.Tensor  # [2d, d]
    kv_b: torch.Tensor
    cross_out: torch.nn.Linear
    norm3: tuple
    ffn1: torch.nn.Linear
    ffn2: torch.nn.Linear


@dataclass
class State:
    """What a batch of sources carries between steps. B sources, N samples each, R = B * N rows."""

    n: int
    cross_k: list  # per layer [B, H, dh, S] (keys transposed once, for a plain batched matmul)
    cross_v: list  # per layer [B, H, S, dh]
    memory_mask: torch.Tensor  # [B, 1, 1, S]: 0 or -inf at source padding
    self_k: list  # per layer [R, H, max_len, dh], filled up to `step`
    self_v: list
    step: int = 0


class CachedDecoder:
    """Incremental decoding of a Seq2SeqTransformer (eval mode, float32)."""

    def __init__(self, model):
        c = model.config
        self.model, self.d, self.h = model, c.d_model, c.n_heads
        self.dh = c.d_model // c.n_heads
        self.activation = F.relu if c.activation == "relu" else F.gelu
        scale = self.dh ** -0.5
        self.layers = []
        for layer in model.decoder.layers:
            sa, ca, d = layer.self_attn, layer.multihead_attn, c.d_model
            qkv_w, qkv_b = sa.in_proj_weight.detach().clone(), sa.in_proj_bias.detach().clone()
            qkv_w[:d] *= scale
            qkv_b[:d] *= scale
            self.layers.append(DecoderLayer(
                _norm(layer.norm1), qkv_w, qkv_b, sa.out_proj, _norm(layer.norm2),
                ca.in_proj_weight[:d].detach() * scale, ca.in_proj_bias[:d].detach() * scale,
                ca.in_proj_weight[d:].detach(), ca.in_proj_bias[d:].detach(), ca.out_proj,
                _norm(layer.norm3), layer.linear1, layer.linear2))
        self.final_norm = _norm(model.decoder.norm)
        self.embed = model.tgt_embed.weight.detach() * math.sqrt(c.d_model)  # scaled once
        self.lm_head = model.lm_head.weight.detach()
        self.positions = model.positions

    def start(self, src_ids: torch.Tensor, n: int, max_len: int) -> State:
        """Encode sources [B, S] once and precompute each layer's cross-attention keys and values."""
        b, s = src_ids.shape
        memory = self.model.encode(src_ids)  # [B, S, d]
        cross_k, cross_v = [], []
        for layer in self.layers:
            kv = F.linear(memory, layer.kv_w, layer.kv_b).view(b, s, 2, self.h, self.dh)
            cross_k.append(kv[:, :, 0].permute(0, 2, 3, 1).contiguous())  # [B, H, dh, S]
            cross_v.append(kv[:, :, 1].transpose(1, 2).contiguous())  # [B, H, S, dh]
        mask = torch.zeros(b, 1, 1, s).masked_fill_(src_ids.eq(PAD_ID).view(b, 1, 1, s), NEG_INF)
        rows = b * n
        self_k = [torch.empty(rows, self.h, max_len, self.dh) for _ in self.layers]
        self_v = [torch.empty(rows, self.h, max_len, self.dh) for _ in self.layers]
        return State(n, cross_k, cross_v, mask, self_k, self_v)

    def step(self, state: State, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row [R]; return next-token logits [R, V]."""
        t = state.step
        x = self.embed[tokens] + self.positions[t]  # [R, d]
        for i, layer in enumerate(self.layers):
            x = x + self._self_attention(layer, F.layer_norm(x, (self.d,), *layer.norm1), state, i, t)
            x = x + self._cross_attention(layer, F.layer_norm(x, (self.d,), *layer.norm2), state, i)
            h = F.layer_norm(x, (self.d,), *layer.norm3)
            x = x + layer.ffn2(self.activation(layer.ffn1(h)))
        state.step = t + 1
        return F.linear(F.layer_norm(x, (self.d,), *self.final_norm), self.lm_head)

    def _self_attention(self, layer, h, state, i, t):
        rows = h.size(0)
        q, k, v = F.linear(h, layer.qkv_w, layer.qkv_b).view(rows, 3, self.h, self.dh).unbind(1)  # [R, H, dh]
        state.self_k[i][:, :, t] = k
        state.self_v[i][:, :, t] = v
        keys, values = state.self_k[i][:, :, : t + 1], state.self_v[i][:, :, : t + 1]  # [R, H, t+1, dh]
        weights = torch.matmul(keys, q.unsqueeze(-1)).squeeze(-1).softmax(-1)  # [R, H, t+1]
        out = torch.matmul(weights.unsqueeze(-2), values).view(rows, self.d)
        return layer.self_out(out)

    def _cross_attention(self, layer, h, state, i):
        rows, b = h.size(0), state.memory_mask.size(0)
        # The N samples of a source are N queries against its memory: one [N, S] score block per head.
        # [B, H, N, dh]
        q = F.linear(h, layer.q_w, layer.q_b).view(b, state.n, self.h, self.dh).transpose(1, 2)
        weights = (torch.matmul(q, state.cross_k[i]) + state.memory_mask).softmax(-1)  # [B, H, N, S]
        out = torch.matmul(weights, state.cross_v[i]).transpose(1, 2).reshape(rows, self.d)
        return layer.cross_out(out)

    def keep(self, state: State, sources: torch.Tensor) -> None:
        """Keep only the given source indices (and their N rows) in `state`."""
        rows = (sources.unsqueeze(1) * state.n + torch.arange(state.n)).flatten()
        t = state.step
        state.cross_k = [k.index_select(0, sources) for k in state.cross_k]
        state.cross_v = [v.index_select(0, sources) for v in state.cross_v]
        state.memory_mask = state.memory_mask.index_select(0, sources)
        for cache in (state.self_k, state.self_v):
            for i, buffer in enumerate(cache):
                kept = torch.empty(len(rows), *buffer.shape[1:])
                kept[:, :, :t] = buffer[rows, :, :t]
                cache[i] = kept


def _norm(ln: torch.nn.LayerNorm) -> tuple:
    return ln.weight.detach(), ln.bias.detach(), ln.eps


# Ways to draw one token per row from softmax(logits / T) over the full vocabulary.

def draw_multinomial(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.multinomial((logits / temperature).softmax(-1), 1).squeeze(1)


def draw_gumbel(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    gumbel = -torch.empty_like(logits).exponential_().log_()
    return (logits / temperature + gumbel).argmax(-1)


def draw_exponential_race(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    probs = (logits / temperature).softmax(-1)
    return (probs / torch.empty_like(probs).exponential_()).argmax(-1)


def draw_inverse_cdf(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    # Unnormalised weights suffice: the uniform is scaled by each row's total.
    weights = ((logits - logits.amax(-1, keepdim=True)) / temperature).exp_()
    cdf = weights.cumsum_(-1)
    u = torch.rand(len(cdf), 1) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.size(1) - 1)


DRAWS = {"multinomial": draw_multinomial, "gumbel": draw_gumbel, "exponential-race": draw_exponential_race,
         "inverse-cdf": draw_inverse_cdf}


def sample_batch(decoder: CachedDecoder, src_ids: torch.Tensor, n: int, temperature: float, max_length: int,
                 draw, fixed_length: bool = False) -> tuple[list[list[int]], list[float]]:
    """N samples per source [B, S]: token lists (EOS excluded) and total log-probs (untempered, EOS
    included), rows grouped by source. With `fixed_length`, EOS is never drawn."""
    b = src_ids.size(0)
    state = decoder.start(src_ids, n, max_length)
    alive = torch.arange(b)  # original index of each source still in the batch
    tokens = torch.full((b * n,), BOS_ID, dtype=torch.long)
    out = torch.full((b * n, max_length), PAD_ID, dtype=torch.long)
    scores = torch.zeros(b * n)
    lengths = torch.full((b * n,), max_length, dtype=torch.long)
    done = torch.zeros(b * n, dtype=torch.bool)
    for t in range(max_length):
        logits = decoder.step(state, tokens)  # [R, V]
        if fixed_length:
            logits[:, EOS_ID] = NEG_INF
        tokens = draw(logits, temperature)
        rows = (alive.unsqueeze(1) * n + torch.arange(n)).flatten()
        chosen = logits.gather(1, tokens.unsqueeze(1)).squeeze(1) - logits.logsumexp(-1)
        live = ~done[rows]
        scores[rows] += chosen * live
        out[rows, t] = tokens
        ended = tokens.eq(EOS_ID) & live
        if ended.any():
            lengths[rows[ended]] = t
            done[rows[ended]] = True
            finished = done[rows].view(-1, n).all(1)
            if finished.all():
                break
            if finished.any():
                kept = (~finished).nonzero().squeeze(1)
                decoder.keep(state, kept)
                alive = alive[kept]
                tokens = tokens.view(-1, n)[kept].flatten()
    return [row[:length].tolist() for row, length in zip(out, lengths.tolist())], scores.tolist()


def torch_sample(decoder: CachedDecoder, ids: list[list[int]], args, draw) -> list[list[list[int]]]:
    """Samples for all sources in input order, in batches of --batch-size sources sorted by length."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    results: list = [None] * len(ids)
    for start in range(0, len(order), args.batch_size):
        batch = order[start:start + args.batch_size]
        src = pad(ids[i] for i in batch)
        hyps, _ = sample_batch(decoder, src, args.n, args.temperature, args.max_length, draw,
                               args.fixed_length)
        for j, i in enumerate(batch):
            results[i] = hyps[j * args.n:(j + 1) * args.n]
    return results


def pad(seqs) -> torch.Tensor:
    seqs = list(seqs)
    out = torch.full((len(seqs), max(map(len, seqs))), PAD_ID, dtype=torch.long)
    for row, seq in zip(out, seqs):
        row[: len(seq)] = torch.tensor(seq)
    return out


# --- checks --------------------------------------------------------------------------------------

def check_against_full_forward(model, decoder: CachedDecoder, ids: list[list[int]],
                               tolerance: float = 1e-4) -> float:
    """Teacher-force random prefixes through the cache; compare every step's log-probs [V] with the
    full forward. Sources of different lengths (padding), 3 samples each; after 5 steps one source
    is dropped, as when its samples have all ended. Returns the largest difference."""
    n, steps, generator = 3, 20, torch.Generator().manual_seed(1)
    src = pad(ids[:5])
    assert len({len(s) for s in ids[:5]}) > 1, "the check needs sources of different lengths"
    vocab = model.config.vocab_size
    prefix = torch.randint(EOS_ID + 1, vocab, (len(src) * n, steps), generator=generator)
    tgt_in = torch.cat([torch.full((len(prefix), 1), BOS_ID), prefix[:, :-1]], dim=1)
    expected = model(src.repeat_interleave(n, 0), tgt_in).log_softmax(-1)  # [R, T, V]
    state = decoder.start(src, n, steps)
    rows, worst = torch.arange(len(prefix)), 0.0
    for t in range(steps):
        if t == 5:
            decoder.keep(state, torch.tensor([0, 2, 3, 4]))
            rows = torch.cat([rows[:n], rows[2 * n:]])
        got = decoder.step(state, tgt_in[rows, t]).log_softmax(-1)
        worst = max(worst, (got - expected[rows, t]).abs().max().item())
    assert worst < tolerance, f"cached decoder differs from the full forward by {worst:.2e}"
    return worst


def check_draws(temperature: float) -> float:
    """Each draw follows softmax(logits / T): total variation over 200k draws from one row < 0.01."""
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 50, generator=generator) * 2
    target = (logits / temperature).softmax(-1)[0]
    worst = 0.0
    for name, draw in DRAWS.items():
        got = draw(logits.expand(200_000, -1).contiguous(), temperature)
        freq = torch.bincount(got, minlength=50).float() / len(got)
        tv = 0.5 * (freq - target).abs().sum().item()
        assert tv < 0.01, f"{name} draws are off: total variation {tv:.4f}"
        worst = max(worst, tv)
    return worst


def time_draws(decoder: CachedDecoder, ids: list[list[int]], args,
               repeats: int = 30) -> dict[str, tuple[float, float]]:
    """Median and best milliseconds per call of each draw on real logits [batch * N, V], and of one
    decoder step beside them (at positions 4 to 33), all interleaved."""
    src = pad(ids[: args.batch_size])
    state = decoder.start(src, args.n, 4 + repeats)
    tokens = torch.full((len(src) * args.n,), BOS_ID, dtype=torch.long)
    for _ in range(4):
        logits = decoder.step(state, tokens)
        tokens = draw_multinomial(logits, args.temperature)
    steps = {"(decoder step)": lambda: decoder.step(state, tokens)}
    jobs = {**{name: (lambda draw=draw: draw(logits, args.temperature)) for name, draw in DRAWS.items()},
            **steps}
    times = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - start)
    return {name: (1000 * statistics.median(t), 1000 * min(t)) for name, t in times.items()}


# --- CTranslate2 ---------------------------------------------------------------------------------

def ctranslate2_sample(translator, pieces: list[list[str]], args) -> list[list[list[str]]]:
    from rest_cli.sampling import DecodeOptions

    options = DecodeOptions(n=args.n, temperature=args.temperature,
                            max_length=args.max_length).ctranslate2_kwargs()
    if args.fixed_length:
        options.update(min_decoding_length=args.max_length)
    results = translator.translate_iterable(pieces, max_batch_size=args.batch_size, **options)
    return [r.hypotheses for r in results]


# --- main ----------------------------------------------------------------------------------------

def training_texts(pairs: int) -> list[str]:
    """Both sides of the first `pairs` Multi30k training pairs (none when the data is absent)."""
    folder = MULTI30K.parent
    if not pairs or not (folder / "train.de").exists():
        return []
    return [line for name in ("train.de", "train.en")
            for line in (folder / name).read_text().splitlines()[:pairs] if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, default=256)
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="sources per batch (x N rows)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab-texts", type=int, default=0,
                        help="also train the tokenizer on this many Multi30k training pairs (de and en), "
                             "for a vocabulary of real size (8000 pieces at 10000) rather than one fitted "
                             "to the sources")
    parser.add_argument("--fixed-length", action="store_true", help="every candidate has --max-length tokens")
    parser.add_argument("--draws", nargs="*", choices=list(DRAWS),
                        help="PyTorch variants to time, by how they draw a token "
                             "(default: the fastest and multinomial)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = load_sources(args.sources)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        import ctranslate2

        from rest_cli.models.modeldir import load_model
        from rest_cli.models.native.tokenizer import Tokenizer

        model_dir = build_model(Path(tmp), texts + training_texts(args.vocab_texts), args.preset)
        model = load_model(model_dir)
        tokenizer = Tokenizer(model_dir / "spm.model")
        ids, pieces = tokenizer.encode(texts), tokenizer.encode_pieces(texts)
        c = model.config
        print(f"preset {args.preset}: {c.enc_layers}+{c.dec_layers} layers, d_model {c.d_model}, "
              f"ffn {c.ffn_dim}, {c.n_heads} heads, vocab {c.vocab_size}; {args.sources} sources "
              f"(mean {sum(map(len, ids)) / len(ids):.1f} tokens) x {args.n} samples, T={args.temperature}, "
              f"up to {args.max_length} tokens{' (fixed length)' if args.fixed_length else ''}, "
              f"{args.threads} threads, batches of {args.batch_size} sources")
        decoder = CachedDecoder(model)
        worst = check_against_full_forward(model, decoder, ids)
        tv = check_draws(args.temperature)
        print(f"check: cached decoder vs full forward, max |delta log-prob| {worst:.2e} (< 1e-4); "
              f"draws vs softmax(logits/T), max total variation {tv:.4f} (< 0.01)")

        draw_ms = time_draws(decoder, ids, args)
        print(f"\none draw on [{min(args.batch_size, len(ids)) * args.n}, {c.vocab_size}] logits, ms, "
              f"median [best] of 30 interleaved:")
        for name, (median, best) in sorted(draw_ms.items(), key=lambda kv: kv[1]):
            print(f"  {name:18} {median:7.3f} [{best:7.3f}]")
        fastest = min(DRAWS, key=lambda name: draw_ms[name][0])
        draws = list(dict.fromkeys(args.draws or [fastest, "multinomial"]))

        ctranslate2.set_random_seed(0)
        translators = {ct: ctranslate2.Translator(str(model_dir / "ctranslate2"), device="cpu",
                                                  compute_type=ct, intra_threads=args.threads)
                       for ct in ("int8", "float32")}
        torch.manual_seed(0)
        engines = {f"PyTorch float32, {name} draw":
                   (lambda draw=DRAWS[name]: torch_sample(decoder, ids, args, draw)) for name in draws}
        engines["CTranslate2 int8"] = lambda: ctranslate2_sample(translators["int8"], pieces, args)
        engines["CTranslate2 float32"] = lambda: ctranslate2_sample(translators["float32"], pieces, args)
        runs = {name: [] for name in engines}
        names = list(engines)
        for repeat in range(args.repeats):
            for name in names[repeat % len(names):] + names[: repeat % len(names)]:  # rotate the order
                start = time.perf_counter()
                hyps = engines[name]()
                seconds = time.perf_counter() - start
                lengths = [len(h) for source in hyps for h in source]
                runs[name].append((seconds, len(lengths), sum(lengths), lengths.count(args.max_length)))
    report(runs, args)


def report(runs: dict, args) -> None:
    """A table of medians (and best runs) per engine, then each engine's ratio to the first one."""
    print(f"\n{args.repeats} repeats, interleaved (order rotated each repeat); median and [best] run:")
    print("| engine | seconds | tokens/s | candidates/s | mean length | at max length |")
    print("|---|---|---|---|---|---|")
    rates = {}
    for name, results in runs.items():
        seconds = [r[0] for r in results]
        tokens_s, cands_s = [r[2] / r[0] for r in results], [r[1] / r[0] for r in results]
        mean_len = sum(r[2] for r in results) / sum(r[1] for r in results)
        at_max = sum(r[3] for r in results) / sum(r[1] for r in results)
        rates[name] = statistics.median(tokens_s), max(tokens_s)
        print(f"| {name} | {statistics.median(seconds):.2f} [{min(seconds):.2f}] | "
              f"{statistics.median(tokens_s):,.0f} [{max(tokens_s):,.0f}] | "
              f"{statistics.median(cands_s):,.1f} [{max(cands_s):,.1f}] | {mean_len:.2f} | {at_max:.1%} |")
    print()
    for base in [name for name in rates if name.startswith("PyTorch")]:
        for name, (median, best) in rates.items():
            if name.startswith("CTranslate2"):
                print(f"{name} / {base}: tokens/s ratio {median / rates[base][0]:.2f} (medians), "
                      f"{best / rates[base][1]:.2f} (best runs)")


if __name__ == "__main__":
    main()
