"""DOODL3 ensembles and Morse graphs on the command line.

    tracker enqueue ensemble --setup doodl3-iris --models 100     # 450 epochs: Figure 3
    tracker enqueue ensemble --from-models settings --study S      # one per setting's seeds
    tracker enqueue morse --ensemble ID [--subdiv 15] [--weights 2|K|NAME,NAME,...]
    tracker show morse ID
    tracker plot morse ID... [--out DIR]

Only the standard library (and the stdlib-only tracker._cliutil) is imported at the top:
SQLAlchemy, torch, CMGDB and matplotlib load inside the commands, so `tracker --help` stays
fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tracker._cli_output import Enqueued, emit
from tracker._cliutil import DEFAULT_STUDY, open_db, settings

# --- parsers ----------------------------------------------------------------------------------


def add_parsers(
    *, sub: Any, enqueue: Any, plot: Any, export: Any, common: argparse.ArgumentParser
) -> None:
    """Add `enqueue ensemble`, `enqueue morse`, `plot morse` and `show morse`."""
    p = enqueue.add_parser(
        "ensemble", parents=[common],
        help="DOODL3: train many small models (early and final weights kept per model)",
    )  # fmt: skip
    p.add_argument("--setup", metavar="SETUP",
                   help="doodl3-iris (9-parameter softmax layer), doodl3-iris-layers-2 (its "
                   "iris_layers_2: two softmax layers, 21 parameters) or doodl3-mnist "
                   "(58-parameter conv net on 0 vs 1)")  # fmt: skip
    p.add_argument("--from-models", metavar="REF,REF,...|settings",
                   help="instead of --setup: an ensemble of the study's trained models (one "
                   "hyperparameter setting over its seeds), weights at --early-epoch and the "
                   "final epoch; 'settings': one ensemble per setting of --study with 2+ "
                   "models. A Morse graph's counts then become measures of the members")  # fmt: skip
    p.add_argument("--models", type=int, default=100, help="ensemble size (default 100)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per model (default: iris 450, its Figure 3's iris_epoch_450; "
                   "iris-layers-2 150; mnist 100, as many Adam steps as DOODL3's 8 epochs on "
                   "full MNIST)")  # fmt: skip
    p.add_argument("--early-epoch", type=int, default=None,
                   help="the early checkpoint: weights after this many epochs (default 2, "
                   "Keras's epoch index 1; with --from-models, a checkpoint epoch the models "
                   "keep, default their first)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=None, help="default: iris 5, mnist 128")
    p.add_argument("--train-seed", "--seed", dest="seed", type=int, default=0,
                   help="initialisation and minibatch seed")
    p.add_argument("--data-seed", type=int, default=0, help="train/test split seed")
    p.add_argument("--chunk", type=int, default=50, help="models per training task (default 50)")
    p.add_argument("--study", default=DEFAULT_STUDY, help="study label")
    p.set_defaults(func=cmd_enqueue_ensemble)

    p = enqueue.add_parser(
        "morse", parents=[common],
        help="the Morse graph of an ensemble's early -> final map (GP + CMGDB; waits on "
        "the ensemble's unfinished training)",
    )  # fmt: skip
    p.add_argument("--ensemble", type=int, required=True, metavar="ID")
    p.add_argument("--pick", default="max-variance",
                   help="the kernel weights whose final values vary most (max-variance, "
                   "default) or least (min-variance) across models, in DOODL3's order "
                   "(ascending standard deviation)")  # fmt: skip
    p.add_argument("--weights", default="2", metavar="K|NAMES",
                   help="how many weights --pick chooses (default 2; DOODL3's studies use "
                   "2-5), or the parameters themselves by name or index: "
                   "dense_kernel_0_1,dense_kernel_1_2")  # fmt: skip
    p.add_argument("--subdiv", type=int, default=15,
                   help="2**SUBDIV boxes in all, split over the weights' axes (default 15; "
                   "at least one split per axis)")  # fmt: skip
    p.add_argument("--gp-seed", "--seed", dest="seed", type=int, default=0,
                   help="the Gaussian process's random_state")
    p.add_argument("--no-conley", action="store_true", help="skip the Conley indices")
    p.add_argument("--force", action="store_true", help="allow a subdivision above 18")
    p.add_argument("--study", help="study of the new row (default: the ensemble's)")
    p.set_defaults(func=cmd_enqueue_morse)

    p = plot.add_parser(
        "morse", parents=[common],
        help="Morse graph (Graphviz), Morse sets and order retraction with the ensemble, "
        "violins of accuracy and entropy per node",
    )  # fmt: skip
    p.add_argument("ids", nargs="+", type=int, metavar="MORSE_ID")
    p.add_argument("--out", metavar="DIR", help="folder for the files (default TRACKER_HOME/plots)")
    p.set_defaults(func=cmd_plot_morse)

    show = _show_parser(sub)
    if show is not None:
        p = show.add_parser("morse", parents=[common], help="a Morse graph: nodes, edges, GP")
        p.add_argument("id", type=int, metavar="MORSE_ID")
        p.set_defaults(func=cmd_show_morse)


def _show_parser(sub: Any) -> Any:
    """The `tracker show` sub-command group, if the parser has one."""
    show = sub.choices.get("show")
    if show is None:
        return None
    for action in show._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


# --- commands ---------------------------------------------------------------------------------


def _enqueue_model_ensembles(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from tracker._exceptions import SpecError
    from tracker._queue import find_study, get_or_create_study
    from tracker._schema import Checkpoint, Model
    from tracker.morse.rows import add_model_ensemble, setting_groups
    from tracker.training.rows import find_model

    if args.setup is not None:
        raise SpecError("give --setup (a DOODL3 ensemble to train) or --from-models, not both")
    db = open_db(args)
    ids: list[int] = []
    new_rows = 0
    with db.session() as session:
        if args.from_models.strip() == "settings":
            study_models = session.scalars(
                sa.select(Model).where(Model.study_id == find_study(session, args.study).id)
            ).all()
            groups = [g for g in setting_groups(study_models) if len(g) >= 2]
            if not groups:
                raise SpecError(f"study {args.study!r} has no hyperparameter setting with 2 or "
                                "more models (seeds): enqueue more seeds")  # fmt: skip
        else:
            refs = [r.strip() for r in args.from_models.split(",") if r.strip()]
            groups = [[find_model(session, ref) for ref in refs]]
        study = get_or_create_study(session, args.study)
        for group in groups:
            early = args.early_epoch
            if early is None:  # the models' first kept checkpoint
                early = session.scalar(sa.select(sa.func.min(Checkpoint.epoch))
                                       .where(Checkpoint.model_id == group[0].id))  # fmt: skip
            row, new = add_model_ensemble(session, study, group, int(early or 0))
            ids.append(row.id)
            new_rows += new
    emit(args, Enqueued(args.study, "ensembles", ids),
         f"{len(ids)} ensemble(s) of models ({new_rows} new: {', '.join(map(str, ids))}) in "
         f"study {args.study!r}; run `tracker work` to collect them, then `tracker enqueue "
         "morse --ensemble ID`")  # fmt: skip
    return 0


def cmd_enqueue_ensemble(args: argparse.Namespace) -> int:
    from compute.doodl3_params import DEFAULTS
    from tracker._exceptions import SpecError
    from tracker._queue import get_or_create_study
    from tracker.morse.rows import EnsembleSpec, add_ensemble, check_ensemble, check_setup

    if args.from_models is not None:
        return _enqueue_model_ensembles(args)
    if args.setup is None:
        raise SpecError("give --setup SETUP (a DOODL3 ensemble to train) or --from-models REF,... "
                        "(an ensemble of trained models)")  # fmt: skip
    check_setup(args.setup)  # before any default that depends on it
    defaults = DEFAULTS[args.setup]
    spec = EnsembleSpec(
        setup=args.setup, n_models=args.models,
        epochs=args.epochs if args.epochs is not None else defaults["epochs"],
        early_epoch=2 if args.early_epoch is None else args.early_epoch,
        batch_size=args.batch_size if args.batch_size is not None else defaults["batch_size"],
        seed=args.seed, data_seed=args.data_seed, chunk_size=args.chunk,
    )  # fmt: skip
    check_ensemble(spec)
    db = open_db(args)
    with db.session() as session:
        study = get_or_create_study(session, args.study)
        ensemble, new = add_ensemble(session, study, spec)
        eid, chunks = ensemble.id, -(-spec.n_models // ensemble.chunk_size)
    state = f"new, {chunks} training task(s)" if new else "already queued"
    emit(args, Enqueued(args.study, "ensembles", [eid]),
         f"ensemble {eid} ({state}) in study {args.study!r}; run `tracker work` to train it")
    return 0


def cmd_enqueue_morse(args: argparse.Namespace) -> int:
    from tracker._queue import check_study_name, get_or_create_study
    from tracker._schema import Study, Task
    from tracker.morse.rows import MorseSpec, add_morse, check_morse, parse_weights

    k, columns = parse_weights(args.weights)
    spec = MorseSpec(ensemble_id=args.ensemble, pick=args.pick, subdiv=args.subdiv,
                     seed=args.seed, conley=not args.no_conley, weights=k, columns=columns)  # fmt: skip
    check_morse(spec, force=args.force)
    if args.study is not None:
        check_study_name(args.study)
    db = open_db(args)
    with db.session() as session:
        target = get_or_create_study(session, args.study) if args.study else None
        row, new = add_morse(session, target, spec, force=args.force)
        mid, study = row.id, Study.find_or_raise_by_id(session, row.study_id).name
        task = session.get(Task, row.task_id) if row.task_id is not None else None
        waiting = task is not None and task.status == "waiting"
    state = ("new" if new else "already queued") + (
        ", waiting on the ensemble's training" if waiting else ""
    )
    emit(args, Enqueued(study, "morse_graphs", [mid]),
         f"Morse graph {mid} ({state}) of ensemble {spec.ensemble_id} in study {study!r}; "
         "run `tracker work` to compute it")  # fmt: skip
    return 0


def cmd_show_morse(args: argparse.Namespace) -> int:
    from tracker.morse.rows import find_morse

    db = open_db(args)
    with db.session() as session:
        row = find_morse(session, args.id)
        graph = row.graph or {}
        print(f"Morse graph {row.id}: ensemble {row.ensemble_id} ({row.setup}), pick {row.pick}, "
              f"subdiv {row.subdiv}, seed {row.seed}, {row.seconds:.2f} s")  # fmt: skip
        print(f"weights: {', '.join(row.weight_names)}; GP: {row.gp_params.get('kernel')}")
        nontrivial = ("" if row.n_nontrivial is None
                      else f" ({row.n_nontrivial} with a non-trivial Conley index)")  # fmt: skip
        print(f"{row.n_nodes} node(s){nontrivial}, {row.n_edges} edge(s), "
              f"{row.n_attractors} attractor(s)")  # fmt: skip
        for node in graph.get("nodes", []):
            index = node.get("conley_index")
            print(f"  node {node['id']}: {node['n_boxes']} box(es)"
                  + (" attractor" if node["attractor"] else "")
                  + (f", Conley index ({', '.join(index)})" if index else "")
                  + (" trivial" if node.get("trivial") else ""))  # fmt: skip
        for u, v in graph.get("edges", []):
            print(f"  {u} -> {v}")
    return 0


def cmd_plot_morse(args: argparse.Namespace) -> int:
    from tracker._store import ArrayStore
    from tracker.morse.plots import plot_all
    from tracker.morse.results import load_morse

    conf = settings(args)
    db = open_db(args)
    store = ArrayStore(conf.store_url)
    out = Path(args.out or conf.home / "plots")
    written: list[Path] = []
    with db.session() as session:
        for mid in args.ids:
            written += plot_all(load_morse(session, store, mid), out / f"morse-{mid}")
    for p in written:
        print(p)
    return 0
