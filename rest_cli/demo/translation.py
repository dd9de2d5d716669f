"""The built-in offline demo: German to English translation of number expressions.

Sentences come from short templates with a cardinal, an ordinal, a year or an amount spelled out
by `num2words`. German compounds reorder ("vierundzwanzig" is "twenty-four"), which a small
model must learn. Training references carry noise, as web-crawled parallel data does: random
errors spread over all sentences (a wrong number, a dropped word, swapped digits), and a
systematic one concentrated on one "site" (the salary template, whose translator swaps the
tens and units of German compounds in most of its sentences). Random noise a model averages
away; systematic noise it learns, so BC's own greedy output is wrong there, and only a reward
that checks the numbers can pick the correct samples. Valid and test references are clean. Every
clean pair is checked against the demo's reward (`numbers`) when it is made, so a correct
translation always scores 1.0.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from rest_cli.io.records import Record
from rest_cli.rewards.numbers import NumberMatch

# (kind, German template, English template); {n} is the number in words.
TEMPLATES = [
    ("cardinal", "Ich sehe {n} Hunde.", "I see {n} dogs."),
    ("cardinal", "Wir haben {n} Bücher.", "We have {n} books."),
    ("cardinal", "Es gibt {n} Häuser in der Stadt.", "There are {n} houses in the town."),
    ("ordinal", "Das ist der {n} Versuch.", "This is the {n} attempt."),
    ("ordinal", "Das ist die {n} Runde.", "This is the {n} round."),
    ("year", "Das Haus wurde {n} gebaut.", "The house was built in {n}."),
    ("year", "Er ist {n} geboren.", "He was born in {n}."),
    ("amount", "Das kostet {n} Euro.", "That costs {n} euros."),
    ("amount", "Sie verdient {n} Dollar im Monat.", "She earns {n} dollars a month."),
]
# The template whose training references carry the systematic error.
SYSTEMATIC_TEMPLATE = "She earns {n} dollars a month."
NOISE_KINDS = ("swapped-digits", "wrong-number", "dropped-word")


def _draw_number(kind: str, rng: random.Random) -> int:
    if kind == "year":
        return rng.randint(1100, 2099)
    if kind == "ordinal":
        return rng.randint(2, 2000)
    # Log-uniform magnitudes, so small and large numbers are both common.
    return max(2, int(10 ** rng.uniform(0.4, 6.0)))


def spell(number: int, kind: str, lang: str) -> str:
    """The number in words, as the demo writes it (English without num2words' commas)."""
    from num2words import num2words

    to = {"ordinal": "ordinal", "year": "year"}.get(kind, "cardinal")
    words = num2words(number, lang=lang, to=to)
    return words.replace(",", "") if lang == "en" else words


def _swap_tens_and_units(number: int) -> int | None:
    """24 -> 42: the classic error on German compounds, which name the units first."""
    tens, units = (number // 10) % 10, number % 10
    if tens < 2 or units == 0 or tens == units:
        return None
    return number - tens * 10 - units + units * 10 + tens


def _noisy_number(kind: str, number: int, rng: random.Random) -> tuple[str, str]:
    """The noise type and a corrupted English rendering of `number`."""
    noise = rng.choice(NOISE_KINDS)
    words = spell(number, kind, "en").split()
    if noise == "dropped-word" and len(words) > 1:
        del words[rng.randrange(len(words))]
        return noise, " ".join(words)
    wrong = _swap_tens_and_units(number) if noise == "swapped-digits" else None
    if wrong is None:
        noise, wrong = "wrong-number", max(2, number + rng.choice([-1, 1]) * rng.randint(1, 9))
    return noise, spell(wrong, kind, "en")


@dataclass(frozen=True)
class Pair:
    kind: str
    number: int
    source: str
    english_template: str

    @property
    def english(self) -> str:
        return self.english_template.format(n=spell(self.number, self.kind, "en"))


@dataclass(frozen=True)
class DemoSpec:
    """Sizes, noise and seed of the demo data (the defaults are the documented demo)."""

    train: int = 8000
    valid: int = 500
    test: int = 500
    noise: float = 0.085      # share of all training references with a random error
    systematic: float = 0.9   # share of SYSTEMATIC_TEMPLATE's references with swapped digits, where possible
    seed: int = 0


def _clean_pairs(rng: random.Random, reward: NumberMatch) -> Iterator[Pair]:
    """Endless pairs whose clean translation the reward scores 1.0."""
    while True:
        kind, de_template, en_template = rng.choice(TEMPLATES)
        number = _draw_number(kind, rng)
        pair = Pair(kind, number, de_template.format(n=spell(number, kind, "de")), en_template)
        # A few num2words forms do not parse back (e.g. "nineteen oh-five"); leave them out so
        # that a correct translation always earns the full reward.
        if reward.score_pair(pair.source, pair.english) == 1.0:
            yield pair


def demo_splits(spec: DemoSpec = DemoSpec()) -> dict[str, list[Record]]:
    """Train, valid and test records; sources never repeat across or within splits."""
    rng = random.Random(spec.seed)
    pairs = _clean_pairs(rng, NumberMatch())
    seen: set[str] = set()
    splits: dict[str, list[Record]] = {}
    for split, size in (("train", spec.train), ("valid", spec.valid), ("test", spec.test)):
        records = splits[split] = []
        while len(records) < size:
            pair = next(pairs)
            if pair.source not in seen:
                seen.add(pair.source)
                record = {"id": f"{split}-{len(records):06d}", "src": pair.source, "ref": pair.english,
                          "kind": pair.kind, "noise": None}
                records.append(_add_noise(record, pair, spec, rng) if split == "train" else record)
    return splits


def _add_noise(record: Record, pair: Pair, spec: DemoSpec, rng: random.Random) -> Record:
    """Corrupt a training reference: systematically on one template, randomly everywhere."""
    swapped = _swap_tens_and_units(pair.number)
    if pair.english_template == SYSTEMATIC_TEMPLATE and swapped and rng.random() < spec.systematic:
        noise, english_number = "systematic-swap", spell(swapped, pair.kind, "en")
    elif rng.random() < spec.noise:
        noise, english_number = _noisy_number(pair.kind, pair.number, rng)
    else:
        return record
    return {**record, "ref": pair.english_template.format(n=english_number), "noise": noise}
