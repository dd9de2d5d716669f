"""`rest import`: a Hugging Face model saved on disk becomes a policy (docs/models.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rest_cli.cli.common import handles_errors, log


@handles_errors("import")
def import_model(
    hf_dir: Annotated[str, typer.Argument(
        metavar="HF_DIR", help="A model folder written by save_pretrained (config, safetensors weights, "
                               "tokenizer files). Read from disk only: nothing is downloaded.")],
    output: Annotated[str, typer.Option(
        "--output", "-o", metavar="DIR", help="The rest model directory to write (new, or one to replace).")],
    target_lang: Annotated[Optional[str], typer.Option(
        "--target-lang", metavar="LANG", help="Default target language, for models that name it with a "
        "token: NLLB (deu_Latn), M2M100 (de), multilingual OPUS-MT (deu). A record's `tgt_lang` wins.")
    ] = None,
    prompt_template: Annotated[Optional[str], typer.Option(
        "--prompt-template", metavar="TEXT", help="The model's input, with {src} where the record's source "
        "goes, e.g. 'Translate to German: {src}\\nGerman:'.")] = None,
    chat_template: Annotated[bool, typer.Option(
        "--chat-template", help="Decoder-only models: the source is the user's turn of the tokenizer's chat "
                                "template, the candidate the assistant's answer.")] = False,
    source_lang: Annotated[Optional[str], typer.Option(
        "--source-lang", metavar="LANG", help="NLLB (deu_Latn) and M2M100 (de): the language of the sources, "
        "named by the token each source starts with (the tokenizer's default otherwise).")] = None,
    prompt_prefix_file: Annotated[Optional[Path], typer.Option(
        "--prompt-prefix-file", metavar="FILE", help="Decoder-only models: text put before every prompt, "
        "exactly as the file has it (few-shot examples); CTranslate2 reads it once and caches it.")] = None,
    system_prompt: Annotated[Optional[str], typer.Option(
        "--system-prompt", metavar="TEXT", help="With --chat-template: the system turn before every source; "
        "cached by CTranslate2 where the template writes it as a prefix.")] = None,
    stop: Annotated[Optional[list[str]], typer.Option(
        "--stop", metavar="TEXT", help="Decoder-only models: a candidate ends before this string "
        "(repeatable), e.g. --stop $'\\n\\n' for few-shot prompts.")] = None,
) -> None:
    """Make a rest model directory from a Hugging Face model: its weights and tokenizer, the CTranslate2
    export, and how records become prompts (kept in the directory, used by sample, eval and bestofn).

        rest import ~/models/opus-mt-de-en -o policy

        rest import ~/models/Qwen2.5-0.5B-Instruct -o policy --chat-template
    """
    from rest_cli.models.hf.importing import import_model as run_import
    from rest_cli.models.hf.tokenizer import PromptFormat

    prompt = PromptFormat(template=prompt_template, chat=chat_template, target_lang=target_lang,
                          source_lang=source_lang, prefix=_read_prefix(prompt_prefix_file),
                          system=system_prompt, stop=tuple(stop or ()))
    directory = run_import(hf_dir, output, prompt)
    log("import", f"wrote {directory}")


def _read_prefix(path: Path | None) -> str | None:
    from rest_cli.errors import UsageError

    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--prompt-prefix-file {path}: cannot read it: {err}") from None
