"""Hessian spectra as rows and tasks: one ``hessian_spectra`` row and one ``hessian`` task per
(checkpoint, measure), and one ``directions`` row per eigenvector an eigen measure will find.

Requests are checked whole before anything is written (the caller's transaction rolls back on
the first error), and every row has a spec hash: the same request twice finds the rows it made
the first time. Task graph::

    train(model) --> hessian(checkpoint, measure) --> surfaces along its eigenvectors
    retrain(jump) --> hessian(save of its trajectory, measure)

A retrained network's measures (``retrains``) are taken at saves of the retrains'
trajectories; their rows name the retrain and save and keep the checkpoint the retrain jumped
from, and so do their eigenvector directions (a surface centred on the save runs along them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._exceptions import SpecError
from tracker._queue import enqueue, get_or_create_study, requeue, spec_hash
from tracker._rows import get_or_add
from tracker._schema import Checkpoint, Direction, HessianSpectrum, Model, Retrain, Study, Task
from tracker.training.rows import find_checkpoint, find_model, model_train_task, parameter_count

SPLITS = ("train", "test", "val")
BN_MODES = ("eval", "train")
MEASURES = ("eigen", "trace", "density")
TRACE_METHODS = ("auto", "hutchinson", "gauss-newton", "hutchpp")
REGRESSION_DATASETS = frozenset({"autompg"})
MAX_TOP_K = 1000
MAX_ITER = 100_000
MAX_PROBES = 100_000


@dataclass(frozen=True)
class HessianRequest:
    """What `tracker enqueue hessian` and a study file's [[hessian]] table ask for.

    ``epochs``: None for the final checkpoint, "all" for every checkpoint, or epochs.
    ``retrains``: instead of checkpoints, the model's retrains ("all", or retrain ids) at
    ``saves`` of their trajectories (None: the last save, "all", or save indices).
    ``top_k`` 0 skips the eigenvalues; ``trace`` and ``density`` add those measures.
    Density: ``density_runs`` SLQ runs of ``max_iter`` Lanczos steps (PyHessian: 1 x 100).
    Trace: ``trace_method`` 'auto' (Hutchinson's ``probes`` Rademacher probes of the
    Gauss-Newton matrix in output space where the network is piecewise linear, whose trace is
    the Hessian's, else of the Hessian), 'hutchinson' (probes of the Hessian, one
    Hessian-vector product each), 'gauss-newton' (the former, refused for other networks) or
    'hutchpp' (Hutch++: ``probes`` products split between a sketch, its exact trace and
    deflated probes).
    """

    model: int | str
    epochs: tuple[int, ...] | str | None = None
    top_k: int = 5
    trace: bool = False
    density: bool = False
    per_layer: bool = False
    split: str = "train"
    subset: int | None = None
    minibatches: int | None = None
    minibatch_size: int | None = None
    bn: str = "eval"
    seed: int = 0
    tol: float = 1e-3
    max_iter: int = 100
    probes: int = 100
    density_runs: int = 1
    subset_seed: int = 0
    trace_method: str = "auto"  # hutchinson | gauss-newton | hutchpp (``probes`` products)
    retrains: tuple[int, ...] | str | None = None
    saves: tuple[int, ...] | str | None = None

    def measures(self) -> list[str]:
        return [m for m, on in (("eigen", self.top_k > 0), ("trace", self.trace),
                                ("density", self.density)) if on]  # fmt: skip


def _integer(value: Any, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(f"{name} must be an integer in {low}..{high:,}, got {value!r}")


def check_request(req: HessianRequest) -> None:
    """Check what needs no database: choices, ranges, exclusive data options."""
    if req.split not in SPLITS:
        raise SpecError(f"unknown split {req.split!r}: use one of {', '.join(SPLITS)}")
    if req.bn not in BN_MODES:
        raise SpecError(f"unknown BatchNorm mode {req.bn!r}: use eval or train")
    _integer(req.top_k, "--top-k", 0, MAX_TOP_K)
    _integer(req.max_iter, "--max-iter", 1, MAX_ITER)
    _integer(req.probes, "--probes", 2, MAX_PROBES)
    _integer(req.density_runs, "--density-runs", 1, 1000)
    _integer(req.seed, "--seed", 0, 2**31 - 1)
    _integer(req.subset_seed, "subset_seed", 0, 2**31 - 1)
    if not req.measures():
        raise SpecError("nothing to measure: --top-k 0 needs --trace or --density")
    if req.trace_method not in TRACE_METHODS:
        raise SpecError(f"unknown --trace-method {req.trace_method!r}: use one of {', '.join(TRACE_METHODS)}")  # fmt: skip
    if req.trace_method == "hutchpp" and req.trace:
        if req.probes < 6:
            raise SpecError(f"--trace-method hutchpp splits --probes in three: give at least 6, got {req.probes}")  # fmt: skip
        if req.per_layer:
            raise SpecError("per-layer traces are Hutchinson's: drop --per-layer or use --trace-method auto")  # fmt: skip
    if isinstance(req.tol, bool) or not (math.isfinite(req.tol) and 0 < req.tol < 1):
        raise SpecError(f"--tol must be a number in (0, 1), e.g. 1e-3, got {req.tol!r}")
    if req.subset is not None:
        _integer(req.subset, "--subset", 1, 2**31 - 1)
    if (req.minibatches is None) != (req.minibatch_size is None):
        raise SpecError("give both --minibatches K and --minibatch-size B (e.g. 4 and 128)")
    if req.minibatches is not None:
        _integer(req.minibatches, "--minibatches", 1, 2**31 - 1)
        _integer(req.minibatch_size, "--minibatch-size", 1, 2**31 - 1)
        if req.subset is not None:
            raise SpecError("choose either --subset N or --minibatches K, not both")
    if req.epochs is not None and not isinstance(req.epochs, tuple) and req.epochs != "all":
        raise SpecError(f"epochs must be 'all' or a list of epochs, got {req.epochs!r}")
    if req.retrains is not None:
        if req.epochs is not None:
            raise SpecError("--epochs picks checkpoints and --retrains retrained networks: give one of them")  # fmt: skip
        if req.retrains != "all" and not (
            isinstance(req.retrains, tuple) and req.retrains
            and all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in req.retrains)
        ):  # fmt: skip
            raise SpecError(f"retrains must be 'all' or retrain ids, got {req.retrains!r}")
    if req.saves is not None:
        if req.retrains is None:
            raise SpecError("--saves picks points of retrain trajectories: add --retrains all (or R1,R2)")  # fmt: skip
        if req.saves != "all" and not (
            isinstance(req.saves, tuple) and req.saves
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in req.saves)
        ):  # fmt: skip
            raise SpecError(f"saves must be 'last', 'all' or save indices, got {req.saves!r}")


def parse_epochs(text: str | None) -> tuple[int, ...] | str | None:
    """``--epochs``: 'all', 'final' (or nothing: the last checkpoint), or E1,E2,..."""
    if text is None or text.strip() in ("", "final"):
        return None
    if text.strip() == "all":
        return "all"
    return _id_list(text, "--epochs", "all, final or E1,E2 (e.g. 0,5,10)", 0)


def _id_list(text: str, flag: str, example: str, low: int) -> tuple[int, ...]:
    """Comma-separated integers of at least ``low``, sorted and each once; else a SpecError
    saying ``flag`` is not ``example``."""
    try:
        ids = tuple(int(e) for e in text.split(",") if e.strip())
    except ValueError:
        raise SpecError(f"{flag} {text!r} is not {example}") from None
    if not ids or any(i < low for i in ids):
        raise SpecError(f"{flag} {text!r} is not {example}")
    return tuple(sorted(set(ids)))


def parse_retrains(text: str | None) -> tuple[int, ...] | str | None:
    """``--retrains``: 'all' (every retrain of the model) or R1,R2 (retrain ids)."""
    if text is None:
        return None
    if text.strip() == "all":
        return "all"
    return _id_list(text, "--retrains", "all or retrain ids R1,R2 (e.g. 3,4)", 1)


def parse_saves(text: str | None) -> tuple[int, ...] | str | None:
    """``--saves``: 'last' (or nothing), 'all', or S1,S2 (save indices, 0 = the jump)."""
    if text is None or text.strip() in ("", "last"):
        return None
    if text.strip() == "all":
        return "all"
    return _id_list(text, "--saves", "last, all or save indices S1,S2 (e.g. 0,4)", 0)


def retrain_points(
    session: Session, model: Model, which: tuple[int, ...] | str, saves: tuple[int, ...] | str | None
) -> list[tuple[Retrain, int]]:  # fmt: skip
    """(retrain, save index) of each point of the model's retrains ``which`` ("all" or ids) at
    ``saves`` (None: the last, "all", or indices), checked: a [[hessian]] table or `--retrains`
    measures them, a [[surface]] table with ``retrains`` centres surfaces on them."""
    query = sa.select(Retrain).where(Retrain.model_id == model.id).order_by(Retrain.id)
    if which == "all":
        retrains = list(session.scalars(query))
        if not retrains:
            raise SpecError(
                f"model {model.id} has no retrains: enqueue them first (`tracker enqueue "
                f"retrain --model {model.id}`)"
            )
    else:
        assert isinstance(which, tuple)
        found = {r.id: r for r in session.scalars(query.where(Retrain.id.in_(which)))}
        missing = [r for r in which if r not in found]
        if missing:
            raise SpecError(
                f"retrain(s) {', '.join(map(str, missing))} are not retrains of model "
                f"{model.id}: `tracker ls retrains --where model_id={model.id}` lists them"
            )
        retrains = [found[r] for r in which]
    points = []
    for r in retrains:
        n_saves = int(r.epochs) * int(r.saves_per_epoch) + 1
        if saves is None:
            picked: tuple[int, ...] = (n_saves - 1,)
        elif saves == "all":
            picked = tuple(range(n_saves))
        else:
            assert isinstance(saves, tuple)
            picked = saves
            if max(picked) >= n_saves:
                raise SpecError(
                    f"retrain {r.id} has saves 0..{n_saves - 1} ({r.epochs} epochs x "
                    f"{r.saves_per_epoch} per epoch, and the jump): ask for saves below {n_saves}"
                )
        points += [(r, s) for s in picked]
    return points


def _checkpoints(session: Session, model: Model, epochs: tuple[int, ...] | str | None) -> list[Checkpoint]:  # fmt: skip
    if epochs == "all":
        return list(session.scalars(
            sa.select(Checkpoint).where(Checkpoint.model_id == model.id).order_by(Checkpoint.epoch)
        ))  # fmt: skip
    if epochs is None:
        return [find_checkpoint(session, model, None)]
    return [find_checkpoint(session, model, int(e)) for e in epochs]


def train_done(session: Session, model: Model) -> bool:
    task = session.get(Task, model.task_id) if model.task_id is not None else None
    return task is None or task.status == "done"


def _settings(req: HessianRequest, measure: str) -> dict[str, Any]:
    """The settings that decide a measure's numbers (its spec hash covers exactly these)."""
    out: dict[str, Any] = {
        "split": req.split, "subset": req.subset, "subset_seed": req.subset_seed,
        "minibatches": req.minibatches, "minibatch_size": req.minibatch_size, "bn": req.bn,
        "seed": req.seed,
    }  # fmt: skip
    if measure == "eigen":
        out.update(top_k=req.top_k, tol=req.tol, max_iter=req.max_iter)
    elif measure == "trace":
        out.update(probes=req.probes, per_layer=req.per_layer)
        if req.trace_method != "hutchinson":  # Hutchinson's rows keep the hashes they had
            out["trace_method"] = req.trace_method
    else:
        out.update(runs=req.density_runs, steps=req.max_iter)
    return out


