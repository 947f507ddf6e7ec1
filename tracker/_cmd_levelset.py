"""Level-set commands (seed 002): enqueue traversals and the L2 baseline, plot the figures.

    tracker enqueue levelset --setup IRIS_FF --runs 5 [--max-predictor-steps N]
    tracker enqueue l2-baseline --setup IRIS_FF --lambdas 0,1e-6,...,1e6 --runs 15
    tracker plot levelset --setup IRIS_FF [--out DIR]

Every request is validated whole before the first row is written, and all its rows are
written in one transaction; the same request twice finds the rows it made the first time.
"""

from __future__ import annotations

import argparse
import csv
import math
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from tracker._exceptions import NotFound, SpecError

TABLE1_FIELDS = ("method", "l2_lambda", "n_runs", "test_loss_mean", "test_loss_std",
                 "test_acc_mean", "test_acc_std")  # fmt: skip
PCA_LAMBDA = 1e-3  # the baseline endpoint drawn in Figure 7


def _open(args: argparse.Namespace) -> Any:
    from tracker._cliutil import open_db

    return open_db(args)


def _data_root(args: argparse.Namespace) -> str | None:
    return str(Path(args.data_root).absolute()) if args.data_root else None


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise SpecError(f"{flag} must be at least 1, got {value}")


# --- enqueue ----------------------------------------------------------------------------------


def levelset_configs(args: argparse.Namespace) -> list[Any]:
    """The run configs of an ``enqueue levelset`` request, validated (data included)."""
    from compute import levelset as ls

    setup = ls.get_setup(args.setup)
    _positive(args.runs, "--runs")
    runs = args.runs or setup.runs
    seeds = ls.run_seeds(args.seed, runs)
    configs = [
        ls.LevelSetConfig(
            setup=setup.name, seed=s, max_predictor_steps=args.max_predictor_steps,
            max_corrector_steps=args.max_corrector_steps, phase1_epochs=args.phase1_epochs,
            data_seed=args.data_seed, data_root=_data_root(args),
        ).resolved()
        for s in seeds
    ]  # fmt: skip
    ls.load_setup_data(setup, args.data_seed, _data_root(args))  # missing data fails here
    return configs


def cmd_enqueue_levelset(args: argparse.Namespace) -> int:
    from tracker._queue import enqueue, get_or_create_study, spec_hash
    from tracker._rows import get_or_add as _get_or_add
    from tracker._schema import LevelSetRun

    configs = levelset_configs(args)
    db = _open(args)
    new_rows = 0
    with db.session() as session:
        study = get_or_create_study(session, args.study)
        for i, cfg in enumerate(configs):
            spec = asdict(cfg)
            digest = spec_hash("levelset", study.name, i, spec)
            row, new = _get_or_add(
                session, LevelSetRun, digest, study_id=study.id, setup=cfg.setup, run_index=i,
                seed=cfg.seed, data_seed=cfg.data_seed, phase1_epochs=cfg.phase1_epochs,
                max_predictor_steps=cfg.max_predictor_steps,
                max_corrector_steps=cfg.max_corrector_steps, eta_min=cfg.eta_min,
                eta_c=cfg.eta_c, config=spec,
            )  # fmt: skip
            if new:
                task, _ = enqueue(session, study, "levelset.run", {"levelset_run_id": row.id},
                                  key=digest)  # fmt: skip
                row.task_id = task.id
                new_rows += 1
    print(f"levelset: {len(configs)} run(s) of {configs[0].setup} ({new_rows} new) in study "
          f"{args.study!r}; run `tracker work` to compute them")  # fmt: skip
    return 0


