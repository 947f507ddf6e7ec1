"""Command line of jump-and-retrain topology: `enqueue retrain|topology`, `plot embedding|
persistence`, and its part of `show study`.

Only the standard library and ``tracker._cliutil`` are imported at module top (`tracker
--help` builds these parsers); each command imports what it needs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracker._cli_output import Enqueued, emit
from tracker._cliutil import lazy_command, open_db

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tracker._db import Database
    from tracker._schema import Model, Study


def add_parsers(
    *, sub: Any, enqueue: Any, plot: Any, export: Any, common: argparse.ArgumentParser
) -> None:
    """Add `enqueue retrain`, `enqueue topology`, `plot embedding` and `plot persistence`."""
    p = enqueue.add_parser(
        "retrain", parents=[common],
        help="jump from a trained model along seeded filter-normalised directions and retrain "
        "(one task per seed x step size)",
    )  # fmt: skip
    p.add_argument("--model", required=True, help="model id or name")
    p.add_argument("--direction-seeds", "--seeds", dest="seeds", default="0-3", help="direction seeds: 0-3 or 0,1,5 (default 0-3)")
    p.add_argument("--steps", default="0.25,0.5,0.75,1.0", help="step sizes s > 0 (default 0.25,0.5,0.75,1.0)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=0.001, help="constant learning rate")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--saves-per-epoch", type=int, default=1)
    p.add_argument("--augment", action="store_true", help="crop + flip (cifar10)")
    p.add_argument("--epoch", type=int, default=None, help="base checkpoint (default: final)")
    p.add_argument("--study", help="study of the new rows (default: the model's)")
    p.set_defaults(func=lazy_command(__name__, "cmd_enqueue_retrain"))

    p = enqueue.add_parser(
        "topology", parents=[common],
        help="PHATE embedding of a model's retrains (waiting on unfinished ones) and the persistence of a loss over it",
    )  # fmt: skip
    p.add_argument("--model", required=True, help="model id or name")
    p.add_argument("--loss", default="test", help="per-sample loss of the filtration: test, train or val")  # fmt: skip
    p.add_argument("--knn", type=int, default=20, help="neighbours per sample (default 20)")
    p.add_argument("--phate-seed", type=int, default=0)
    p.add_argument("--n-pca", type=int, default=100, help="PCA components fed to PHATE")
    p.add_argument("--legacy", action="store_true",
                   help="link each sample to its k farthest samples, as the published code did")  # fmt: skip
    p.add_argument("--study", help="study of the new rows (default: the model's)")
    p.set_defaults(func=lazy_command(__name__, "cmd_enqueue_topology"))

    p = plot.add_parser("embedding", parents=[common],
                        help="PHATE scatter coloured by loss (seed 000), step size, seed or epoch")  # fmt: skip
    p.add_argument("id", type=int, metavar="EMBEDDING_ID")
    p.add_argument("--color", choices=("loss", "step", "seed", "epoch"), default="loss",
                   help="what colours the samples (default loss: seed 000's figures)")  # fmt: skip
    p.add_argument("--loss", default="test", help="loss for --color loss (default test)")
    p.add_argument("--out", metavar="DIR", help="folder for the files (default TRACKER_HOME/plots)")
    p.set_defaults(func=lazy_command(__name__, "cmd_plot_embedding"))

    p = plot.add_parser("persistence", parents=[common], help="persistence diagram and barcode")
    p.add_argument("id", type=int, metavar="DIAGRAM_ID")
    p.add_argument("--out", metavar="DIR", help="folder for the files (default TRACKER_HOME/plots)")
    p.set_defaults(func=lazy_command(__name__, "cmd_plot_persistence"))


# --- enqueue ----------------------------------------------------------------------------------


def _study(session: Session, args: argparse.Namespace, model: Model) -> Study:
    from tracker._queue import get_or_create_study
    from tracker._schema import Study

    if args.study:
        return get_or_create_study(session, args.study)
    return Study.find_or_raise_by_id(session, model.study_id)


def cmd_enqueue_retrain(args: argparse.Namespace) -> int:
    from tracker.topology.rows import RetrainRequest, add_retrains, parse_seeds, parse_steps
    from tracker.training.rows import find_model

    req = RetrainRequest(
        model=args.model, seeds=parse_seeds(args.seeds), steps=parse_steps(args.steps),
        epochs=args.epochs, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, batch_size=args.batch_size,
        saves_per_epoch=args.saves_per_epoch, augment=args.augment, epoch=args.epoch,
    )  # fmt: skip
    db = open_db(args)
    with db.session() as session:
        model = find_model(session, req.model)
        study = _study(session, args, model)
        rows, created = add_retrains(session, study, req)
        ids = [r.id for r in rows]
        name = study.name
        tasks = [r.task_id for r in rows if r.task_id]
        mid = model.id
    emit(args, Enqueued(name, "retrains", ids, tasks=tasks),
         f"{len(ids)} retrain(s) of model {mid} ({created} new; ids {ids[0]}-{ids[-1]}) "
         f"in study {name!r}; run `tracker work`")  # fmt: skip
    return 0


def cmd_enqueue_topology(args: argparse.Namespace) -> int:
    from tracker._schema import Task
    from tracker.topology.rows import TopologyRequest, add_topology
    from tracker.training.rows import find_model

    req = TopologyRequest(model=args.model, loss=args.loss, knn=args.knn,
                          phate_seed=args.phate_seed, n_pca=args.n_pca, legacy=args.legacy)  # fmt: skip
    db = open_db(args)
    with db.session() as session:
        model = find_model(session, req.model)
        study = _study(session, args, model)
        emb, diagram, new = add_topology(session, study, req)
        eid, did, n = emb.id, diagram.id, emb.n_samples
        task = session.get(Task, emb.task_id) if emb.task_id is not None else None
        waiting = task is not None and task.status == "waiting"
        tasks = [t for t in (emb.task_id, diagram.task_id) if t]
        name = study.name
    state = "new" if new else "already queued"
    wait = ", waiting on unfinished retrains" if waiting else ""
    emit(args, Enqueued(name, "embeddings", [eid], tasks=tasks,
                        extra={"persistence_diagrams": [did]}),
         f"embedding {eid} ({n} samples) and persistence diagram {did} ({state}{wait}); run "
         f"`tracker work`, then `tracker plot embedding {eid}` / `tracker plot persistence {did}`")  # fmt: skip
    return 0


# --- plots ------------------------------------------------------------------------------------


def _out_dir(args: argparse.Namespace) -> Path:
    from tracker._cliutil import settings as _settings

    return Path(args.out or _settings(args).home / "plots")


def cmd_plot_embedding(args: argparse.Namespace) -> int:
    import numpy as np

    from tracker._cliutil import settings as _settings
    from tracker._exceptions import SpecError
    from tracker._store import ArrayStore
    from tracker.topology import plots as plots_topology
    from tracker.topology.results import load_embedding, sample_loss

    store = ArrayStore(_settings(args).store_url)
    db = open_db(args)
    with db.session() as session:
        data = load_embedding(session, store, args.id)
        if args.color == "loss":
            values = sample_loss(session, data.order, args.loss)
            if np.isnan(values).all():
                raise SpecError(f"the samples have no {args.loss} loss: use --loss test or train")
        else:
            values = {"step": data.steps, "seed": data.seeds, "epoch": data.epochs}[args.color]
    emb = data.embedding
    title = (f"embedding {emb.id}: model {emb.model_id}, {emb.n_samples} samples, PHATE "
             f"(cosine, t={emb.t}, seed {emb.seed})")  # fmt: skip
    suffix = "" if args.color == "loss" else f"-{args.color}"
    stem = _out_dir(args) / f"embedding-{emb.id}{suffix}"
    paths = plots_topology.plot_embedding(stem, data.coords, values,
                                          color=args.color, loss_name=args.loss, title=title)  # fmt: skip
    for p in paths:
        print(p)
    return 0


def cmd_plot_persistence(args: argparse.Namespace) -> int:
    from tracker._cliutil import settings as _settings
    from tracker._store import ArrayStore
    from tracker.topology import plots as plots_topology
    from tracker.topology.results import load_diagram

    store = ArrayStore(_settings(args).store_url)
    db = open_db(args)
    with db.session() as session:
        row, diagram = load_diagram(session, store, args.id)
        title = (f"persistence {row.id}: embedding {row.embedding_id}, {row.loss_name} loss, "
                 f"{row.knn}-NN{' (legacy: farthest)' if row.legacy else ''}")  # fmt: skip
    stem = _out_dir(args) / f"persistence-{args.id}"
    for p in plots_topology.plot_persistence(stem, diagram, title=title):
        print(p)
    return 0


# --- tracker show study -----------------------------------------------------------------------


def print_study_topology(db: Database, study_id: int) -> None:
    """The study's retrains, embeddings and persistence diagrams, as `tracker show study` lists
    its models and surfaces (nothing is printed for a study without them)."""
    import sqlalchemy as sa

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
