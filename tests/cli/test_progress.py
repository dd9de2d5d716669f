"""Progress on stderr: in a log, a line at a steady interval with rate and ETA; on a terminal, a bar."""

import gzip
import io
import os
import re
import sys

import pytest

from rest_cli.cli import finetune as finetune_command
from rest_cli.cli.progress import Ticker, count_lines, interval, progress, rate_line
from rest_cli.cli.sample import _candidates_expected
from rest_cli.errors import UsageError
from rest_cli.io.shards import Shard
from rest_cli.train.trainer import TrainProgress
from tests.helpers import rest, write_jsonl


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def ticking(clock, n, seconds_each):
    """n items, each taking `seconds_each` of the fake clock to produce."""
    for i in range(n):
        clock.now += seconds_each
        yield i


def test_lines_come_at_the_interval_not_per_item(capsys):
    clock = Clock()
    items = list(progress(ticking(clock, 100, 1.0), "score", "records", 100, Ticker(30, clock=clock)))
    assert items == list(range(100))
    # The first line after 10 s, then one every 30 s: at items 10, 40, 70 and 100.
    assert capsys.readouterr().err.splitlines() == [
        "rest score: 10/100 records, 1.0/s, 10s elapsed, eta 1m30s",
        "rest score: 40/100 records, 1.0/s, 40s elapsed, eta 1m00s",
        "rest score: 70/100 records, 1.0/s, 1m10s elapsed, eta 30s",
        "rest score: 100/100 records, 1.0/s, 1m40s elapsed, eta 0s",
    ]


def test_many_items_still_log_by_time(capsys):
    clock = Clock()
    list(progress(ticking(clock, 3200, 1 / 32), "sample", "candidates", None, Ticker(30, clock=clock)))
    lines = capsys.readouterr().err.splitlines()
    # 100 s in all: lines at 10, 40, 70 and 100 s, not every N items; without a total, no ETA.
    assert [line.split(", ")[0] for line in lines] == [
        "rest sample: 320 candidates", "rest sample: 1,280 candidates", "rest sample: 2,240 candidates",
        "rest sample: 3,200 candidates"]
    assert lines[0] == "rest sample: 320 candidates, 32.0/s, 10s elapsed"


@pytest.mark.parametrize("count, elapsed, total, line", [
    (1200, 30, 5000, "1,200/5,000 candidates, 40.0/s, 30s elapsed, eta 1m35s"),
    (1200, 30, None, "1,200 candidates, 40.0/s, 30s elapsed"),
    (0, 0, 10, "0/10 candidates, 0.0/s, 0s elapsed"),  # no rate yet: no ETA rather than a division by 0
    (12, 4, 10, "12/10 candidates, 3.0/s, 4s elapsed, eta 0s"),  # more than the estimated total
])
def test_rate_and_eta(count, elapsed, total, line):
    assert rate_line(count, "candidates", elapsed, total) == line


def test_the_first_line_comes_early_and_a_forced_one_restarts_the_interval():
    clock = Clock()
    ticker = Ticker(30, clock=clock)
    clock.now += 9.9
    assert not ticker.due()
    clock.now += 0.1
    assert ticker.due() and not ticker.due()
    clock.now += 20
    assert ticker.due(force=True)
    clock.now += 29
    assert not ticker.due()  # 30 s from the forced line, not from the one before
    clock.now += 1
    assert ticker.due()
    assert Ticker(0, clock=clock).due()  # an interval of 0: every item


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_the_bar_and_no_log_lines(monkeypatch):
    monkeypatch.setenv("REST_PROGRESS_INTERVAL", "0")
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert list(progress(iter(range(5)), "score", "records", 5)) == list(range(5))
    assert not re.search(r"rest score: \d", sys.stderr.getvalue())


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("REST_PROGRESS_INTERVAL", raising=False)
    assert interval() == 30
    monkeypatch.setenv("REST_PROGRESS_INTERVAL", "2.5")
    assert interval() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("REST_PROGRESS_INTERVAL", bad)
        with pytest.raises(UsageError, match="REST_PROGRESS_INTERVAL must be a number of seconds"):
            interval()


