"""Every benchmark still starts: its imports of rest's library and its options (a refactor that
moves a function must not leave a benchmark that fails only when someone reruns it)."""

import subprocess
import sys

import pytest

from tests.helpers import REPO

BENCHMARKS = sorted((REPO / "benchmarks").glob("bench_*.py"))


@pytest.mark.subprocess
@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: path.name)
def test_the_benchmark_imports_and_shows_its_options(script):
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def test_there_are_benchmarks():
    assert len(BENCHMARKS) >= 8
