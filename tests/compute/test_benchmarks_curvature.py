"""Smoke tests of benchmarks/curvature.py: a tiny run prints one ratio per case and measure,
each consistent with the two times it prints, and the ResNet-56 peak-RSS line; the user path
(--cli) runs the tracker's commands and the plain PyHessian script on the same weights."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROW = re.compile(
    r"^\| (\S+) \| (top-1|top-1-residual|trace|trace-hessian|trace@se|density|whole) \| "
    r"([\d.]+) \| "
    r"([\d.]+) \| +([\d.]+)x (PASS|MISS|SE [\d.e+-]+>[\d.e+-]+) \|",
    re.M,
)


def test_quick_run_prints_a_ratio_per_case_and_measure() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "curvature.py"), "--quick"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    rows = ROW.findall(out)
    assert {(case, m) for case, m, *_ in rows} == {
        (case, m)
        for case in ("resnet20", "digits-quick")
        for m in ("top-1", "top-1-residual", "trace", "trace-hessian", "trace@se", "density",
                  "whole")
    }, out
    for _case, _m, ours, theirs, ratio, verdict in rows:
        ours_s, theirs_s = float(ours), float(theirs)
        assert ours_s > 0 and theirs_s > 0
        # Times print to 1 ms and the ratio to 2 decimals.
        low = (theirs_s - 0.0005) / (ours_s + 0.0005)
        high = (theirs_s + 0.0005) / max(ours_s - 0.0005, 1e-9)
        assert low - 0.005 <= float(ratio) <= high + 0.005, out
        if verdict.startswith("SE "):  # Hutch++ at a larger standard error: no verdict
            assert _m == "trace@se"
            continue
        assert verdict == ("PASS" if float(ratio) >= 2.0 else "MISS")
    assert re.search(r"^  resnet20: tracker [\d.]+ GiB, pyhessian [\d.]+ GiB$", out, re.M), out
    # Where glibc allows it, the tracker's child allocates as `tracker work`'s threads do.
    tuned = "allocator: tracker tuned (tracker._malloc), pyhessian glibc defaults"
    assert platform.libc_ver()[0] != "glibc" or out.count(tuned) == 2, out  # resnet20, digits
    assert re.search(r"^resnet56 top-5 .* peak RSS [\d.]+ GiB \(target < 4 GiB: (PASS|MISS)\)$",
                     out, re.M), out  # fmt: skip


def test_the_user_path_runs_both_tools_on_the_same_weights_and_data() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "curvature.py"), "--cli", "--probes", "4",
         "--max-iter", "6"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    found = re.search(r"^  repeat 1: tracker ([\d.]+) s .*tasks: density [\d.]+ s \(6 HVPs\), "
                      r"eigen [\d.]+ s \(\d+ HVPs\), trace [\d.]+ s \(0 HVPs\)\), plain PyHessian "
                      r"script ([\d.]+) s .* losses ([\d.]+) / ([\d.]+)$", proc.stdout, re.M)  # fmt: skip
    assert found, proc.stdout
    assert float(found[1]) > 0 and float(found[2]) > 0
    assert found[3] == found[4]  # the same weights and data: the same loss to 6 decimals
    assert re.search(r"^  median plain/tracker: [\d.]+x$", proc.stdout, re.M), proc.stdout
