"""Where and with what a result was computed, recorded on the task that made it.

fp32 and bf16, or CPU and GPU results differ in their last digits (or more): a comparison
across machines must be able to see which is which. Each finished task records the tracker's
version (and its git commit when it runs from a checkout), the torch version, the device name
(GPU name, else the CPU model), the precision the task computed in, and the worker host.
torch is never imported here: its facts are read only when the task's code has loaded it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tracker._device import cpu_only

KEYS = ("tracker", "commit", "torch", "device", "precision", "host")


@functools.lru_cache(maxsize=1)
def _machine() -> dict[str, Any]:
    try:
        version = importlib.metadata.version("tracker")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"tracker": version, "commit": _git_commit(), "host": socket.gethostname(),
            "cpu": _cpu_model()}  # fmt: skip


def _git_commit() -> str | None:
    """The checkout's commit (with '+dirty' when files differ), or None when installed."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def provenance(result: dict[str, Any] | None = None) -> dict[str, Any]:
    """This process's provenance for a finished task whose result is ``result`` (its
    ``plan['precision']`` or ``precision`` says what it computed in; fp32 otherwise)."""
    machine = _machine()
    torch = sys.modules.get("torch")
    device = machine["cpu"]
    used = (result or {}).get("plan", {}) if isinstance(result, dict) else {}
    on_gpu = str(used.get("device", "")).startswith("cuda") if used else None
    if torch is not None and on_gpu is not False and not cpu_only():
        try:
            if torch.cuda.is_available():
                device = torch.cuda.get_device_name(0)
        except Exception:  # a broken driver: the CPU is what computed
            pass
    precision = used.get("precision") or (result or {}).get("precision") or "fp32"
    return {
        "tracker": machine["tracker"], "commit": machine["commit"],
        "torch": getattr(torch, "__version__", None) if torch is not None else None,
        "device": device, "precision": str(precision), "host": machine["host"],
    }  # fmt: skip


def describe(prov: dict[str, Any] | None) -> str:
    """One line: ``tracker 0.1.0 (abc1234), torch 2.14.1, NVIDIA H200, bf16, on host``."""
    if not prov:
        return "not recorded"
    commit = f" ({str(prov['commit'])[:12]})" if prov.get("commit") else ""
    return (f"tracker {prov.get('tracker')}{commit}, torch {prov.get('torch') or '-'}, "
            f"{prov.get('device')}, {prov.get('precision')}, on {prov.get('host')}")  # fmt: skip
