"""Fixtures shared across test modules: a tiny random policy saved as a model directory."""

import pytest
import torch

from rest_cli.models.modeldir import save_model_dir
from rest_cli.models.native.config import config_from_preset
from rest_cli.models.native.tokenizer import Tokenizer, train_tokenizer
from rest_cli.models.native.transformer import Seq2SeqTransformer

WORDS = "eins zwei drei vier fünf hund katze haus one two three four five dog cat house".split()
CORPUS = [f"{a} {b} {c}" for a in WORDS for b in WORDS[:8] for c in WORDS[8:]]


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory):
    """An untrained (seeded) tiny policy: its samples are diverse, which sampling tests want."""
    tmp = tmp_path_factory.mktemp("random-model")
    spm = train_tokenizer(CORPUS, tmp / "spm", vocab_size=60)
    torch.manual_seed(0)
    model = Seq2SeqTransformer.from_config(config_from_preset("tiny", Tokenizer(spm).vocab_size, dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():  # sharpen the random distribution a little, so EOS comes sooner
            p.mul_(1.5)
    return save_model_dir(tmp / "model", model, spm.parent, {"note": "random, for tests"})
