"""Command-line parsers of levelset (filled in by its issue). No torch import at module top."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(
    *, sub: Any, enqueue: Any, plot: Any, export: Any, common: argparse.ArgumentParser
) -> None:
    """Add this method's commands to the `tracker` parser."""
