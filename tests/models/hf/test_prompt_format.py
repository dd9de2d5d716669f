"""What a decoder-only prompt format adds: a static prefix or system prompt read once, stop strings, and
the source language of NLLB and M2M100.

Each is checked against transformers on the same ids: the static part changes how CTranslate2 reads
a prompt, never what the model sees, and a candidate cut at a stop string keeps the total log-prob
of the tokens that wrote it.
"""

from collections import Counter

import pytest
import torch

from rest_cli.errors import UsageError
from rest_cli.models.hf.importing import import_model
from rest_cli.models.hf.tokenizer import PromptFormat
from rest_cli.models.modeldir import kind_of, load_model, load_tokenizer
from rest_cli.sampling import DecodeOptions, EngineOptions, Sampler, SampleStats

SOURCES = [{"id": 0, "src": "eins hund runs"}, {"id": 1, "src": "the cat sees three red mice"}]
SHOTS = "Q: zwei katze\nA: two cat\n\nQ: drei maus\nA: three mouse\n\n"


def imported(hf_model, tmp_path, name, **prompt):
    source, _ = hf_model(name)
    return import_model(source, tmp_path / f"{name}-{len(prompt)}", PromptFormat(**prompt))


def sampler(directory, seed=0):
    return Sampler(str(directory), EngineOptions(compute_type="float32", seed=seed))


def greedy_by_transformers(model, ids, steps, end_ids):
    """transformers' greedy continuation of `ids` (up to an end token), and its total log-prob."""
    out, total = [], 0.0
    with torch.no_grad():
        for _ in range(steps):
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids + out])).logits[0, -1].float(), -1)
            token = int(logprobs.argmax())
            total += logprobs[token].item()
            if token in end_ids:
                break
            out.append(token)
    return out, total


def full_ids(directory, record):
    """The whole prompt as transformers reads it: the static part, then the record's part."""
    tokenizer = load_tokenizer(directory)
    return tokenizer.hf.convert_tokens_to_ids(tokenizer.prompts([record], 1024)[0].tokens)


@pytest.mark.parametrize("name, prompt", [
    ("llama", dict(prefix=SHOTS, template="Q: {src}\nA:")),
    ("qwen2", dict(chat=True, system="Translate into English.")),
])
def test_a_static_prompt_is_read_once_and_decodes_as_the_whole_prompt(hf_model, tmp_path, name, prompt):
    directory = imported(hf_model, tmp_path, name, **prompt)
    tokenizer, kind = load_tokenizer(directory), kind_of(directory)
    assert tokenizer.static and kind.engine_options(tokenizer)["static_prompt"] == tokenizer.static_tokens
    engine_prompt = kind.prompts(tokenizer, SOURCES[:1], 1024)[0].tokens
    assert tokenizer.static_tokens + engine_prompt == tokenizer.prompts(SOURCES[:1], 1024)[0].tokens
    model = load_model(directory)
    out = list(sampler(directory).sample(SOURCES, DecodeOptions(n=1, beam=1, max_length=8), SampleStats()))
    for record, candidate in zip(SOURCES, out):
        ids, total = greedy_by_transformers(model, full_ids(directory, record), 8, tokenizer.end_ids())
        assert candidate["hyp"] == tokenizer.decode([ids])[0]
        assert candidate["logprob"] == pytest.approx(total, abs=1e-3)


