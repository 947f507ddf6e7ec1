"""The tracker from Python (a notebook): ``tracker.connect()`` and the client's verbs.

The client calls the same functions as the command line (``import_model``, ``add_model``,
``add_surface``, ``enqueue_study``, ``work``), so a notebook and a shell build the same rows;
tables come back as pandas DataFrames and a surface's grid with its coordinates (an
``xarray.DataArray`` when xarray is installed)::

    import tracker
    t = tracker.connect()                      # TRACKER_HOME / TRACKER_DB_URL, like the CLI
    m = t.import_model("net.pt", arch="my_pkg.nets:make_net", dataset="my_pkg.data:load")
    s = t.enqueue_surface(m, x=(-1, 1, 21), y=(-1, 1, 21))
    h = t.enqueue_hessian(m, top_k=5, trace=True)  # Hessian spectra: one row per measure
    t.work()
    t.surface(s).plot()
    t.spectra()                                # top eigenvalue, trace +- SE, ... per row
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tracker._config import Settings, resolve
from tracker._db import Database, open_database
from tracker._exceptions import SpecError


def connect(
    db: str | None = None, store: str | None = None, home: str | os.PathLike[str] | None = None
) -> Client:
    """A client of the tracker at ``db``/``store`` (defaults as the CLI: the environment, then
    ``home`` or ``./.tracker``). A brand-new embedded SQLite database gets its schema."""
    from tracker._cliutil import create_if_brand_new_sqlite

    settings = resolve(db_url=db, store_url=store, home=home)
    database = open_database(settings.db_url, check=False)
    create_if_brand_new_sqlite(database)
    database.check_schema()
    return Client(settings, database)


def _grid(value: Any, what: str) -> Any:
    from tracker.surfaces.rows import Grid, parse_grid

    if isinstance(value, tuple | list) and len(value) == 3:
        return parse_grid(f"{value[0]}:{value[1]}:{int(value[2])}", what)
    if isinstance(value, Grid | str):
        return parse_grid(value, what)
    raise SpecError(f"{what} {value!r} is not (min, max, n) or 'MIN:MAX:N': e.g. (-1, 1, 21)")


class Client:
    """One tracker (database + store); every verb commits before it returns."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def __repr__(self) -> str:
        from tracker._db import redact

        return f"tracker.Client(db={redact(self.settings.db_url)!r}, store={self.settings.store_url!r})"  # fmt: skip

    # ------------------------------------------------------------------ writing

    def import_model(
        self,
        files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        arch: str,
        dataset: str,
        arch_config: dict[str, Any] | None = None,
        dataset_config: dict[str, Any] | None = None,
        epochs: Sequence[int] | None = None,
        name: str | None = None,
        study: str = "default",
        metrics_from_eval: bool = False,
    ) -> int:
        """Import checkpoint file(s) (or a folder of them) as a model; return its id."""
        from tracker.training.rows import ImportSpec, checkpoint_files, import_model

        paths = [str(files)] if isinstance(files, str | os.PathLike) else [str(f) for f in files]
        pairs = checkpoint_files(paths, epochs)
        spec = ImportSpec(files=pairs, architecture=arch, dataset=dataset,
                          arch_config=dict(arch_config or {}),
                          dataset_config=_data_config(dataset_config), name=name,
                          metrics_from_eval=metrics_from_eval)  # fmt: skip
        return import_model(self.db, self.settings.store_url, spec, study=study).model_id

    def enqueue_model(self, *, arch: str, dataset: str, study: str = "default", **fields: Any) -> int:  # fmt: skip
        """A model to train (the fields of ``tracker.training.rows.ModelSpec``); its id."""
        from tracker._queue import get_or_create_study
        from tracker.training.rows import ModelSpec, add_model, check_model

        fields["dataset_config"] = _data_config(fields.get("dataset_config"))
        if "checkpoint_epochs" in fields:
            fields["checkpoint_epochs"] = tuple(fields["checkpoint_epochs"])
        try:
            spec = ModelSpec(architecture=arch, dataset=dataset, **fields)
        except TypeError as err:
            raise SpecError(f"enqueue_model: {err}: use the fields of ModelSpec") from None
        spec = check_model(spec)
        with self.db.session() as session:
            model, _ = add_model(session, get_or_create_study(session, study), spec)
            return model.id

    def enqueue_surface(
        self,
        model: int | str,
        *,
        x: Any = (-1.0, 1.0, 21),
        y: Any = None,
        epoch: int | None = None,
        seed: int = 0,
        interpolate_to: int | str | None = None,
        pca: bool = False,
        split: str = "train",
        subset: int | None = None,
        bn: str = "eval",
        precision: str = "fp32",
        norm: str = "filter",
        ignore: str = "biasbn",
        x_direction: str = "random",
        y_direction: str | None = None,
        retrain: int | None = None,
        save: int | None = None,
    ) -> int:
        """A 1D/2D surface around ``model`` (random directions, or the line to
        ``interpolate_to``, or the PCA plane of its checkpoints); return its id.
        ``x_direction``/``y_direction`` "hessian:I": along Hessian eigenvectors, as
        `--x-direction`; ``retrain`` (with ``save``, default the last): around that retrained
        network, along its eigenvectors, as `--retrain`/`--save`."""
        from tracker._schema import Study
        from tracker.surfaces.rows import EvalSpec, SurfaceSpec, add_surface, parse_direction_choice
        from tracker.training.rows import DirectionSpec, find_model

        x_hessian = parse_direction_choice(x_direction, "x_direction")
        y_hessian = parse_direction_choice(y_direction, "y_direction")
        if (x_hessian is not None or y_hessian is not None or retrain is not None) and (
            interpolate_to is not None or pca
        ):
            raise SpecError("Hessian directions and retrain centres go with a model's own "
                            "surface: drop interpolate_to/pca")  # fmt: skip

        gx = _grid(x, "x grid")
        gy = None if y is None else _grid(y, "y grid")
        ev = EvalSpec(split=split, subset=subset, bn=bn, precision=precision)
        random_dir = DirectionSpec(kind="random", seed=seed, normalization=norm, ignore=ignore)
        y_dir = DirectionSpec(kind="random", seed=seed + 1, normalization=norm, ignore=ignore)
        if interpolate_to is not None:
            xd = DirectionSpec(kind="interpolation", seed=None, normalization="none",
                               ignore="none", target="states")  # fmt: skip
            spec = SurfaceSpec(model=model, other_model=interpolate_to, x=gx, y=gy,
                               epoch=epoch, x_direction=xd,
                               y_direction=random_dir if gy else None, evaluation=ev)  # fmt: skip
        elif pca:
            xd = DirectionSpec(kind="pca", seed=None, normalization="none", ignore=ignore)
            spec = SurfaceSpec(model=model, x=gx, y=gy, epoch=epoch, x_direction=xd, evaluation=ev)  # fmt: skip
        else:
            spec = SurfaceSpec(model=model, x=gx, y=gy, epoch=epoch, x_direction=random_dir,
                               y_direction=y_dir if gy else None, evaluation=ev,
                               x_hessian=x_hessian, y_hessian=y_hessian, retrain=retrain,
                               save=save)  # fmt: skip
        with self.db.session() as session:
            row = find_model(session, model)
            study = Study.find_or_raise_by_id(session, row.study_id)
            surface, _ = add_surface(session, study, spec)
            return surface.id

    def enqueue_hessian(
        self, model: int | str, *, study: str | None = None, **fields: Any
    ) -> list[int]:
        """Hessian spectra of ``model``, as `tracker enqueue hessian`: the fields of
        ``tracker.curvature.rows.HessianRequest`` (``top_k``, ``trace``, ``density``,
        ``per_layer``, ``epochs`` "all" or a list, ``retrains`` "all" or ids with ``saves``,
        ``subset``, ``probes``, ``trace_method``, ...), checked the same way (a finite loss
        at weights that exist); the spectra ids, one per (checkpoint or save, measure)."""
        from tracker.curvature.rows import HessianRequest, check_request, enqueue_request

        for key in ("epochs", "retrains", "saves"):
            if isinstance(fields.get(key), list | tuple):
                fields[key] = tuple(fields[key])
        if fields.get("saves") == "last":
            fields["saves"] = None
        try:
            req = HessianRequest(model=model, **fields)
        except TypeError as err:
            raise SpecError(f"enqueue_hessian: {err}: use the fields of HessianRequest") from None
        check_request(req)
        if req.per_layer and not req.trace:
            raise SpecError("per_layer splits the trace by layer: add trace=True")
        with self.db.session() as session:
            return enqueue_request(session, req, study, self.settings.store_url).ids

    def enqueue_study(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """A study file (TOML), as `tracker enqueue FILE.toml`; the counts it added."""
        from tracker.studyfile import enqueue_study

        return enqueue_study(self.db, str(Path(path)), self.settings.store_url)

    def work(self, workers: int | None = 1, *, study: str | None = None, progress: bool = False) -> Any:  # fmt: skip
        """Drain the queue with local Dask workers (as `tracker work`); the run's summary."""
        from tracker._work import work

        return work(self.settings, workers=workers, study=study, progress=progress)

    # ------------------------------------------------------------------ reading

    def models(self, study: str | None = None) -> Any:
        """The models (trained or imported) with their hyperparameters, metrics and provenance."""
        import pandas as pd

        from tracker._provenance import describe
        from tracker._schema import Model, Study, Task

        query = (
            sa.select(Model, Study.name, Task.provenance)
            .join(Study, Study.id == Model.study_id)
            .outerjoin(Task, Task.id == Model.task_id)
            .order_by(Model.id)
        )
        if study is not None:
            query = query.where(Study.name == study)
        rows = []
        with self.db.session() as session:
            for m, study_name, prov in session.execute(query).all():
                rows.append({
                    "id": m.id, "study": study_name, "name": m.name,
                    "architecture": m.architecture, "dataset": m.dataset,
                    "imported": m.optimizer == "imported", "optimizer": m.optimizer,
                    "lr": m.lr, "batch_size": m.batch_size, "weight_decay": m.weight_decay,
                    "epochs": m.epochs, "seed": m.seed, "train_loss": m.train_loss,
                    "train_acc": m.train_acc, "test_loss": m.test_loss, "test_acc": m.test_acc,
                    **{f"arch.{k}": v for k, v in (m.arch_config or {}).items()},
                    "provenance": describe(prov) if prov else None,
                })  # fmt: skip
        return pd.DataFrame(rows)

    def surfaces(self, study: str | None = None) -> Any:
        """The surfaces with their grid, evaluation, summaries and their model's columns."""
        import pandas as pd

        from tracker._schema import Checkpoint, Direction, Model, Study, Surface

        query = (
            sa.select(Surface, Study.name, Checkpoint.model_id, Checkpoint.epoch, Direction.kind,
                      Model.architecture, Model.dataset, Model.name)
            .join(Study, Study.id == Surface.study_id)
            .outerjoin(Checkpoint, Checkpoint.id == Surface.checkpoint_id)
            .outerjoin(Model, Model.id == Checkpoint.model_id)
            .outerjoin(Direction, Direction.id == Surface.x_direction_id)
            .order_by(Surface.id)
        )  # fmt: skip
        if study is not None:
            query = query.where(Study.name == study)
        rows = []
        with self.db.session() as session:
            from tracker.surfaces.results import surface_provenance

            for s, study_name, mid, epoch, kind, arch, dataset, mname in session.execute(query).all():  # fmt: skip
                engine = (s.eval_config or {}).get("engine", {})
                rows.append({
                    "id": s.id, "study": study_name, "model_id": mid, "model": mname,
                    "architecture": arch, "dataset": dataset, "epoch": epoch,
                    "direction": kind or "imported", "nx": s.nx, "ny": s.ny,
                    "split": s.split, "bn_mode": s.bn_mode, "centre_loss": s.centre_loss,
                    "min_loss": s.min_loss, "rise_r050": s.rise_r050,
                    "flatness_width": s.flatness_width, "complete": s.completed_at is not None,
                    "first_affine": engine.get("first_affine"),
                    "provenance": surface_provenance(session, s),
                })  # fmt: skip
        return pd.DataFrame(rows)

    def spectra(self, study: str | None = None) -> Any:
        """The Hessian spectra with their settings, results and state, one row per measure
        (``retrain_id``/``save_index`` set for a retrained network's)."""
        import pandas as pd

        from tracker._schema import HessianSpectrum, Model, Study, Task

        h = HessianSpectrum
        query = (
            sa.select(h, Study.name, Model.name, Task.status)
            .join(Study, Study.id == h.study_id)
            .join(Model, Model.id == h.model_id)
            .outerjoin(Task, Task.id == h.task_id)
            .order_by(h.id)
        )
        if study is not None:
            query = query.where(Study.name == study)
        columns = ("id", "model_id", "epoch", "retrain_id", "save_index", "measure", "split",
                   "subset_size", "bn_mode", "loss", "seed", "top_k", "top_eigenvalue",
                   "eigenvalues", "iterations", "converged", "trace", "trace_stderr",
                   "trace_probes", "layer_traces", "loss_value", "hvp_count", "seconds")  # fmt: skip
        rows = []
        with self.db.session() as session:
            for spectrum, study_name, model_name, status in session.execute(query).all():
                rows.append({
                    **{c: getattr(spectrum, c) for c in columns}, "study": study_name,
                    "model": model_name, "status": "done" if status is None else status,
                    "complete": spectrum.completed_at is not None,
                })  # fmt: skip
        return pd.DataFrame(rows)

    def surface(self, surface_id: int, group: int = 0) -> Any:
        """A finished surface's loss grid with its coordinates: an ``xarray.DataArray`` (dims
        y, x; accuracy and the row's facts in ``attrs``) when xarray is installed, else a dict
        of numpy arrays ``loss``, ``acc``, ``x`` (and ``y``)."""
        from tracker._store import ArrayStore
        from tracker.surfaces.results import load_surface

        with self.db.session() as session:
            data = load_surface(session, ArrayStore(self.settings.store_url), surface_id)
            loss, acc = data.loss[group], data.acc[group]
            attrs = {"surface_id": surface_id, "label": data.label, "split": data.surface.split,
                     "bn_mode": data.surface.bn_mode, "epoch": data.epoch,
                     "model_id": data.model.id if data.model else None}  # fmt: skip
        try:
            import xarray as xr
        except ImportError:
            out: dict[str, Any] = {"loss": loss if data.is_2d else loss[0], "x": data.xs,
                                   "acc": acc if data.is_2d else acc[0], **attrs}  # fmt: skip
            if data.is_2d:
                out["y"] = data.ys
            return out
        if data.is_2d:
            da = xr.DataArray(loss, dims=("y", "x"), coords={"y": data.ys, "x": data.xs},
                              name="loss", attrs=attrs)  # fmt: skip
        else:
            da = xr.DataArray(loss[0], dims=("x",), coords={"x": data.xs}, name="loss",
                              attrs=attrs)  # fmt: skip
        da.attrs["acc"] = acc if data.is_2d else acc[0]
        return da


def _data_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """A data config as the CLI writes it: a relative root made absolute."""
    out = {"seed": 0, **(config or {})}
    if out.get("root"):
        out["root"] = str(Path(out["root"]).absolute())
    return out


__all__: Sequence[str] = ("Client", "connect")