def add_hessian(
    session: Session, study: Study, req: HessianRequest, names: dict[str, Model] | None = None
) -> list[tuple[HessianSpectrum, bool]]:
    """The spectra rows of a request with their tasks (and eigenvector directions)."""
    check_request(req)
    model = find_model(session, req.model, names)
    n = parameter_count(session, model)
    if n is not None and req.top_k > n:
        raise SpecError(
            f"--top-k {req.top_k} exceeds the {n} parameters of model {model.id}: "
            f"ask for at most {n}"
        )
    loss = "mse" if model.dataset in REGRESSION_DATASETS else "cross_entropy"
    out = []
    if req.retrains is not None:
        for retrain, save in retrain_points(session, model, req.retrains, req.saves):
            ckpt = Checkpoint.find_or_raise_by_id(session, retrain.checkpoint_id)
            for measure in req.measures():
                out.append(_add_measure(session, study, req, model, ckpt, measure, loss,
                                        point=(retrain, save)))  # fmt: skip
        return out
    checkpoints = _checkpoints(session, model, req.epochs)
    trained = train_done(session, model)
    for ckpt in checkpoints:
        if trained and ckpt.array_id is None:
            raise SpecError(
                f"checkpoint epoch {ckpt.epoch} of model {model.id} has no stored weights "
                "(its training finished without it): pick an epoch with data, or retrain "
                "the model with that checkpoint epoch"
            )
    for ckpt in checkpoints:
        for measure in req.measures():
            out.append(_add_measure(session, study, req, model, ckpt, measure, loss))
    return out


