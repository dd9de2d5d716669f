"""TensorBoard event files of a training run: `rest finetune --tensorboard DIR`.

`tensorboard` is an optional extra (`pip install -e '.[tensorboard]'` in a checkout), imported
only when a run asks for event files; torch's own `SummaryWriter` writes them. The log is an
`on_progress` callback, so it sees what the trainer reports and nothing else.
"""

from __future__ import annotations

import os

from rest_cli.errors import UsageError
from rest_cli.train.trainer import TrainProgress

INSTALL = "pip install tensorboard (in a checkout: pip install -e '.[tensorboard]')"


class TensorBoardLog:
    """Scalars of one run, by optimizer step: `train/loss` (as training.json's train_loss),
    `train/lr` and `train/tokens_per_s` when a log interval ends, `valid/loss` at each validation.

    Use it as a context manager, so that the events are flushed and the file closed however the
    run ends. Under torchrun, give it to rank 0 only (as `train.run.finetune` does with
    `on_progress`).
    """

    def __init__(self, directory: str | os.PathLike):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError(f"--tensorboard needs the optional package tensorboard: {INSTALL}") from None
        self.directory, self._writer_class, self.writer = str(directory), SummaryWriter, None

    def __call__(self, progress: TrainProgress) -> None:
        if self.writer is None:
            # The first step of this process: a resumed run starts after its last checkpoint, and
            # purging from there hides what an interrupted try logged past it, so no step shows twice.
            self.writer = self._writer_class(self.directory, purge_step=progress.step)
        if progress.interval_ended:
            self.writer.add_scalar("train/loss", progress.loss, progress.step)
            self.writer.add_scalar("train/lr", progress.lr, progress.step)
            self.writer.add_scalar("train/tokens_per_s", progress.tokens_per_s, progress.step)
        if progress.validated:
            self.writer.add_scalar("valid/loss", progress.valid, progress.step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
