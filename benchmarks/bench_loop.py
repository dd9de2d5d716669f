"""Wall time of the ReST loop through make, step by step, and what overlapping sampling with scoring buys.

    .venv/bin/python benchmarks/bench_loop.py           the demo as `make rest G=2 I=3` runs it (~12 min)
    .venv/bin/python benchmarks/bench_loop.py --tiny    the TINY settings of the make test (~1-2 min)
    .venv/bin/python benchmarks/bench_loop.py --g 1 --i 2 --run runs/bench --json loop.json --repeats 5

1. The loop: `make -f rest.mk rest G=.. I=.. RUN=<fresh temporary folder, or --run DIR>` (what `make rest`
   runs once .venv is installed), with two stand-ins that only time and log (benchmarks/timed_shell):
   make's SHELL, which gets rest.mk's .SHELLFLAGS (`-o pipefail -c`) and one recipe line, and REST, which
   wraps every `rest` process a recipe starts, pipes and `$(rest loop best ...)` included. Prints
   - every recipe line by step kind (demo data, BC, Grow sample | score, Improve, eval valid/test,
     controls, Best-of-N, loop bookkeeping): count, seconds, share of the make run's wall time;
   - every `rest` process by command (sample, score, filter, finetune, eval, ...). Inside a pipe,
     `rest sample` and `rest score` run at the same time, so this table can add up to more than 100%;
   - each Grow step's pipe split into the sampler's start-up (imports, loading the model), its
     sampling (the "tokens in X s" of its own stderr summary, which counts time blocked writing into
     the pipe too) and what `rest score` still had to do after the sampler exited.
2. Overlap: Grow 1's pipe `rest sample ... | rest score -r REWARD -o F` against the same two commands one
   after the other through a file, with the run's BC model (g0/model) on its data/train.jsonl, the
   loop's sampling settings, unsharded; --repeats rounds, the order alternating. Reports medians, the
   ratio pipe / one-after-the-other (and each round's), CPU seconds of each, the load average, and
   whether both wrote the same candidates (they must: same seed).
   What to expect on 2 cores: `rest score -r numbers` is cheap (the demo's 20,000 candidates took
   under 1 s, most of it start-up) while CTranslate2's sampler already keeps both cores busy, so the
   pipe can save at most score's time, and score then takes its CPU from the sampler: about even.

The timing log (TSV, see timed_shell) and make's output are kept next to --run DIR as DIR.timings.tsv
and DIR.make.log; a temporary run is deleted. --run DIR must be empty or absent: make skips whatever
is there. No test asserts a timing: on this shared 2-core machine, compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TIMED_SHELL = REPO / "benchmarks" / "timed_shell"
SUBCOMMANDS = ("demo-data", "finetune", "sample", "score", "filter", "loop", "eval", "bestofn")


@dataclass
class Row:
    """One row of the timing log: a recipe line (kind "line") or one `rest` process (kind "cmd")."""
    kind: str
    id: str
    line: str  # for a process, the id of the recipe line it ran in
    start: float
    end: float
    seconds: float
    status: int
    command: str
    sampling_s: float | None = None  # `rest sample`'s own "tokens in X s"
    children: list[Row] = field(default_factory=list)
    step: str = ""


def rest_argv() -> list[str]:
    script = Path(sys.executable).parent / "rest"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rest_cli"]


def loop_variables(args) -> dict[str, str]:
    variables = {"G": "2", "I": "3"}
    if args.tiny:
        sys.path.insert(0, str(REPO))
        from tests.loop.test_loop_make import TINY
        variables = dict(TINY)
    variables.update({k: str(v) for k, v in (("G", args.g), ("I", args.i)) if v is not None})
    return variables


def make_value(variables: dict[str, str], *names: str) -> dict[str, str]:
    """What rest.mk makes of these variables under `variables` (its defaults where not set)."""
    printer = "print-%: ; @echo '$($*)'"
    result = subprocess.run(["make", "--no-print-directory", "-f", str(REPO / "rest.mk"), f"--eval={printer}",
                             *(f"print-{n}" for n in names), *(f"{k}={v}" for k, v in variables.items())],
                            capture_output=True, text=True, check=True, cwd=REPO)
    return dict(zip(names, result.stdout.splitlines()))


def run_loop(run: Path, variables: dict[str, str], rest: list[str], log: Path, output: Path) -> float:
    """Run `make rest` into `run` with every line and `rest` process timed into `log`; its wall seconds."""
    command = ["make", "-f", str(REPO / "rest.mk"), "rest", f"RUN={run}", f"SHELL={TIMED_SHELL}",
               f"REST={TIMED_SHELL} --exec {shlex.join(rest)}", *(f"{k}={v}" for k, v in variables.items())]
    print("$ " + shlex.join(command), file=sys.stderr)
    with output.open("w") as out:
        started = time.perf_counter()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "TIMED_SHELL_LOG": str(log)})
        wall = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"make failed ({result.returncode}); the end of {output}:\n" + output.read_text()[-3000:])
    return wall


def read_log(log: Path) -> list[Row]:
    """The recipe lines in the order they started, each with the `rest` processes it ran."""
    rows = []
    for text in log.read_text().splitlines():
        kind, id_, line, start, end, seconds, status, command, sampling = text.split("\t")
        rows.append(Row(kind, id_, line, float(start.replace(",", ".")), float(end.replace(",", ".")),
                        float(seconds), int(status), command, float(sampling) if sampling else None))
    lines = {r.id: r for r in rows if r.kind == "line"}
    for row in rows:
        if row.kind == "cmd" and row.line in lines:
            lines[row.line].children.append(row)
    ordered = sorted(lines.values(), key=lambda r: r.start)
    for line in ordered:
        line.children.sort(key=lambda r: r.start)
        line.step = line_step(line)
        for child in line.children:
            child.step = command_step(child, line.step)
    return ordered


def subcommand(command: str) -> str:
    """`finetune`, `loop best`, ...: the first rest subcommand word of a logged process."""
    words = command.split()
    for k, word in enumerate(words):
        if word in SUBCOMMANDS:
            return f"loop {words[k + 1]}" if word == "loop" and k + 1 < len(words) else word
    return "?"


def line_step(line: Row) -> str:
    subs = {subcommand(c.command) for c in line.children}
    text = line.command
    if "bestofn" in subs:
        return "Best-of-N: sample | score | bestofn"
    if "sample" in subs:
        return "Grow: sample | score"
    if "demo-data" in subs:
        return "demo data"
    if "loop rising" in subs:
        return "Improve: rising, threshold, filter, finetune, eval valid" if "finetune" in subs else \
            "Improve: skipped (validation stopped rising)"
    if "finetune" in subs:
        return "finetune: control" if "/control/" in text else "finetune: BC"
    if "eval" in subs:
        return "eval: test" if re.search(r"/test/\S*\.json\.tmp", text) else "eval: valid"
    if "loop report" in subs:
        return "loop report"
    if "loop best" in subs:
        return "loop best (Grow step's policy)"
    if text.startswith("cat ") and "shard-" in text:
        return "Grow: join shards"
    return "make: mkdir, $(shell), echo"


def command_step(command: Row, step: str) -> str:
    sub = subcommand(command.command)
    if sub == "finetune":
        return {"finetune: BC": "finetune BC",
                "finetune: control": "finetune control"}.get(step, "finetune Improve")
    if sub == "eval":
        return "eval test" if step == "eval: test" else "eval valid"
    if sub in ("sample", "score"):
        return f"{sub} ({'Best-of-N' if step.startswith('Best') else 'Grow'})"
    return sub


def table(title: str, groups: dict[str, list[float]], wall: float) -> list[dict]:
    rows = [{"step": step, "count": len(seconds), "seconds": round(sum(seconds), 2),
             "share": round(sum(seconds) / wall, 4)} for step, seconds in groups.items()]
    rows.sort(key=lambda r: -r["seconds"])
    width = max(len(r["step"]) for r in rows)
    print(f"\n{title}\n| {'step':<{width}} | count | seconds | share |")
    print(f"|{'-' * (width + 2)}|------:|--------:|------:|")
    for r in rows:
        print(f"| {r['step']:<{width}} | {r['count']:5d} | {r['seconds']:7.1f} | {r['share']:5.1%} |")
    return rows


def grow_split(lines: list[Row]) -> list[dict]:
    """Each Grow pipe: sampler start-up, sampling (its own summary), scoring left after the sampler exited."""
    splits = []
    for line in (x for x in lines if x.step == "Grow: sample | score"):
        sample = next(c for c in line.children if subcommand(c.command) == "sample")
        score = next(c for c in line.children if subcommand(c.command) == "score")
        sampling = sample.sampling_s
        splits.append({
            "line_s": round(line.seconds, 2), "sample_process_s": round(sample.seconds, 2),
            "sample_startup_s": None if sampling is None else round(sample.seconds - sampling, 2),
            "sampling_s": sampling, "score_process_s": round(score.seconds, 2),
            "score_after_sampler_s": round(max(score.end - sample.end, 0.0), 2),
            "command": re.sub(r"\s+", " ", sample.command)})
    if splits:
        print("\nGrow pipes (sample | score), seconds: line = sampler start-up + sampling + score's tail")
        print("| line | sample process | start-up | sampling (own summary) | score process "
              "| score after sampler |")
        print("|-----:|---------------:|---------:|-----------------------:|--------------:|--------------------:|")
        for s in splits:
            print(f"| {s['line_s']:.2f} | {s['sample_process_s']:.2f} | {_num(s['sample_startup_s'])} | "
                  f"{_num(s['sampling_s'])} | {s['score_process_s']:.2f} | "
                  f"{s['score_after_sampler_s']:.2f} |")
    return splits


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def report_loop(lines: list[Row], wall: float) -> dict:
    by_line, by_command = defaultdict(list), defaultdict(list)
    for line in lines:
        by_line[line.step].append(line.seconds)
        for child in line.children:
            by_command[child.step].append(child.seconds)
    print(f"\nmake rest: wall time {wall:.1f} s; recipe lines {sum(x.seconds for x in lines):.1f} s "
          f"(the rest is make itself and its $(shell) calls at start-up)")
    return {"wall_s": round(wall, 2),
            "lines": table("By recipe line (step kind):", by_line, wall),
            "commands": table("By rest process (sample and score overlap inside a pipe):", by_command, wall),
            "grow": grow_split(lines)}


def _run_timed(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, children) and stderr of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode:
        sys.exit(f"failed: {shlex.join(argv)}\n{result.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), result.stderr


def _sampling_s(stderr: str) -> float | None:
    found = re.findall(r"^rest sample: .* tokens in ([0-9.]+) s", stderr, re.MULTILINE)
    return float(found[-1]) if found else None


def bench_overlap(run: Path, values: dict[str, str], rest: list[str], work: Path, repeats: int) -> dict:
    """Grow 1's `sample | score` pipe against the two commands through a file, interleaved."""
    sample = [*rest, "sample", "-m", str(run / "g0" / "model"), "-n", values["N"], "--include-ref",
              "--seed", "1", *shlex.split(values["SAMPLE_OPTS"]), str(run / "data" / "train.jsonl")]
    score = [*rest, "score", "-r", values["REWARD"]]
    piped_out, file_out, between = (work / "piped.jsonl.gz", work / "sequential.jsonl.gz",
                                    work / "samples.jsonl")
    pipe = ["bash", "-o", "pipefail", "-c",
            f"{shlex.join(sample)} | {shlex.join([*score, '-o', str(piped_out)])}"]
    times = defaultdict(list)

    def note(**figures):
        for key, value in figures.items():
            times[key].append(value)

    def piped():
        wall, cpu, stderr = _run_timed(pipe)
        note(pipe=wall, pipe_cpu=cpu, pipe_sampling=_sampling_s(stderr))

    def sequential():
        s_wall, s_cpu, stderr = _run_timed([*sample, "-o", str(between)])
        c_wall, c_cpu, _ = _run_timed([*score, str(between), "-o", str(file_out)])
        note(sequential=s_wall + c_wall, sequential_cpu=s_cpu + c_cpu, sample=s_wall, score=c_wall,
             sequential_sampling=_sampling_s(stderr))

    load_before = os.getloadavg()[0]
    for k in range(repeats):
        for way in ((piped, sequential) if k % 2 == 0 else (sequential, piped)):
            way()
    rounds = [round(p / q, 3) for p, q in zip(times["pipe"], times["sequential"])]
    load = (round(load_before, 2), round(os.getloadavg()[0], 2))
    same = gzip.decompress(piped_out.read_bytes()) == gzip.decompress(file_out.read_bytes())
    med = {key: statistics.median(v) for key, v in times.items() if None not in v}
    result = {"command": shlex.join(pipe), "repeats": repeats, "same_candidates": same,
              "median_s": {k: round(v, 3) for k, v in med.items()},
              "ratio_pipe_over_sequential": round(med["pipe"] / med["sequential"], 3),
              "ratio_by_round": rounds,
              "load_average_before_after": load,
              "runs_s": {k: [round(x, 3) if x is not None else None for x in v] for k, v in times.items()}}
    print_overlap(result, med)
    return result


