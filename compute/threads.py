"""Torch settings that decide a computation's bits, set for a block and restored after: the
intra-op thread count, and float32 without TensorFloat-32 on a GPU."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

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


@contextmanager
def tensor_float32(device: torch.device | str, allowed: bool) -> Iterator[None]:
    """On a CUDA device, TensorFloat-32 in float32 matrix products and convolutions allowed or
    not for the block, then the flags as they were; nothing elsewhere. The flags are
    process-wide: a block run beside another thread's sees whichever was set last."""
    if torch.device(device).type != "cuda":
        yield
        return
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def exact_float32(device: torch.device | str) -> AbstractContextManager[None]:
    """Float32 without TensorFloat-32 on a CUDA device. PyTorch computes cuDNN convolutions in
    TF32 by default on Ampere and later GPUs (10-bit mantissas, ~1e-3 relative error): a
    float32 result that should equal the CPU's within float32 rounding (a surface in fp32, a
    Hessian-vector product) needs it off."""
    return tensor_float32(device, False)
