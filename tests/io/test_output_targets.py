"""`-o PATH` replaces only a regular file: devices and FIFOs are written in place, folders refused,
a symbolic link keeps pointing at the file it names, and the same records give the same .gz bytes."""

import gzip
import os
import stat
import threading

import pytest

from rest_cli.errors import OutputError
from rest_cli.io.records import RecordWriter
from tests.helpers import read_jsonl, rest, write_jsonl

RECORDS = [{"id": i, "hyp": f"h{i}", "reward": 0.5} for i in range(100)]


def write(path, records=RECORDS):
    with RecordWriter(str(path)) as writer:
        writer.write_all(records)


def test_a_fifo_is_written_in_place_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write(fifo)
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and read_jsonl(received[0]) == RECORDS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_a_character_device_is_written_in_place_and_stays_one(tmp_path):
    null = tmp_path / "null"  # a private /dev/null: if it were replaced, only this copy would be
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("cannot make a device node here")
    write(null)
    assert stat.S_ISCHR(null.lstat().st_mode) and sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_a_link_to_a_file_stays_a_link_and_the_file_gets_the_records(tmp_path):
    target, link = tmp_path / "real.jsonl", tmp_path / "link.jsonl"
    target.write_text("old\n")
    link.symlink_to(target)
    write(link)
    assert link.is_symlink() and read_jsonl(target.read_bytes()) == RECORDS


@pytest.mark.parametrize("name", [".", "folder"])
def test_a_folder_is_refused_in_one_line(tmp_path, name, monkeypatch):
    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match=f"cannot write {name}: it is a folder"):
        write(name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_the_same_records_give_the_same_gz_bytes(tmp_path):
    write(tmp_path / "a.jsonl.gz")
    write(tmp_path / "b.jsonl.gz")
    a, b = (tmp_path / "a.jsonl.gz").read_bytes(), (tmp_path / "b.jsonl.gz").read_bytes()
    assert gzip.decompress(a) == gzip.decompress(b) and b".tmp" not in a
    assert a.replace(b"a.jsonl", b"b.jsonl") == b  # only the name in the header differs


@pytest.mark.subprocess
def test_the_cli_refuses_a_folder_and_keeps_a_device(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    refused = rest("filter", "--tau", "0.1", str(data), "-o", str(tmp_path))
    assert refused.returncode == 1
    expected = f"rest filter: error: cannot write {tmp_path}: it is a folder"
    assert refused.stderr.decode().splitlines() == [expected]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert rest("filter", "--tau", "0.1", str(data), "-o", str(fifo)).returncode == 0
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and read_jsonl(received[0]) == RECORDS
