"""Tiny Hugging Face models, each built once per session and imported as a rest model directory."""

import os

import pytest

from rest_cli.models.hf.tokenizer import PromptFormat
from tests.models.hf import tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in these tests may reach a hub

# How each is imported: a template for Llama, the chat template for Qwen2 and Qwen3, a default target
# language for M2M100.
FORMATS = {"llama": PromptFormat(template="Q: {src}\nA:"), "qwen2": PromptFormat(chat=True),
           "qwen3": PromptFormat(chat=True),
           "m2m100": PromptFormat(target_lang="de")}


@pytest.fixture(scope="session")
def hf_model(tmp_path_factory):
    """name -> (the Hugging Face folder, the rest model directory imported from it), built on first use."""
    from rest_cli.models.hf.importing import import_model

    built = {}

    def get(name: str):
        if name not in built:
            root = tmp_path_factory.mktemp(name)
            source = tiny.BUILDERS[name](root / "hf")
            built[name] = source, import_model(source, root / "rest", FORMATS.get(name, PromptFormat()))
        return built[name]

    return get
