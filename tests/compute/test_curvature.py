"""compute/curvature.py against the exact Hessian of small networks and against PyHessian 0.1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from compute.curvature import (
    HessianOperator,
    default_probe_block,
    extreme_eigenvalues,
    hutchinson_trace,
    hutchpp_trace,
    smooth_density,
    spectral_density,
    top_eigenvalues,
)
from compute.models import build_model
from tracker import SpecError


def _mlp(dtype: torch.dtype = torch.float64, classes: int = 3) -> nn.Module:
    """A 5-12-12-classes tanh MLP: a few hundred parameters (267 with 3 classes)."""
    model = build_model("mlp", {"widths": [12, 12], "activation": "tanh"}, input_shape=(5,),
                        num_classes=classes, seed=0)  # fmt: skip
    return model.to(dtype)


def _data(n: int = 64, dtype: torch.dtype = torch.float64, classes: int = 3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 5, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def _exact_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> np.ndarray:
    """torch.autograd.functional.hessian of the mean loss as a function of the flat parameters."""
    named = list(model.named_parameters())
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def f(theta: torch.Tensor) -> torch.Tensor:
        parts = theta.split([p.numel() for _, p in named])
        params = {k: t.view(p.shape) for (k, p), t in zip(named, parts, strict=True)}
        out = functional_call(model.eval(), params, (x,))
        if loss == "mse":
            return F.mse_loss(out, y.reshape(out.shape))
        return F.cross_entropy(out, y)

    return torch.autograd.functional.hessian(f, flat, vectorize=True).double().numpy()


@pytest.fixture(scope="module")
def mlp_case():
    model, (x, y) = _mlp(), _data()
    h = _exact_hessian(model, x, y, "cross_entropy")
    return model, x, y, h, np.linalg.eigvalsh(h)


@pytest.mark.parametrize(
    ("hvp", "graph_budget", "mode", "kept"),
    [
        ("forward", None, "forward", False),
        ("reverse", None, "reverse", True),
        ("auto", None, "reverse", True),
        ("reverse", 0, "reverse", False),  # graphs over the budget: rebuilt per product
    ],
)
@pytest.mark.parametrize("batch_size", [20, None])  # batches of 20, 20, 20, 4; one batch
def test_hessian_vector_products_equal_the_exact_hessian(
    mlp_case, hvp, graph_budget, mode, kept, batch_size
) -> None:
    model, x, y, h, _ = mlp_case
    budget = {} if graph_budget is None else {"graph_budget": graph_budget}
    op = HessianOperator(model, x, y, batch_size=batch_size, hvp=hvp, **budget)
    assert op.config["hvp"] == mode and op.config["graphs_kept"] is kept
    # The loss check reads the kept graphs' losses or a forward pass: the same mean loss.
    with torch.no_grad():
        exact_loss = float(F.cross_entropy(model.eval()(x), y))
    assert math.isclose(op.loss, exact_loss, rel_tol=1e-12)
    v = torch.randn(3, op.n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():  # as the measures call it
        for _ in range(2):  # the reverse mode's kept graphs serve a second call
            np.testing.assert_allclose(op.matmat(v).numpy(), v.numpy() @ h, rtol=0, atol=1e-12)


def test_a_small_memory_budget_splits_the_data_and_keeps_the_hessian(mlp_case) -> None:
    model, x, y, h, _ = mlp_case
    op = HessianOperator(model, x, y, memory_budget=40_000)
    assert 1 <= op.batch_size < len(x) and op.probe_chunk == 1
    assert op.config["batch_size"] == op.batch_size
    v = torch.randn(2, op.n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    np.testing.assert_allclose(op.matmat(v).numpy(), v.numpy() @ h, rtol=0, atol=1e-12)
    # Under batch statistics the batch is part of the function: never split unless asked.
    assert HessianOperator(model, x, y, bn="train", memory_budget=40_000).batch_size == len(x)


def test_top_k_eigenvalues_match_the_exact_spectrum_within_1e_4(mlp_case) -> None:
    model, x, y, h, exact = mlp_case
    op = HessianOperator(model, x, y)
    result = top_eigenvalues(op, 5)
    top = exact[::-1][:5]
    np.testing.assert_allclose(result.eigenvalues, top, rtol=1e-4)
    assert result.converged and result.iterations <= 100
    assert result.eigenvectors.dtype == np.float32 and result.eigenvectors.shape == (5, op.n)
    # Each vector is an eigenvector: H y = lambda y, to float32 rounding.
    hy = result.eigenvectors.astype(np.float64) @ h
    np.testing.assert_allclose(hy, top[:, None] * result.eigenvectors, atol=1e-4 * abs(top[0]))
    first = op.as_tensors(result.eigenvectors[0])
    assert list(first) == [k for k, _ in model.named_parameters()]
    assert all(first[k].shape == p.shape for k, p in model.named_parameters())
    assert result.history.shape == (result.iterations, 5)
    np.testing.assert_allclose(result.history[-1], result.eigenvalues)
    # PyHessian's stop (the Ritz values' relative change < tol) is looser: no more steps and
    # a coarser answer (the 5th is 1.6e-3 off here; the top one, well separated, is not).
    change = top_eigenvalues(op, 5, stop="change")
    assert change.converged and change.config["stop"] == "change"
    assert change.iterations <= result.iterations
    np.testing.assert_allclose(change.eigenvalues[0], top[0], rtol=1e-4)
    np.testing.assert_allclose(change.eigenvalues, top, rtol=1e-2)
    smallest = top_eigenvalues(op, 2, which="smallest")
    np.testing.assert_allclose(smallest.eigenvalues, exact[:2], rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("tol", "max_iter"), [(1e-3, 100), (1e-8, 100), (1e-3, 3)])
def test_one_run_gives_both_ends_as_two_runs_do(mlp_case, dtype, tol, max_iter) -> None:
    """Goldstein's map takes lambda_max and lambda_min from one Lanczos run: each equals its own
    top_eigenvalues run bit for bit (same seed, same Krylov basis), at the larger of the two
    runs' products instead of their sum; with too few steps, unconverged as they are."""
    model, x, y, _, exact = mlp_case
    op = HessianOperator(model.to(dtype), x.to(dtype), y)
    try:
        kw = {"tol": tol, "max_iter": max_iter, "seed": 3}
        hi = top_eigenvalues(op, 1, which="largest", **kw)
        lo = top_eigenvalues(op, 1, which="smallest", **kw)
        before = op.hvp_count
        both = extreme_eigenvalues(op, **kw)
        assert op.hvp_count - before == both.iterations == max(hi.iterations, lo.iterations)
    finally:
        model.to(torch.float64)
    assert (both.largest, both.smallest) == (hi.eigenvalues[0], lo.eigenvalues[0])
    assert both.residuals == (hi.residuals[0], lo.residuals[0])
    assert both.steps == (hi.iterations, lo.iterations)
    assert both.converged == (hi.converged, lo.converged)
    if max_iter == 100 and tol == 1e-3:
        assert hi.iterations != lo.iterations  # the case the shared run saves products on
        np.testing.assert_allclose([both.largest, both.smallest], [exact[-1], exact[0]],
                                   rtol=1e-3, atol=1e-8)  # fmt: skip
    if max_iter == 3:
        assert both.converged == (False, False) and both.iterations == 3


