"""The one writer of whole files and folders: all or nothing, with the permissions of a new file."""

import os

import pytest

from rest_cli.errors import OutputError, UsageError
from rest_cli.io.atomic import replacing_dir, replacing_file, sole_writer, write_file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_file_appears_whole_with_usual_permissions(tmp_path):
    out = tmp_path / "out.txt"
    write_file(out, b"first\n")
    with replacing_file(out) as handle:
        handle.write(b"second\n")
        assert out.read_bytes() == b"first\n"  # the old contents stay until the new ones are complete
    assert out.read_bytes() == b"second\n"
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's private 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, OSError])
def test_an_error_while_writing_keeps_the_previous_file(tmp_path, error):
    out = tmp_path / "out.txt"
    out.write_bytes(b"previous\n")
    with pytest.raises(error):  # the caller's own error is not turned into a write error
        with replacing_file(out) as handle:
            handle.write(b"half")
            raise error("stop")
    assert out.read_bytes() == b"previous\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_missing_folder_is_one_line_naming_the_destination(tmp_path):
    expected = f"cannot write {tmp_path}/missing/out.txt: No such file or directory"
    with pytest.raises(OutputError, match=expected):
        write_file(tmp_path / "missing" / "out.txt", b"x")


def test_a_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "model"
    with replacing_dir(target) as folder:
        (folder / "a").write_text("1")
    with replacing_dir(target) as folder:
        (folder / "b").write_text("2")
        assert (target / "a").exists()  # the old folder stays until the new one is complete
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert target.stat().st_mode & 0o777 == 0o777 & ~_umask()
    with pytest.raises(RuntimeError):
        with replacing_dir(target) as folder:
            (folder / "c").write_text("3")
            raise RuntimeError("export failed")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left


def test_the_temporary_name_is_new_each_time_and_never_followed(tmp_path):
    out, victim = tmp_path / "out.txt", tmp_path / "victim.txt"
    victim.write_bytes(b"keep\n")
    # The names a writer with predictable names (as rest's were: .NAME.PID.tmp) would have used.
    for planted in (f".out.txt.{os.getpid()}.tmp", "out.txt.tmp", ".out.txt.tmp"):
        (tmp_path / planted).symlink_to(victim)
    write_file(out, b"data\n")
    assert victim.read_bytes() == b"keep\n" and out.read_bytes() == b"data\n" and not out.is_symlink()


def test_temporaries_a_killed_writer_left_go_with_the_next_write(tmp_path):
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs
    orphans = [tmp_path / f".out.txt.{gone.pid}.abc123.tmp", tmp_path / f".model.old.{gone.pid}.x_9.tmp"]
    orphans[0].write_text("half")
    (orphans[1] / "model").mkdir(parents=True)
    live = tmp_path / f".out.txt.{os.getpid()}.zzz.tmp"  # a writer still at work: not ours to remove
    live.write_text("busy")
    other = tmp_path / f".other.txt.{gone.pid}.abc123.tmp"  # another destination's
    other.write_text("x")
    write_file(tmp_path / "out.txt", b"data")
    with replacing_dir(tmp_path / "model") as folder:
        (folder / "a").write_text("1")
    assert not any(p.exists() for p in orphans) and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["model", "out.txt"]


def test_an_output_has_one_writer_until_it_lets_go(tmp_path):
    first = sole_writer(tmp_path / "lock", tmp_path / "out")
    with pytest.raises(UsageError, match=r"out is being written by another run of this command"):
        sole_writer(tmp_path / "lock", tmp_path / "out")
    first.close()
    sole_writer(tmp_path / "lock", tmp_path / "out").close()


def test_a_lock_planted_as_a_symlink_is_not_followed(tmp_path):
    (tmp_path / "theirs").write_bytes(b"kept")
    (tmp_path / "lock").symlink_to(tmp_path / "theirs")
    with pytest.raises(OutputError, match=r"cannot write .*lock"):
        sole_writer(tmp_path / "lock", tmp_path / "out")
    assert (tmp_path / "theirs").read_bytes() == b"kept"
