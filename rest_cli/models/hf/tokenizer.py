"""A Hugging Face tokenizer as a `rest` tokenizer, and how a record becomes what the engine reads.

The token ids CTranslate2 sees must be the ones transformers would see, so the special tokens come
from the tokenizer itself: an encoder-decoder source gets what the tokenizer puts around a text
(</s> for T5 and Marian; the source-language token and </s> for M2M100 and NLLB), a decoder-only
prompt gets what it puts before one (Llama's <s>; nothing for GPT-2 and Qwen2) and never an end
token, and a chat template is rendered by the tokenizer, which writes its own special tokens.

How records become prompts is part of the policy, stored once, in DIR/prompt.json (written by
`rest import`, kept by every fine-tune): a template with `{src}`, or the chat template; the default
source and target languages; a fixed prefix (few-shot examples) or system prompt, which CTranslate2
reads once and caches (`static_prompt`); and the strings that end a decoder-only model's answer.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rest_cli.errors import RestError, UsageError
from rest_cli.models.base import Prompt

HF, PROMPT_FILE = "hf", "prompt.json"
PLACEHOLDER = "{src}"


@dataclass(frozen=True)
class PromptFormat:
    """How a record's `src` becomes the model's input (DIR/prompt.json)."""

    template: str | None = None     # with {src}; None: the source as it is
    chat: bool = False              # the tokenizer's chat template, the source as the user's turn
    target_lang: str | None = None  # when a record has no `tgt_lang` (NLLB, M2M100, multilingual Marian)
    source_lang: str | None = None  # NLLB and M2M100: the source's language token, instead of the tokenizer's
    prefix: str | None = None       # decoder-only: text before every prompt (few-shot examples), read once
    system: str | None = None       # decoder-only, with chat: the system prompt, read once where it can be
    stop: tuple[str, ...] = ()      # decoder-only: an answer ends before the first of these strings

    def __post_init__(self):
        object.__setattr__(self, "stop", tuple(self.stop))  # a list when read back from prompt.json
        if self.template is not None and PLACEHOLDER not in self.template:
            raise UsageError(f"--prompt-template must contain {PLACEHOLDER}, where the source goes: "
                             f"{self.template!r}")
        if self.template is not None and self.chat:
            raise UsageError("give --prompt-template or --chat-template, not both")
        if self.system is not None and not self.chat:
            raise UsageError("--system-prompt is a turn of the chat template: give --chat-template too, or "
                             "put fixed text before every prompt with --prompt-prefix-file")
        if self.prefix is not None and self.chat:
            raise UsageError("--prompt-prefix-file goes before a plain or templated prompt; with "
                             "--chat-template, give --system-prompt")
        if any(not isinstance(stop, str) or not stop for stop in self.stop):
            raise UsageError(f"--stop takes non-empty strings, got {list(self.stop)!r}")

    @property
    def decoder_only(self) -> bool:
        """Whether this format has settings only a decoder-only model can take."""
        return self.chat or self.prefix is not None or bool(self.stop)

    def save(self, folder: Path) -> None:
        (folder / PROMPT_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> PromptFormat:
        path = folder / PROMPT_FILE
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, UsageError) as err:
            raise ValueError(f"{path}: not a prompt format: {err}") from None


def quiet_transformers():
    """transformers, offline unless the user says otherwise, without progress bars or advice on stderr."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_hf_tokenizer(folder: str | os.PathLike):
    """transformers' own tokenizer of a saved folder, from local files only."""
    transformers = quiet_transformers()
    with warnings.catch_warnings():  # MarianTokenizer recommends sacremoses (punctuation only)
        warnings.simplefilter("ignore")
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def full_vocab(tokenizer) -> dict[str, int]:
    """Every token the tokenizer can produce, with its id.

    transformers 5's M2M100Tokenizer leaves its language tokens out of `get_vocab()` although it
    produces them: CTranslate2's converter and this module both read the vocabulary from here.
    """
    return {**tokenizer.get_vocab(), **getattr(tokenizer, "lang_token_to_id", {})}