def test_trace_and_per_layer_traces_are_within_their_standard_errors(mlp_case) -> None:
    model, x, y, h, _ = mlp_case
    op = HessianOperator(model, x, y)
    exact = float(np.trace(h))
    few = hutchinson_trace(op, 100, seed=3)
    assert few.probes == 100 and few.stderr > 0
    assert abs(few.trace - exact) <= 4 * few.stderr
    many = hutchinson_trace(op, 20_000, seed=4, per_layer=True)
    assert abs(many.trace - exact) <= 4 * many.stderr
    # Per-layer traces use the same probes: they add up to the whole, and each estimates its
    # block of the exact diagonal.
    assert math.isclose(sum(many.layer_traces.values()), many.trace, rel_tol=1e-9)
    for name, block in op.layers().items():
        part = float(np.trace(h[block, block]))
        assert abs(many.layer_traces[name] - part) <= 4 * many.layer_stderr[name] + 1e-12, name


def _rademacher_rows(gen: torch.Generator, rows: int, n: int) -> np.ndarray:
    """compute.curvature's probe draw: one row at a time from the seeded generator."""
    return np.stack([(torch.randint(0, 2, (n,), generator=gen) * 2 - 1).double().numpy()
                     for _ in range(rows)])  # fmt: skip


def test_hutchpp_is_its_published_estimator_on_the_exact_hessian(mlp_case) -> None:
    """Hutch++ with 60 products: the same seeded sketch and probes through the exact Hessian
    give the same exact part (tr Q^T H Q, whatever basis QR picks for range(H S)) and the
    same deflated probe values; with a sketch as wide as the parameters it is exact."""
    model, x, y, h, _ = mlp_case
    op = HessianOperator(model, x, y)
    n = op.n
    result = hutchpp_trace(op, 60, seed=3)
    assert result.probes == 60 and result.config["sketch"] == 20
    assert result.config["residual_probes"] == 20 and op.config["probe_block"] > 1
    gen = torch.Generator().manual_seed(3)
    sketch, probes = _rademacher_rows(gen, 20, n), _rademacher_rows(gen, 20, n)
    q = np.linalg.qr(h @ sketch.T)[0]
    exact_part = float(np.trace(q.T @ h @ q))
    deflated = probes - (probes @ q) @ q.T
    samples = np.einsum("in,nm,im->i", deflated, h, deflated)
    assert result.config["exact_part"] == pytest.approx(exact_part, rel=1e-9)
    np.testing.assert_allclose(result.samples, samples, rtol=1e-8, atol=1e-12)
    assert result.trace == pytest.approx(exact_part + samples.mean(), rel=1e-9)
    assert result.stderr == pytest.approx(samples.std(ddof=1) / math.sqrt(20), rel=1e-8)
    whole = hutchpp_trace(op, 3 * n + 2, seed=1)  # the sketch spans every direction
    assert whole.trace == pytest.approx(float(np.trace(h)), rel=1e-9)
    assert whole.stderr <= 1e-9 * abs(whole.trace)


