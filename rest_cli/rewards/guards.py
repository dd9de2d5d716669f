"""Guards: cheap rewards in [0, 1] that catch the ways a policy games a learned reward.

Each is 1 for ordinary output and falls to 0 for one failure: copying the source, repeating
itself, running away in length, or writing in the wrong language (`lang-guard`, which needs the
optional package py3langid). They are meant to multiply a learned reward
(`product(use, copy-guard, repeat-guard, length-guard)`, the `use-guarded` preset), so each
gives exactly 1.0 to a normal translation and leaves the learned reward untouched there.
Defaults were checked on German-English captions (Multi30k validation, 1,014 pairs).
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter

from rest_cli import __version__
from rest_cli.errors import UsageError
from rest_cli.io.records import Record
from rest_cli.rewards.base import Reward, register

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Case-folded word tokens: runs of letters and digits, punctuation dropped."""
    return _WORD.findall(text.casefold())


def ramp(x: float, full: float, zero: float) -> float:
    """1 up to `full`, 0 from `zero` on, linear between (`zero` may lie on either side of `full`)."""
    return min(1.0, max(0.0, 1.0 - (x - full) / (zero - full)))


def _number(reward: str, name: str, value, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        bounds = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise UsageError(f"reward {reward!r}: {name} must be a number {bounds}, got {value!r}")
    return float(value)


def _ordered(reward: str, lo: float, hi: float, lo_name: str = "lo", hi_name: str = "hi") -> None:
    if not lo < hi:
        raise UsageError(f"reward {reward!r}: {lo_name} ({lo:g}) must be below {hi_name} ({hi:g})")


def copied_share(src: str, hyp: str) -> float:
    """Share of the hypothesis' words that also occur in the source; numbers are not counted."""
    source = set(words(src))
    tokens = [w for w in words(hyp) if not w.isdigit()]
    return sum(w in source for w in tokens) / len(tokens) if tokens else 0.0


@register("copy-guard")
class CopyGuard(Reward):
    """1 - ramp(copied word share): catches an untranslated or half-translated source.

    Word overlap rather than character n-grams: German and English share many character
    n-grams (cognates, names), while whole words rarely coincide. On Multi30k de-en the true
    translation copies a median 0% of its words (99th percentile 33%, worst 62.5%, a
    sentence of names), a half-translated source about 53% and a copy 100%. Hence full
    reward up to `lo`=0.4 and none from `hi`=0.8. Numbers are skipped: copying them is right.
    """

    name = "copy-guard"
    needs = ("hyp", "src")

    def __init__(self, lo: float = 0.4, hi: float = 0.8):
        self.lo, self.hi = _number(self.name, "lo", lo, 0, 1), _number(self.name, "hi", hi, 0, 1)
        _ordered(self.name, self.lo, self.hi)

    def score(self, records: list[Record]) -> list[float]:
        return [ramp(copied_share(r["src"], r["hyp"]), self.lo, self.hi) for r in records]

    def signature(self) -> str:
        return (f"copy-guard|overlap:hyp-words-in-src|tok:words-casefold-nodigits|lo:{self.lo:g}|"
                f"hi:{self.hi:g}|map:1-ramp(lo,hi)|rest:{__version__}")


def repeated_share(text: str, n: int) -> float:
    """Share of the words that lie inside a word n-gram occurring more than once."""
    tokens = words(text)
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    counts = Counter(grams)
    covered = {i + j for i, gram in enumerate(grams) if counts[gram] > 1 for j in range(n)}
    return len(covered) / len(tokens) if tokens else 0.0


@register("repeat-guard")
class RepeatGuard(Reward):
    """1 - ramp(share of words inside a repeated word n-gram): catches loops and repeated sentences.

    n=4, because captions repeat shorter phrases naturally ("a man in a ... a man in a"):
    of 20,000 Multi30k English references only 26 repeat any 4-gram. A sentence said twice
    covers 100% of its words and gets 0; full reward up to `lo`=0.25, none from `hi`=0.75.
    """

    name = "repeat-guard"
    needs = ("hyp",)

    def __init__(self, n: int = 4, lo: float = 0.25, hi: float = 0.75):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UsageError(f"reward {self.name!r}: n must be an integer >= 1, got {n!r}")
        self.n = n
        self.lo, self.hi = _number(self.name, "lo", lo, 0, 1), _number(self.name, "hi", hi, 0, 1)
        _ordered(self.name, self.lo, self.hi)

    def score(self, records: list[Record]) -> list[float]:
        return [ramp(repeated_share(r["hyp"], self.n), self.lo, self.hi) for r in records]

    def signature(self) -> str:
        return (f"repeat-guard|repeat:words-in-repeated-{self.n}grams|tok:words-casefold|lo:{self.lo:g}|"
                f"hi:{self.hi:g}|map:1-ramp(lo,hi)|rest:{__version__}")


def length_ratio(src: str, hyp: str) -> float:
    """Non-space characters of the hypothesis per non-space character of the source."""
    src_chars, hyp_chars = len("".join(src.split())), len("".join(hyp.split()))
    if not src_chars:  # nothing to translate: nothing is the right length, anything else runs away
        return math.inf if hyp_chars else 1.0
    return hyp_chars / src_chars


@register("length-guard")
class LengthGuard(Reward):
    """1 while len(hyp)/len(src) lies in [min_ratio, max_ratio]; linear to 0 at ratio 0 and 2*max_ratio.

    Characters, not words: German compounds make word ratios lopsided, and characters work
    for scripts without spaces. English/German in characters on Multi30k: median 0.81,
    range 0.49 to 1.73; the defaults [0.4, 2.0] leave every true translation at 1.
    """

    name = "length-guard"
    needs = ("hyp", "src")

    def __init__(self, min_ratio: float = 0.4, max_ratio: float = 2.0):
        self.min_ratio = _number(self.name, "min_ratio", min_ratio)
        self.max_ratio = _number(self.name, "max_ratio", max_ratio)
        _ordered(self.name, self.min_ratio, self.max_ratio, "min_ratio", "max_ratio")

    def _value(self, ratio: float) -> float:
        if ratio > self.max_ratio:
            return ramp(ratio, self.max_ratio, 2 * self.max_ratio)
        if ratio < self.min_ratio:
            return ramp(ratio, self.min_ratio, 0.0)
        return 1.0

    def score(self, records: list[Record]) -> list[float]:
        return [self._value(length_ratio(r["src"], r["hyp"])) for r in records]

    def signature(self) -> str:
        return (f"length-guard|ratio:hyp/src|unit:nonspace-chars|min:{self.min_ratio:g}|"
                f"max:{self.max_ratio:g}|map:ramp(0..min)*ramp(max..2max)|rest:{__version__}")


LANGID_PACKAGE = "py3langid"
# The languages lang-guard tells apart by default: the target must be told from the source, and
# from the other languages a model might drift into. Not two alone: restricted to {en, de},
# French and Spanish output are called English.
LANGUAGES = ("ar", "cs", "da", "de", "el", "en", "es", "fi", "fr", "hu", "it", "ja", "ko", "nl", "no", "pl",
             "pt", "ro", "ru", "sv", "tr", "zh")
_LETTERS = re.compile(r"[^\W\d_]+")
# Scripts written without spaces between words (Chinese, Japanese kana, Thai): each character
# counts as a word, or a whole sentence would count as one.
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def word_count(text: str) -> int:
    """Words of letters (digits and punctuation aside), a character of an unspaced script each."""
    return len(_UNSPACED.findall(text)) + len(_LETTERS.findall(_UNSPACED.sub(" ", text)))


@functools.lru_cache(maxsize=None)
def _identifier(languages: tuple[str, ...]):
    """py3langid's identifier restricted to `languages` (its model, numpy arrays in an xz file, is
    read without pickle), built once per process and language set: loading takes about a second."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(languages))
    return identifier


def load_identifier(reward_name: str, languages: tuple[str, ...]):
    """The identifier, or one line saying how to install it, or naming a language it does not know."""
    try:
        import py3langid  # noqa: F401
    except ImportError:
        message = (f"reward {reward_name!r} needs the optional package {LANGID_PACKAGE}: "
                   f"pip install {LANGID_PACKAGE} (in a checkout: pip install -e '.[langid]')")
        raise UsageError(message) from None
    try:
        return _identifier(languages)
    except ValueError as err:  # py3langid: "Unknown language code(s): {...}"
        raise UsageError(f"reward {reward_name!r}: {err} (ISO 639-1 codes, e.g. en, de)") from None


@register("lang-guard")
class LanguageGuard(Reward):
    """1 when the output is identified as `lang`, 0 when it is identified as another language.

    Identification (py3langid, Lui and Baldwin's langid.py: a naive Bayes model over byte n-grams)
    chooses among `among` (comma-separated ISO 639-1 codes; default LANGUAGES, with `lang` added).
    An untranslated copy of the source, and output that drifted into a third language, get 0.
    Outputs with fewer than `min_words` words of letters are not judged and get 1: two words
    ("Man running") are too few to tell a language by, and a guard must leave right output alone.
    In scripts without spaces (Chinese, Japanese, Thai) each character counts as a word.
    On Multi30k (validation and 2016 test, 2,014 pairs) every English reference passes and every
    German source is caught.
    """

    name = "lang-guard"
    needs = ("hyp",)

    def __init__(self, lang: str = "en", among: str = ",".join(LANGUAGES), min_words: int = 3):
        if not isinstance(lang, str) or not isinstance(among, str):
            raise UsageError(f"reward {self.name!r}: lang and among are quoted language codes, "
                             f'e.g. lang-guard(lang="de", among="de,en,fr")')
        if isinstance(min_words, bool) or not isinstance(min_words, int) or min_words < 1:
            raise UsageError(f"reward {self.name!r}: min_words must be an integer >= 1, got {min_words!r}")
        self.lang, self.min_words = lang, min_words
        self.among = tuple(sorted({code.strip() for code in among.split(",") if code.strip()} | {lang}))
        self.identifier = load_identifier(self.name, self.among)

    def _value(self, text: str) -> float:
        if word_count(text) < self.min_words:
            return 1.0
        return 1.0 if self.identifier.classify(text)[0] == self.lang else 0.0

    def score(self, records: list[Record]) -> list[float]:
        return [self._value(r["hyp"]) for r in records]

    def signature(self) -> str:
        import py3langid
        return (f"lang-guard|lang:{self.lang}|among:{','.join(self.among)}|min_words:{self.min_words}|"
                f"pkg:{LANGID_PACKAGE}-{py3langid.__version__}|map:1-if-identified|rest:{__version__}")