def _waits_on(session: Session, model: Model, point: tuple[Retrain, int] | None) -> Task | None:
    """The task whose weights a measure reads: the model's training, or the retrain's."""
    if point is None:
        return model_train_task(session, model)
    retrain = point[0]
    return session.get(Task, retrain.task_id) if retrain.task_id is not None else None


def _add_measure(
    session: Session, study: Study, req: HessianRequest, model: Model, ckpt: Checkpoint,
    measure: str, loss: str, point: tuple[Retrain, int] | None = None,
) -> tuple[HessianSpectrum, bool]:  # fmt: skip
    settings = _settings(req, measure)
    if point is not None:  # a checkpoint's own rows keep the hashes they had
        settings.update(retrain=point[0].id, save=point[1])
    digest = spec_hash("hessian", study.name, ckpt.id, measure, settings)
    row, new = get_or_add(
        session, HessianSpectrum, digest, study_id=study.id, model_id=model.id,
        checkpoint_id=ckpt.id, epoch=ckpt.epoch, measure=measure, split=req.split,
        retrain_id=point[0].id if point else None, save_index=point[1] if point else None,
        subset_size=req.subset, subset_seed=req.subset_seed,
        minibatch_size=req.minibatch_size, n_minibatches=req.minibatches, bn_mode=req.bn,
        dropout="off", loss=loss, seed=req.seed, tol=req.tol, max_iter=req.max_iter,
        top_k=req.top_k if measure == "eigen" else None,
        per_layer=req.per_layer and measure == "trace",
        probes=req.probes if measure == "trace" else None,
        density_runs=req.density_runs if measure == "density" else None,
        density_steps=req.max_iter if measure == "density" else None,
        config={"which": "largest"} if measure == "eigen"
        else {"trace_method": req.trace_method} if measure == "trace" else {},
    )  # fmt: skip
    if not new:
        if measure == "eigen" and point is not None:
            _add_missing_directions(session, study, row, digest)
        return row, False
    parent = _waits_on(session, model, point)
    task, _ = enqueue(session, study, "hessian", {"spectrum_id": row.id},
                      depends_on=[parent] if parent is not None else [], key=digest)  # fmt: skip
    row.task_id = task.id
    if measure == "eigen":
        _add_directions(session, study, row, digest)
    session.flush()
    return row, True