def test_hutchpp_is_unbiased_and_refuses_too_few_products(mlp_case) -> None:
    model, x, y, h, _ = mlp_case
    op = HessianOperator(model, x, y)
    values = np.array([hutchpp_trace(op, 30, seed=s).trace for s in range(24)])
    exact = float(np.trace(h))
    assert abs(values.mean() - exact) <= 4 * values.std(ddof=1) / math.sqrt(len(values))
    with pytest.raises(SpecError, match="at least 6"):
        hutchpp_trace(op, 5)


def test_k_equal_to_the_parameter_count_returns_a_rank_deficient_spectrum() -> None:
    """Two samples through a 3x3 linear layer: rank <= 4 of 12, so Lanczos meets invariant
    subspaces and must restart orthogonally to its basis to find all 12 eigenvalues."""
    model = build_model("mlp", {"widths": []}, input_shape=(3,), num_classes=3, seed=0).double()
    x, y = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64), \
        torch.tensor([0, 2])  # fmt: skip
    op = HessianOperator(model, x, y)
    result = top_eigenvalues(op, op.n)
    exact = np.linalg.eigvalsh(_exact_hessian(model, x, y, "cross_entropy"))
    np.testing.assert_allclose(np.sort(result.eigenvalues), exact, atol=1e-12)
    assert result.converged and result.iterations == op.n == 12


