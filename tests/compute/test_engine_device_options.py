"""The engine's device options that run on CPU too: the out-of-memory fallback (an injected
allocator failure), torch.compile of the loop's forward, and their records in the plan."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compute.directions import random_direction
from compute.engine import SurfaceEvaluator
from compute.state import flatten_state, layout_of
from tracker import SpecError
from tracker.surfaces.kinds import evaluate_shrinking

COORDS = np.array([[a, b] for a in (-0.5, 0.0, 0.5) for b in (-0.25, 0.25)], dtype=np.float64)


def _problem(seed: int = 0) -> tuple[nn.Module, list, torch.Tensor, list, list]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 4))  # fmt: skip
    x = torch.randn(96, 12)
    y = torch.randint(0, 4, (96,))
    layout = layout_of(model)
    centre = flatten_state(model, layout)
    dirs = [random_direction(layout, centre, seed=s, target="weights", ignore="biasbn")
            for s in (1, 2)]  # fmt: skip
    return model, layout, centre, dirs, [(x[:48], y[:48]), (x[48:], y[48:])]


def _evaluator(**options) -> SurfaceEvaluator:
    model, layout, centre, dirs, pairs = _problem()
    return SurfaceEvaluator(model, layout, centre, dirs, pairs, loss="cross_entropy",
                            bn_mode="eval", device="cpu", **options)  # fmt: skip


class _FailingAllocator:
    """Raises torch's out-of-memory error whenever a call asks for more than ``limit`` points
    (vmap) or sample rows (loop) at once, as a device allocator would."""

    def __init__(self, evaluator: SurfaceEvaluator, limit: int) -> None:
        self.limit, self.failures = limit, 0
        for name in ("_evaluate_vmap", "_evaluate_loop"):
            real = getattr(evaluator, name)
            setattr(evaluator, name, self._wrap(evaluator, real))

    def _wrap(self, evaluator: SurfaceEvaluator, real):
        def call(rep, points):
            plan = evaluator.plan
            size = plan["points_per_call"] if plan["strategy"] == "vmap" else plan["sample_batch"]
            if size > self.limit:
                self.failures += 1
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real(rep, points)

        return call


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_out_of_memory_halves_the_work_per_call_until_it_fits(strategy: str) -> None:
    expected = _evaluator(strategy=strategy).evaluate(COORDS)
    evaluator = _evaluator(strategy=strategy)
    start = evaluator.plan["points_per_call" if strategy == "vmap" else "sample_batch"]
    allocator = _FailingAllocator(evaluator, limit=max(1, start // 4))
    got = evaluate_shrinking(evaluator, COORDS)
    # Two halvings (every point thread's call fails at each too-large size).
    assert evaluator.plan["oom_retries"] == 2 and allocator.failures >= 2
    size = evaluator.plan["points_per_call" if strategy == "vmap" else "sample_batch"]
    assert size == max(1, start // 4)
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-6)
    np.testing.assert_array_equal(got["acc"], expected["acc"])


def test_out_of_memory_at_the_smallest_size_fails_the_tile_in_one_line() -> None:
    evaluator = _evaluator(strategy="loop")
    _FailingAllocator(evaluator, limit=0)
    with pytest.raises(SpecError) as err:
        evaluate_shrinking(evaluator, COORDS)
    message = str(err.value)
    assert "\n" not in message and "out of device memory" in message and "--subset" in message
    assert evaluator.plan["sample_batch"] == 1


def test_other_errors_are_not_taken_for_out_of_memory() -> None:
    evaluator = _evaluator(strategy="loop")

    def broken(rep, points):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    evaluator._evaluate_loop = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="shapes"):
        evaluate_shrinking(evaluator, COORDS)
    assert "oom_retries" not in evaluator.plan


def test_compiled_forward_gives_the_eager_numbers_and_reports_its_compile_time() -> None:
    eager = _evaluator(strategy="loop")
    compiled = _evaluator(strategy="loop", compile_mode="default")
    plan = compiled.plan
    assert plan["compile"] == "default" and plan["compile_seconds"] > 0
    np.testing.assert_allclose(compiled.evaluate(COORDS)["loss"], eager.evaluate(COORDS)["loss"],
                               rtol=1e-5)  # fmt: skip
    assert eager.plan["compile"] == "none" and "compile_seconds" not in eager.plan
    vmapped = _evaluator(strategy="vmap", compile_mode="default")
    assert "loop strategy" in vmapped.plan["compile_note"]
    with pytest.raises(SpecError, match="compile_mode"):
        _evaluator(compile_mode="fastest")