def l2_configs(args: argparse.Namespace) -> list[tuple[int, Any]]:
    """(run index, config) of an ``enqueue l2-baseline`` request, validated."""
    from compute import levelset as ls

    setup = ls.get_setup(args.setup)
    lambdas = ls.parse_lambdas(args.lambdas) if args.lambdas else list(ls.DEFAULT_LAMBDAS)
    _positive(args.runs, "--runs")
    _positive(args.epochs, "--epochs")
    seeds = ls.run_seeds(args.seed, args.runs)
    out = [
        (i, ls.L2Config(setup=setup.name, seed=s, l2=lam, epochs=args.epochs,
                        data_seed=args.data_seed, data_root=_data_root(args)).resolved())
        for lam in lambdas
        for i, s in enumerate(seeds)
    ]  # fmt: skip
    ls.load_setup_data(setup, args.data_seed, _data_root(args))
    return out


def cmd_enqueue_l2(args: argparse.Namespace) -> int:
    from tracker._queue import enqueue, get_or_create_study, spec_hash
    from tracker._rows import get_or_add as _get_or_add
    from tracker._schema import L2BaselineRun

    configs = l2_configs(args)
    db = _open(args)
    new_rows = 0
    with db.session() as session:
        study = get_or_create_study(session, args.study)
        for i, cfg in configs:
            spec = asdict(cfg)
            digest = spec_hash("levelset.l2", study.name, i, spec)
            row, new = _get_or_add(
                session, L2BaselineRun, digest, study_id=study.id, setup=cfg.setup,
                l2_lambda=cfg.l2, run_index=i, seed=cfg.seed, data_seed=cfg.data_seed,
                epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, config=spec,
            )  # fmt: skip
            if new:
                task, _ = enqueue(session, study, "levelset.l2", {"l2_run_id": row.id}, key=digest)
                row.task_id = task.id
                new_rows += 1
    n_lambdas = len({cfg.l2 for _, cfg in configs})
    print(f"l2-baseline: {len(configs)} run(s) of {configs[0][1].setup} ({n_lambdas} lambdas, "
          f"{new_rows} new) in study {args.study!r}; run `tracker work` to compute them")  # fmt: skip
    return 0


# --- reading results --------------------------------------------------------------------------


def done_levelset_runs(session: Any, setup: str, study: str | None) -> list[Any]:
    """The finished traversals of ``setup`` (in ``study`` if given), by run index."""
    from tracker._schema import LevelSetRun, Study

    q = sa.select(LevelSetRun).where(LevelSetRun.setup == setup,
                                     LevelSetRun.trace_array_id.is_not(None))  # fmt: skip
    if study:
        q = q.join(Study, Study.id == LevelSetRun.study_id).where(Study.name == study)
    return list(session.scalars(q.order_by(LevelSetRun.run_index, LevelSetRun.id)))


def done_l2_runs(session: Any, setup: str, study: str | None) -> list[Any]:
    from tracker._schema import L2BaselineRun, Study

    q = sa.select(L2BaselineRun).where(L2BaselineRun.setup == setup,
                                       L2BaselineRun.params_array_id.is_not(None))  # fmt: skip
    if study:
        q = q.join(Study, Study.id == L2BaselineRun.study_id).where(Study.name == study)
    return list(session.scalars(q.order_by(L2BaselineRun.l2_lambda, L2BaselineRun.run_index)))


def _array(session: Any, store: Any, array_id: int) -> np.ndarray:
    from tracker._schema import ArrayRef

    return store.read(session.get(ArrayRef, array_id).path)


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v if v is not None else np.nan for v in values], dtype=np.float64)
    if arr.size == 0 or np.all(np.isnan(arr)):
        return float("nan"), float("nan")
    return float(np.nanmean(arr)), float(np.nanstd(arr))


def table1(levelset_rows: list[Any], l2_rows: list[Any]) -> list[dict[str, Any]]:
    """Table 1: the traversal's final test loss/accuracy, then the baseline's per lambda.

    Baseline runs are grouped by their exact lambda value (the published notebook matched
    file names by substring, which merges 1e-1 with 1e-10)."""
    rows = []

    def add(method: str, lam: float | None, runs: list[Any]) -> None:
        loss = _mean_std([r.final_test_loss for r in runs])
        acc = _mean_std([r.final_test_acc for r in runs])
        rows.append({"method": method, "l2_lambda": lam, "n_runs": len(runs),
                     "test_loss_mean": loss[0], "test_loss_std": loss[1],
                     "test_acc_mean": acc[0], "test_acc_std": acc[1]})  # fmt: skip

    if levelset_rows:
        add("levelset", None, levelset_rows)
    groups: dict[float, list[Any]] = {}
    for r in l2_rows:
        groups.setdefault(float(r.l2_lambda), []).append(r)
    for lam in sorted(groups):
        add("l2", lam, groups[lam])
    return rows