def test_totals_are_counted_only_where_the_input_can_be_read_twice(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"{}\n{}\n{}")  # the last line without its newline
    with gzip.open(tmp_path / "a.jsonl.gz", "wb") as f:
        f.write(b"{}\n" * 5)
    (tmp_path / "broken.gz").write_bytes(b"not gzip")
    os.mkfifo(tmp_path / "pipe")
    assert count_lines(str(tmp_path / "a.jsonl")) == 3
    assert count_lines(str(tmp_path / "a.jsonl.gz")) == 5
    for unknown in ("-", tmp_path / "pipe", tmp_path / "missing", tmp_path / "broken.gz", tmp_path):
        assert count_lines(str(unknown)) is None


def test_a_shard_expects_its_share_of_the_candidates(tmp_path):
    sources = write_jsonl(tmp_path / "s.jsonl", [{"src": f"s{i}"} for i in range(7)])
    assert _candidates_expected(str(sources), None, None, 4) == 28
    assert _candidates_expected(str(sources), Shard(1, 3), None, 4) == 12  # sources 0, 3 and 6
    assert _candidates_expected(str(sources), Shard(3, 3), None, 5) == 10  # sources 2 and 5
    assert _candidates_expected("-", None, None, 4) is None


def _progress(step, logged=False):
    return TrainProgress(step, 200, 0, 2.5, None, 1000.0, 60.0, interval_ended=logged, validated=False,
                         lr=1e-3)


def test_finetune_logs_by_time_and_at_each_log_interval(capsys):
    clock = Clock()
    with finetune_command._reporter(Ticker(30, clock=clock)) as report:
        for step in range(1, 81):
            clock.now += 2.0  # a step takes 2 s; --log-every 50
            report(_progress(step, logged=step % 50 == 0))
    steps = [int(re.match(r"rest finetune: step (\d+)/200 loss 2.500 tok/s 1000 eta 1m00s$", line)[1])
             for line in capsys.readouterr().err.splitlines()]
    assert steps == [5, 20, 35, 50, 65, 80]  # 10 s, then every 30 s; step 50 ends a log interval


@pytest.mark.subprocess
def test_score_in_a_log_prints_progress_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("REST_PROGRESS_INTERVAL", "0")
    records = [{"hyp": f"w{i}", "ref": f"w{i % 3}"} for i in range(4)]
    path = write_jsonl(tmp_path / "c.jsonl", records)
    from_file = rest("score", "-r", "exact", str(path))  # stderr is a pipe: not a terminal
    assert from_file.returncode == 0, from_file.stderr
    lines = [line for line in from_file.stderr.decode().splitlines() if " elapsed" in line]
    assert [line.split(",")[0] for line in lines] == [f"rest score: {i}/4 records" for i in range(1, 5)]
    assert lines[-1].endswith(", eta 0s") and "/s, " in lines[-1]
    streamed = rest("score", "-r", "exact", input=path.read_bytes())
    lines = [line for line in streamed.stderr.decode().splitlines() if " elapsed" in line]
    assert lines[-1].startswith("rest score: 4 records, ") and "eta" not in lines[-1]


@pytest.mark.subprocess
def test_sample_in_a_log_counts_candidates_of_its_shard(tmp_path, monkeypatch, random_model_dir):
    monkeypatch.setenv("REST_PROGRESS_INTERVAL", "0")
    sources = write_jsonl(tmp_path / "s.jsonl", [{"src": "eins zwei"}, {"src": "drei"}, {"src": "hund"}])
    result = rest("sample", "-m", str(random_model_dir), "-n", "2", "--max-length", "6", "--shard", "1/2",
                  str(sources))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.decode().splitlines() if " elapsed" in line]
    assert [line.split(",")[0] for line in lines] == [f"rest sample: {i}/4 candidates" for i in range(1, 5)]
