"""The built-in offline demo: German to English translation of number expressions.

Sentences come from short templates with a cardinal, an ordinal, a year or an amount spelled out
by `num2words`. German compounds reorder ("vierundzwanzig" is "twenty-four"), which a small
model must learn. Training references carry noise, as web-crawled parallel data does; valid and
test references are clean. Every clean pair is checked against the demo's reward (`numbers`)
when it is made, so a correct translation always scores 1.0.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from .records import Record
from .rewards.numbers import NumberMatch

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
    noise: float = 0.15  # share of training references corrupted
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
                noisy = split == "train" and rng.random() < spec.noise
                records.append(_record(f"{split}-{len(records):06d}", pair, noisy, rng))
    return splits


def _record(record_id: str, pair: Pair, noisy: bool, rng: random.Random) -> Record:
    record = {"id": record_id, "src": pair.source, "ref": pair.english, "kind": pair.kind, "noise": None}
    if noisy:
        record["noise"], english_number = _noisy_number(pair.kind, pair.number, rng)
        record["ref"] = pair.english_template.format(n=english_number)
    return record
