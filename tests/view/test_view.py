"""`rest view`: the index of a candidates file, and the page that browses it (Flask's test client)."""

import gzip
import json
import random

import pytest

from rest_cli.errors import InputError
from rest_cli.select.filters import FilterSpec, FilterStats, filter_group
from rest_cli.view.browse import view_app
from rest_cli.view.index import open_index


def candidates(sources=30, per_source=4, seed=0):
    rng = random.Random(seed)
    for i in range(sources):
        for k in range(per_source):
            yield {"id": f"s{i}", "src": f"quelle {i} <b>fett</b>", "ref": f"reference {i}", "k": k,
                   "hyp": f"<script>alert({i})</script> candidate {k} of {i}",
                   "reward": round(rng.random(), 4), "logprob": -rng.random() * 5}
        yield {"id": f"s{i}", "src": f"quelle {i} <b>fett</b>", "ref": f"reference {i}", "k": per_source,
               "hyp": f"reference {i}", "reward": 1.0, "origin": "ref"}


def write(path, records, gz=False):
    opener = gzip.open if gz else open
    with opener(path, "wt") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    return path


@pytest.fixture
def index(tmp_path):
    return open_index(write(tmp_path / "c.jsonl", candidates()), tmp_path / "cache")


def client(index):
    return view_app(index, "c.jsonl", ["localhost"]).test_client()


def test_the_index_counts_and_histograms_the_whole_file(index):
    records = list(candidates())
    summary = index.summary()
    assert (summary["sources"], summary["candidates"], summary["references"]) == (30, 150, 30)
    assert summary["mean_reward"] == pytest.approx(sum(r["reward"] for r in records) / 150)
    assert sum(summary["histograms"]["sample"]) == 120 and summary["histograms"]["ref"][-1] == 30
    first = records[0]
    assert summary["histograms"]["sample"][int(first["reward"] * 20)] >= 1


def test_a_source_lists_its_candidates_best_first(index):
    (source,) = index.page(offset=3, size=1)
    assert source["id"] == "s3" and source["src"] == "quelle 3 <b>fett</b>" and source["n"] == 5
    rewards = [c["reward"] for c in source["candidates"]]
    assert rewards == sorted(rewards, reverse=True) and source["candidates"][0]["origin"] == "ref"


def test_search_reads_sources_references_and_candidates_literally(tmp_path):
    records = list(candidates(sources=5))
    records[2]["hyp"] = "100% sure_thing"
    index = open_index(write(tmp_path / "c.jsonl", records), tmp_path / "cache")
    assert list(index.matching("quelle 3")) == [3] and list(index.matching("reference 4")) == [4]
    assert list(index.matching("100% sure")) == [0]
    assert list(index.matching("0%")) == [0] and list(index.matching("e_t")) == [0]  # % and _ are text
    assert index.count("nothing like this") == 0 and index.count() == 5


def test_the_index_is_reused_and_rebuilt_when_the_file_changes(tmp_path):
    path = write(tmp_path / "c.jsonl", candidates(sources=3))
    first = open_index(path, tmp_path / "cache")
    assert open_index(path, tmp_path / "cache").path == first.path
    built = first.path.stat().st_mtime_ns
    write(path, candidates(sources=4))
    assert open_index(path, tmp_path / "cache").summary()["sources"] == 4
    assert first.path.stat().st_mtime_ns != built


def test_a_gzipped_file_is_indexed_like_a_plain_one(tmp_path):
    plain = open_index(write(tmp_path / "c.jsonl", candidates(sources=4)), tmp_path / "a")
    zipped = open_index(write(tmp_path / "c.jsonl.gz", candidates(sources=4), gz=True), tmp_path / "b")
    assert zipped.summary() == plain.summary() and zipped.page() == plain.page()


