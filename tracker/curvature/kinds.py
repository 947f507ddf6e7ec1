"""The task kind ``hessian``: one curvature measure of one checkpoint (or of one save of a
retrain's trajectory: the retrained network).

The body reads its ``hessian_spectra`` row, the checkpoint's weights and the model's data into
plain values, builds ``compute.curvature.HessianOperator`` at those weights and runs the
measure: top-k eigenpairs by Lanczos (``which='largest'``: the algebraically largest, which for
a trained network are the sharpest directions), Hutchinson's trace (Rademacher probes, optional
per-layer traces), or the SLQ density. Arrays go to Zarr (eigenvectors in the checkpoint's flat
layout, one per eigenvector ``directions`` row too; the Ritz values after each step; the
density grid), the measures to the model's MLflow run when it has one, and ``finalize`` fills
the row in the transaction that marks the task done. Every draw is seeded from the row and the
maths runs on one thread, so a second attempt gives the same bits.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
import torch
from sqlalchemy.orm import Session

from compute import curvature as cv
from compute import data as data_mod
from compute.state import Layout, check_length, load_flat
from tracker._arrays import array_id, array_path
from tracker._context import TaskContext
from tracker._db import utcnow
from tracker._exceptions import SpecError
from tracker._mlflow import client_for
from tracker._registry import task_kind
from tracker._schema import Checkpoint, Direction, HessianSpectrum, Model, Retrain
from tracker._store import ArrayStore
from tracker.training.kinds import device, setup_torch, vector_chunks, weights_at
from tracker.training.rows import direction_path


@dataclass(frozen=True)
class DataChoice:
    """Which samples a curvature measure (or a curvature map) is taken on."""

    split: str = "train"
    subset: int | None = None
    subset_seed: int = 0
    minibatches: int | None = None
    minibatch_size: int | None = None
    bn: str = "eval"


def measured_data(
    ds: data_mod.Dataset, choice: DataChoice
) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """(x, y, sample batch size): a split, a fixed seeded subset, or the first K minibatches
    of B (one sample batch each, so BN in train mode uses each minibatch's statistics)."""
    x, y = ds.split(choice.split)
    if choice.subset is not None:
        x, y = data_mod.fixed_subset(x, y, min(choice.subset, int(x.shape[0])), choice.subset_seed)
        return x, y, None
    if choice.minibatches is not None and choice.minibatch_size is not None:
        need = choice.minibatches * choice.minibatch_size
        if need > int(x.shape[0]):
            raise SpecError(
                f"the {choice.split} split has {int(x.shape[0])} samples, fewer than "
                f"{choice.minibatches} minibatches of {choice.minibatch_size}: ask for fewer"
            )
        return x[:need], y[:need], choice.minibatch_size
    return x, y, None


# A model's data set and network, built once for several weights (the enqueue-time loss
# checks of many retrain saves): model id -> (data set, network on this worker's device).
Built = dict[int, tuple[data_mod.Dataset, torch.nn.Module]]


def operator_at(
    model_row: Any, layout: Layout, weights: torch.Tensor, choice: DataChoice, *,
    keep_graphs: bool = True, built: Built | None = None,
) -> cv.HessianOperator:  # fmt: skip
    """The Hessian operator of ``model_row``'s network at the flat ``weights`` on the chosen
    data, on this worker's device. A non-finite loss is a SpecError naming the fix.
    ``keep_graphs=False``: no forward graph is built (the loss by a plain forward pass), for
    a check that computes no product. ``built``: where the model's data set and network are
    kept between calls (the operator copies the network, so loading other weights into it
    later leaves an operator alone)."""
    from compute.train import TrainSpec

    if built is not None and model_row.id in built:
        ds, net = built[model_row.id]
    else:
        spec = TrainSpec.from_row(model_row)
        ds = spec.load_data()
        net = spec.build(ds)
        if built is not None:
            built[model_row.id] = (ds, net)
    check_length(weights, layout)
    load_flat(net, weights, layout)
    dev = device()
    x, y, batch = measured_data(ds, choice)
    budget = cv.DEFAULT_GRAPH_BUDGET if keep_graphs else 0
    return cv.HessianOperator(net.to(dev), x.to(dev), y.to(dev), loss=data_mod.loss_kind(ds),
                              bn=choice.bn, batch_size=batch, graph_budget=budget)  # fmt: skip


def spectrum_weights(
    session: Session, store: ArrayStore, row: HessianSpectrum, ckpt: Checkpoint
) -> tuple[torch.Tensor, str]:
    """The weights a spectrum row measures, and how to name them in a message."""
    return weights_at(session, store, ckpt, row.retrain_id, row.save_index)


def check_finite_loss(
    session: Session, store: ArrayStore, row: HessianSpectrum, built: Built | None = None
) -> None:
    """Refuse a measure whose weights have a non-finite loss on its data (enqueue time);
    ``built`` keeps the model's data set and network for the next check (``operator_at``)."""
    ckpt = Checkpoint.find_or_raise_by_id(session, row.checkpoint_id)
    model = Model.find_or_raise_by_id(session, row.model_id)
    weights, which = spectrum_weights(session, store, row, ckpt)
    try:
        op = operator_at(model, ckpt.layout, weights, _choice(row), keep_graphs=False,
                         built=built)  # fmt: skip
    except SpecError as err:
        raise SpecError(f"model {model.id}, {which}: {err}") from None
    if row.top_k is not None and row.top_k > op.n:
        raise SpecError(f"--top-k {row.top_k} exceeds the {op.n} parameters of model {model.id}: "
                        f"ask for at most {op.n}")  # fmt: skip


def _choice(row: HessianSpectrum) -> DataChoice:
    return DataChoice(split=row.split, subset=row.subset_size, subset_seed=row.subset_seed,
                      minibatches=row.n_minibatches, minibatch_size=row.minibatch_size,
                      bn=row.bn_mode)  # fmt: skip


def to_layout(op: cv.HessianOperator, vectors: np.ndarray, layout: Layout) -> np.ndarray:
    """Eigenvectors [k, n] in the operator's parameter order as [k, layout length] rows of the
    checkpoint's flat layout (buffers zero): the form directions and checkpoints are stored in."""
    offsets = {e["name"]: int(e["offset"]) for e in layout}
    out = np.zeros((vectors.shape[0], sum(int(e["size"]) for e in layout)), dtype=np.float32)
    start = 0
    for name, size in zip(op.names, op.sizes, strict=True):
        if name not in offsets:
            raise SpecError(f"parameter {name!r} is not in the checkpoint's layout: the "
                            "checkpoint and the model differ")  # fmt: skip
        out[:, offsets[name] : offsets[name] + size] = vectors[:, start : start + size]
        start += size
    return out


def finite(value: Any) -> Any:
    """Non-finite floats become None (NULL), in lists and dicts too."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, list | tuple | np.ndarray):
        return [finite(v) for v in list(value)]
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass(frozen=True)
class _Job:
    """A spectrum row and what its measure needs, as plain values."""

    row: HessianSpectrum  # expunged: plain attribute access only
    model: Model
    layout: Layout
    weights: torch.Tensor
    folder: str
    directions: list[tuple[int, int, str]]  # (direction id, eigen index, path)
    mlflow_run: tuple[str | None, int]  # the run the measures go to, and their step


def _read_job(ctx: TaskContext, spectrum_id: int) -> _Job:
    with ctx.session() as session:
        row = session.get(HessianSpectrum, spectrum_id)
        if row is None:  # a SpecError: the queue does not retry it
            raise SpecError(f"Hessian spectrum {spectrum_id} no longer exists")
        ckpt = Checkpoint.find_or_raise_by_id(session, row.checkpoint_id)
        model = Model.find_or_raise_by_id(session, row.model_id)
        weights, _ = spectrum_weights(session, ctx.store, row, ckpt)
        if row.retrain_id is None:  # a checkpoint's measures: the model's run, step = epoch
            run = (model.mlflow_run_id, int(row.epoch))
        else:  # a retrained network's: the retrain's run, step = the save (as its metrics)
            retrain = session.get(Retrain, row.retrain_id)
            run = (retrain.mlflow_run_id if retrain else None, int(row.save_index or 0))
        dirs = session.scalars(
            sa.select(Direction).where(Direction.hessian_spectrum_id == row.id)
            .order_by(Direction.eigen_index)
        ).all()  # fmt: skip
        directions = [(d.id, int(d.eigen_index or 0), direction_path(d)) for d in dirs]
        folder = array_path("hessian", row)
        layout = list(ckpt.layout)
        session.expunge(row)
        session.expunge(model)
    return _Job(row=row, model=model, layout=layout, weights=weights, folder=folder,
                directions=directions, mlflow_run=run)  # fmt: skip


def _eigen(ctx: TaskContext, job: _Job, op: cv.HessianOperator) -> dict[str, Any]:
    row = job.row
    k = int(row.top_k or 1)
    if k > op.n:
        raise SpecError(f"top-k {k} exceeds the model's {op.n} parameters: ask for at most {op.n}")
    pairs = cv.top_eigenvalues(op, k, which="largest", tol=float(row.tol),
                               max_iter=int(row.max_iter), seed=int(row.seed),
                               progress=lambda *_: ctx.check_lease())  # fmt: skip
    vectors = to_layout(op, pairs.eigenvectors, job.layout)
    width = vectors.shape[1]
    ev_path = f"{job.folder}/eigenvectors"
    ctx.write_array(ev_path, vectors, chunks=(1, max(1, min(width, 1 << 22))))
    hist_path = f"{job.folder}/history"
    ctx.write_array(hist_path, np.asarray(pairs.history, dtype=np.float64))
    directions = []
    for did, index, path in job.directions:
        ctx.write_array(path, vectors[index], chunks=vector_chunks(width))
        directions.append({"id": did, "path": path})
    values = finite(pairs.eigenvalues.tolist())
    return {
        "columns": {"eigenvalues": values, "residuals": finite(pairs.residuals.tolist()),
                    "iterations": pairs.iterations, "converged": pairs.converged,
                    "top_eigenvalue": values[0] if values else None},
        "arrays": {"eigenvectors_array_id": ev_path, "history_array_id": hist_path},
        "directions": directions, "config": pairs.config,
        "metrics": {f"hessian.lambda_{i + 1}": v for i, v in enumerate(values)}
        | {"hessian.top_eigenvalue": values[0]},
    }  # fmt: skip


def _trace(ctx: TaskContext, job: _Job, op: cv.HessianOperator) -> dict[str, Any]:
    row = job.row
    check = lambda *_: ctx.check_lease()  # noqa: E731
    method = (row.config or {}).get("trace_method", "hutchinson")
    if method == "hutchpp":
        tr = cv.hutchpp_trace(op, int(row.probes or 100), seed=int(row.seed), progress=check)
    else:  # rows from before 'auto' ask for 'hutchinson': the Hessian's probes, as then
        estimator = {"hutchinson": "hessian"}.get(method, method)
        tr = cv.hutchinson_trace(op, int(row.probes or 100), per_layer=bool(row.per_layer),
                                 seed=int(row.seed), progress=check,
                                 estimator=estimator)  # fmt: skip
    metrics = {"hessian.trace": tr.trace, "hessian.trace_stderr": tr.stderr}
    metrics |= {f"hessian.trace.{name}": v for name, v in tr.layer_traces.items()}
    return {
        "columns": {"trace": finite(tr.trace), "trace_stderr": finite(tr.stderr),
                    "trace_probes": tr.probes,
                    "layer_traces": finite(tr.layer_traces) if row.per_layer else None,
                    "layer_trace_stderr": finite(tr.layer_stderr) if row.per_layer else None},
        "arrays": {}, "directions": [], "config": tr.config, "metrics": metrics,
    }  # fmt: skip


def _density(ctx: TaskContext, job: _Job, op: cv.HessianOperator) -> dict[str, Any]:
    row = job.row
    d = cv.spectral_density(op, int(row.density_runs or 1), int(row.density_steps or 100),
                            seed=int(row.seed), progress=lambda *_: ctx.check_lease())  # fmt: skip
    path = f"{job.folder}/density"
    ctx.write_array(path, np.stack([d.grid, d.density]).astype(np.float64))
    return {"columns": {}, "arrays": {"density_array_id": path}, "directions": [],
            "config": {**d.config, "sigma_squared_used": d.sigma_squared}, "metrics": {}}  # fmt: skip


MEASURE_BODIES = {"eigen": _eigen, "trace": _trace, "density": _density}


def _log_to_model_run(ctx: TaskContext, job: _Job, metrics: dict[str, Any]) -> bool:
    """The measures on the model's MLflow run (step = the checkpoint's epoch), or for a
    retrained network on the retrain's run (step = the save), if there is one."""
    run_id, step = job.mlflow_run
    values = {k: v for k, v in finite(metrics).items() if v is not None}
    if not run_id or not values:
        return False
    from mlflow.entities import Metric

    client = client_for(ctx.mlflow_uri)
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in sorted(values.items())]
    for i in range(0, len(batch), 900):
        client.log_batch(run_id, metrics=batch[i : i + 900])
    return True


