"""Smoke test of benchmarks/levelset.py: a tiny traversal through the queue and through the
plain script agree, and the ratio line reports the measured times."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def test_quick_run_agrees_with_the_plain_script_and_prints_the_ratio(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The script runs in this process, as `python benchmarks/levelset.py ...` would run it
    # (its own __main__, argv and exit status): a new interpreter would import torch, MLflow
    # and torch's compiler again, most of a quick run's time; the process is not what it checks.
    script = REPO / "benchmarks" / "levelset.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--steps", "5", "--phase1-epochs", "2"])
    monkeypatch.chdir(REPO)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    assert exit_.value.code == 0, captured.out[-2000:] + captured.err[-3000:]
    out = captured.out
    assert re.search(r"predictor steps: tracker 5, plain 5$", out, re.M), out
    assert re.search(r"^final R: tracker [\d.]+, plain [\d.]+ \(agree\)$", out, re.M), out
    times = re.search(r"^tracker_time ([\d.]+) s  plain_time ([\d.]+) s$", out, re.M)
    ratio = re.search(r"^ratio plain_time / tracker_time = ([\d.]+) \((PASS|MISS)", out, re.M)
    assert times and ratio, out
    tracker_time, plain_time = float(times.group(1)), float(times.group(2))
    assert min(tracker_time, plain_time) > 0
    # The times print to 1 ms and the ratio to 3 decimals: the ratio must lie in the range the
    # rounded times allow (a 0.038 s plain run over 0.200 s is anything from 0.1875 to 0.1925).
    low = (plain_time - 0.0005) / (tracker_time + 0.0005)
    high = (plain_time + 0.0005) / max(tracker_time - 0.0005, 1e-9)
    assert low - 0.0005 <= float(ratio.group(1)) <= high + 0.0005, out
    assert ratio.group(2) == ("PASS" if float(ratio.group(1)) >= 0.9 else "MISS")
