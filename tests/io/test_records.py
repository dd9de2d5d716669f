import gzip

import orjson
import pytest

from rest_cli.errors import InputError
from rest_cli.io.records import RecordReader, RecordWriter, check_record, iter_groups
from tests.helpers import read_jsonl, write_jsonl


def read_all(path, **kwargs):
    return list(RecordReader(str(path), **kwargs))


def test_reads_records_and_passes_unknown_fields_through(tmp_path):
    records = [{"id": "a", "hyp": "x", "extra": {"nested": [1, 2]}}, {"id": 7, "hyp": "y"}]
    assert read_all(write_jsonl(tmp_path / "in.jsonl", records), required=["id", "hyp"]) == records


def test_bom_crlf_and_blank_lines_are_tolerated(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"hyp": "a"}\r\n\r\n   \n{"hyp": "b"}\r\n')
    assert [r["hyp"] for r in read_all(path, required=["hyp"])] == ["a", "b"]


def test_gzip_input_and_output_round_trip(tmp_path):
    records = [{"id": i, "hyp": f"h{i}"} for i in range(50)]
    out = tmp_path / "out.jsonl.gz"
    with RecordWriter(str(out)) as writer:
        writer.write_all(iter(records))
    assert gzip.decompress(out.read_bytes()).count(b"\n") == 50
    assert read_all(out) == records


@pytest.mark.parametrize("line, fields, message", [
    (b'{"hyp": "a"', ["hyp"], "invalid JSON"),
    (b'[1, 2]', ["hyp"], "expected a JSON object, got list"),
    (b'{"id": 1}', ["hyp"], "field 'hyp' is missing"),
    (b'{"reward": "0.5"}', ["reward"], "field 'reward' must be a finite number in [0, 1], got str"),
    (b'{"reward": NaN}', ["reward"], "invalid JSON"),
    (b'{"reward": 1e999}', ["reward"], "invalid JSON"),
    (b'{"reward": 1.5}', ["reward"], "field 'reward' must be a finite number in [0, 1], got float 1.5"),
    (b'{"reward": true}', ["reward"], "field 'reward' must be a finite number in [0, 1], got bool"),
    (b'{"hyp": ["a", "b"]}', ["hyp"], "field 'hyp' must be a string, got list"),
    (b'{"src": {"text": "a"}}', ["src"], "field 'src' must be a string, got dict"),
    (b'{"id": null}', ["id"], "field 'id' must be a string or an integer, got null"),
    (b'{"k": -1}', ["k"], "field 'k' must be a non-negative integer"),
    (b'{"hyp": "\xff"}', ["hyp"], "invalid JSON"),
])
def test_bad_records_name_file_line_and_field(tmp_path, line, fields, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"id": 0, "hyp": "ok", "reward": 0.5, "src": "s", "k": 0}\n' + line + b"\n")
    with pytest.raises(InputError) as caught:
        read_all(path, required=fields)
    assert str(caught.value).startswith(f"{path}:2: {message}")


def test_skip_invalid_counts_and_keeps_the_first_problem(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"hyp": "a"}\nnot json\n{"hyp": 3}\n{"hyp": "b"}\n')
    reader = RecordReader(str(path), required=["hyp"], skip_invalid=True)
    assert [r["hyp"] for r in reader] == ["a", "b"]
    assert reader.skipped == 2
    assert reader.first_problem.startswith(f"{path}:2: invalid JSON")


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot open"):
        read_all(tmp_path / "nope.jsonl")


def test_check_record_names_who_needs_a_field():
    assert check_record({"hyp": "a"}, ["ref"], needed_by="reward 'chrf'") == \
        "field 'ref' is missing (reward 'chrf' needs it)"
    assert check_record({"hyp": "a", "ref": "b"}, ["hyp", "ref"]) is None


def test_writer_leaves_nothing_when_the_run_fails(tmp_path):
    out = tmp_path / "out.jsonl"

    def records():
        yield {"id": 1}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        with RecordWriter(str(out)) as writer:
            writer.write_all(records())
    assert list(tmp_path.iterdir()) == []


def test_writer_replaces_an_existing_file_only_on_success(tmp_path):
    out = write_jsonl(tmp_path / "out.jsonl", [{"old": True}])
    with pytest.raises(KeyboardInterrupt):
        with RecordWriter(str(out)) as writer:
            writer.write({"new": True})
            raise KeyboardInterrupt
    assert read_jsonl(out.read_bytes()) == [{"old": True}]
    with RecordWriter(str(out)) as writer:
        writer.write({"new": True})
    assert read_jsonl(out.read_bytes()) == [{"new": True}]


def grouped(path):
    reader = RecordReader(str(path), required=["id"])
    return iter_groups(reader, reader=reader)


def test_groups_are_consecutive_runs(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"id": i // 3, "k": i % 3} for i in range(9)])
    groups = list(grouped(path))
    assert [[r["k"] for r in g] for g in groups] == [[0, 1, 2]] * 3


def test_ungrouped_stream_is_reported_at_its_line(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"id": "a"}, {"id": "b"}, {"id": "a"}])
    with pytest.raises(InputError, match=r"g.jsonl:3: id 'a' appears again .* not grouped"):
        list(grouped(path))


def test_string_and_integer_ids_are_different_sources(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"id": 1}, {"id": "1"}])
    assert len(list(grouped(path))) == 2
    back = write_jsonl(tmp_path / "b.jsonl", [{"id": "1"}, {"id": 1}, {"id": "1"}])
    with pytest.raises(InputError, match=r"b.jsonl:3: id '1' appears again"):
        list(grouped(back))


def test_unwritable_output_is_a_clear_error(tmp_path):
    from rest_cli.errors import OutputError
    with pytest.raises(OutputError, match=r"cannot write .*/missing/out.jsonl: No such file or directory"):
        with RecordWriter(str(tmp_path / "missing" / "out.jsonl")) as writer:
            writer.write({"id": 1})


def test_disk_full_leaves_no_file(tmp_path):
    import errno

    from rest_cli.errors import OutputError

    def full(data):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "out.jsonl"
    with pytest.raises(OutputError, match="No space left on device"):
        with RecordWriter(str(out)) as writer:
            writer.write({"id": 1})
            writer._out.write = full
            writer.write({"id": 2})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ids", [[-1, -2], [-2, -1], [1, "1"], [2**61 - 1, 0], ["a", "b", -1, -2]])
def test_grouping_tells_every_pair_of_distinct_ids_apart(tmp_path, ids):
    """Python's hash of -1 and of -2 is the same, as are 2**61 - 1 and 0: the check must not use it."""
    path = tmp_path / "grouped.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": i, "reward": 0.5}) + b"\n" for i in ids for _ in range(2)))
    reader = RecordReader(str(path), required=["id"])
    assert [group[0]["id"] for group in iter_groups(reader, reader=reader)] == ids