def figure2_series(traces: list[np.ndarray], fields: list[str]) -> dict[str, np.ndarray]:
    """Mean and std over runs, per predictor step, of each field (runs that stopped early
    drop out of the later steps)."""
    length = max(t.shape[0] for t in traces)
    stacked = np.full((len(traces), length, len(fields)), np.nan)
    for i, t in enumerate(traces):
        stacked[i, : t.shape[0]] = t
    with warnings.catch_warnings():  # all-NaN columns past the longest early stop
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std = np.nanmean(stacked, axis=0), np.nanstd(stacked, axis=0)
    out = {"step": np.arange(length)}
    for j, name in enumerate(fields):
        out[f"{name}_mean"], out[f"{name}_std"] = mean[:, j], std[:, j]
    return out


def snapshot_pca(
    snapshots: list[np.ndarray],
    steps: list[list[int]],
    l2_endpoints: list[np.ndarray],
    n_components: int = 6,
) -> dict[str, np.ndarray]:
    """Figure 7's projection: z-score every parameter over all snapshots, PCA (seed 0), and
    place the mean traversal endpoint and the mean L2 endpoint in the same coordinates."""
    from sklearn.decomposition import PCA

    # float32: 5 CIFAR10_CONV runs of 20k steps are 2,000 x 685,450 values (5.5 GB as float32).
    x = np.concatenate(snapshots, axis=0).astype(np.float32, copy=False)
    mean, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0).astype(np.float32)
    x -= mean  # in place: x is concatenate's own copy, and the largest array here
    x /= sd
    k = max(1, min(n_components, x.shape[0], x.shape[1]))
    pca = PCA(n_components=k, random_state=0, svd_solver="randomized")
    coords = pca.fit_transform(x)
    end = np.mean([s[-1] for s in snapshots], axis=0)
    out = {"coords": coords, "steps": np.concatenate([np.asarray(s) for s in steps]),
           "explained": pca.explained_variance_ratio_,
           "levelset_end": pca.transform(((end - mean) / sd)[None])[0]}  # fmt: skip
    if l2_endpoints:
        l2_end = np.mean(l2_endpoints, axis=0)
        out["l2_end"] = pca.transform(((l2_end - mean) / sd)[None])[0]
    return out


# --- plot -------------------------------------------------------------------------------------


def cmd_plot_levelset(args: argparse.Namespace) -> int:
    from tracker._cli_levelset import SETUP_NAMES
    from tracker._cliutil import settings as _settings
    from tracker._store import ArrayStore

    setup = args.setup
    if setup not in SETUP_NAMES:  # checked here without importing torch: plotting needs none
        raise SpecError(
            f"unknown level-set setup {setup!r}: choose one of {', '.join(SETUP_NAMES)}"
        )
    settings = _settings(args)
    db = _open(args)
    store = ArrayStore(settings.store_url)
    out = Path(args.out or settings.home / "plots")
    with db.session() as session:
        runs = done_levelset_runs(session, setup, args.study)
        l2 = done_l2_runs(session, setup, args.study)
        if not runs and not l2:
            where = f" in study {args.study!r}" if args.study else ""
            raise NotFound(f"no finished level-set or L2 baseline runs of {setup}{where}: "
                           f"enqueue them (`tracker enqueue levelset --setup {setup}`) and run "
                           "`tracker work`")  # fmt: skip
        traces = [_array(session, store, r.trace_array_id) for r in runs]
        fields = list(runs[0].trace_fields) if runs else []
        snaps = [_array(session, store, r.snapshots_array_id) for r in runs]
        steps = [list(r.snapshot_steps) for r in runs]
        l2_ends = [_array(session, store, r.params_array_id) for r in l2
                   if math.isclose(r.l2_lambda, PCA_LAMBDA, rel_tol=1e-12)]  # fmt: skip
        table = table1(runs, l2)
    out.mkdir(parents=True, exist_ok=True)
    written = [_write_table(table, out / f"levelset-{setup}-table1.csv")]
    if traces:
        written += _plot_figure2(figure2_series(traces, fields), setup, out)
        written += _plot_figure7(snapshot_pca(snaps, steps, l2_ends), setup, out)
    print(_format_table(table))
    for path in written:
        print(path)
    return 0


