import pytest
import torch

from rest_cli.errors import UsageError
from rest_cli.models.modeldir import load_model
from rest_cli.models.native.transformer import pad_batch
from rest_cli.sampling import DecodeOptions, EngineOptions, Sampler, SampleStats, with_ids

SOURCES = [{"id": f"s{i}", "src": text, "ref": "one dog", "extra": i}
           for i, text in enumerate(["eins hund", "zwei katze haus", "drei", "", "vier fünf hund katze"])]


def draw(model_dir, seed=0, **decode):
    sampler = Sampler(str(model_dir), EngineOptions(compute_type="float32", seed=seed, batch_size=2))
    return list(sampler.sample(SOURCES, DecodeOptions(max_length=12, **decode), SampleStats()))


def test_output_is_grouped_in_input_order_with_n_candidates_each(random_model_dir):
    out = draw(random_model_dir, n=3)
    assert [(r["id"], r["k"]) for r in out] == [(s["id"], k) for s in SOURCES for k in range(3)]
    assert all(r["extra"] == int(r["id"][1:]) and r["origin"] == "sample" for r in out)


def test_same_seed_same_samples_and_samples_differ(random_model_dir):
    first, again, other = (draw(random_model_dir, n=4), draw(random_model_dir, n=4),
                           draw(random_model_dir, 1, n=4))
    assert [r["hyp"] for r in first] == [r["hyp"] for r in again]
    assert [r["hyp"] for r in first] != [r["hyp"] for r in other]
    distinct_per_source = [len({r["hyp"] for r in first if r["id"] == s["id"]}) for s in SOURCES]
    assert sum(distinct_per_source) > len(SOURCES) * 2  # a random policy rarely repeats itself


def test_logprob_is_the_total_under_the_pytorch_policy(random_model_dir):
    """The scores rest writes as `logprob` are PyTorch's sequence log-probs (EOS included when reached)."""
    sampler = Sampler(str(random_model_dir), EngineOptions(compute_type="float32"))
    tokenizer, model = sampler.tokenizer, load_model(random_model_dir)
    sources = [s["src"] for s in SOURCES if s["src"]]
    results = sampler.translator.translate_batch(tokenizer.encode_pieces(sources),
                                                 **DecodeOptions(n=3, max_length=12).ctranslate2_kwargs())
    src_ids = tokenizer.encode(sources)
    for ids, result in zip(src_ids, results):
        hyps = [[tokenizer.sp.piece_to_id(p) for p in pieces] for pieces in result.hypotheses]
        with torch.no_grad():
            per_token = model.token_logprobs(pad_batch([ids] * len(hyps)), pad_batch(hyps))
        expected = [row[: len(h) + (len(h) < 12)].sum().item() for row, h in zip(per_token, hyps)]
        assert result.scores == pytest.approx(expected, abs=1e-3)


def test_beam_search_is_deterministic_and_sorted(random_model_dir):
    out = draw(random_model_dir, n=2, beam=4)
    assert out == draw(random_model_dir, seed=5, n=2, beam=4)
    for i in range(0, len(out), 2):
        assert out[i]["logprob"] >= out[i + 1]["logprob"]


def test_include_ref_appends_the_reference(random_model_dir):
    sampler = Sampler(str(random_model_dir), EngineOptions(compute_type="float32"))
    out = list(sampler.sample(SOURCES[:2], DecodeOptions(n=2, max_length=8), SampleStats(), include_ref=True))
    assert [(r["k"], r["origin"]) for r in out] == [(0, "sample"), (1, "sample"), (2, "ref")] * 2
    assert out[2]["hyp"] == "one dog" and "logprob" not in out[2]


def test_stale_reward_fields_are_not_copied_to_candidates(random_model_dir):
    sampler = Sampler(str(random_model_dir), EngineOptions(compute_type="float32"))
    scored = [{"id": 1, "src": "eins", "hyp": "old", "reward": 0.9, "reward_name": "chrf"}]
    out = list(sampler.sample(scored, DecodeOptions(n=1, max_length=8), SampleStats()))
    assert "reward" not in out[0] and "reward_name" not in out[0]


def test_over_long_sources_are_truncated_and_counted(random_model_dir):
    sampler = Sampler(str(random_model_dir), EngineOptions(compute_type="float32"))
    stats = SampleStats()
    long = [{"id": 0, "src": " ".join(["eins hund"] * 50)}]
    out = list(sampler.sample(long, DecodeOptions(n=1, max_length=4, max_input_length=10), stats))
    assert len(out) == 1 and stats.truncated_sources == 1


def test_records_without_id_get_their_position():
    assert [r["id"] for r in with_ids([{"src": "a"}, {"id": "x", "src": "b"}, {"src": "c"}])] == [0, "x", 2]


@pytest.mark.parametrize("options", [dict(n=0), dict(n=5, beam=4), dict(temperature=0), dict(top_p=0)])
def test_bad_decode_options(options):
    with pytest.raises(UsageError):
        DecodeOptions(**options)


def test_a_policy_with_non_finite_weights_is_an_error_not_null_logprobs(random_model_dir, tmp_path):
    from rest_cli.errors import RestError
    from rest_cli.models.modeldir import save_model_dir

    model = load_model(random_model_dir)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    broken = save_model_dir(tmp_path / "broken", model, random_model_dir, {})
    with pytest.raises(RestError, match="log-probability nan .* not finite numbers"):
        draw(broken, n=2)
