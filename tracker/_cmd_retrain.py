"""Commands of jump-and-retrain topology: enqueue retrains and topology, plot the results."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._exceptions import QueueError, SpecError
from tracker._store import ArraySpec, ArrayStore


def _open(args: argparse.Namespace) -> Any:
    from tracker._cliutil import open_db

    return open_db(args)


def _study(session: Session, args: argparse.Namespace, model: Any) -> Any:
    from tracker._queue import get_or_create_study
    from tracker._schema import Study

    if args.study:
        return get_or_create_study(session, args.study)
    return session.get(Study, model.study_id)


def cmd_enqueue_retrain(args: argparse.Namespace) -> int:
    from tracker._landscape import find_model
    from tracker._topology import RetrainRequest, add_retrains, parse_seeds, parse_steps

    req = RetrainRequest(
        model=args.model, seeds=parse_seeds(args.seeds), steps=parse_steps(args.steps),
        epochs=args.epochs, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, batch_size=args.batch_size,
        saves_per_epoch=args.saves_per_epoch, augment=args.augment, epoch=args.epoch,
    )  # fmt: skip
    db = _open(args)
    with db.session() as session:
        model = find_model(session, req.model)
        study = _study(session, args, model)
        rows, created = add_retrains(session, study, req)
        ids = [r.id for r in rows]
        name = study.name
    print(f"{len(ids)} retrain(s) of model {model.id} ({created} new; ids {ids[0]}-{ids[-1]}) "
          f"in study {name!r}; run `tracker work`")  # fmt: skip
    return 0


def cmd_enqueue_topology(args: argparse.Namespace) -> int:
    from tracker._landscape import find_model
    from tracker._topology import TopologyRequest, add_topology

    req = TopologyRequest(model=args.model, loss=args.loss, knn=args.knn,
                          phate_seed=args.phate_seed, n_pca=args.n_pca, legacy=args.legacy)  # fmt: skip
    db = _open(args)
    with db.session() as session:
        model = find_model(session, req.model)
        study = _study(session, args, model)
        emb, diagram, new = add_topology(session, study, req)
        eid, did, n = emb.id, diagram.id, emb.n_samples
    state = "new" if new else "already queued"
    print(f"embedding {eid} ({n} samples) and persistence diagram {did} ({state}); run "
          f"`tracker work`, then `tracker plot embedding {eid}` / `tracker plot persistence {did}`")  # fmt: skip
    return 0


# --- reading results --------------------------------------------------------------------------


@dataclass
class EmbeddingData:
    embedding: Any
    coords: np.ndarray
    potential: np.ndarray
    order: np.ndarray  # columns: compute.kinds_retrain.ORDER_COLUMNS

    @property
    def seeds(self) -> np.ndarray:
        return self.order[:, 4]

    @property
    def steps(self) -> np.ndarray:
        return self.order[:, 5]


def _read(session: Session, store: ArrayStore, array_id: int) -> np.ndarray:
    from tracker._schema import ArrayRef

    ref = session.get(ArrayRef, array_id)
    return store.verify(ArraySpec(ref.path, tuple(ref.shape), ref.dtype, tuple(ref.chunks)))


def _unfinished(what: str, row: Any, session: Session) -> QueueError:
    from tracker._schema import Task

    task = session.get(Task, row.task_id) if row.task_id else None
    state = task.status if task else "unknown"
    return QueueError(f"{what} is not complete yet (its task is {state}): run `tracker work`, then `tracker status` shows what is left")  # fmt: skip


def load_embedding(session: Session, store: ArrayStore, embedding_id: int) -> EmbeddingData:
    from tracker._topology import find_embedding

    emb = find_embedding(session, embedding_id)
    if emb.coords_array_id is None:
        raise _unfinished(f"embedding {embedding_id}", emb, session)
    return EmbeddingData(
        embedding=emb, coords=_read(session, store, emb.coords_array_id),
        potential=_read(session, store, emb.potential_array_id),
        order=_read(session, store, emb.order_array_id),
    )  # fmt: skip


def load_diagram(session: Session, store: ArrayStore, diagram_id: int) -> tuple[Any, np.ndarray]:
    from tracker._topology import find_diagram

    row = find_diagram(session, diagram_id)
    if row.diagram_array_id is None:
        raise _unfinished(f"persistence diagram {diagram_id}", row, session)
    return row, _read(session, store, row.diagram_array_id)


# --- plots ------------------------------------------------------------------------------------


def _out_dir(args: argparse.Namespace) -> Path:
    from tracker._cliutil import settings as _settings

    return Path(args.out or _settings(args).home / "plots")


def cmd_plot_embedding(args: argparse.Namespace) -> int:
    from tracker import plots_topology
    from tracker._cliutil import settings as _settings
    from tracker._topology import sample_loss

    store = ArrayStore(_settings(args).store_url)
    db = _open(args)
    with db.session() as session:
        data = load_embedding(session, store, args.id)
        loss = sample_loss(session, data.order, args.loss)
    if np.isnan(loss).all():
        raise SpecError(f"the samples have no {args.loss} loss: use --loss test or train")
    emb = data.embedding
    title = (f"embedding {emb.id}: model {emb.model_id}, {emb.n_samples} samples, PHATE "
             f"(cosine, t={emb.t}, seed {emb.seed})")  # fmt: skip
    stem = _out_dir(args) / f"embedding-{emb.id}"
    paths = plots_topology.plot_embedding(stem, data.coords, loss, data.steps, data.seeds,
                                          loss_name=args.loss, title=title)  # fmt: skip
    for p in paths:
        print(p)
    return 0


def cmd_plot_persistence(args: argparse.Namespace) -> int:
    from tracker import plots_topology
    from tracker._cliutil import settings as _settings

    store = ArrayStore(_settings(args).store_url)
    db = _open(args)
    with db.session() as session:
        row, diagram = load_diagram(session, store, args.id)
        title = (f"persistence {row.id}: embedding {row.embedding_id}, {row.loss_name} loss, "
                 f"{row.knn}-NN{' (legacy: farthest)' if row.legacy else ''}")  # fmt: skip
    stem = _out_dir(args) / f"persistence-{args.id}"
    for p in plots_topology.plot_persistence(stem, diagram, title=title):
        print(p)
    return 0


# --- tracker show study -----------------------------------------------------------------------


def print_study_topology(db: Any, study_id: int) -> None:
    """The study's retrains, embeddings and persistence diagrams, as `tracker show study` lists
    its models and surfaces (nothing is printed for a study without them)."""
    from tracker._cliutil import table as _table
    from tracker._schema import Embedding, PersistenceDiagram, Retrain, Task, TrajectoryPoint

    def num(v: Any, fmt: str = ".4f") -> str:
        return "" if v is None else format(v, fmt)

    with db.session() as session:
        last = (
            sa.select(TrajectoryPoint.retrain_id, sa.func.max(TrajectoryPoint.save_index).label("i"))
            .group_by(TrajectoryPoint.retrain_id).subquery()
        )  # fmt: skip
        retrains = session.execute(
            sa.select(Retrain, Task.status, TrajectoryPoint.test_loss)
            .outerjoin(Task, Task.id == Retrain.task_id)
            .outerjoin(last, last.c.retrain_id == Retrain.id)
            .outerjoin(TrajectoryPoint, sa.and_(TrajectoryPoint.retrain_id == Retrain.id,
                                                TrajectoryPoint.save_index == last.c.i))
            .where(Retrain.study_id == study_id).order_by(Retrain.id)
        ).all()  # fmt: skip
        embeddings = session.scalars(
            sa.select(Embedding).where(Embedding.study_id == study_id).order_by(Embedding.id)
        ).all()
        diagrams = session.scalars(
            sa.select(PersistenceDiagram)
            .where(PersistenceDiagram.study_id == study_id).order_by(PersistenceDiagram.id)
        ).all()  # fmt: skip
        if retrains:
            print("\nretrains:")
            print(_table(
                ["id", "model", "seed", "step", "epochs", "lr", "task", "final test loss", "mlflow run"],
                [[r.id, r.model_id, r.seed, num(r.step_size, "g"), r.epochs, num(r.lr, "g"),
                  status, num(loss), r.mlflow_run_id] for r, status, loss in retrains],
            ))  # fmt: skip
        if embeddings:
            print("\nembeddings:")
            print(_table(
                ["id", "model", "samples", "phate seed", "t", "complete"],
                [[e.id, e.model_id, e.n_samples, e.seed, e.t,
                  "yes" if e.coords_array_id else "no"] for e in embeddings],
            ))  # fmt: skip
        if diagrams:
            print("\npersistence diagrams:")
            print(_table(
                ["id", "embedding", "loss", "knn", "legacy", "H0", "H0 total", "H1", "H1 total",
                 "H1 max"],
                [[d.id, d.embedding_id, d.loss_name, d.knn, "yes" if d.legacy else "",
                  d.h0_count, num(d.h0_total_p1), d.h1_count, num(d.h1_total_p1),
                  num(d.h1_max)] for d in diagrams],
            ))  # fmt: skip
