"""Smoke test of benchmarks/morse.py: a quick run times both paths, checks that they give the
same Morse graph, and prints the ratio with its verdict.

It runs in this process (the benchmark's own `main`), so the imports of torch, sklearn and
CMGDB that other tests paid for are shared.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_quick_run_prints_both_times_the_same_graph_and_the_ratio(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = importlib.util.spec_from_file_location("bench_morse", REPO / "benchmarks" / "morse.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^Iris ensemble: 12 models x 5 epochs trained", out, re.M), out
    line = re.search(
        r"^pass 1: plain (\d+\.\d+) s, tracker (\d+\.\d+) s .*same graph: (\w+), "
        r"same retraction counts: (\w+)$", out, re.M,
    )  # fmt: skip
    assert line, out
    plain, tracker = float(line.group(1)), float(line.group(2))
    assert plain > 0 and tracker > 0
    assert line.group(3) == "yes" and line.group(4) == "yes"
    ratio = re.search(r"^ratio plain_time / tracker_time = (\d+\.\d+) \(target >= 0\.9\) (PASS|MISS)$",
                      out, re.M)  # fmt: skip
    assert ratio, out
    # The times print rounded to 1 ms: allow the ratio that much slack.
    slack = plain / tracker * (0.0005 / plain + 0.0005 / tracker) + 0.0005
    assert abs(float(ratio.group(1)) - plain / tracker) <= slack
    assert ratio.group(2) == ("PASS" if float(ratio.group(1)) >= 0.9 else "MISS")
