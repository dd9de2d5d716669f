"""Tiny random-weight Hugging Face models, built from a config with a tokenizer trained on the spot.

Each builder writes a directory as `save_pretrained` does (config, model.safetensors, tokenizer
files, generation config) and returns it. Nothing is downloaded: the tokenizers are trained here
(byte-level BPE with `tokenizers` for the decoder-only models, SentencePiece for T5, Marian and
M2M100, as their real checkpoints use).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch

WORDS = ("eins zwei drei vier fünf hund katze haus maus baum one two three four five dog cat house mouse "
         "tree the a runs sits sleeps sees big small red green").split()
CORPUS = [f"{a} {b} {c} {d}" for a in WORDS[:10] for b in WORDS[10:20] for c in WORDS[20:25]
          for d in WORDS[25:]][::3]
WIDTH = dict(hidden=64, layers=2, heads=4, ffn=128)
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


# The shape every decoder-only builder but GPT-2 shares (Llama's names, which Mistral and Qwen keep).
DECODER = dict(hidden_size=WIDTH["hidden"], intermediate_size=WIDTH["ffn"], num_hidden_layers=WIDTH["layers"],
               num_attention_heads=WIDTH["heads"], num_key_value_heads=2, max_position_embeddings=128)


def _llama_tokenizer():
    """Llama's (and Mistral's) kind: <s> before every text, </s> to end, <unk>."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=_byte_bpe(["<unk>", "<s>", "</s>"], bos="<s>"),
                                   bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _byte_bpe(specials: list[str], vocab_size: int = 300, bos: str | None = None, eos: str | None = None):
    """A byte-level BPE tokenizer (GPT-2's kind); `bos` and `eos` go around every text (Llama: bos only)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    if bos is not None:
        template = f"{bos} $A" + (f" {eos}" if eos else "")
        tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=[
            (token, tok.token_to_id(token)) for token in (bos, eos) if token])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _spm(vocab_size: int, **ids) -> bytes:
    """A SentencePiece unigram model trained on CORPUS, as bytes."""
    import sentencepiece as spm

    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=proto, vocab_size=vocab_size,
                                   model_type="unigram", hard_vocab_limit=False, minloglevel=2, **ids)
    return proto.getvalue()


def _save(folder: Path, model, tokenizer) -> Path:
    from transformers.utils import logging

    logging.disable_progress_bar()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def gpt2(folder: Path, seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    end = "<|endoftext|>"
    tok = PreTrainedTokenizerFast(tokenizer_object=_byte_bpe([end]), bos_token=end, eos_token=end,
                                  unk_token=end)
    config = GPT2Config(vocab_size=len(tok), n_embd=WIDTH["hidden"], n_layer=WIDTH["layers"],
                        n_head=WIDTH["heads"], n_positions=128, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id)
    _seeded(seed)
    return _save(folder, GPT2LMHeadModel(config), tok)


def llama(folder: Path, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _llama_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), **DECODER, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=None)
    _seeded(seed)
    return _save(folder, LlamaForCausalLM(config), tok)


def qwen2(folder: Path, seed: int = 0, chat: bool = True) -> Path:
    """Qwen2 with a chat template whose turns end with <|im_end|>, a stop token besides <|endoftext|>."""
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = PreTrainedTokenizerFast(tokenizer_object=_byte_bpe(specials), eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    # Qwen's real vocabularies are padded past the tokenizer: the embeddings have spare rows.
    config = Qwen2Config(vocab_size=len(tok) + 4, **DECODER, eos_token_id=tok.eos_token_id,
                         tie_word_embeddings=True)
    _seeded(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"),
                                                             tok.eos_token_id])
    return _save(folder, model, tok)


def t5(folder: Path, seed: int = 0) -> Path:
    """T5 with SentencePiece pieces (pad 0, </s> 1, <unk> 2) and spare embedding rows, as t5-small has."""
    import sentencepiece as spm
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    model_proto = _spm(200, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    processor = spm.SentencePieceProcessor(model_proto=model_proto)
    pieces = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    tok = T5Tokenizer(vocab=pieces, extra_ids=4)
    config = T5Config(vocab_size=len(tok) + 3, d_model=WIDTH["hidden"], d_kv=16, d_ff=WIDTH["ffn"],
                      num_layers=WIDTH["layers"], num_heads=WIDTH["heads"], decoder_start_token_id=0,
                      pad_token_id=0, eos_token_id=1)
    _seeded(seed)
    return _save(folder, T5ForConditionalGeneration(config), tok)


def _sentencepiece_vocab(folder: Path, model_proto: bytes, first: list[str], last: list[str]) -> Path:
    """Write the SentencePiece model and a vocab.json of its pieces, `first` and `last` around them."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=model_proto)
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    tokens = list(dict.fromkeys([*first, *[p for p in pieces if p not in first + last], *last]))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    return folder


