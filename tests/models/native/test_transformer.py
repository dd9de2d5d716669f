import torch

from rest_cli.models.native.transformer import BOS_ID, EOS_ID, PAD_ID, teacher_forcing


def test_teacher_forcing_adds_bos_and_eos_per_row():
    tgt_in, labels = teacher_forcing(torch.tensor([[7, 8, PAD_ID], [9, PAD_ID, PAD_ID]]))
    assert tgt_in.tolist() == [[BOS_ID, 7, 8, PAD_ID], [BOS_ID, 9, PAD_ID, PAD_ID]]
    assert labels.tolist() == [[7, 8, EOS_ID, PAD_ID], [9, EOS_ID, PAD_ID, PAD_ID]]


def test_teacher_forcing_when_every_target_is_empty():
    # A batch of empty references (found by the fuzz test: one record, `"ref": ""`): the decoder
    # still reads BOS and learns to end.
    tgt_in, labels = teacher_forcing(torch.zeros((2, 0), dtype=torch.long))
    assert tgt_in.tolist() == [[BOS_ID], [BOS_ID]] and labels.tolist() == [[EOS_ID], [EOS_ID]]
