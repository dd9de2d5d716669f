"""`rest view` on large candidates files: indexing time, peak memory, and the first page's time.

    .venv/bin/python benchmarks/bench_view.py [--sizes 100000,1000000] [--per-source 8] [--gz]

For each size, a synthetic scored candidates file (gzipped JSONL like `rest sample | rest score -o
X.jsonl.gz` writes: per source a German-looking source, an English reference, --per-source samples
of 8 to 20 words with reward and log-prob, and the reference as a candidate) is written once. Then,
each in its own child process so that peak RSS (VmHWM) is its own:

  1. rest: `open_index` (the library call behind `rest view`), timed; then, in a fresh process
     that opens the ready index, the server's start (imports, opening the index, the app) and the
     first page as the browser gets it: a GET of / through the page's Flask app (summary,
     histograms, 20 sources with their candidates); also the next page, a search, and a page with
     a filter preview (top-k 2, which reads the whole index source by source).
  2. The baseline: the file read whole into memory (orjson, a list of records), which is what a
     page that loads the file would hold; its time and peak RSS.

The target (issue: view and rate): the first page in under 2 s after indexing, and memory flat in
the file's size. Ratios between the sizes hold on a noisy machine; absolute times drift.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORDS = ("the a man woman dog child street red blue runs sits walks near with in on under small big old "
         "young playing holding wearing shirt ball water grass building car bicycle").split()
GERMAN = ("der die das ein eine mann frau hund kind straße rot blau läuft sitzt geht neben mit in auf unter "
          "klein groß alt jung spielt hält trägt hemd ball wasser gras gebäude auto fahrrad").split()


def make_file(path: Path, candidates: int, per_source: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with gzip.open(path, "wt", compresslevel=1) as out:
        written, source = 0, 0
        while written < candidates:
            src = " ".join(rng.choices(GERMAN, k=rng.randint(8, 20)))
            ref = " ".join(rng.choices(WORDS, k=rng.randint(8, 20)))
            for k in range(per_source):
                out.write(json.dumps({"id": source, "src": src, "ref": ref, "k": k,
                                      "hyp": " ".join(rng.choices(WORDS, k=rng.randint(8, 20))),
                                      "reward": round(rng.random(), 4),
                                      "logprob": round(-20 * rng.random(), 3)}) + "\n")
            out.write(json.dumps({"id": source, "src": src, "ref": ref, "k": per_source, "hyp": ref,
                                  "reward": 1.0, "origin": "ref"}) + "\n")
            written += per_source + 1
            source += 1


CHILD = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
task, path, cache = sys.argv[2], sys.argv[3], Path(sys.argv[4])

def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

result = {}
if task == "index":
    from rest_cli.view.index import open_index
    start = time.perf_counter()
    index = open_index(path, cache)
    result["seconds"] = time.perf_counter() - start
    result["index_mib"] = index.path.stat().st_size / 2**20
elif task == "pages":
    start = time.perf_counter()
    from rest_cli.view.browse import view_app
    from rest_cli.view.index import open_index
    web = view_app(open_index(path, cache), "bench", ["localhost"]).test_client()
    result["start_s"] = time.perf_counter() - start
    start = time.perf_counter()
    first = web.get("/")
    result["first_page_s"] = time.perf_counter() - start
    assert first.status_code == 200 and first.get_data(as_text=True).count('class="source"') == 20
    for name, query in (("next_page_s", "/?page=2"), ("search_s", "/?q=fahrrad+gras+hund"),
                        ("top_k_filter_s", "/?kind=top_k&value=2")):
        start = time.perf_counter()
        assert web.get(query).status_code == 200
        result[name] = time.perf_counter() - start
elif task == "baseline":
    import gzip, orjson
    start = time.perf_counter()
    with gzip.open(path, "rb") as stream:
        records = [orjson.loads(line) for line in stream]
    result["seconds"] = time.perf_counter() - start
    result["records"] = len(records)
result["peak_rss_mib"] = peak_mib()
print(json.dumps(result))
"""


def child(task: str, path: Path, cache: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(REPO), task, str(path), str(cache)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="candidates per file, comma-separated")
    parser.add_argument("--per-source", type=int, default=8, help="samples per source (plus the reference)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for size in (int(s) for s in args.sizes.split(",")):
            path = Path(folder) / f"candidates-{size}.jsonl.gz"
            make_file(path, size, args.per_source)
            cache = Path(folder) / f"cache-{size}"
            row = {"candidates": size, "file_mib": path.stat().st_size / 2**20,
                   "index": child("index", path, cache), "pages": child("pages", path, cache),
                   "baseline_load_whole": child("baseline", path, cache)}
            results.append(row)
            print(json.dumps(row), flush=True)
    print("\n| candidates | file (gz) | indexing | index on disk | peak RSS indexing | server start "
          "| first page | next page | search | top-k filter page | peak RSS pages "
          "| baseline: load whole (time, peak RSS) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        i, p, b = r["index"], r["pages"], r["baseline_load_whole"]
        print(f"| {r['candidates']:,} | {r['file_mib']:.0f} MiB | {i['seconds']:.1f} s "
              f"| {i['index_mib']:.0f} MiB | {i['peak_rss_mib']:.0f} MiB | {p['start_s']:.2f} s "
              f"| {p['first_page_s']:.2f} s | {p['next_page_s']:.2f} s "
              f"| {p['search_s']:.2f} s | {p['top_k_filter_s']:.1f} s | {p['peak_rss_mib']:.0f} MiB "
              f"| {b['seconds']:.1f} s, {b['peak_rss_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