def marian(folder: Path, seed: int = 0, pad_last: bool = True) -> Path:
    """OPUS-MT's layout: one SentencePiece model per side, a shared vocab.json with <pad> last."""
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    staging = folder.with_name(folder.name + "-tokenizer")
    model_proto = _spm(200, unk_id=1, eos_id=0, bos_id=-1, pad_id=-1)
    first, last = (["</s>", "<unk>"], ["<pad>"]) if pad_last else (["</s>", "<unk>", "<pad>"], [])
    _sentencepiece_vocab(staging, model_proto, first, last)
    for side in ("source.spm", "target.spm"):
        (staging / side).write_bytes(model_proto)
    with warnings.catch_warnings():  # it recommends sacremoses
        warnings.simplefilter("ignore")
        tok = MarianTokenizer(*(str(staging / name) for name in ("source.spm", "target.spm", "vocab.json")))
    pad = tok.pad_token_id
    config = MarianConfig(vocab_size=len(tok), d_model=WIDTH["hidden"], encoder_layers=WIDTH["layers"],
                          decoder_layers=WIDTH["layers"], encoder_attention_heads=WIDTH["heads"],
                          decoder_attention_heads=WIDTH["heads"], encoder_ffn_dim=WIDTH["ffn"],
                          decoder_ffn_dim=WIDTH["ffn"], max_position_embeddings=128, pad_token_id=pad,
                          eos_token_id=tok.eos_token_id, decoder_start_token_id=pad, forced_eos_token_id=None,
                          share_encoder_decoder_embeddings=True)
    _seeded(seed)
    return _save(folder, MarianMTModel(config), tok)


def m2m100(folder: Path, seed: int = 0) -> Path:
    """M2M100 (NLLB's model class): language tokens after the pieces, English to German by default."""
    from transformers import M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer

    staging = folder.with_name(folder.name + "-tokenizer")
    model_proto = _spm(200, bos_id=0, pad_id=1, eos_id=2, unk_id=3)
    _sentencepiece_vocab(staging, model_proto, ["<s>", "<pad>", "</s>", "<unk>"], [])
    (staging / "sentencepiece.bpe.model").write_bytes(model_proto)
    tok = M2M100Tokenizer(str(staging / "vocab.json"), str(staging / "sentencepiece.bpe.model"),
                          src_lang="en", tgt_lang="de", num_madeup_words=2)
    # fairseq's layout: the pieces, then one token per language, then padding ("made-up words").
    rows = max(tok.lang_token_to_id.values()) + 1 + tok.num_madeup_words
    config = M2M100Config(vocab_size=rows, d_model=WIDTH["hidden"], encoder_layers=WIDTH["layers"],
                          decoder_layers=WIDTH["layers"], encoder_attention_heads=WIDTH["heads"],
                          decoder_attention_heads=WIDTH["heads"], encoder_ffn_dim=WIDTH["ffn"],
                          decoder_ffn_dim=WIDTH["ffn"], max_position_embeddings=128, pad_token_id=1,
                          bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    _seeded(seed)
    return _save(folder, M2M100ForConditionalGeneration(config), tok)


def bart(folder: Path, seed: int = 0) -> Path:
    """BART: byte-level BPE with <s> and </s> around each text; the decoder starts from </s>."""
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    tok = PreTrainedTokenizerFast(tokenizer_object=_byte_bpe(specials, bos="<s>", eos="</s>"),
                                  bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = BartConfig(vocab_size=len(tok), d_model=WIDTH["hidden"], encoder_layers=WIDTH["layers"],
                        decoder_layers=WIDTH["layers"], encoder_attention_heads=WIDTH["heads"],
                        decoder_attention_heads=WIDTH["heads"], encoder_ffn_dim=WIDTH["ffn"],
                        decoder_ffn_dim=WIDTH["ffn"], max_position_embeddings=128, bos_token_id=0,
                        pad_token_id=1, eos_token_id=2, decoder_start_token_id=2, forced_bos_token_id=0)
    _seeded(seed)
    return _save(folder, BartForConditionalGeneration(config), tok)


def qwen3(folder: Path, seed: int = 0) -> Path:
    """Qwen3: Qwen2's tokenizer and chat format, with per-head q/k norms and an explicit head size."""
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = PreTrainedTokenizerFast(tokenizer_object=_byte_bpe(specials), eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>")
    tok.chat_template = CHAT_TEMPLATE
    config = Qwen3Config(vocab_size=len(tok), **DECODER, head_dim=32, eos_token_id=tok.eos_token_id,
                         tie_word_embeddings=True)
    _seeded(seed)
    return _save(folder, Qwen3ForCausalLM(config), tok)


def mistral(folder: Path, seed: int = 0) -> Path:
    """Mistral: Llama's layout with a sliding attention window (longer than these tests' inputs)."""
    from transformers import MistralConfig, MistralForCausalLM

    tok = _llama_tokenizer()
    config = MistralConfig(vocab_size=len(tok), **DECODER, sliding_window=4096, bos_token_id=tok.bos_token_id,
                           eos_token_id=tok.eos_token_id)
    _seeded(seed)
    return _save(folder, MistralForCausalLM(config), tok)


BUILDERS = {"gpt2": gpt2, "llama": llama, "qwen2": qwen2, "qwen3": qwen3, "mistral": mistral, "t5": t5,
            "marian": marian, "m2m100": m2m100,
            "bart": bart}
DECODER_ONLY = ("gpt2", "llama", "qwen2", "qwen3", "mistral")