def _add_directions(session: Session, study: Study, row: HessianSpectrum, digest: str) -> None:
    """One ``directions`` row per eigenvector the eigen measure ``row`` will find (its task
    writes their arrays)."""
    for i in range(int(row.top_k or 0)):
        session.add(Direction(
            study_id=study.id, task_id=row.task_id, model_id=row.model_id, kind="hessian",
            seed=row.seed, normalization="none", ignore="none", target="weights",
            checkpoint_a_id=row.checkpoint_id, eigen_index=i, hessian_spectrum_id=row.id,
            spec_hash=spec_hash("direction", study.name, "hessian", digest, i),
        ))  # fmt: skip


def _add_missing_directions(session: Session, study: Study, row: HessianSpectrum, digest: str) -> None:  # fmt: skip
    """A retrained network's eigen measure from before its eigenvectors became directions
    (revision 0015) has none: asked for again, it gets them, and a finished measure runs
    again to write their arrays (the same bits: its draws are seeded from the row)."""
    has = session.scalar(sa.select(sa.func.count()).select_from(Direction)
                         .where(Direction.hessian_spectrum_id == row.id))  # fmt: skip
    if has or row.task_id is None:
        return
    task = Task.find_or_raise_by_id(session, row.task_id)
    if task.status == "running":
        raise SpecError(f"Hessian spectrum {row.id} (retrain {row.retrain_id}, save "
                        f"{row.save_index}) is being computed: ask again when it has finished")  # fmt: skip
    _add_directions(session, study, row, digest)  # the row's study: ``digest`` names it
    session.flush()
    if task.status == "done":
        requeue(session, [task.id])


