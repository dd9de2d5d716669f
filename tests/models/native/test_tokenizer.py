import random

import pytest
import sentencepiece as spm

from rest_cli.models.native.tokenizer import BOS, EOS, PAD, UNK, Tokenizer, train_tokenizer

WORDS = ("the a cat dog bird sat ran flew on under over mat tree house red blue big small quickly "
         "slowly").split()


def corpus(n=200, seed=0):
    rng = random.Random(seed)
    def sentence():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))) + f" {rng.randint(0, 99)}."
    return [sentence() for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return Tokenizer(train_tokenizer(corpus(), tmp_path_factory.mktemp("spm"), vocab_size=60))


def test_round_trip(tokenizer):
    texts = corpus(20, seed=1)
    assert tokenizer.decode(tokenizer.encode(texts)) == texts
    assert tokenizer.decode(tokenizer.encode_pieces(texts)) == texts


def test_special_ids_are_fixed(tokenizer):
    assert tokenizer.vocab_tokens()[:4] == [PAD, UNK, BOS, EOS]
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    assert len(tokenizer.vocab_tokens()) == tokenizer.vocab_size
    ids = tokenizer.encode(["the cat", "Ω"])
    assert all(i > 3 for i in ids[0])  # no BOS/EOS added
    assert tokenizer.unk_id in ids[1]  # a character never seen in training


def test_training_is_deterministic(tmp_path):
    first = train_tokenizer(corpus(), tmp_path / "a", vocab_size=60)
    second = train_tokenizer(corpus(), tmp_path / "b", vocab_size=60)
    assert (first.name, second.name) == ("a.model", "b.model")
    assert first.read_bytes() == second.read_bytes()


def test_vocab_size_is_an_upper_bound(tmp_path):
    tok = Tokenizer(train_tokenizer(corpus(50), tmp_path, vocab_size=5000))
    assert 4 < tok.vocab_size < 5000


def test_rejects_other_special_ids(tmp_path):
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus()), model_prefix=str(tmp_path / "plain"),
                                   vocab_size=60, hard_vocab_limit=False, minloglevel=2)
    with pytest.raises(ValueError, match="special ids"):
        Tokenizer(tmp_path / "plain.model")