def test_a_bad_record_names_its_line_and_leaves_no_index(tmp_path):
    records = list(candidates(sources=3))
    records[7]["reward"] = 1.5
    path = write(tmp_path / "c.jsonl", records)
    with pytest.raises(InputError, match=r"c.jsonl:8: .*reward"):
        open_index(path, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # neither an index nor its temporary
    assert open_index(path, tmp_path / "cache", skip_invalid=True).summary()["candidates"] == 14


def test_the_page_escapes_every_text_of_the_records(index):
    page = client(index).get("/").get_data(as_text=True)
    assert "&lt;script&gt;alert(0)&lt;/script&gt;" in page and "<script>" not in page
    assert "quelle 0 &lt;b&gt;fett&lt;/b&gt;" in page
    assert "30 sources" in page and "page 1 of 2" in page


@pytest.mark.parametrize("kind, value, spec", [("tau", "0.5", FilterSpec(tau=0.5)),
                                               ("percentile", "60", FilterSpec(percentile=60)),
                                               ("top_k", "2", FilterSpec(top_k=2))])
def test_the_filter_marks_what_rest_filter_keeps(index, kind, value, spec):
    records = list(candidates())
    groups = [records[i:i + 5] for i in range(0, len(records), 5)]
    stats = FilterStats()
    for group in groups:
        stats.add(group, filter_group(group, spec))
    page = client(index).get(f"/?kind={kind}&value={value}").get_data(as_text=True)
    assert f"The filter keeps <b>{stats.records_out:,}</b> of 150 candidates" in page
    kept_on_page = page.count('class="candidate kept"')
    expected = sum(len(filter_group(group, spec)) for group in groups[:20])  # the first page's 20 sources
    assert kept_on_page == expected and page.count('class="candidate dropped"') == 100 - expected


def test_a_bad_filter_value_is_said_on_the_page(index):
    page = client(index).get("/?kind=tau&value=lots").get_data(as_text=True)
    assert "tau takes a number, got &#39;lots&#39;" in page and "The filter keeps" not in page


def test_search_and_pages(index):
    page = client(index).get("/?q=candidate+2+of+17").get_data(as_text=True)
    assert "1 sources match “candidate 2 of 17”" in page and 'data-source="17"' in page
    second = client(index).get("/?page=2").get_data(as_text=True)
    assert 'data-source="20"' in second and 'data-source="0"' not in second and 'id="previous"' in second


def test_only_its_own_host_and_no_files_are_served(index):
    app = view_app(index, "c.jsonl", ["localhost"])
    web = app.test_client()
    assert web.get("/", headers={"Host": "attacker.example"}).status_code == 400  # DNS rebinding
    assert [rule.rule for rule in app.url_map.iter_rules()] == ["/"]  # no static files, no file route
    assert web.get("/static/view.html").status_code == 404
    assert web.post("/").status_code == 405  # the view writes nothing


def test_the_server_answers_its_own_names_only_and_refuses_wildcards(index):
    import http.client

    from rest_cli.errors import UsageError
    from rest_cli.view.pages import Serving

    serving = Serving(lambda hosts: view_app(index, "c.jsonl", hosts)).start()
    try:
        for host, status in ((f"127.0.0.1:{serving.port}", 200), (f"localhost:{serving.port}", 200),
                             (f"rebound.example:{serving.port}", 400)):
            connection = http.client.HTTPConnection("127.0.0.1", serving.port, timeout=10)
            connection.request("GET", "/", headers={"Host": host})
            assert connection.getresponse().status == status, host
            connection.close()
    finally:
        serving.stop()
    with pytest.raises(UsageError, match="--host 0.0.0.0 would answer to any name"):
        Serving(lambda hosts: view_app(index, "c.jsonl", hosts), "0.0.0.0")


@pytest.mark.subprocess
def test_rest_view_names_a_bad_record_in_one_line(tmp_path):
    from tests.helpers import rest

    records = list(candidates(sources=2))
    del records[3]["hyp"]
    path = write(tmp_path / "c.jsonl", records)
    out = rest("view", str(path), "--index-dir", str(tmp_path / "cache"))
    lines = out.stderr.decode().splitlines()
    assert out.returncode == 3 and len(lines) == 1, lines
    assert lines[0].startswith(f"rest view: error: {path}:4: ") and "hyp" in lines[0]
    assert out.stdout == b"" and list((tmp_path / "cache").iterdir()) == []
