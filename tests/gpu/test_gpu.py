"""GPU paths, run by benchmarks/gpu_check.sh on a CUDA machine (`pytest -m gpu`).

CI has no GPU: ./dev test deselects the `gpu` marker, and on a machine without CUDA these tests
skip with a message. They check what only a GPU can show: fp32 on the GPU equals the CPU within
1e-5 relative, bf16 stays close and is recorded, a compiled forward equals the eager one, K and
the device data are what the plan says, and curvature runs on the worker's GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compute.directions import random_direction
from compute.engine import SurfaceEvaluator
from compute.state import flatten_state, layout_of

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU: benchmarks/gpu_check.sh runs these on one",
    ),
]

GRID = np.array([[a, b] for a in np.linspace(-1, 1, 5) for b in np.linspace(-1, 1, 4)])


class SmallCNN(nn.Module):
    """Conv + BatchNorm + pooling, with the first-affine protocol."""

    first_affine = "conv1"

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Sequential(
            nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
        )  # fmt: skip

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_after_first(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_after_first(self.conv1(x))


def _problem(kind: str, n: int = 256):
    torch.manual_seed(0)
    if kind == "mlp":
        model: nn.Module = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        x = torch.randn(n, 64)
    else:
        model = SmallCNN()
        x = torch.randn(n, 3, 16, 16)
        model.train()
        with torch.no_grad():
            model(x)  # running statistics away from their defaults
        model.eval()
    y = torch.randint(0, 10, (n,))
    layout = layout_of(model)
    centre = flatten_state(model, layout)
    dirs = [random_direction(layout, centre, seed=s, target="weights", ignore="biasbn")
            for s in (1, 2)]  # fmt: skip
    return model, layout, centre, dirs, [(x, y)]


def _surface(kind: str, device: str, **options):
    model, layout, centre, dirs, groups = _problem(kind)
    ev = SurfaceEvaluator(model, layout, centre, dirs, groups, loss="cross_entropy",
                          bn_mode=options.pop("bn_mode", "eval"), device=device, **options)  # fmt: skip
    return ev.evaluate(GRID), ev.plan


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("strategy", ["loop", "vmap"])
@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_fp32_on_the_gpu_equals_the_cpu(kind: str, strategy: str, bn_mode: str) -> None:
    cpu, _ = _surface(kind, "cpu", strategy=strategy, bn_mode=bn_mode)
    gpu, plan = _surface(kind, "cuda", strategy=strategy, bn_mode=bn_mode)
    assert plan["device"].startswith("cuda") and plan["precision"] == "fp32"
    np.testing.assert_allclose(gpu["loss"], cpu["loss"], rtol=1e-5)
    # An argmax may flip where two logits tie to float precision: at most one sample in 256.
    assert np.abs(gpu["acc"] - cpu["acc"]).max() <= 1 / 256 + 1e-12


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_bf16_is_recorded_and_stays_close(kind: str) -> None:
    exact, _ = _surface(kind, "cuda")
    half, plan = _surface(kind, "cuda", precision="bf16")
    assert plan["precision"] == "bf16" and "precision_note" not in plan
    error = np.abs(half["loss"] - exact["loss"]) / np.abs(exact["loss"])
    print(f"bf16 relative loss error ({kind}): max {error.max():.2e}, mean {error.mean():.2e}")
    assert error.max() < 5e-2
    assert not np.array_equal(half["loss"], exact["loss"])  # bf16 really ran


def test_conv_inputs_run_channels_last_on_the_gpu() -> None:
    _, plan = _surface("cnn", "cuda", strategy="loop", first_affine=False)
    assert plan["channels_last"] is True


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_compiled_forward_equals_eager_on_the_gpu(kind: str) -> None:
    eager, _ = _surface(kind, "cuda", strategy="loop")
    compiled, plan = _surface(kind, "cuda", strategy="loop", compile_mode="default")
    assert plan["compile"] == "default" and plan["compile_seconds"] > 0
    print(f"compile ({kind}): {plan['compile_seconds']:.1f} s")
    np.testing.assert_allclose(compiled["loss"], eager["loss"], rtol=1e-5)


def test_reruns_are_bitwise_equal_on_the_same_gpu() -> None:
    first, plan = _surface("cnn", "cuda", strategy="vmap")
    again, plan2 = _surface("cnn", "cuda", strategy="vmap")
    assert plan["points_per_call"] == plan2["points_per_call"] > 1
    assert first["loss"].tobytes() == again["loss"].tobytes()


def test_a_real_out_of_memory_error_shrinks_the_call() -> None:
    from tracker.surfaces.kinds import evaluate_shrinking

    model, layout, centre, dirs, groups = _problem("cnn", n=4096)
    free, _ = torch.cuda.mem_get_info()
    # K so large that K copies of the activations cannot fit: the device allocator fails.
    ev = SurfaceEvaluator(model, layout, centre, dirs, groups, loss="cross_entropy",
                          bn_mode="eval", device="cuda", strategy="vmap",
                          points_per_call=4096, max_memory_bytes=free * 4)  # fmt: skip
    values = evaluate_shrinking(ev, GRID)
    assert ev.plan["oom_retries"] >= 1 and ev.plan["points_per_call"] < 4096
    reference, _ = _surface("cnn", "cpu")
    assert values["loss"].shape == reference["loss"].shape


def test_curvature_runs_on_the_gpu_and_matches_the_cpu() -> None:
    from compute.curvature import HessianOperator, top_eigenvalues

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 5))
    x, y = torch.randn(200, 20), torch.randint(0, 5, (200,))
    values = {}
    for dev in ("cpu", "cuda"):
        op = HessianOperator(model.to(dev), x.to(dev), y.to(dev), loss="cross_entropy")
        values[dev] = top_eigenvalues(op, k=2, seed=0, tol=1e-6).eigenvalues
    np.testing.assert_allclose(values["cuda"], values["cpu"], rtol=1e-4)


def test_the_gauss_newton_trace_runs_on_the_gpu_and_matches_the_cpu() -> None:
    """A BatchNorm CNN (piecewise linear in eval mode): the same seeded output probes on the
    GPU and the CPU give the same trace within float32 rounding, per layer too."""
    from compute.curvature import HessianOperator, hutchinson_trace

    model, _, _, _, [(x, y)] = _problem("cnn", n=64)
    results = {}
    for dev in ("cpu", "cuda"):
        op = HessianOperator(model.to(dev), x.to(dev), y.to(dev), loss="cross_entropy")
        results[dev] = hutchinson_trace(op, 20, seed=0, per_layer=True)
        assert results[dev].config["estimator"] == "gauss-newton" and op.hvp_count == 0
    np.testing.assert_allclose(results["cuda"].samples, results["cpu"].samples, rtol=1e-4)
    for name, value in results["cpu"].layer_traces.items():
        np.testing.assert_allclose(results["cuda"].layer_traces[name], value, rtol=1e-4)


def test_level_set_traversal_runs_on_the_gpu_and_follows_the_cpu() -> None:
    from compute import levelset as ls

    cfg = ls.LevelSetConfig(setup="IRIS_FF", seed=11, max_predictor_steps=20, phase1_epochs=10)
    cpu = ls.traverse(cfg, device="cpu")
    gpu = ls.traverse(cfg, device="cuda")
    assert gpu.trace.shape == cpu.trace.shape
    # Phase 1 (Adam, 10 epochs) ends at the same loss to float32 precision on both devices.
    np.testing.assert_allclose(gpu.l0, cpu.l0, rtol=1e-4)
    assert gpu.theta.dtype == np.float32 and np.isfinite(gpu.trace).all()
