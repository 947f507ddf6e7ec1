"""Smoke test of benchmarks/topology.py: a tiny run prints every stage and the verdict."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_run_prints_each_stage_with_time_and_peak_memory() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "topology.py"), "--samples", "48",
         "--dims", "3000", "--knn", "5"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"^D = 3,000: wrote 0\.00 GiB of float32 samples in [\d.]+ s", out, re.M), out
    rss = []
    for stage in ("imports", "pca", "phate", "persistence"):
        row = re.search(rf"^{stage}\s+([\d.]+)\s+(\d+)\s", out, re.M)
        assert row, out
        rss.append(int(row.group(2)))
    assert rss == sorted(rss) and rss[0] > 0  # a running peak never decreases
    assert re.search(r"^pca .*47 components", out, re.M), out
    assert re.search(r"^persistence .* H0 48,", out, re.M), out  # one H0 pair per sample
    verdict = re.search(r"^D = 3,000: analysis [\d.]+ s, peak RSS ([\d.]+) GiB .*: (PASS|MISS)\)$", out, re.M)  # fmt: skip
    assert verdict and verdict.group(2) == ("PASS" if float(verdict.group(1)) < 4 else "MISS")
