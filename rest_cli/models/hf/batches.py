"""Training batches for Hugging Face policies, and the forward pass to the logits they train.

Decoder-only: one sequence per record, prompt + target + end token; the model predicts every
next token, but only the target's tokens and the end token are trained: the prompt is read, never
learnt. Encoder-decoder: the source (with its special tokens) into the encoder; the decoder starts
from the model's start token and the target-language token when there is one (forced, so not
trained), then learns the target and its end token. A target cut to --max-length has no end token
to learn. In both, only `mask` says what is trained: padding ids are never read.

The special ids come from the policy's tokenizer and config (`Specials.of`); the kinds' `collate`
(kind.py) calls these functions with the ids `encode_pairs` made of each record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rest_cli.models.base import Batch, padded

if TYPE_CHECKING:
    import torch

    from rest_cli.models.hf.tokenizer import HFTokenizer


@dataclass(frozen=True)
class Specials:
    """The ids a batch needs besides the records' own."""

    pad: int                    # fills the inputs past a record's end (never attended to, never trained)
    eos: int                    # learnt after each complete target
    decoder_start: int | None   # encoder-decoder: the decoder's first input

    @classmethod
    def of(cls, tokenizer: HFTokenizer) -> Specials:
        config = tokenizer.model_config
        eos = tokenizer.eos_id if tokenizer.eos_id >= 0 else tokenizer.end_ids()[0]
        start = config.get("decoder_start_token_id") if tokenizer.encoder_decoder else None
        return cls(pad=max(tokenizer.pad_id, 0), eos=eos, decoder_start=start)


def collate_causal(prompts: list[np.ndarray], targets: list[np.ndarray], truncated: np.ndarray,
                   weights: np.ndarray, device, specials: Specials) -> Batch:
    """Prompt ids (special tokens included) and target ids per record -> the batch of a decoder-only model."""
    import torch

    rows = [np.concatenate([p, t, [] if cut else [specials.eos]]).astype(np.int64)
            for p, t, cut in zip(prompts, targets, truncated)]
    inputs, present = padded([r[:-1] for r in rows], specials.pad)
    labels, _ = padded([r[1:] for r in rows], 0)
    mask = torch.zeros_like(present)
    for i, (prompt, row) in enumerate(zip(prompts, rows)):
        mask[i, max(len(prompt) - 1, 0):len(row) - 1] = True  # the positions that predict target or end
    tokens = int(present.sum() + mask.sum())
    return Batch({"input_ids": inputs.to(device), "attention_mask": present.long().to(device)},
                 labels.to(device), mask.to(device), torch.from_numpy(weights).to(device), tokens)


def collate_seq2seq(sources: list[np.ndarray], targets: list[np.ndarray], truncated: np.ndarray,
                    weights: np.ndarray, device, specials: Specials,
                    prefixes: list[list[int]] | None = None) -> Batch:
    """Source ids (special tokens included), target ids and forced target prefixes -> a seq2seq batch."""
    import torch

    prefixes = prefixes or [[] for _ in sources]
    labels_rows = [np.concatenate([prefix, t, [] if cut else [specials.eos]]).astype(np.int64)
                   for prefix, t, cut in zip(prefixes, targets, truncated)]
    decoder_rows = [np.concatenate([[specials.decoder_start], row[:-1]]).astype(np.int64)
                    for row in labels_rows]
    src, present = padded(sources, specials.pad)
    decoder_inputs, _ = padded(decoder_rows, specials.pad)
    labels, in_target = padded(labels_rows, 0)
    mask = in_target.clone()
    for i, prefix in enumerate(prefixes):
        mask[i, :len(prefix)] = False  # the target-language token is given, not learnt
    tokens = int(present.sum() + mask.sum())
    return Batch({"input_ids": src.to(device), "attention_mask": present.long().to(device),
                  "decoder_input_ids": decoder_inputs.to(device)},
                 labels.to(device), mask.to(device), torch.from_numpy(weights).to(device), tokens)


def logits(model, batch: Batch) -> torch.Tensor:
    """Logits [B, T, V] at the positions of `batch.labels` (`model` may be wrapped, e.g. in DDP)."""
    out = model(**batch.inputs, use_cache=False).logits  # a training forward pass keeps no cache
    config = getattr(model, "module", model).config
    if config.model_type == "marian":
        # CTranslate2 drops Marian's <pad>, its last token (checked at import), from the vocabulary:
        # train the distribution it decodes from.
        out = out[..., :config.pad_token_id]
    return out

