"""The native Transformer's shape: a config stored beside its weights, and presets by name (no torch here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class ModelConfig:
    """Everything needed to rebuild a Seq2SeqTransformer; stored beside its weights."""

    vocab_size: int
    d_model: int = 256
    n_heads: int = 4
    ffn_dim: int = 1024
    enc_layers: int = 3
    dec_layers: int = 3
    dropout: float = 0.1
    max_positions: int = 1024  # longest source or target PyTorch accepts; CTranslate2 has no such cap
    activation: str = "relu"  # "relu" or "gelu" (exact erf GELU, CTranslate2's GELU)
    tie_embeddings: bool = True  # one matrix for source and target embeddings and the output projection

    def to_dict(self) -> dict:
        """Plain JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Rebuild a config, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# Shapes by name; vocab_size comes from the tokenizer. "iwslt" is the paper's IWSLT De-En model.
PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=64, n_heads=2, ffn_dim=128, enc_layers=1, dec_layers=1),  # tests
    # the offline demo, minutes on 2 cores
    "demo": dict(d_model=128, n_heads=4, ffn_dim=512, enc_layers=2, dec_layers=2),
    "small": dict(d_model=192, n_heads=4, ffn_dim=768, enc_layers=3, dec_layers=3),
    "base": dict(d_model=256, n_heads=4, ffn_dim=1024, enc_layers=3, dec_layers=3),
    "iwslt": dict(d_model=512, n_heads=4, ffn_dim=1024, enc_layers=6, dec_layers=6),
}


def config_from_preset(name: str, vocab_size: int, **overrides) -> ModelConfig:
    """A ModelConfig from a named preset, with any field overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose from {', '.join(PRESETS)}")
    return ModelConfig(vocab_size=vocab_size, **{**PRESETS[name], **overrides})