class HFTokenizer:
    """A policy's tokenizer: transformers' tokenizer in DIR/hf, and DIR/prompt.json.

    `vocab_size` counts the tokenizer's ids; special ids it lacks (T5 has no BOS) are -1.
    """

    def __init__(self, folder: str | os.PathLike):
        folder = Path(folder)
        self.hf = load_hf_tokenizer(folder / HF)
        self.format = PromptFormat.load(folder)
        self.model_config = _read_json(folder / HF / "config.json")
        self.generation_config = _read_json(folder / HF / "generation_config.json")
        self.encoder_decoder = bool(self.model_config.get("is_encoder_decoder"))
        self.vocab = full_vocab(self.hf)
        self.tokens = {i: token for token, i in self.vocab.items()}
        # Left out of a candidate's text: M2M100's language tokens are not special to transformers 5.
        self.hidden = {*self.hf.all_special_ids, *getattr(self.hf, "lang_token_to_id", {}).values()}
        self.vocab_size = max(self.vocab.values(), default=-1) + 1
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (
            -1 if i is None else i for i in (self.hf.pad_token_id, self.hf.bos_token_id, self.hf.eos_token_id,
                                              self.hf.unk_token_id))
        self.language_prefix = self.model_config.get("model_type") == "m2m_100"  # M2M100 and NLLB
        if self.format.source_lang is not None:
            self._set_source_language(self.format.source_lang)
        self.before, self.after = self._specials()
        if self.format.chat and not getattr(self.hf, "chat_template", None):
            raise UsageError(f"{folder / HF}: the tokenizer has no chat template; import the model with "
                             f"--prompt-template instead")
        self.static, self._chat_static = self._static()

    # --- the Tokenizer protocol ---
    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, without special tokens (source side)."""
        return self.hf(texts, add_special_tokens=False)["input_ids"] if texts else []

    def encode_pieces(self, texts: list[str]) -> list[list[str]]:
        """The engine's input for each text as a source, special tokens and prompt format included."""
        return [prompt.tokens for prompt in self.prompts([{"src": text} for text in texts], 1 << 30)]

    def decode(self, batch: list[list[int]] | list[list[str]]) -> list[str]:
        """Texts from lists of ids or of tokens, special tokens left out."""
        ids = [[t if isinstance(t, int) else self.vocab.get(t, self.unk_id) for t in row] for row in batch]
        return self.hf.batch_decode([[t for t in row if t >= 0 and t not in self.hidden] for row in ids])

    # --- decoding ---
    def prompts(self, records: list[dict[str, Any]], max_tokens: int) -> list[Prompt]:
        """What the engine reads for each record: formatted, tokenized, cut to `max_tokens`, specials kept."""
        texts = [self._text(record) for record in records]
        if self.format.chat or self.static:  # a chat template writes its own specials, a static prefix
            before, after = [], []            # holds them
        else:
            before, after = self.before, self.after if self.encoder_decoder else []
        room = max(max_tokens - len(self.static) - len(before) - len(after), 0)
        bodies = self.encode(texts)
        return [Prompt(self._pieces([*self.static, *before, *body[:room], *after]), self._prefix(record),
                       truncated=len(body) > room) for record, body in zip(records, bodies)]

    @property
    def static_tokens(self) -> list[str]:
        """What every prompt starts with, tokenized once: CTranslate2 caches its state (`static_prompt`)."""
        return self._pieces(self.static)

    def end_ids(self) -> list[int]:
        """The tokens that end a generation: the generation config's end tokens, the tokenizer's, and each
        stop string that is one token of the vocabulary (longer ones are cut from the text afterwards)."""
        ends = self.generation_config.get("eos_token_id", self.model_config.get("eos_token_id"))
        ends = ends if isinstance(ends, list) else [] if ends is None else [ends]
        stops = [ids[0] for ids in self.encode(list(self.format.stop)) if len(ids) == 1]
        return list(dict.fromkeys([*ends, *([self.eos_id] if self.eos_id >= 0 else []), *stops]))

    def check(self) -> None:
        """Refuse (UsageError) a default target language the tokenizer has no token for."""
        if self.format.target_lang is not None:
            self._language_token(self.format.target_lang)

    def _static(self) -> tuple[list[int], str]:
        """The ids every prompt starts with (special tokens, then the prefix or the rendered system turn),
        and the rendered text they stand for in a chat (cut from each rendered prompt)."""
        if self.format.prefix is not None:
            return [*self.before, *self.encode([self.format.prefix])[0]], ""
        if self.format.system is None:
            return [], ""
        system = self.hf.apply_chat_template([{"role": "system", "content": self.format.system}],
                                             tokenize=False, add_generation_prompt=False)
        if not self._chat([{"role": "user", "content": "x"}]).startswith(system):
            return [], ""  # this template writes the system turn differently beside a user's: no cache
        return self.encode([system])[0], system

    def _chat(self, turns: list[dict[str, str]]) -> str:
        system = [] if self.format.system is None else [{"role": "system", "content": self.format.system}]
        return self.hf.apply_chat_template([*system, *turns], tokenize=False, add_generation_prompt=True)

    def _text(self, record: dict[str, Any]) -> str:
        src = record["src"]
        if self.format.chat:
            return self._chat([{"role": "user", "content": src}])[len(self._chat_static):]
        if self.format.template is not None:
            src = self.format.template.replace(PLACEHOLDER, src)
        language = self._language(record)
        if language is not None and not self.language_prefix:  # multilingual Marian: >>fra<< first
            return f"{self._language_token(language)} {src}"
        return src

    @property
    def prefix_length(self) -> int:
        """How many tokens every target starts with, given rather than learnt: 1 or 0 (`Prompt.prefix`)."""
        return int(self.language_prefix or self._forced_first() is not None)

    def _forced_first(self) -> int | None:
        """The token an encoder-decoder's generate forces first (BART's <s>), if any: so does rest."""
        key = "forced_bos_token_id"
        forced = self.generation_config.get(key, self.model_config.get(key))
        return forced if self.encoder_decoder else None

    def _prefix(self, record: dict[str, Any]) -> list[str]:
        if not self.language_prefix:
            forced = self._forced_first()
            return [] if forced is None else [self.tokens[forced]]
        language = self._language(record)
        if language is None:
            which = (f"source {record['id']!r}" if "id" in record
                     else f"the record whose src is {record['src'][:40]!r}")
            raise UsageError(f"{which}: this model translates into the language named by its first target "
                             f"token: give a tgt_lang field, or import with --target-lang")
        return [self._language_token(language)]

    def _language(self, record: dict[str, Any]) -> str | None:
        language = record.get("tgt_lang", self.format.target_lang)
        if language is not None and not isinstance(language, str):
            raise UsageError(f"source {record.get('id')!r}: tgt_lang must be a string, got {language!r}")
        return language

    def _language_token(self, language: str) -> str:
        """The token naming a target language: NLLB's `deu_Latn`, M2M100's `__de__`, Marian's `>>deu<<`."""
        # M2M100's `__de__` first: a plain `de` may be an ordinary piece of its vocabulary.
        candidates = (f"__{language}__", language) if self.language_prefix else (f">>{language}<<",)
        for token in candidates:
            if token in self.vocab:
                return token
        if self.language_prefix or any(t.startswith(">>") and t.endswith("<<") for t in self.vocab):
            raise UsageError(f"target language {language!r}: the tokenizer has no token "
                             f"{' or '.join(candidates)}")
        raise UsageError(f"target language {language!r}: this model takes no target-language token; "
                         f"say the language in --prompt-template instead")

    def _set_source_language(self, language: str) -> None:
        """NLLB and M2M100 start a source with its language's token: the tokenizer puts it in, named by its
        code (`deu_Latn` for NLLB, `de` for M2M100, whose token is `__de__`)."""
        if not self.language_prefix:
            raise UsageError(f"source language {language!r}: this model takes no source-language token")
        token = self._language_token(language)
        code = token[2:-2] if token.startswith("__") and token.endswith("__") else token
        try:
            self.hf.src_lang = code
        except (KeyError, ValueError, AttributeError) as err:
            raise UsageError(f"source language {language!r}: the tokenizer does not take it: {err}") from None

    def _pieces(self, ids: list[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def _specials(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a text."""
        plain = self.hf("a b", add_special_tokens=False)["input_ids"]
        full = self.hf("a b", add_special_tokens=True)["input_ids"]
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return full[:start], full[start + len(plain):]
        raise RestError(f"the tokenizer {type(self.hf).__name__} changes a text when it adds its special "
                        f"tokens; rest cannot tell which tokens to add")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read: {err}") from None