def test_trace_is_within_1e_3_relative_with_many_probes() -> None:
    """Hutchinson's variance is 2 * sum_{i != j} H_ij^2 per probe: on the MLP above 1e-3 would
    take ~1e6 probes, so this uses least squares on nearly orthogonal features (a nearly
    diagonal Hessian 2 X^T X / N), where 20,000 probes reach it with > 4 sigma to spare. The
    Hessian's probes: the Gauss-Newton ones, in output space, see the 4000 x 4000 matrix
    B^T J J^T B, far from diagonal, and would need ~100x more."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4000, 20, generator=g, dtype=torch.float64)
    y = torch.randn(4000, 1, generator=g, dtype=torch.float64)
    model = build_model("mlp", {"widths": []}, input_shape=(20,), num_classes=1, seed=0).double()
    exact = float(np.trace(_exact_hessian(model, x, y, "mse")))
    result = hutchinson_trace(HessianOperator(model, x, y, loss="mse"), 20_000, seed=5,
                              estimator="hessian")
    assert abs(result.trace - exact) <= 1e-3 * abs(exact)
    assert 4 * result.stderr <= 1e-3 * abs(exact)


def test_density_has_mass_one_and_the_exact_spectrum_moments(mlp_case) -> None:
    model, x, y, h, exact = mlp_case
    op = HessianOperator(model, x, y)
    runs = 20
    result = spectral_density(op, runs=runs, steps=40, seed=0)
    step = result.grid[1] - result.grid[0]
    assert math.isclose(result.density.sum() * step, 1.0, rel_tol=1e-12)
    np.testing.assert_allclose(np.nansum(result.weights, axis=1), 1.0, rtol=1e-9)
    n = op.n
    # Quadrature moments per run are v^T H^p v for a unit Rademacher start v; their mean over
    # runs estimates tr(H^p) / n with variance 2 * sum_{i != j} (H^p)_ij^2 / n^2 / runs.
    for power, matrix in ((1, h), (2, h @ h)):
        moments = np.nansum(result.weights * np.nan_to_num(result.nodes) ** power, axis=1)
        target = float(np.trace(matrix)) / n
        off = matrix - np.diag(np.diag(matrix))
        sd = math.sqrt(2 * float((off**2).sum())) / n / math.sqrt(runs)
        assert abs(moments.mean() - target) <= 4 * sd, (power, moments.mean(), target, sd)
    # The smoothed density keeps the quadrature's mean (the kernel is symmetric).
    mean = float((result.grid * result.density).sum() * step)
    quad = float(np.nansum(result.weights * np.nan_to_num(result.nodes)) / runs)
    assert abs(mean - quad) <= 1e-3 * (exact.max() - exact.min())
    assert result.nodes.shape == result.weights.shape == (runs, 40)


def test_probe_blocks_give_the_same_products_and_bitwise_reruns(mlp_case) -> None:
    """Probes batched through one backward (``probe_block``) are the one-at-a-time products
    to rounding; at one block a rerun repeats the bits, and the block is in the config."""
    model, x, y, _, _ = mlp_case
    model32, x32 = model.float(), x.float()
    try:
        runs = {b: [hutchinson_trace(HessianOperator(model32, x32, y, probe_block=b), 40, seed=2)
                    for _ in range(2)] for b in (1, 8)}  # fmt: skip
    finally:
        model.double()
    for block, (a, b) in runs.items():
        assert a.config["probe_block"] == block and np.array_equal(a.samples, b.samples)
    np.testing.assert_allclose(runs[8][0].samples, runs[1][0].samples, rtol=1e-4, atol=1e-5)
    assert default_probe_block(64, 267) == 32 and default_probe_block(1438, 17_610) == 1
    assert default_probe_block(128, 17_610) == 8
    with pytest.raises(SpecError, match="probe_block"):
        HessianOperator(model, x, y, probe_block=0)


def test_smoothing_is_pyhessians_gaussian_mixture_on_the_whole_grid() -> None:
    """smooth_density evaluates each Gaussian only where it does not underflow: the result is
    PyHessian's density_generate (every node on every grid point) to rounding."""
    g = np.random.default_rng(0)
    nodes = np.sort(g.normal(size=(3, 30)) * np.array([[0.01], [1.0], [30.0]]), axis=1)
    nodes[0, -4:] = np.nan  # a run that ended early
    weights = g.dirichlet(np.ones(30), size=3)
    weights[0, -4:] = 0.0
    grid, density, variance = smooth_density(nodes, weights, bins=2000)
    lo, hi = np.mean(np.nanmin(nodes, 1)) - 0.01, np.mean(np.nanmax(nodes, 1)) + 0.01
    assert variance == pytest.approx(1e-5 * max(1.0, hi - lo))
    np.testing.assert_array_equal(grid, np.linspace(lo, hi, 2000))
    full = np.zeros(2000)
    for row, w in zip(nodes, weights, strict=True):
        keep = np.isfinite(row)
        kernel = np.exp(-((grid[:, None] - row[keep]) ** 2) / (2 * variance))
        full += kernel / math.sqrt(2 * math.pi * variance) @ w[keep]
    full /= full.sum() * (grid[1] - grid[0])
    np.testing.assert_allclose(density, full, rtol=1e-12, atol=1e-300)


def test_density_runs_in_groups_give_the_runs_side_by_side(mlp_case) -> None:
    model, x, y, _, _ = mlp_case
    together = spectral_density(HessianOperator(model, x, y), runs=3, steps=12, seed=1)
    alone = HessianOperator(model, x, y, memory_budget=40_000)  # one probe per product
    assert alone.probe_chunk == 1
    grouped = spectral_density(alone, runs=3, steps=12, seed=1)
    np.testing.assert_allclose(grouped.nodes, together.nodes, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grouped.weights, together.weights, rtol=1e-7, atol=1e-12)