def print_overlap(result: dict, med: dict[str, float]) -> None:
    repeats, pipe, same = result["repeats"], result["command"], result["same_candidates"]
    rounds, load = result["ratio_by_round"], result["load_average_before_after"]
    print(f"\nOverlap: one Grow step's sample | score, BC model, {repeats} rounds interleaved (medians)\n"
          f"  {pipe}")
    print("| way | wall s | CPU s | sampling s (own summary) |\n|---|---:|---:|---:|")
    print(f"| pipe: sample \\| score | {med['pipe']:.2f} | {med['pipe_cpu']:.2f} | "
          f"{_num(med.get('pipe_sampling'))} |")
    print(f"| one after the other (sample {med['sample']:.2f} + score {med['score']:.2f}) | "
          f"{med['sequential']:.2f} | {med['sequential_cpu']:.2f} | "
          f"{_num(med.get('sequential_sampling'))} |")
    print(f"  ratio pipe / one after the other: {result['ratio_pipe_over_sequential']:.3f}; "
          f"same candidates written: {same}")
    print(f"  ratio by round: {', '.join(f'{r:.3f}' for r in rounds)}; "
          f"1-minute load average {load[0]:.2f} before, {load[1]:.2f} after "
          f"(the machine has {os.cpu_count()} CPUs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--g", type=int, help="Grow steps (default 2; 1 with --tiny)")
    parser.add_argument("--i", type=int, help="Improve steps per Grow step (default 3; 2 with --tiny)")
    parser.add_argument("--tiny", action="store_true",
                        help="the TINY settings of tests/loop/test_loop_make.py")
    parser.add_argument("--run", type=Path,
                        help="run folder (empty or absent; kept); default: a temporary one")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of the overlap comparison (0: skip it)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    if args.run is not None and args.run.exists() and any(args.run.iterdir()):
        sys.exit(f"--run {args.run} is not empty: make would skip what is there, and time nothing")
    variables, rest = loop_variables(args), rest_argv()
    values = make_value(variables, "N", "SAMPLE_OPTS", "REWARD")
    temporary = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    try:
        run = args.run.resolve() if args.run else temporary / "run"
        logs = run.parent / run.name if args.run else temporary / "run"
        log, output = Path(f"{logs}.timings.tsv"), Path(f"{logs}.make.log")
        run.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
        wall = run_loop(run, variables, rest, log, output)
        result = {"variables": variables, **report_loop(read_log(log), wall)}
        if args.repeats > 0:
            result["overlap"] = bench_overlap(run, values, rest, temporary, args.repeats)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    main()
