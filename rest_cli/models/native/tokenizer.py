"""SentencePiece tokenizer: one shared vocabulary for source and target, with fixed special ids."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from rest_cli.io.atomic import write_file

# The special ids are part of the model format: the Transformer, the training code and the
# CTranslate2 export all rely on them, so they are fixed here at training time.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"


def train_tokenizer(
    texts: Iterable[str],
    model_prefix_or_dir: str | os.PathLike,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    seed: int = 0,
) -> Path:
    """Train a SentencePiece model in-process from `texts` and return the path of the `.model` file.

    A directory gets `spm.model` inside it; anything else is a prefix (`prefix.model`).
    `vocab_size` is an upper bound: tiny corpora get a smaller vocabulary instead of an error.
    """
    prefix = Path(model_prefix_or_dir)
    path = prefix / "spm.model" if prefix.is_dir() else prefix.with_name(prefix.name + ".model")
    spm.set_random_generator_seed(seed)  # only used when the trainer samples sentences
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=proto,
        vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        pad_piece=PAD, unk_piece=UNK, bos_piece=BOS, eos_piece=EOS,
        hard_vocab_limit=False, minloglevel=2,
    )
    # Written only after training succeeded, and whole, so a failed run leaves no model file behind.
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, proto.getvalue())
    return path


class Tokenizer:
    """A trained SentencePiece model whose special ids match PAD_ID, UNK_ID, BOS_ID and EOS_ID."""

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, model_path: str | os.PathLike):
        self.path = Path(model_path)
        self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        found = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if found != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise ValueError(f"{self.path}: special ids (pad, unk, bos, eos) are {found}, "
                             "expected (0, 1, 2, 3)")

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, without BOS or EOS."""
        return self.sp.encode(texts, out_type=int)

    def encode_pieces(self, texts: list[str]) -> list[list[str]]:
        """Pieces per text (the tokens CTranslate2 takes), without BOS or EOS."""
        return self.sp.encode(texts, out_type=str)

    def decode(self, batch: list[list[int]] | list[list[str]]) -> list[str]:
        """Texts from lists of ids or lists of pieces."""
        return self.sp.decode(batch)

    def vocab_tokens(self) -> list[str]:
        """All pieces in id order: the vocabulary to register in a CTranslate2 model."""
        return [self.sp.id_to_piece(i) for i in range(self.vocab_size)]
