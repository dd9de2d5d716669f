"""Training batches of Hugging Face policies: the prompt is read, never learnt; what is learnt is what
CTranslate2 scores. (test_finetune.py checks the same through `rest finetune`'s own path.)"""

import ctranslate2
import numpy as np
import pytest
import torch

from rest_cli.models.hf.batches import Specials, collate_causal, collate_seq2seq, logits
from rest_cli.models.modeldir import ctranslate2_dir, load_model, load_tokenizer
from rest_cli.train.objectives import get_objective

SPECIALS = Specials(pad=0, eos=2, decoder_start=3)
RECORDS = [{"id": 0, "src": "eins hund runs", "ref": " one dog runs"},
           {"id": 1, "src": "the cat", "ref": " zwei katze sees three"}]


def ids(*rows):
    return [np.array(row, dtype=np.int32) for row in rows]


def test_a_causal_batch_trains_the_continuation_and_its_end_only():
    batch = collate_causal(ids([1, 5, 6], [1, 9]), ids([7, 8], [4, 4, 4]), np.array([False, True]),
                           np.ones(2, np.float32), "cpu", SPECIALS)
    assert batch.inputs["input_ids"].tolist() == [[1, 5, 6, 7, 8], [1, 9, 4, 4, 0]]
    assert batch.labels.tolist() == [[5, 6, 7, 8, 2], [9, 4, 4, 4, 0]]  # a cut target has no end to learn
    assert batch.mask.tolist() == [[False, False, True, True, True], [False, True, True, True, False]]
    assert batch.inputs["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert batch.tokens == 9 + 6


def test_an_encoder_decoder_batch_starts_the_decoder_and_gives_the_language_token():
    batch = collate_seq2seq(ids([5, 6, 2], [7, 2]), ids([8, 9], [10]), np.array([False, False]),
                            np.ones(2, np.float32), "cpu", SPECIALS, prefixes=[[64], [64]])
    assert batch.inputs["decoder_input_ids"].tolist() == [[3, 64, 8, 9], [3, 64, 10, 0]]
    assert batch.labels.tolist() == [[64, 8, 9, 2], [64, 10, 2, 0]]
    assert batch.mask.tolist() == [[False, True, True, True], [False, True, True, False]]


def _batch(name, hf_model):
    _, directory = hf_model(name)
    tokenizer, model = load_tokenizer(directory), load_model(directory)
    prompts = tokenizer.prompts(RECORDS, 1024)
    sources = [np.array(tokenizer.hf.convert_tokens_to_ids(p.tokens)) for p in prompts]
    targets = [np.array(t) for t in tokenizer.encode([r["ref"] for r in RECORDS])]
    cut, weights = np.zeros(2, bool), np.ones(2, np.float32)
    if model.config.is_encoder_decoder:
        prefixes = [tokenizer.hf.convert_tokens_to_ids(p.prefix) for p in prompts]
        batch = collate_seq2seq(sources, targets, cut, weights, "cpu", Specials.of(tokenizer), prefixes)
    else:
        batch = collate_causal(sources, targets, cut, weights, "cpu", Specials.of(tokenizer))
    return directory, tokenizer, model, prompts, batch


@pytest.mark.parametrize("name", ["llama", "qwen2", "marian", "m2m100"])
def test_what_a_batch_trains_is_what_ctranslate2_scores(hf_model, name):
    """The trained tokens' log-probs are the exported model's log-probs of the candidate and its end."""
    directory, tokenizer, model, prompts, batch = _batch(name, hf_model)
    with torch.no_grad():
        logprobs = torch.log_softmax(logits(model, batch).float(), -1)
        picked = logprobs.gather(-1, batch.labels[..., None])[..., 0]
    ours = [picked[i][batch.mask[i]].sum().item() for i in range(len(RECORDS))]
    path = str(ctranslate2_dir(directory))
    targets = [tokenizer.hf.convert_ids_to_tokens(t) for t in tokenizer.encode([r["ref"] for r in RECORDS])]
    if model.config.is_encoder_decoder:
        results = ctranslate2.Translator(path, compute_type="float32").score_batch(
            [p.tokens for p in prompts], [p.prefix + t for p, t in zip(prompts, targets)])
        theirs = [sum(r.log_probs[len(p.prefix):]) for r, p in zip(results, prompts)]
    else:
        results = ctranslate2.Generator(path, compute_type="float32").score_batch(
            [p.tokens + t + [tokenizer.hf.eos_token] for p, t in zip(prompts, targets)])
        theirs = [sum(r.log_probs[len(p.tokens) - 1:]) for r, p in zip(results, prompts)]
    assert ours == pytest.approx(theirs, abs=1e-4)


@pytest.mark.parametrize("name", ["llama", "m2m100"])
def test_the_prompt_gets_no_gradient_and_the_continuation_loss_falls(hf_model, name):
    _, _, model, _, batch = _batch(name, hf_model)
    model.train()
    objective = get_objective("nll")
    out = logits(model, batch)
    out.retain_grad()
    loss, _, count = objective.loss(out, batch)
    (loss / count).backward()
    per_position = out.grad.abs().sum(-1)  # [B, T]
    assert per_position[~batch.mask].max().item() == 0  # prompt, forced prefix and padding: nothing learnt
    assert (per_position[batch.mask] > 0).all()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = (loss / count).item()
    for _ in range(5):
        optimizer.zero_grad()
        loss, _, count = objective.loss(logits(model, batch), batch)
        (loss / count).backward()
        optimizer.step()
    assert (objective.loss(logits(model, batch), batch)[0] / count).item() < before

