"""The native Transformer to CTranslate2: a converter in CTranslate2's own style.

NativeConverter only maps weights into CTranslate2's pre-norm TransformerSpec, which computes the
same network as transformer.py; validation, quantization and saving are CTranslate2's
(`Converter.convert`). Positions use CTranslate2's built-in sinusoidal encoding (no
`position_encodings` table is stored): transformer.py computes the same formula, and the built-in
encoding has no length cap, so sources and decodes may be as long as the caller likes.
ctranslate2 is imported only when a converter is made: only the commands that export pay for it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rest_cli.io.atomic import replacing_dir
from rest_cli.models.native.tokenizer import BOS, EOS, UNK
from rest_cli.models.native.transformer import Seq2SeqTransformer


def native_converter(model: Seq2SeqTransformer, vocab_tokens: list[str]):
    """A ctranslate2.converters.Converter for `model`; `vocab_tokens` is its vocabulary in id order."""
    from ctranslate2.converters import Converter

    class NativeConverter(Converter):
        def _load(self):
            return _build_spec(model, vocab_tokens)

    return NativeConverter()


def export_ctranslate2(model: Seq2SeqTransformer, vocab_tokens: list[str], out_dir: str | os.PathLike,
                       quantization: str | None = None) -> Path:
    """Write the CTranslate2 model of `model` to `out_dir`, whole or not at all (replacing what is there).

    `quantization` is any CTranslate2 weight type, e.g. "int8"; None keeps float32.
    """
    with replacing_dir(out_dir) as folder:
        native_converter(model, vocab_tokens).convert(str(folder), quantization=quantization, force=True)
    return Path(out_dir)


def _build_spec(model: Seq2SeqTransformer, vocab_tokens: list[str]):
    import ctranslate2  # heavy: only the commands that export pay for it

    cfg = model.config
    activation = {"relu": ctranslate2.specs.Activation.RELU, "gelu": ctranslate2.specs.Activation.GELU}
    spec = ctranslate2.specs.TransformerSpec.from_config(
        (cfg.enc_layers, cfg.dec_layers), cfg.n_heads, pre_norm=True, activation=activation[cfg.activation]
    )
    _set_encoder(spec.encoder, model)
    _set_decoder(spec.decoder, model)
    spec.register_source_vocabulary(vocab_tokens)
    spec.register_target_vocabulary(vocab_tokens)
    spec.config.bos_token = spec.config.decoder_start_token = BOS
    spec.config.eos_token = EOS
    spec.config.unk_token = UNK
    return spec


def _set_encoder(spec, model: Seq2SeqTransformer) -> None:
    _set_embeddings(spec.embeddings[0], model.src_embed)
    _set_layer_norm(spec.layer_norm, model.encoder.norm)
    for layer_spec, layer in zip(spec.layer, model.encoder.layers):
        _set_layer_norm(layer_spec.self_attention.layer_norm, layer.norm1)
        _set_weight(layer_spec.self_attention.linear[0], layer.self_attn.in_proj_weight,
                    layer.self_attn.in_proj_bias)
        _set_linear(layer_spec.self_attention.linear[1], layer.self_attn.out_proj)
        _set_ffn(layer_spec.ffn, layer, layer.norm2)


def _set_decoder(spec, model: Seq2SeqTransformer) -> None:
    _set_embeddings(spec.embeddings, model.tgt_embed)
    _set_layer_norm(spec.layer_norm, model.decoder.norm)
    _set_linear(spec.projection, model.lm_head)
    for layer_spec, layer in zip(spec.layer, model.decoder.layers):
        _set_layer_norm(layer_spec.self_attention.layer_norm, layer.norm1)
        _set_weight(layer_spec.self_attention.linear[0], layer.self_attn.in_proj_weight,
                    layer.self_attn.in_proj_bias)
        _set_linear(layer_spec.self_attention.linear[1], layer.self_attn.out_proj)
        # CTranslate2 splits cross-attention into a query projection and a fused key;value one.
        cross, d = layer.multihead_attn, model.config.d_model
        _set_layer_norm(layer_spec.attention.layer_norm, layer.norm2)
        _set_weight(layer_spec.attention.linear[0], cross.in_proj_weight[:d], cross.in_proj_bias[:d])
        _set_weight(layer_spec.attention.linear[1], cross.in_proj_weight[d:], cross.in_proj_bias[d:])
        _set_linear(layer_spec.attention.linear[2], cross.out_proj)
        _set_ffn(layer_spec.ffn, layer, layer.norm3)


def _set_ffn(spec, layer: torch.nn.Module, norm: torch.nn.LayerNorm) -> None:
    _set_layer_norm(spec.layer_norm, norm)
    _set_linear(spec.linear_0, layer.linear1)
    _set_linear(spec.linear_1, layer.linear2)


def _set_embeddings(spec, embedding: torch.nn.Embedding) -> None:
    spec.weight = _numpy(embedding.weight)


def _set_layer_norm(spec, ln: torch.nn.LayerNorm) -> None:
    spec.gamma = _numpy(ln.weight)
    spec.beta = _numpy(ln.bias)


def _set_linear(spec, linear: torch.nn.Linear) -> None:
    _set_weight(spec, linear.weight, linear.bias)


def _set_weight(spec, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    spec.weight = _numpy(weight)  # [out, in], as nn.Linear stores it
    if bias is not None:
        spec.bias = _numpy(bias)


def _numpy(t: torch.Tensor):
    # A float32 CPU copy: spec.optimize() quantizes its arrays in place, and .numpy() of a CPU
    # float32 tensor would share memory with the parameters, silently corrupting the model.
    return t.detach().to("cpu", torch.float32, copy=True).numpy()
