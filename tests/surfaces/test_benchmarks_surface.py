"""Smoke test of benchmarks/surface.py: a tiny run prints the throughput table and the ratios.

The tracker path (d) is left out (``--no-tracker``): its `tracker work` cold start alone takes
15-30 s on 2 cores; the benchmark itself exercises it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_run_prints_rates_ratios_and_agreeing_values() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "surface.py"), "--quick",
         "--cases", "digits-mb128", "--threads", "1", "--no-tracker"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    header = re.search(r"^case\s+samples\s+a\s+b\s+c\s+d\s+c/a\s+d/a\s+d/b\s*$", out, re.M)
    assert header, out
    row = re.search(
        r"^digits-mb128\s+128\s+([\d,.]+)\s+([\d,.]+)\s+([\d,.]+)\s+-\s+"
        r"(\d+\.\d\d)x (PASS|MISS)\s+-\s+-\s*$",
        out,
        re.M,
    )
    assert row, out
    a, b, c = (float(v.replace(",", "")) for v in row.group(1, 2, 3))
    assert min(a, b, c) > 0
    ratio, verdict = float(row.group(4)), row.group(5)
    assert abs(ratio - c / a) <= 0.01 * ratio + 0.006
    assert verdict == ("PASS" if ratio >= 1.5 else "MISS")
    # The Goldstein loop (b) and the engine (c) evaluate the same surface.
    diff = re.search(
        r"digits-mb128: (vmap|loop) K=\d+, .*max \|loss\(b\) - loss\(c\)\| = (\S+)", out
    )
    assert diff, out
    assert float(diff.group(2)) < 1e-4


def test_repeated_passes_print_their_spread_and_judge_the_worst() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "surface.py"), "--grid", "3", "--repeat",
         "2", "--cases", "digits-mb128", "--threads", "1", "--no-tracker"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    passes = re.findall(r"^\[digits-mb128\] pass \d: .* c/a (\d+\.\d\d), c/p (\d+\.\d\d) \(load", out, re.M)  # fmt: skip
    assert len(passes) == 2, out
    row = re.search(
        r"^digits-mb128\s+2\s+\S+\s+.*?(\d+\.\d\d) / \d+\.\d\d / (\d+\.\d\d) (PASS|MISS)\s+"
        r"(\d+\.\d\d) / \d+\.\d\d / (\d+\.\d\d) (PASS|MISS)\s*$",
        out,
        re.M,
    )
    assert row, out
    c_a = sorted(float(a) for a, _ in passes)
    c_p = sorted(float(p) for _, p in passes)
    assert (float(row.group(1)), float(row.group(2))) == (c_a[0], c_a[-1])
    assert (float(row.group(4)), float(row.group(5))) == (c_p[0], c_p[-1])
    # The worst pass decides (printed rounded: a value that rounds onto the target is either).
    if c_a[0] != 1.5:
        assert row.group(3) == ("PASS" if c_a[0] > 1.5 else "MISS")
    if c_p[0] != 1.0:
        assert row.group(6) == ("PASS" if c_p[0] > 1.0 else "MISS")