def check_losses(session: Session, store_url: str, rows: Sequence[tuple[HessianSpectrum, bool]]) -> None:  # fmt: skip
    """Refuse, before commit, new measures of a trained checkpoint whose loss is not finite on
    their data (one loss per checkpoint: its measures share the data). `tracker enqueue
    hessian` and a study file's [[hessian]] both call this after ``add_hessian``; the store is
    opened only when a trained checkpoint is to be checked."""
    store = None
    built: dict[int, Any] = {}  # each model's data set and network, loaded once for all its weights
    seen: set[tuple[int, int | None, int | None]] = set()
    for row, new in rows:
        weights = (row.checkpoint_id, row.retrain_id, row.save_index)
        if not new or weights in seen:
            continue
        seen.add(weights)
        if _weights_stored(session, row):
            from tracker._store import ArrayStore
            from tracker.curvature.kinds import check_finite_loss

            store = store or ArrayStore(store_url)
            check_finite_loss(session, store, row, built)


def _weights_stored(session: Session, row: HessianSpectrum) -> bool:
    """Whether the weights a new row measures exist yet (else its task waits for them)."""
    if row.retrain_id is None:
        return train_done(session, Model.find_or_raise_by_id(session, row.model_id))
    retrain = session.get(Retrain, row.retrain_id)
    task = session.get(Task, retrain.task_id) if retrain is not None and retrain.task_id else None
    return (
        retrain is not None
        and retrain.trajectory_array_id is not None
        and (task is None or task.status == "done")
    )


@dataclass(frozen=True)
class Enqueued:
    """What ``enqueue_request`` wrote: the spectra ids, how many are new, where."""

    ids: list[int]
    new: int
    model_id: int
    study: str


def enqueue_request(session: Session, req: HessianRequest, study: str | None, store_url: str) -> Enqueued:  # fmt: skip
    """`tracker enqueue hessian` and ``Client.enqueue_hessian``: the request's rows in
    ``study`` (default: the model's), refused whole if any measured weights have a non-finite
    loss. The caller checked the request (``check_request``, per-layer needs a trace)."""
    model = find_model(session, req.model)
    home = Study.find_or_raise_by_id(session, model.study_id)
    target = get_or_create_study(session, study) if study else home
    rows = add_hessian(session, target, req)
    check_losses(session, store_url, rows)
    return Enqueued([r.id for r, _ in rows], sum(new for _, new in rows), model.id, target.name)


def hessian_command(model_id: int, epoch: int, index: int) -> str:
    """The command that makes eigenvector ``index`` of a checkpoint."""
    return f"tracker enqueue hessian --model {model_id} --epochs {epoch} --top-k {index + 1}"


__all__: Sequence[str] = (
    "Enqueued", "HessianRequest", "add_hessian", "check_losses", "check_request",
    "enqueue_request", "hessian_command",
    "parse_epochs", "parse_retrains", "parse_saves", "retrain_points",
)  # fmt: skip
