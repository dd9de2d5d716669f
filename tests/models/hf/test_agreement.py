"""CTranslate2's export of a Hugging Face policy computes what transformers does, on the tokens rest gives it.

For each architecture: the tokens rest builds for a record (special tokens, prompt format, target
language) are the ones transformers' own tokenizer gives, and CTranslate2's per-token log-probs
(`score_batch`, float32) agree with the transformers forward pass (eval mode) within 1e-4.
"""

import ctranslate2
import pytest
import torch

from rest_cli.models.modeldir import ctranslate2_dir, load_model, load_tokenizer
from tests.models.hf.tiny import BUILDERS, DECODER_ONLY

RECORDS = [{"id": 0, "src": "eins hund runs big", "ref": " one dog runs"},
           {"id": 1, "src": "the cat sees three red mice", "ref": " zwei katze"}]
TOLERANCE = 1e-4


def hf_source_ids(name, hf_tok, src):
    """The model's input as transformers' own tokenizer writes it, in the format it was imported with."""
    if name == "llama":
        return hf_tok(f"Q: {src}\nA:")["input_ids"]  # its tokenizer puts <s> first
    if name in ("qwen2", "qwen3"):
        return hf_tok.apply_chat_template([{"role": "user", "content": src}], add_generation_prompt=True,
                                          tokenize=True, return_dict=True)["input_ids"]
    return hf_tok(src)["input_ids"]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_ctranslate2_agrees_with_transformers(hf_model, name):
    _, directory = hf_model(name)
    tokenizer, model = load_tokenizer(directory), load_model(directory)
    assert not model.training  # GPT-2's dropout would make a difference of 0.2
    prompts = tokenizer.prompts(RECORDS, 1024)
    worst = 0.0
    for record, prompt in zip(RECORDS, prompts):
        source = tokenizer.hf.convert_tokens_to_ids(prompt.tokens)
        assert source == hf_source_ids(name, tokenizer.hf, record["src"])
        if name in DECODER_ONLY:
            worst = max(worst, _decoder_only(directory, tokenizer, model, source, record["ref"]))
        else:
            worst = max(worst, _encoder_decoder(directory, tokenizer, model, source, prompt, record["ref"]))
    print(f"\n{name}: max abs difference of per-token log-probs {worst:.2e}")
    assert worst < TOLERANCE


def _decoder_only(directory, tokenizer, model, prompt_ids, continuation):
    ids = prompt_ids + tokenizer.encode([continuation])[0] + [tokenizer.eos_id]
    generator = ctranslate2.Generator(str(ctranslate2_dir(directory)), compute_type="float32")
    ours = generator.score_batch([tokenizer.hf.convert_ids_to_tokens(ids)])[0].log_probs
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    theirs = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    return (torch.tensor(ours) - theirs).abs().max().item()


def _encoder_decoder(directory, tokenizer, model, source_ids, prompt, target):
    hf_tok = tokenizer.hf
    if prompt.prefix:  # M2M100: the target starts with the target language's token
        hf_tok.tgt_lang = "de"
        assert prompt.prefix == ["__de__"]
    labels = hf_tok(text_target=target.strip())["input_ids"]  # ends with </s>
    assert hf_tok.convert_ids_to_tokens(labels[:len(prompt.prefix)]) == prompt.prefix
    translator = ctranslate2.Translator(str(ctranslate2_dir(directory)), compute_type="float32")
    result = translator.score_batch([prompt.tokens], [hf_tok.convert_ids_to_tokens(labels[:-1])])[0]
    assert hf_tok.convert_tokens_to_ids(result.tokens) == labels  # CTranslate2 adds </s> itself
    start = [model.config.decoder_start_token_id]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([source_ids]),
                       decoder_input_ids=torch.tensor([start + labels[:-1]])).logits[0].float()
    if model.config.model_type == "marian":
        # CTranslate2 drops <pad> from Marian's vocabulary (it can never be generated, as in transformers'
        # generate): compare with the distribution over the other tokens.
        logits[:, model.config.pad_token_id] = -torch.inf
    theirs = torch.log_softmax(logits, -1).gather(1, torch.tensor(labels)[:, None])[:, 0]
    return (torch.tensor(result.log_probs) - theirs).abs().max().item()
