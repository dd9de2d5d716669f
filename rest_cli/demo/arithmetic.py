"""The second offline demo: addition, checked, for a decoder-only policy (ReST-EM).

A record asks for a sum, `src` "47+38=", with the true sum in `answer` (which the `answer` reward
checks) and a reference answer in `ref`. Training references carry a systematic error, as a
careless annotator makes: on a share of the problems whose units carry, the reference drops the
carry (47+38= "75"). A model trained on them (BC) learns the error in part; its samples hold the
right answer often enough that keeping only checked samples (ReST-EM's Improve data) removes it.
Valid and test answers are clean.

The policy is a tiny Llama, built here from a config with random weights and a tokenizer of one
token per character, and saved with `save_pretrained`: the demo's BC step trains it from scratch
(`rest import`, then `rest finetune --init`). Measured calibration: ../shared/notes, and
docs/results.md for the loop's figures.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from rest_cli.io.records import Record

SYMBOLS = "0123456789+="
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
# The base model: small enough to learn addition on 2 CPU cores in a couple of minutes.
MODEL_SHAPE = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                   num_key_value_heads=4, max_position_embeddings=64)


@dataclass(frozen=True)
class ArithmeticSpec:
    """Sizes, difficulty, noise and seed of the arithmetic demo (the defaults are the documented demo)."""

    train: int = 7000
    valid: int = 300
    test: int = 500
    digits: int = 2          # each operand has this many digits
    noise: float = 0.25      # share of the carrying training problems whose reference drops the carry
    seed: int = 0

    def __post_init__(self):
        from rest_cli.errors import UsageError

        if not 1 <= self.digits <= 6:
            raise UsageError(f"--digits must be 1 to 6, got {self.digits}")
        if self.train + self.valid + self.test > self.problems:
            raise UsageError(f"{self.train + self.valid + self.test} problems asked of {self.digits}-digit "
                             f"operands, which make {self.problems} distinct sums: use more --digits")

    @property
    def problems(self) -> int:
        """How many distinct sums a + b the operands make."""
        return (9 * 10 ** (self.digits - 1)) ** 2


def carries(a: int, b: int) -> bool:
    """Whether the units of a + b carry into the tens."""
    return a % 10 + b % 10 >= 10


def arithmetic_splits(spec: ArithmeticSpec = ArithmeticSpec()) -> dict[str, list[Record]]:
    """Train, valid and test records; a problem never repeats across or within splits."""
    rng = random.Random(spec.seed)
    low, span = 10 ** (spec.digits - 1), 9 * 10 ** (spec.digits - 1)
    drawn = iter(rng.sample(range(spec.problems), spec.train + spec.valid + spec.test))
    splits: dict[str, list[Record]] = {}
    for split, size in (("train", spec.train), ("valid", spec.valid), ("test", spec.test)):
        splits[split] = []
        for _ in range(size):
            a, b = divmod(next(drawn), span)
            splits[split].append(_problem(f"{split}-{len(splits[split]):06d}", low + a, low + b,
                                          split == "train", spec.noise, rng))
    return splits


def _problem(id_: str, a: int, b: int, train: bool, noise: float, rng: random.Random) -> Record:
    noisy = train and carries(a, b) and rng.random() < noise
    reference = a + b - 10 if noisy else a + b
    return {"id": id_, "src": f"{a}+{b}=", "ref": str(reference), "answer": a + b,
            "noise": "dropped-carry" if noisy else None}


def write_base_model(folder: Path, seed: int = 0) -> Path:
    """A Llama with random weights and a one-token-per-character tokenizer, saved with save_pretrained."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    from rest_cli.models.hf.tokenizer import quiet_transformers

    transformers = quiet_transformers()

    vocab = {token: i for i, token in enumerate([*SPECIALS, *SYMBOLS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")  # every character a token
    core.decoder = decoders.Fuse()  # ...and joined back without spaces
    core.post_processor = processors.TemplateProcessing(single="<s> $A",  # Llama's: <s> before a text
                                                        special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>",
                                                     bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    config = transformers.LlamaConfig(vocab_size=len(vocab), bos_token_id=vocab["<s>"],
                                      eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"], **MODEL_SHAPE)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
