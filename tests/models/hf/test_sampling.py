"""Grow with Hugging Face policies: N distinct candidates per source, in rest's record format.

Encoder-decoder policies decode with CTranslate2's Translator, decoder-only ones with its Generator
(the candidate is the continuation of the prompt). `logprob` means the same for both: the total
log-prob of the candidate under the policy, its end token included when it has one.
"""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from rest_cli.cli.main import app
from rest_cli.errors import UsageError
from rest_cli.models.modeldir import ctranslate2_dir, load_model
from rest_cli.sampling import DecodeOptions, EngineOptions, Sampler, SampleStats
from tests.helpers import read_jsonl, write_jsonl
from tests.models.hf.tiny import BUILDERS

SOURCES = [{"id": "a", "src": "eins hund runs", "extra": 1},
           {"id": "b", "src": "the cat sees three red mice", "extra": 2},
           {"id": "c", "src": "zwei", "extra": 3}]
MAX_LENGTH = 10


def sampler(directory, seed=0):
    return Sampler(str(directory), EngineOptions(compute_type="float32", seed=seed, batch_size=2))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_n_distinct_candidates_per_source_in_the_record_format(hf_model, name):
    _, directory = hf_model(name)
    stats = SampleStats()
    out = list(sampler(directory).sample(SOURCES, DecodeOptions(n=4, max_length=MAX_LENGTH), stats))
    assert [(r["id"], r["k"]) for r in out] == [(s["id"], k) for s in SOURCES for k in range(4)]
    for record in out:
        assert record["origin"] == "sample" and record["extra"] == {"a": 1, "b": 2, "c": 3}[record["id"]]
        assert isinstance(record["hyp"], str) and math.isfinite(record["logprob"]) and record["logprob"] < 0
    assert all(len({r["hyp"] for r in out if r["id"] == s["id"]}) == 4 for s in SOURCES)
    assert stats.candidates == 12 and 0 < stats.tokens <= 12 * MAX_LENGTH  # candidates only, no prompt


@pytest.mark.parametrize("name", ["gpt2", "qwen2", "m2m100", "bart"])
def test_logprob_is_the_total_under_the_transformers_model(hf_model, name):
    """Scores as total log-probs: the Generator's like the Translator's, the target prefix left out."""
    _, directory = hf_model(name)
    engine = sampler(directory)
    tokenizer, model = engine.tokenizer, load_model(directory)
    options = DecodeOptions(n=3, max_length=MAX_LENGTH)
    prompts = tokenizer.prompts(SOURCES, 1024)
    kwargs = engine.kind.engine_options(tokenizer)
    for prompt in prompts:
        source = tokenizer.hf.convert_tokens_to_ids(prompt.tokens)
        if engine.kind.engine == "generator":
            result = engine.translator.generate_batch([prompt.tokens], **kwargs,
                                                      **options.generator_kwargs())[0]
            candidates = result.sequences_ids
        else:
            result = engine.translator.translate_batch([prompt.tokens], [prompt.prefix],
                                                       **options.ctranslate2_kwargs(len(prompt.prefix)))[0]
            # Ids by the engine's own vocabulary: it has M2M100's made-up words, which transformers lacks.
            vocabulary = json.loads((ctranslate2_dir(directory) / "shared_vocabulary.json").read_text())
            ids = {token: i for i, token in enumerate(vocabulary)}
            candidates = [[ids[t] for t in tokens] for tokens in result.hypotheses]
        for ids, score in zip(candidates, result.scores):
            ended = len(ids) < MAX_LENGTH + len(prompt.prefix)
            expected = _total_logprob(model, tokenizer, source, ids, prompt, ended)
            assert score == pytest.approx(expected, abs=1e-3)


