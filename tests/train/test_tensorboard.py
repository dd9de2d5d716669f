"""`rest finetune --tensorboard DIR`: the event files hold what training.json holds, step by step."""

import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from rest_cli.cli.main import app
from rest_cli.train.run import finetune, partial_dir
from rest_cli.train.tensorboard import TensorBoardLog
from rest_cli.train.trainer import lr_factor
from tests.cli.test_finetune import GOOD, TINY
from tests.helpers import rest, write_jsonl
from tests.train.test_training import copy_pairs, tiny


def scalars(directory) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard shows for `directory`, as tag -> [(step, value)]."""
    events = EventAccumulator(str(directory))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_same_curve(logged, recorded):
    assert [step for step, _ in logged] == [step for step, _ in recorded]
    assert [value for _, value in logged] == pytest.approx([value for _, value in recorded], rel=1e-6)


@pytest.mark.subprocess
def test_finetune_writes_the_losses_of_training_json(tmp_path):
    data, valid = write_jsonl(tmp_path / "d.jsonl", GOOD), write_jsonl(tmp_path / "v.jsonl", GOOD[:8])
    result = rest("finetune", str(data), "-o", str(tmp_path / "model"), *TINY, "--steps", "6", "--log-every",
                  "2", "--valid", str(valid), "--valid-every", "3", "--tensorboard", str(tmp_path / "tb"))
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "model" / "training.json").read_text())
    logged = scalars(tmp_path / "tb")
    assert sorted(logged) == ["train/loss", "train/lr", "train/tokens_per_s", "valid/loss"]
    assert_same_curve(logged["train/loss"], record["train_loss"])  # steps 2, 4, 6
    assert_same_curve(logged["valid/loss"], record["valid_loss"])  # steps 3, 6
    warmup = record["options"]["warmup"]
    assert_same_curve(logged["train/lr"], [(s, 3e-3 * lr_factor(s, warmup)) for s in (2, 4, 6)])
    assert all(value > 0 for _, value in logged["train/tokens_per_s"])


def test_a_resumed_run_logs_each_step_once(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", copy_pairs(200))
    valid = write_jsonl(tmp_path / "valid.jsonl", copy_pairs(20, seed=7))
    options = tiny(steps=12, log_every=2, valid_every=5, checkpoint_every=5)
    output, events = tmp_path / "model", tmp_path / "tb"

    with TensorBoardLog(events) as log:
        def crash_at_8(progress):  # a crash, not a clean stop: the checkpoint stays at step 5
            log(progress)
            if progress.step == 8:
                raise RuntimeError("out of memory")
        with pytest.raises(RuntimeError):
            finetune(str(train), output, options, valid_path=str(valid), on_progress=crash_at_8)
    assert (partial_dir(output) / "checkpoint.pt").exists()
    with TensorBoardLog(events) as log:
        record = finetune(str(train), output, options, valid_path=str(valid), on_progress=log)
    assert record["resumed"] == 1
    logged = scalars(events)
    # Steps 6 and 8 were logged by the crashed try and again after the resume from step 5: shown once.
    assert_same_curve(logged["train/loss"], record["train_loss"])
    assert_same_curve(logged["valid/loss"], record["valid_loss"])


def test_a_missing_tensorboard_is_one_line_naming_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now fails
    data = write_jsonl(tmp_path / "d.jsonl", GOOD)
    result = CliRunner().invoke(app, ["finetune", str(data), "-o", str(tmp_path / "model"), *TINY,
                                      "--steps", "2", "--tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "rest finetune: error: --tensorboard needs the optional package tensorboard: "
        "pip install tensorboard (in a checkout: pip install -e '.[tensorboard]')"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]  # stopped before training
