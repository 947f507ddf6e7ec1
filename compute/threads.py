"""Torch's intra-op thread count, set for a block and restored after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the count.

    Small networks (level-set setups, DOODL3 ensembles) are as fast or faster on one thread on
    a shared machine (level sets: 2.7-4.8x faster on a loaded 2-core box; a 25-model Iris
    ensemble chunk: 4.5 s against 57 s), and a float32 sum then does not depend on the worker's
    thread count, so the same seed gives the same bits on every worker.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