def test_mse_loss_curvature_matches_the_exact_hessian() -> None:
    model = _mlp(classes=1)
    x, _ = _data()
    y = torch.sin(x.sum(1, keepdim=True))
    h = _exact_hessian(model, x, y, "mse")
    op = HessianOperator(model, x, y, loss="mse", batch_size=16)
    assert op.config["loss"] == "mse"
    result = top_eigenvalues(op, 2)
    np.testing.assert_allclose(result.eigenvalues, np.linalg.eigvalsh(h)[::-1][:2], rtol=1e-4)


def test_a_user_loss_is_the_hessian_of_its_mean_and_takes_hessian_probes(mlp_case) -> None:
    """An imported model's data set may name its own per-sample loss (module:fn)."""
    from tracker import UserCodeError

    model, x, y, h, _ = mlp_case
    v = torch.randn(2, sum(p.numel() for p in model.parameters()),
                    generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # fmt: skip
    # The user's cross-entropy is the built-in one's Hessian.
    op = HessianOperator(model, x, y, loss="curvature_losses:cross_entropy")
    np.testing.assert_allclose(op.matmat(v).numpy(), v.numpy() @ h, rtol=0, atol=1e-12)
    # Another loss: the exact Hessian of its mean, by autograd.
    named = list(model.named_parameters())
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def mean_loss(theta: torch.Tensor) -> torch.Tensor:
        parts = theta.split([p.numel() for _, p in named])
        params = {k: t.view(p.shape) for (k, p), t in zip(named, parts, strict=True)}
        out = functional_call(model.eval(), params, (x,))
        d = out - F.one_hot(y, out.shape[1]).to(out.dtype)
        return (d.square() / 2).sum(1).mean()

    exact = torch.autograd.functional.hessian(mean_loss, flat, vectorize=True).numpy()
    op = HessianOperator(model, x, y, loss="curvature_losses:smooth_l1")
    np.testing.assert_allclose(op.matmat(v).numpy(), v.numpy() @ exact, rtol=0, atol=1e-12)
    top = top_eigenvalues(op, 1, tol=1e-8, max_iter=op.n)
    assert top.eigenvalues[0] == pytest.approx(np.linalg.eigvalsh(exact)[-1], rel=1e-6)
    # Its output Hessian is unknown: the trace takes the Hessian's probes, and says why.
    tr = hutchinson_trace(op, 8, seed=0)
    assert tr.config["estimator"] == "hessian"
    assert "user code" in tr.config["gauss_newton_refused"]
    with pytest.raises(
        UserCodeError, match=r"returned \(\) for 64 samples: return one loss per sample"
    ):
        HessianOperator(model, x, y, loss="curvature_losses:summed")


def test_same_seed_gives_the_same_bits_and_another_seed_does_not(mlp_case) -> None:
    model, x, y, _, _ = mlp_case
    model32, x32 = model.float(), x.float()
    try:
        runs = []
        for seed in (7, 7, 8):
            op = HessianOperator(model32, x32, y)
            runs.append((top_eigenvalues(op, 2, seed=seed), hutchinson_trace(op, 10, seed=seed),
                         spectral_density(op, 2, 10, seed=seed, bins=100)))  # fmt: skip
        (e1, t1, d1), (e2, t2, d2), (_, t3, _) = runs
        assert np.array_equal(e1.eigenvectors, e2.eigenvectors)
        assert np.array_equal(e1.eigenvalues, e2.eigenvalues)
        assert np.array_equal(t1.samples, t2.samples)
        assert np.array_equal(d1.density, d2.density) and np.array_equal(
            d1.nodes, d2.nodes, equal_nan=True
        )
        assert e1.config["seed"] == 7 and t3.config["seed"] == 8
        assert not np.array_equal(t1.samples, t3.samples)
    finally:
        model.double()


def test_batchnorm_mode_is_applied_and_recorded() -> None:
    model = build_model("cnn", {"channels": [4], "hidden": [8], "batchnorm": True},
                        input_shape=(1, 8, 8), num_classes=3, seed=0)  # fmt: skip
    # Running statistics unlike the data's batch statistics, so the two modes differ.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(0.5)
            m.running_var.fill_(2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    evals = top_eigenvalues(HessianOperator(model, x, y), 1)
    trains = top_eigenvalues(HessianOperator(model, x, y, bn="train"), 1)
    assert evals.config["bn"] == "eval" and trains.config["bn"] == "train"
    assert evals.config["dropout"] == "off"
    assert not np.isclose(evals.eigenvalues[0], trains.eigenvalues[0], rtol=1e-3)
    # The checkpoint's weights and running statistics are untouched.
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bad_inputs_are_one_line_spec_errors(mlp_case) -> None:
    model, x, y, _, _ = mlp_case
    op = HessianOperator(model, x, y)
    with pytest.raises(SpecError, match=r"exceeds the model's 267 parameters"):
        top_eigenvalues(op, 268)
    with pytest.raises(SpecError, match="data is empty"):
        HessianOperator(model, x[:0], y[:0])
    broken = _mlp()
    with torch.no_grad():
        broken.fc1.weight[0, 0] = float("nan")
    with pytest.raises(SpecError, match="finite loss") as info:
        HessianOperator(broken, x, y)
    assert "\n" not in str(info.value)
    with pytest.raises(SpecError, match="unknown eigenvalue stop"):
        top_eigenvalues(op, 1, stop="never")
    with pytest.raises(SpecError, match="unknown loss"):
        HessianOperator(model, x, y, loss="hinge")


# PyHessian calls loss.backward(create_graph=True), which torch warns about.
@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph:UserWarning")
def test_top_eigenvalue_and_trace_agree_with_pyhessian() -> None:
    pyhessian = pytest.importorskip("pyhessian")
    model, (x, y) = _mlp(torch.float32), _data(dtype=torch.float32)
    op = HessianOperator(model, x, y)
    ours = top_eigenvalues(op, 1, which="magnitude", tol=1e-4)
    torch.manual_seed(0)
    theirs = pyhessian.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    values, _ = theirs.eigenvalues(maxIter=2000, tol=1e-7, top_n=1)
    assert abs(ours.eigenvalues[0] - values[0]) <= 1e-3 * abs(values[0])
    probes = 400
    trace = hutchinson_trace(op, probes, seed=1)
    # tol=-inf: PyHessian's early stop never fires, so it takes exactly `probes` probes.
    samples = np.asarray(theirs.trace(maxIter=probes, tol=float("-inf")))
    assert len(samples) == probes
    their_se = samples.std(ddof=1) / math.sqrt(probes)
    assert abs(trace.trace - samples.mean()) <= 3 * math.hypot(trace.stderr, their_se)


def test_cpu_reverse_products_take_cache_sized_sample_batches(monkeypatch) -> None:
    """On a CPU the kept-graph products split the data so that the largest activation of a
    batch fits ``CPU_BATCH_ACTIVATION_BYTES``; the Hessian is the same, and forward products
    and batch statistics keep their own rules."""
    import compute.curvature as cv

    model = build_model("cnn", {"channels": [4], "hidden": [8], "batchnorm": True},
                        input_shape=(1, 8, 8), num_classes=3, seed=0).double()  # fmt: skip
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    whole = HessianOperator(model, x, y)  # 40 samples x 256 activations x 8 bytes: 80 KiB
    assert whole.batch_size == 40
    # The largest activation is the convolution's 4 x 8 x 8 outputs: 2 KiB a sample here.
    monkeypatch.setattr(cv, "CPU_BATCH_ACTIVATION_BYTES", 16 * 1024)
    # Batches of 8 would fit, but the cap stops at CPU_BATCH_MIN (32): 32 and 8.
    assert [len(b[0]) for b in HessianOperator(model, x, y).batches] == [32, 8]
    monkeypatch.setattr(cv, "CPU_BATCH_MIN", 4)
    split = HessianOperator(model, x, y)
    assert split.batch_size == 8 and len(split.batches) == 5
    assert split.config["batch_size"] == 8
    v = torch.randn(2, split.n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(split.matmat(v).numpy(), whole.matmat(v).numpy(),
                                   rtol=0, atol=1e-12)  # fmt: skip
    assert HessianOperator(model, x, y, hvp="forward").batch_size == 40
    assert HessianOperator(model, x, y, bn="train").batch_size == 40
