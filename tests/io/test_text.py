"""Plain-text parallel files as records: `rest_cli.io.text` and `rest from-text`."""

import gzip

import pytest

from rest_cli.errors import InputError
from rest_cli.io.text import TextPairStats, text_pairs
from tests.helpers import read_jsonl, rest


def write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def test_tabs_and_odd_characters_stay_inside_the_sentence(tmp_path):
    # A tab in a sentence broke `paste | split("\t")` converters; U+2028 and \f are not line ends either.
    src = write(tmp_path / "a.de", "ein\tHund\nzwei\u2028Katzen\fhier\n\"drei\" \\ Vögel\n".encode())
    ref = write(tmp_path / "a.en", b"a\tdog\ntwo cats\nthree birds")  # no final newline
    assert list(text_pairs(src, ref)) == [
        {"id": 1, "src": "ein\tHund", "ref": "a\tdog"},
        {"id": 2, "src": "zwei\u2028Katzen\fhier", "ref": "two cats"},
        {"id": 3, "src": "\"drei\" \\ Vögel", "ref": "three birds"}]


def test_windows_line_ends_and_a_byte_order_mark_are_dropped(tmp_path):
    src = write(tmp_path / "a.de", b"\xef\xbb\xbfeins\r\nzwei\r\n")
    ref = write(tmp_path / "a.en", b"one\ntwo\n")
    assert [(r["src"], r["ref"]) for r in text_pairs(src, ref)] == [("eins", "one"), ("zwei", "two")]


@pytest.mark.parametrize("longer", ["src", "ref"])
def test_different_line_counts_name_both_files_and_counts(tmp_path, longer):
    short, long = b"a\nb\n", b"a\nb\nc\nd\ne\n"
    src = write(tmp_path / "x.de", long if longer == "src" else short)
    ref = write(tmp_path / "x.en", short if longer == "src" else long)
    with pytest.raises(InputError) as caught:
        list(text_pairs(src, ref))
    counts = ("5", "2") if longer == "src" else ("2", "5")
    assert str(caught.value) == (f"{src}: {counts[0]} lines, but {ref} has {counts[1]}: "
                                 f"the files must be aligned line by line")


def test_an_empty_line_is_an_error_naming_its_file_and_line(tmp_path):
    src = write(tmp_path / "a.de", b"eins\nzwei\ndrei\n")
    ref = write(tmp_path / "a.en", b"one\n\nthree\n")
    with pytest.raises(InputError, match=r"a\.en:2: empty line"):
        list(text_pairs(src, ref))


def test_skip_empty_leaves_the_pair_out_and_counts_it(tmp_path):
    src = write(tmp_path / "a.de", b"eins\n\ndrei\nvier\n")
    ref = write(tmp_path / "a.en", b"one\ntwo\n\nfour\n")
    stats = TextPairStats()
    records = list(text_pairs(src, ref, skip_empty=True, stats=stats))
    assert [r["id"] for r in records] == [1, 4]  # ids stay line numbers of the text files
    assert (stats.pairs, stats.empty_skipped, stats.first_empty) == (2, 2, f"{src}:2")


def test_sources_only_and_gzip(tmp_path):
    src = tmp_path / "a.de.gz"
    src.write_bytes(gzip.compress(b"eins\nzwei\n"))
    assert list(text_pairs(str(src))) == [{"id": 1, "src": "eins"}, {"id": 2, "src": "zwei"}]


def test_invalid_utf8_names_file_and_line(tmp_path):
    src = write(tmp_path / "a.de", b"gut\nschlecht \xff\n")
    ref = write(tmp_path / "a.en", b"good\nbad\n")
    with pytest.raises(InputError, match=r"a\.de:2: not UTF-8 text \(byte 10 of the line\)"):
        list(text_pairs(src, ref))


@pytest.mark.subprocess
def test_cli_writes_whole_records_or_nothing(tmp_path):
    src = write(tmp_path / "a.de", b"ein\tHund\nzwei Katzen\nnoch eine\n")
    ref = write(tmp_path / "a.en", b"a\tdog\ntwo cats\n")
    out = tmp_path / "train.jsonl"
    failed = rest("from-text", src, ref, "-o", str(out))
    assert failed.returncode == 3
    assert failed.stderr.decode().strip().splitlines() == [
        f"rest from-text: error: {src}: 3 lines, but {ref} has 2: the files must be aligned line by line"]
    assert not out.exists() and sorted(tmp_path.iterdir()) == [tmp_path / "a.de", tmp_path / "a.en"]

    (tmp_path / "a.en").write_bytes(b"a\tdog\ntwo cats\none more\n")
    done = rest("from-text", src, ref, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert read_jsonl(out.read_bytes())[0] == {"id": 1, "src": "ein\tHund", "ref": "a\tdog"}
    assert done.stderr.decode() == "rest from-text: 3 records\n"