def _write_table(table: list[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=TABLE1_FIELDS)
        writer.writeheader()
        for row in table:
            writer.writerow({k: "" if row[k] is None else row[k] for k in TABLE1_FIELDS})
    return path


def _format_table(table: list[dict[str, Any]]) -> str:
    from tracker._cliutil import table as _table

    def pm(mean: float, std: float) -> str:
        return "n/a" if math.isnan(mean) else f"{mean:.4f} +- {std:.4f}"

    rows = [[r["method"], "" if r["l2_lambda"] is None else f"{r['l2_lambda']:g}", r["n_runs"],
             pm(r["test_loss_mean"], r["test_loss_std"]), pm(r["test_acc_mean"], r["test_acc_std"])]
            for r in table]  # fmt: skip
    return _table(["method", "lambda", "runs", "test loss", "test accuracy"], rows)


def _save(fig: Any, base: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


def _plot_figure2(series: dict[str, np.ndarray], setup: str, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("angle_deg", "angle(grad R, grad L) [deg]"), ("weight_norm_sq", "R = |theta|^2"),
              ("test_loss", "test loss"), ("test_acc", "test accuracy"))  # fmt: skip
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    x = series["step"]
    for ax, (name, label) in zip(axes, panels, strict=True):
        mean, std = series[f"{name}_mean"], series[f"{name}_std"]
        ax.plot(x, mean, lw=1.2)
        ax.fill_between(x, mean - std, mean + std, alpha=0.3)
        ax.set_xlabel("predictor step")
        ax.set_ylabel(label)
    fig.suptitle(f"{setup}: level-set traversal, mean +- std over runs")
    fig.tight_layout()
    return _save(fig, out / f"levelset-{setup}-fig2")


def _plot_figure7(pca: dict[str, np.ndarray], setup: str, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coords, k = pca["coords"], pca["coords"].shape[1]
    groups = [(0, 1, 2), (3, 4, 5)] if k >= 6 else [tuple(range(min(k, 3)))]
    fig = plt.figure(figsize=(6.5 * len(groups), 5.5))
    for g, dims in enumerate(groups):
        dims3 = tuple(dims) + (dims[-1],) * (3 - len(dims))
        ax = fig.add_subplot(1, len(groups), g + 1, projection="3d")
        sc = ax.scatter(*(coords[:, d] for d in dims3), c=pca["steps"], cmap="viridis", s=6)
        for key, colour, label in (("levelset_end", "red", "traversal end (mean)"),
                                   ("l2_end", "black", f"L2 end, lambda={PCA_LAMBDA:g} (mean)")):  # fmt: skip
            if key in pca:
                ax.scatter(*(pca[key][d] for d in dims3), c=colour, s=60, marker="*", label=label)
        ax.set_xlabel(f"PC{dims3[0] + 1}")
        ax.set_ylabel(f"PC{dims3[1] + 1}")
        ax.set_zlabel(f"PC{dims3[2] + 1}")
        ax.legend(loc="upper left", fontsize=7)
        fig.colorbar(sc, ax=ax, shrink=0.6, label="predictor step")
    fig.suptitle(f"{setup}: PCA of theta snapshots (z-scored, {k} components, seed 0)")
    return _save(fig, out / f"levelset-{setup}-fig7")
