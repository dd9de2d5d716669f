"""A verifiable, reference-free reward for number expressions: do the numbers survive translation?

The numbers written in words in the source and in the hypothesis are read back to digits with
`text2num` and compared. No reference is looked at, so a noisy reference can be out-scored by a
correct sample, which is the point of ReST's filter.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from functools import lru_cache

from rest_cli import __version__
from rest_cli.io.records import Record
from rest_cli.rewards.base import Reward, register

_DIGIT = re.compile(r"\d")
_DIGITS = re.compile(r"\d+")


@lru_cache(maxsize=65536)
def spelled_digits(text: str, lang: str) -> str:
    """The digits of every number spelled out in `text`, joined in order.

    Joining matters: English years read as two numbers ("nineteen ninety-nine" -> "19 99") where
    German reads one ("neunzehnhundertneunundneunzig" -> "1999"); joined, both give "1999".
    threshold=0 converts isolated small numbers too ("two dogs" -> "2 dogs").
    """
    from text_to_num import alpha2digit

    return "".join(_DIGITS.findall(alpha2digit(text, lang, threshold=0)))


def number_similarity(source_digits: str, hyp_digits: str) -> float:
    """1 for the same digits, else the share of digits in common (difflib's ratio, 2*M/T)."""
    if source_digits == hyp_digits:
        return 1.0
    return SequenceMatcher(None, source_digits, hyp_digits, autojunk=False).ratio()


@register("numbers")
class NumberMatch(Reward):
    """Similarity of the numbers read from source and hypothesis; 0 if the hypothesis has digits.

    The digit guard closes the obvious hack: "24" parses to the same number as "twenty-four",
    so a policy could otherwise stop translating numbers into words.
    """

    name = "numbers"
    needs = ("src", "hyp")

    def __init__(self, src_lang: str = "de", tgt_lang: str = "en"):
        self.src_lang, self.tgt_lang = src_lang, tgt_lang

    def score(self, records: list[Record]) -> list[float]:
        return [self.score_pair(r["src"], r["hyp"]) for r in records]

    def score_pair(self, source: str, hypothesis: str) -> float:
        if _DIGIT.search(hypothesis):
            return 0.0
        return number_similarity(spelled_digits(source, self.src_lang),
                                 spelled_digits(hypothesis, self.tgt_lang))

    def signature(self) -> str:
        from importlib.metadata import version

        return (f"numbers|src:{self.src_lang}|tgt:{self.tgt_lang}|digits:0|sim:difflib-ratio"
                f"|text2num:{version('text2num')}|rest:{__version__}")
