"""`tracker demo`: the shipped demo study (tracker/studies/demo.toml) from enqueue to summary.

A top-layer module like ``tracker.studyfile``: it enqueues a study file (training and surfaces
together), drains it, plots every surface and prints a sharpness table. Heavy imports stay
inside the command.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from tracker._cliutil import settings
from tracker.studyfile import demo_study, enqueue_study
from tracker.surfaces.cli import plot_surface_files


def cmd_demo(args: argparse.Namespace) -> int:
    """Train two MLPs on digits, compute their surfaces, plot them, print a summary."""
    import sqlalchemy as sa

    from tracker._cliutil import table as _table
    from tracker._db import open_database
    from tracker._exceptions import SpecError
    from tracker._migrate import upgrade
    from tracker._schema import Model
    from tracker._store import ArrayStore
    from tracker._work import work
    from tracker.surfaces.results import load_surface, study_surfaces

    settings_ = settings(args)
    settings_.home.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    db = open_database(settings_.db_url, check=False)
    upgrade(db, "head")
    spec_path = settings_.home / "demo.toml"
    spec_path.write_text(demo_study())
    counts = enqueue_study(db, spec_path, settings_.store_url)
    print(
        f"[demo] study 'demo' from {spec_path}: {counts['models']} models, {counts['surfaces']} surfaces"
    )
    summary = work(settings_, workers=args.workers, scheduler=None, cuda=False, forever=False,
                   plugins=[], kinds=None, study="demo", lease_seconds=60.0,
                   progress=not args.no_progress)  # fmt: skip
    if summary.failed:
        raise SpecError(
            f"{summary.failed} demo task(s) failed: `tracker status --study demo` shows why"
        )
    store = ArrayStore(settings_.store_url)
    out = settings_.home / "plots" / "demo"
    rows = []
    plot_paths: list[Path] = []
    with db.session() as session:
        surfaces = study_surfaces(session, counts["study_id"])
        sharp: dict[int, dict[str, Any]] = {}
        for s in surfaces:
            data = load_surface(session, store, s.id)
            plot_paths += plot_surface_files(data, out, ["contour", "contourf", "heatmap", "3d"])
            if data.x_direction.kind == "random":
                key = "2d" if data.is_2d else "1d"
                sharp.setdefault(data.model.id, {})[key] = s
        models = session.scalars(sa.select(Model).where(Model.study_id == counts["study_id"]).order_by(Model.id)).all()  # fmt: skip
        for m in models:
            s1, s2 = sharp.get(m.id, {}).get("1d"), sharp.get(m.id, {}).get("2d")
            rows.append([
                m.name, m.batch_size, _acc(m.train_acc), _acc(m.test_acc),
                f"{m.gap:+.3f}" if m.gap is not None else "diverged" if m.diverged else "",
                f"{s1.rise_r050:.4f}" if s1 and s1.rise_r050 is not None else "",
                f"{s2.rise_r050:.4f}" if s2 and s2.rise_r050 is not None else "",
                f"{s2.flatness_width:.3f}" if s2 and s2.flatness_width is not None else "",
                m.mlflow_run_id[:12] if m.mlflow_run_id else "",
            ])  # fmt: skip
    print()
    print(_table(["model", "batch", "train acc", "test acc", "gap", "rise@0.5 1D",
                  "rise@0.5 2D", "flat width", "mlflow run"], rows))  # fmt: skip
    print()
    print("gap: train acc - test acc (larger = generalises worse; the sign used everywhere)")
    print("sharpness: mean loss rise at filter-normalised radius 0.5 (larger = sharper);")
    print("flat width: radius within which the 2D loss stays below centre + 0.1")
    print(f"plots ({len(plot_paths)} files): {out}")
    print(f"MLflow UI: mlflow ui --backend-store-uri {settings_.mlflow_uri}  (then open http://127.0.0.1:5000)")  # fmt: skip
    print(f"SQL: sqlite3 {settings_.db_url.removeprefix('sqlite:///')} 'select * from surfaces'")
    print(f"demo finished in {time.monotonic() - t0:.0f} s")
    return 0


def _acc(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
