"""The whole encoder-decoder Transformer in one file.

Pre-norm layers with a final LayerNorm on both stacks, embeddings scaled by sqrt(d_model) and
CTranslate2's own sinusoidal positions: exactly the network CTranslate2's pre-norm TransformerSpec
computes, so an exported model scores and samples like the PyTorch one (see export.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from rest_cli.models.native.config import ModelConfig
from rest_cli.models.native.tokenizer import BOS_ID, EOS_ID, PAD_ID


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """CTranslate2's sinusoidal table [length, dim].

    Unlike the usual recipe, positions start at 1, the frequency step is log(10000) / (dim/2 - 1)
    and the halves are concatenated [sin, cos] rather than interleaved.
    """
    half = dim // 2
    inv_freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    angles = torch.arange(1, length + 1, dtype=torch.float32).unsqueeze(1) * inv_freq  # [L, half]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def pad_batch(seqs: list[list[int]], device: torch.device | str | None = None) -> torch.Tensor:
    """Right-pad lists of ids with PAD_ID into a LongTensor [B, max_len]."""
    out = torch.full((len(seqs), max(map(len, seqs), default=0)), PAD_ID, dtype=torch.long)
    for row, seq in zip(out, seqs):
        row[: len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out.to(device)


def teacher_forcing(tgt_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded targets y [B, T] -> (decoder input [BOS] + y, labels y + [EOS]), both [B, T+1]."""
    # One column each, also when every target of the batch is empty (tgt_ids is [B, 0]).
    bos = tgt_ids.new_full((len(tgt_ids), 1), BOS_ID)
    pad = tgt_ids.new_full((len(tgt_ids), 1), PAD_ID)
    tgt_in = torch.cat([bos, tgt_ids], dim=1)
    labels = torch.cat([tgt_ids, pad], dim=1)
    lengths = tgt_ids.ne(PAD_ID).sum(dim=1)
    labels[torch.arange(len(labels), device=labels.device), lengths] = EOS_ID
    return tgt_in, labels


class Seq2SeqTransformer(nn.Module):
    """Pre-norm encoder-decoder Transformer over one shared vocabulary."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        layer_args = dict(d_model=c.d_model, nhead=c.n_heads, dim_feedforward=c.ffn_dim, dropout=c.dropout,
                          activation=c.activation, batch_first=True, norm_first=True)
        self.src_embed = nn.Embedding(c.vocab_size, c.d_model)
        self.tgt_embed = self.src_embed if c.tie_embeddings else nn.Embedding(c.vocab_size, c.d_model)
        # Nested tensors are off: they are unsupported with norm_first and only warn.
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer_args), c.enc_layers,
                                             norm=nn.LayerNorm(c.d_model), enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer_args), c.dec_layers,
                                             norm=nn.LayerNorm(c.d_model))
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.src_embed.weight
        self.dropout = nn.Dropout(c.dropout)
        # Not persistent: the table is a function of the config, so checkpoints stay small.
        self.register_buffer("positions", sinusoidal_positions(c.max_positions, c.d_model), persistent=False)
        self._init_weights()

    @classmethod
    def from_config(cls, config: ModelConfig | dict) -> Seq2SeqTransformer:
        """Build a freshly initialised model from a ModelConfig or its dict."""
        return cls(config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config))

    def _init_weights(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        # After xavier, so a tied output projection gets the embedding init too.
        for embed in (self.src_embed, self.tgt_embed):
            nn.init.normal_(embed.weight, mean=0.0, std=self.config.d_model**-0.5)

    def _embed(self, embed: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        length = ids.size(1)
        if length > self.config.max_positions:
            raise ValueError(f"sequence of {length} tokens exceeds max_positions={self.config.max_positions}")
        x = embed(ids) * math.sqrt(self.config.d_model) + self.positions[:length]  # [B, L, d]
        return self.dropout(x)

    def encode(self, src_ids: torch.Tensor) -> torch.Tensor:
        """Source ids [B, S] -> memory [B, S, d]."""
        return self.encoder(self._embed(self.src_embed, src_ids), src_key_padding_mask=src_ids.eq(PAD_ID))

    def decode(self, tgt_in_ids: torch.Tensor, memory: torch.Tensor, src_ids: torch.Tensor) -> torch.Tensor:
        """Decoder input ids [B, T] and memory [B, S, d] -> logits [B, T, V]."""
        length = tgt_in_ids.size(1)
        # True = hidden
        causal = torch.ones(length, length, dtype=torch.bool, device=tgt_in_ids.device).triu(1)
        h = self.decoder(self._embed(self.tgt_embed, tgt_in_ids), memory, tgt_mask=causal, tgt_is_causal=True,
                         tgt_key_padding_mask=tgt_in_ids.eq(PAD_ID),
                         memory_key_padding_mask=src_ids.eq(PAD_ID))
        return self.lm_head(h)

    def forward(self, src_ids: torch.Tensor, tgt_in_ids: torch.Tensor) -> torch.Tensor:
        """Source ids [B, S] and decoder input ids [B, T] (BOS first) -> logits [B, T, V]."""
        return self.decode(tgt_in_ids, self.encode(src_ids), src_ids)

    def token_logprobs(self, src_ids: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
        """Log-probs [B, T+1] of each target token then EOS, for right-padded targets y [B, T]; 0 at padding.

        Row i holds len(y_i) + 1 values, as CTranslate2's Translator.score_batch returns them.
        """
        tgt_in, labels = teacher_forcing(tgt_ids)
        logprobs = F.log_softmax(self(src_ids, tgt_in).float(), dim=-1)  # [B, T+1, V]
        picked = logprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # [B, T+1]
        return picked.masked_fill(labels.eq(PAD_ID), 0.0)

    def sequence_logprobs(self, src_ids: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
        """Total log-prob [B] of each target sequence, EOS included."""
        return self.token_logprobs(src_ids, tgt_ids).sum(dim=-1)