def _finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    row = HessianSpectrum.find_or_raise_by_id(session, result["id"])
    for key, value in result["columns"].items():
        setattr(row, key, value)
    for column, path in result["arrays"].items():
        setattr(row, column, array_id(session, path))
    for item in result["directions"]:
        direction = session.get(Direction, item["id"])
        if direction is not None:
            direction.array_id = array_id(session, item["path"])
    row.config = {**(row.config or {}), **result["config"]}
    row.completed_at = session.scalar(sa.select(utcnow()))


@task_kind("hessian", finalize=_finalize, batch=False, measures=True)
def hessian_task(ctx: TaskContext) -> dict[str, Any]:
    setup_torch()
    job = _read_job(ctx, int(ctx.payload["spectrum_id"]))
    started = time.perf_counter()
    op = operator_at(job.model, job.layout, job.weights, _choice(job.row))
    out = MEASURE_BODIES[job.row.measure](ctx, job, op)
    seconds = time.perf_counter() - started
    logged = _log_to_model_run(ctx, job, out.pop("metrics"))
    # The loss the data set names (its module:fn in the config when it is user code).
    loss = op.loss_name if op.loss_name in cv.LOSSES else "user"
    out["columns"].update(loss_value=finite(op.loss), hvp_count=op.hvp_count,
                          seconds=round(seconds, 4), loss=loss)  # fmt: skip
    out["config"] = finite({**out["config"], "mlflow_logged": logged})
    return {"id": job.row.id, **out}
