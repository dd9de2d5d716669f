import random

import ctranslate2
import numpy as np
import pytest
import torch

from rest_cli.models.native.config import config_from_preset
from rest_cli.models.native.convert import export_ctranslate2
from rest_cli.models.native.tokenizer import BOS, EOS, PAD, UNK
from rest_cli.models.native.transformer import Seq2SeqTransformer, pad_batch

VOCAB = [PAD, UNK, BOS, EOS] + [f"w{i}" for i in range(60)]
SHAPES = {
    "tiny-untied": dict(tie_embeddings=False),
    "tiny-tied": dict(tie_embeddings=True),
    "2+2-4heads-gelu": dict(enc_layers=2, dec_layers=2, n_heads=4, activation="gelu", tie_embeddings=False),
}


def random_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = Seq2SeqTransformer.from_config(config_from_preset("tiny", len(VOCAB), dropout=0.0, **overrides))
    # Perturb every parameter, so zero biases and unit LayerNorm gains cannot hide a mapping error.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def random_batch(rows=8, max_len=20, seed=0):
    rng = random.Random(seed)

    def seq():
        return [rng.randrange(4, len(VOCAB)) for _ in range(rng.randint(1, max_len))]
    return [seq() for _ in range(rows)], [seq() for _ in range(rows)]


def max_logprob_delta(model, model_dir, compute_type, srcs, tgts):
    """Largest |CTranslate2 - PyTorch| per-token log-prob, EOS included."""
    translator = ctranslate2.Translator(str(model_dir), device="cpu", compute_type=compute_type)
    def pieces(seqs):
        return [[VOCAB[i] for i in s] for s in seqs]
    results = translator.score_batch(pieces(srcs), pieces(tgts))
    with torch.no_grad():
        expected = model.token_logprobs(pad_batch(srcs), pad_batch(tgts)).numpy()
    deltas = []
    for row, (tgt, result) in enumerate(zip(tgts, results)):
        assert len(result.log_probs) == len(tgt) + 1
        deltas.append(np.abs(np.array(result.log_probs) - expected[row, : len(tgt) + 1]).max())
    return max(deltas)


@pytest.mark.parametrize("shape", SHAPES)
def test_float32_export_matches_pytorch(tmp_path, shape):
    model = random_model(**SHAPES[shape])
    out = export_ctranslate2(model, VOCAB, tmp_path / "ct2")
    assert max_logprob_delta(model, out, "float32", *random_batch()) < 1e-4


def test_long_sequences_match(tmp_path):
    """Positions far from the start check the sinusoidal formula, not just its first rows."""
    model = random_model(tie_embeddings=True)
    out = export_ctranslate2(model, VOCAB, tmp_path / "ct2")
    assert max_logprob_delta(model, out, "float32", *random_batch(rows=2, max_len=300)) < 1e-4


def test_int8_export_loads_and_scores(tmp_path):
    model = random_model(**SHAPES["2+2-4heads-gelu"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = export_ctranslate2(model, VOCAB, tmp_path / "ct2", quantization="int8")
    # Quantization works in place on the spec's arrays; it must not reach the model's parameters.
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # measured 0.077; a wrong weight gives > 1
    assert max_logprob_delta(model, out, "int8", *random_batch()) < 0.15


def test_export_is_whole_or_nothing(tmp_path):
    model = random_model()
    out = export_ctranslate2(model, VOCAB, tmp_path / "ct2")
    first = (out / "model.bin").read_bytes()
    with pytest.raises(ValueError, match="vocabulary"):
        export_ctranslate2(model, VOCAB[:-1], out)
    assert (out / "model.bin").read_bytes() == first  # a failed export leaves the previous one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct2"]  # no temporary or partial directories
    export_ctranslate2(random_model(seed=1), VOCAB, out)
    assert (out / "model.bin").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct2"]