def _total_logprob(model, tokenizer, source, ids, prompt, ended):
    prefix = len(prompt.prefix)
    target = ids + ([tokenizer.end_ids()[0] if not model.config.is_encoder_decoder else tokenizer.eos_id]
                    if ended else [])
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            start = [model.config.decoder_start_token_id]
            logits = model(input_ids=torch.tensor([source]),
                           decoder_input_ids=torch.tensor([start + target[:-1]])).logits[0]
            picked = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(target)[:, None])[:, 0]
            return picked[prefix:].sum().item()  # the forced language token is not the candidate's
        logits = model(input_ids=torch.tensor([source + target])).logits[0, len(source) - 1:-1]
        return torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(target)[:, None]).sum().item()


def test_each_record_may_name_its_target_language(hf_model):
    _, directory = hf_model("m2m100")
    engine = sampler(directory)
    prompts = engine.tokenizer.prompts([{"id": 0, "src": "eins"}, {"id": 1, "src": "eins", "tgt_lang": "fr"}],
                                       64)
    assert [p.prefix for p in prompts] == [["__de__"], ["__fr__"]]
    assert prompts[0].tokens[0] == "__en__" and prompts[0].tokens[-1] == "</s>"  # as its tokenizer writes
    options = DecodeOptions(n=2, max_length=MAX_LENGTH)
    out = list(engine.sample([{"id": 0, "src": "eins", "tgt_lang": "fr"}], options, SampleStats()))
    assert not any("__fr__" in r["hyp"] for r in out)
    with pytest.raises(UsageError, match=r"target language 'xx': the tokenizer has no token __xx__ or xx"):
        list(engine.sample([{"id": 0, "src": "eins", "tgt_lang": "xx"}], options, SampleStats()))


def test_a_prompt_is_cut_to_the_longest_input_and_counted(hf_model):
    _, directory = hf_model("llama")
    stats = SampleStats()
    options = DecodeOptions(n=2, max_length=MAX_LENGTH, max_input_length=8)
    out = list(sampler(directory).sample([{"id": 0, "src": "eins " * 50}], options, stats))
    assert len(out) == 2 and stats.truncated_sources == 1
    prompt = sampler(directory).tokenizer.prompts([{"src": "eins " * 50}], 8)[0]
    assert len(prompt.tokens) == 8 and prompt.tokens[0] == "<s>" and prompt.truncated


@pytest.mark.parametrize("name", ["gpt2", "marian"])
def test_prompts_and_candidates_fit_the_models_positions(hf_model, name):
    """Past its position table CTranslate2 fails mid-run: refuse the length at once, cut long inputs."""
    _, directory = hf_model(name)  # 128 positions
    with pytest.raises(UsageError, match=r"^--max-length 128: this policy reads at most 128 positions"):
        list(sampler(directory).sample(SOURCES, DecodeOptions(n=1, max_length=128), SampleStats()))
    stats = SampleStats()
    options = DecodeOptions(n=1, max_length=100)
    out = list(sampler(directory).sample([{"id": 0, "src": "eins " * 200}], options, stats))
    assert len(out) == 1 and stats.truncated_sources == 1


def test_import_then_sample_on_the_command_line(hf_model, tmp_path):
    source, _ = hf_model("qwen2")
    policy = tmp_path / "policy"
    imported = CliRunner().invoke(app, ["import", str(source), "-o", str(policy), "--chat-template"])
    assert imported.exit_code == 0, imported.stderr
    assert imported.stderr.splitlines() == [f"rest import: wrote {policy}"]
    data = write_jsonl(tmp_path / "in.jsonl", [{"src": "eins hund"}, {"src": "zwei katze"}])
    result = CliRunner().invoke(app, ["sample", "-m", str(policy), "-n", "3", "--max-length", "8",
                                      "--compute-type", "float32", str(data)])
    assert result.exit_code == 0, result.stderr
    records = read_jsonl(result.stdout)
    assert [(r["id"], r["k"]) for r in records] == [(i, k) for i in range(2) for k in range(3)]
    assert {"src", "hyp", "k", "logprob", "origin"} <= set(records[0])