def test_the_system_prompt_is_the_chat_templates_own(hf_model, tmp_path):
    directory = imported(hf_model, tmp_path, "qwen2", chat=True, system="Be brief.")
    hf = load_tokenizer(directory).hf
    theirs = hf.apply_chat_template([{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": SOURCES[0]["src"]}],
                                    add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert full_ids(directory, SOURCES[0]) == theirs


def test_training_reads_the_static_prompt_as_sampling_does(hf_model, tmp_path):
    directory = imported(hf_model, tmp_path, "llama", prefix=SHOTS, template="Q: {src}\nA:")
    kind, tokenizer = kind_of(directory), load_tokenizer(directory)
    pairs = kind.encode_pairs(tokenizer, [SOURCES[0]["src"]], [" one dog"], [None], 64)
    assert pairs.sources[0] == full_ids(directory, SOURCES[0])
    assert pairs.sources[0][:len(tokenizer.static)] == tokenizer.static


def test_a_candidate_ends_before_a_stop_string(hf_model, tmp_path):
    plain = imported(hf_model, tmp_path, "llama")
    options = DecodeOptions(n=6, temperature=1.0, max_length=16)
    uncut = list(sampler(plain).sample(SOURCES, options, SampleStats()))
    stop = _common_two_token_string(load_tokenizer(plain), [r["hyp"] for r in uncut])
    stopped = imported(hf_model, tmp_path, "llama", stop=(stop, "never written"))
    # Two tokens: CTranslate2 cannot stop there itself.
    assert load_tokenizer(stopped).end_ids() == load_tokenizer(plain).end_ids()
    cut = list(sampler(stopped).sample(SOURCES, options, SampleStats()))
    assert sum(stop in r["hyp"] for r in uncut) >= 3  # the test means something
    for record in SOURCES:
        theirs = [r["hyp"] for r in uncut if r["id"] == record["id"]]
        ours = [r for r in cut if r["id"] == record["id"]]
        assert [r["logprob"] for r in ours] == sorted((r["logprob"] for r in ours), reverse=True)
        for candidate in ours:
            assert stop not in candidate["hyp"]
            reached = any(text.startswith(candidate["hyp"] + stop) for text in theirs)
            assert reached or candidate["hyp"] in theirs


def test_a_cut_candidate_is_scored_through_the_tokens_that_wrote_the_stop(hf_model, tmp_path):
    plain = imported(hf_model, tmp_path, "llama")
    options = DecodeOptions(n=6, temperature=1.0, max_length=16)
    stop = _common_two_token_string(load_tokenizer(plain), [r["hyp"] for r in sampler(plain).sample(
        SOURCES, options, SampleStats())])
    directory = imported(hf_model, tmp_path, "llama", stop=(stop,))
    engine, model = sampler(directory), load_model(directory)
    tokenizer, checked = engine.tokenizer, 0
    for prompt in engine.kind.prompts(tokenizer, SOURCES, 1024):
        result = engine.translator.generate_batch([prompt.tokens], **engine.kind_options,
                                                  **options.generator_kwargs())[0]
        texts = tokenizer.decode(result.sequences)
        pieces, cut_texts, scores = engine._cut_at_stops(prompt, result.sequences, texts, result.scores)
        prompt_ids = tokenizer.hf.convert_tokens_to_ids(prompt.tokens)
        for tokens, text, score in zip(pieces, cut_texts, scores):
            if tokens in result.sequences:
                continue  # not cut: CTranslate2's own score, checked elsewhere
            assert stop in tokenizer.decode([tokens])[0] and stop not in tokenizer.decode([tokens[:-1]])[0]
            assert tokenizer.decode([tokens])[0].startswith(text + stop)
            ids = tokenizer.hf.convert_tokens_to_ids(tokens)
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1:-1]
            total = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(ids)[:, None]).sum().item()
            assert score == pytest.approx(total, abs=1e-3)
            checked += 1
    assert checked >= 2


def _common_two_token_string(tokenizer, texts):
    """A printable two-character string that several texts hold and the tokenizer writes as two tokens."""
    counts = Counter(text[i:i + 2] for text in texts for i in range(len(text) - 1))
    return next(pair for pair, _ in counts.most_common() if pair.isprintable()
                and len(tokenizer.encode([pair])[0]) == 2 and sum(pair in text for text in texts) >= 3)


def test_a_stop_string_of_one_token_ends_decoding_there(hf_model, tmp_path):
    directory = imported(hf_model, tmp_path, "qwen2", chat=True, stop=("<|im_start|>",))
    tokenizer = load_tokenizer(directory)
    assert tokenizer.hf.convert_tokens_to_ids("<|im_start|>") in tokenizer.end_ids()


def test_the_source_language_of_m2m100(hf_model, tmp_path):
    directory = imported(hf_model, tmp_path, "m2m100", source_lang="fr", target_lang="de")
    tokenizer = load_tokenizer(directory)
    prompt = tokenizer.prompts(SOURCES[:1], 64)[0]
    assert prompt.tokens[0] == "__fr__" and prompt.prefix == ["__de__"]
    hf = load_tokenizer(directory).hf
    hf.src_lang = "fr"
    assert tokenizer.hf.convert_tokens_to_ids(prompt.tokens) == hf(SOURCES[0]["src"])["input_ids"]
    with pytest.raises(UsageError, match=r"^target language 'xx': the tokenizer has no token __xx__ or xx"):
        imported(hf_model, tmp_path / "bad", "m2m100", source_lang="xx")


@pytest.mark.parametrize("name, prompt, message", [
    ("t5", dict(stop=("\n",)), r"are for decoder-only models; this one is an encoder-decoder"),
    ("llama", dict(source_lang="de"), r"^source language 'de': this model takes no source-language token"),
])
def test_settings_a_model_cannot_take_are_refused_at_import(hf_model, tmp_path, name, prompt, message):
    with pytest.raises(UsageError, match=message):
        imported(hf_model, tmp_path, name, **prompt)
    assert not (tmp_path / f"{name}-1").exists()


@pytest.mark.parametrize("prompt, message", [
    (dict(system="x"), r"--system-prompt is a turn of the chat template"),
    (dict(chat=True, prefix="x"), r"with --chat-template, give --system-prompt"),
    (dict(stop=("",)), r"--stop takes non-empty strings"),
])
def test_prompt_formats_that_make_no_sense(prompt, message):
    with pytest.raises(UsageError, match=message):
        PromptFormat(**prompt)
