"""LoRA adapters through peft: added before training, merged into the weights before each save.

Only the adapters train: the optimizer holds state for them alone (2 x 4 bytes per trained
parameter with AdamW), and the model directory a run writes is a plain Hugging Face model, the
adapters merged in, so that CTranslate2 converts it as any other. By default every linear layer
but the output layer gets an adapter (peft's "all-linear", the QLoRA recipe): it works for every
architecture, where peft's own per-architecture lists leave out M2M100 and Marian.
"""

from __future__ import annotations

import copy
import warnings

from rest_cli.errors import UsageError
from rest_cli.models.base import TrainingSetup

ALL_LINEAR = "all-linear"


def check_peft() -> None:
    """Refuse LoRA in one line when peft is not installed."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise UsageError("--lora-rank needs peft: pip install -e '.[hf]'") from None


def with_adapters(model, setup: TrainingSetup):
    """`model` wrapped with LoRA adapters, initialised by peft so that it computes what `model` does."""
    import peft

    targets = setup.lora_targets
    # GPT-2's Conv1D layers store their weights transposed: peft must know (it would warn and guess).
    transposed = any(type(module).__name__ == "Conv1D" for module in model.modules())
    config = peft.LoraConfig(r=setup.lora_rank, lora_alpha=setup.lora_alpha, lora_dropout=0.0, bias="none",
                             fan_in_fan_out=transposed, target_modules=targets if targets == ALL_LINEAR else
                             [name.strip() for name in targets.split(",") if name.strip()])
    try:
        with warnings.catch_warnings():  # peft reads an attribute transformers 5 has renamed, which warns
            warnings.simplefilter("ignore", FutureWarning)
            return peft.get_peft_model(model, config)
    except ValueError as err:  # target modules the model does not have
        raise UsageError(f"--lora-targets {targets!r}: {str(err).splitlines()[0]}") from None


def is_adapted(model) -> bool:
    peft = _peft()
    return peft is not None and isinstance(model, peft.PeftModel)


def merged(model, keep: bool = False):
    """The plain transformers model of a LoRA-wrapped one, adapters merged; `keep`: merge a copy."""
    if not is_adapted(model):
        return model
    return (copy.deepcopy(model) if keep else model).merge_and_unload(progressbar=False)


def _peft():
    import sys

    return sys.modules.get("peft")  # a model cannot have adapters unless peft was imported
