"""Curvature commands (issue 15): Hessian spectra of a model's checkpoints or retrains.

    tracker enqueue hessian --model ID [--epochs all|E1,E2 | --retrains all|R1,R2
        [--saves last|all|S1,S2]] [--top-k 5] [--trace] [--density]
        [--per-layer] [--split train|test|val] [--subset N | --minibatches K --minibatch-size B]
        [--bn eval|train] [--seed S] [--tol 1e-3] [--max-iter 100] [--probes 100]
        [--trace-method auto|hutchinson|gauss-newton|hutchpp] [--study S]
    tracker show hessian ID | --model ID
    tracker plot hessian ID... | --model ID | --surface ID

A request is checked whole (model, epochs, k against the parameter count, stored weights, a
finite loss at every trained checkpoint) before its rows are committed: a bad one writes
nothing. Only the standard library and tracker._cliutil are imported at module top.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tracker._cliutil import lazy_command, open_db, settings, table


def add_parsers(
    *, sub: Any, enqueue: Any, plot: Any, export: Any, common: argparse.ArgumentParser
) -> None:
    """Add `enqueue hessian` and `plot hessian` (`show hessian`: ``add_show_parser``)."""
    p = enqueue.add_parser("hessian", parents=[common],
                           help="Hessian spectra of a model's checkpoints: top-k eigenvalues, "
                           "trace, density (one task per checkpoint and measure)")  # fmt: skip
    p.add_argument("--model", required=True, metavar="ID", help="model id or name")
    p.add_argument("--epochs", default=None, metavar="all|E1,E2",
                   help="checkpoints to measure (default: the last)")  # fmt: skip
    p.add_argument("--retrains", default=None, metavar="all|R1,R2",
                   help="instead of checkpoints, the model's retrained networks (`tracker "
                   "enqueue retrain`): all of them or these retrain ids; a retrain not yet "
                   "done is waited for")  # fmt: skip
    p.add_argument("--saves", default=None, metavar="last|all|S1,S2",
                   help="with --retrains: the trajectory saves to measure (default: the "
                   "last; 0 is the jump)")  # fmt: skip
    p.add_argument("--top-k", type=int, default=5, metavar="K",
                   help="eigenvalues (and eigenvector directions) per checkpoint; 0: none")  # fmt: skip
    p.add_argument("--trace", action="store_true", help="Hutchinson's trace estimate")
    p.add_argument("--density", action="store_true", help="the SLQ eigenvalue density")
    p.add_argument("--per-layer", action="store_true", help="per-layer traces (with --trace)")
    p.add_argument("--split", default="train", choices=["train", "test", "val"])
    p.add_argument("--subset", type=int, default=None, metavar="N",
                   help="a fixed seeded subset of N samples (subset seed 0, as surfaces)")  # fmt: skip
    p.add_argument("--minibatches", type=int, default=None, metavar="K")
    p.add_argument("--minibatch-size", type=int, default=None, metavar="B")
    p.add_argument("--bn", default="eval", choices=["eval", "train"],
                   help="BatchNorm: running statistics (eval, default) or batch statistics")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the Lanczos start and probes")
    p.add_argument("--tol", type=float, default=1e-3, help="relative residual of eigenpairs")
    p.add_argument("--max-iter", type=int, default=100,
                   help="Lanczos steps (eigenvalues; density steps too)")  # fmt: skip
    p.add_argument("--probes", type=int, default=100,
                   help="Rademacher probes of the trace (hutchpp: products in all)")  # fmt: skip
    p.add_argument("--trace-method", default="auto",
                   choices=["auto", "hutchinson", "gauss-newton", "hutchpp"],
                   help="auto (default): Hutchinson's probes of the Gauss-Newton matrix where "
                   "the network is piecewise linear (ReLU, BatchNorm in eval mode; the same "
                   "trace, a backward per probe instead of a Hessian-vector product), of the "
                   "Hessian otherwise; hutchinson: of the Hessian always; gauss-newton: refuse "
                   "other networks; hutchpp: Hutch++, the trace of a sketched dominant "
                   "subspace taken exactly and the rest probed (smaller error where a few "
                   "eigenvalues dominate, as after training)")  # fmt: skip
    p.add_argument("--density-runs", type=int, default=1, help="SLQ runs (default 1)")
    p.add_argument("--study", help="study label (default: the model's study)")
    p.set_defaults(func=lazy_command(__name__, "cmd_enqueue_hessian"))

    p = plot.add_parser("hessian", parents=[common],
                        help="density (log y) and convergence of spectra; top-k per epoch of a "
                        "model; the lambda_min/max map of a --curvature surface")  # fmt: skip
    p.add_argument("ids", nargs="*", type=int, metavar="SPECTRUM_ID")
    p.add_argument("--model", type=int, metavar="ID", help="top-k eigenvalues per epoch")
    p.add_argument("--surface", type=int, metavar="ID", help="a --curvature surface's map")
    p.add_argument("--out", metavar="DIR", help="folder for the files (default TRACKER_HOME/plots)")
    p.set_defaults(func=lazy_command(__name__, "cmd_plot_hessian"))


def add_show_parser(show: Any, common: argparse.ArgumentParser) -> None:
    """Add `show hessian`."""
    p = show.add_parser("hessian", parents=[common],
                        help="a Hessian spectrum (or, with --model, all of a model's)")  # fmt: skip
    p.add_argument("id", nargs="?", type=int, metavar="SPECTRUM_ID")
    p.add_argument("--model", type=int, metavar="ID", help="list the model's spectra")
    p.set_defaults(func=lazy_command(__name__, "cmd_show_hessian"))


# --- enqueue ----------------------------------------------------------------------------------


def request_from_args(args: argparse.Namespace) -> Any:
    from tracker.curvature.rows import HessianRequest, parse_epochs, parse_retrains, parse_saves

    return HessianRequest(
        model=args.model, epochs=parse_epochs(args.epochs), top_k=args.top_k, trace=args.trace,
        density=args.density, per_layer=args.per_layer, split=args.split, subset=args.subset,
        minibatches=args.minibatches, minibatch_size=args.minibatch_size, bn=args.bn,
        seed=args.seed, tol=args.tol, max_iter=args.max_iter, probes=args.probes,
        density_runs=args.density_runs, trace_method=args.trace_method,
        retrains=parse_retrains(args.retrains), saves=parse_saves(args.saves),
    )  # fmt: skip


def cmd_enqueue_hessian(args: argparse.Namespace) -> int:
    from tracker._exceptions import SpecError
    from tracker.curvature.rows import check_request, enqueue_request

    req = request_from_args(args)
    check_request(req)
    if req.per_layer and not req.trace:
        raise SpecError("--per-layer splits the trace by layer: add --trace")
    db = open_db(args)
    with db.session() as session:
        done = enqueue_request(session, req, args.study, settings(args).store_url)
    print(f"hessian: {len(done.ids)} measure(s) of model {done.model_id} ({done.new} new), "
          f"spectra {','.join(map(str, done.ids))} in study {done.study!r}; run `tracker "
          "work` to compute them")  # fmt: skip
    return 0


# --- show -------------------------------------------------------------------------------------


def _num(value: Any, fmt: str = ".6g") -> str:
    return "-" if value is None else format(value, fmt)


def _weights(s: Any) -> str:
    """Which weights a spectrum measures, in words."""
    if s.retrain_id is None:
        return f"epoch {s.epoch}"
    return f"retrain {s.retrain_id} save {s.save_index} (jumped from epoch {s.epoch})"


def cmd_show_hessian(args: argparse.Namespace) -> int:
    from tracker._exceptions import SpecError
    from tracker.curvature.results import load_spectrum, model_spectra

    if (args.id is None) == (args.model is None):
        raise SpecError("give a spectrum id or --model ID (`tracker show hessian --model 1`)")
    db = open_db(args)
    with db.session() as session:
        if args.model is not None:
            spectra = model_spectra(session, args.model)
            if not spectra:
                print(f"model {args.model} has no Hessian spectra: "
                      f"`tracker enqueue hessian --model {args.model}` makes them")  # fmt: skip
                return 0
            print(table(
                ["id", "epoch", "retrain", "save", "measure", "status", "split",
                 "top eigenvalue", "trace", "trace se", "seconds"],
                [[s.id, s.epoch, _num(s.retrain_id, "d"), _num(s.save_index, "d"), s.measure,
                  s.status, s.settings["split"], _num(s.top_eigenvalue), _num(s.trace),
                  _num(s.trace_stderr), _num(s.seconds, ".2f")] for s in spectra],
            ))  # fmt: skip
            return 0
        s = load_spectrum(session, args.id)
    settings_text = ", ".join(f"{k}={v}" for k, v in s.settings.items() if v is not None)
    lines = [f"Hessian spectrum {s.id}: model {s.model_id}, {_weights(s)}, {s.measure} "
             f"({s.status})", f"  settings: {settings_text}"]  # fmt: skip
    if s.error:
        lines.append(f"  error: {s.error.strip().splitlines()[-1]}")
    if s.measure == "eigen" and s.eigenvalues is not None:
        lines.append("  eigenvalues: " + ", ".join(_num(v) for v in s.eigenvalues))
        lines.append("  residuals:   " + ", ".join(_num(v, ".2e") for v in s.residuals or []))
        lines.append(f"  Lanczos steps: {s.iterations}, converged: {s.converged}")
        if s.direction_ids:
            around = "" if s.retrain_id is None else f" --retrain {s.retrain_id} --save {s.save_index}"
            lines.append(f"  directions (surface with{around} --x-direction hessian:I): "
                         + ", ".join(map(str, s.direction_ids)))  # fmt: skip
    if s.measure == "trace" and s.trace is not None:
        if s.config.get("trace_method") == "hutchpp":
            lines.append(f"  trace (Hutch++): {_num(s.trace)} +- {_num(s.trace_stderr)} "
                         f"({s.trace_probes} products: sketch {s.config.get('sketch')}, "
                         f"exact part {_num(s.config.get('exact_part'))}, "
                         f"{s.config.get('residual_probes')} deflated probes)")  # fmt: skip
        else:
            probes = {"gauss-newton": "Gauss-Newton output probes",
                      "hessian": "Hessian probes"}.get(s.config.get("estimator", "hessian"))  # fmt: skip
            refused = s.config.get("gauss_newton_refused")
            why = f"; not piecewise linear: {refused}" if refused else ""
            lines.append(f"  trace: {_num(s.trace)} +- {_num(s.trace_stderr)} "
                         f"({s.trace_probes} {probes}{why})")  # fmt: skip
        for name, value in (s.layer_traces or {}).items():
            lines.append(f"    {name}: {_num(value)}")
    if s.loss_value is not None:
        lines.append(f"  loss: {_num(s.loss_value)}, Hessian-vector products: {s.hvp_count}, "
                     f"{_num(s.seconds, '.2f')} s")  # fmt: skip
    print("\n".join(lines))
    return 0


def print_study_spectra(db: Any, study_id: int) -> None:
    """The study's Hessian spectra counted per measure, as `tracker show study` lists its
    models and surfaces (nothing is printed for a study without them)."""
    from tracker.curvature.results import study_counts

    with db.session() as session:
        counts = study_counts(session, study_id)
    if counts:
        print("\nHessian spectra:")
        keys = ["measure", "spectra", "models", "checkpoints", "done", "queued", "failed"]
        if any(c["retrain saves"] for c in counts):
            keys.insert(4, "retrain saves")
        print(table(keys, [[c[k] for k in keys] for c in counts]))


# --- plot -------------------------------------------------------------------------------------


def cmd_plot_hessian(args: argparse.Namespace) -> int:
    from tracker._exceptions import SpecError
    from tracker._store import ArrayStore
    from tracker.curvature import plots
    from tracker.curvature import results as res

    if not args.ids and args.model is None and args.surface is None:
        raise SpecError("name spectra ids, --model ID or --surface ID to plot")
    cfg = settings(args)
    db = open_db(args)
    store = ArrayStore(cfg.store_url)
    out = Path(args.out or cfg.home / "plots")
    written: list[Path] = []
    with db.session() as session:
        for sid in args.ids:
            s = res.load_spectrum(session, sid)
            title = f"model {s.model_id}, {_weights(s)}"
            if s.measure == "density":
                grid, values = res.density(session, store, s)
                fig = plots.density_figure(grid, values, f"eigenvalue density, {title}")
                written += plots.save(fig, out / f"hessian-{sid}-density")
            elif s.measure == "eigen":
                fig = plots.convergence_figure(res.history(session, store, s),
                                               f"Lanczos convergence, {title}")  # fmt: skip
                written += plots.save(fig, out / f"hessian-{sid}-convergence")
            else:
                raise SpecError(f"spectrum {sid} is a trace: nothing to draw (`tracker show hessian {sid}`)")  # fmt: skip
        if args.model is not None:
            epochs, values = res.top_k_over_training(res.model_spectra(session, args.model))
            if not len(epochs):
                raise SpecError(f"model {args.model} has no finished eigenvalues: `tracker enqueue hessian --model {args.model} --epochs all`, then `tracker work`")  # fmt: skip
            fig = plots.top_k_figure(epochs, values, f"model {args.model}: top eigenvalues")
            written += plots.save(fig, out / f"hessian-model-{args.model}-topk")
        if args.surface is not None:
            cmap = res.curvature_map(session, store, args.surface)
            written += plots.save(plots.curvature_map_figure(cmap),
                                  out / f"surface-{args.surface}-curvature")  # fmt: skip
    for p in written:
        print(p)
    return 0
