"""Measures as rows: read a study's results into per-seed samples, one small function per
measure family, and store one ``measures`` row per (checkpoint, definition).

A ``Definition`` names everything that makes two values comparable (kind, direction kind and
normalisation, ignore policy, target, dimensions, grid, split, subset/minibatches, BN mode,
precision, and family settings such as kNN); samples that differ only in their direction seed
(or PHATE seed, or Hutchinson seed) are the seeds of one measure: its value is their mean, its
standard error std / sqrt(n). A new measure family is one more function in ``FAMILIES``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._arrays import read_array
from tracker._schema import (
    Base,
    Checkpoint,
    Direction,
    Embedding,
    Ensemble,
    EnsembleMember,
    LevelSetRun,
    Measure,
    MeasureDefinition,
    Model,
    MorseGraph,
    PersistenceDiagram,
    Retrain,
    Study,
    Surface,
    finite_or_none,
)
from tracker._store import ArrayStore

SURFACE_KINDS = ("rise_r025", "rise_r050", "rise_r100", "flatness_width")
PERSISTENCE_KINDS = ("h0_total_p1", "h0_total_p2", "h0_max", "h1_count", "h1_total_p1",
                     "h1_total_p2", "h1_max")  # fmt: skip


@dataclass(frozen=True)
class Definition:
    """What a measure value means; equal definitions are comparable values."""

    family: str
    kind: str
    direction_kind: str | None = None
    normalization: str | None = None
    ignore: str | None = None
    direction_target: str | None = None
    dims: int | None = None
    grid: str | None = None
    split: str | None = None
    subset_size: int | None = None
    n_minibatches: int | None = None
    minibatch_size: int | None = None
    bn_mode: str | None = None
    precision: str | None = None
    config: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def key(self) -> str:
        """The whole definition as one readable line (unique in ``measure_definitions``)."""
        parts = [self.kind]
        if self.dims is not None:
            parts.append(f"{self.dims}d")
        if self.direction_kind is not None:
            parts.append("/".join(str(p) for p in (self.direction_kind, self.normalization,
                                                   self.ignore, self.direction_target)))  # fmt: skip
        if self.grid is not None:
            parts.append(f"grid={self.grid}")
        if self.split is not None:
            parts.append(f"split={self.split}")
        if self.subset_size is not None:
            parts.append(f"subset={self.subset_size}")
        if self.n_minibatches is not None:
            parts.append(f"minibatches={self.n_minibatches}x{self.minibatch_size}")
        if self.bn_mode is not None:
            parts.append(f"bn={self.bn_mode}")
        if self.precision is not None:
            parts.append(self.precision)
        parts += [f"{k}={v}" for k, v in self.config]
        return " ".join(parts)

    def columns(self) -> dict[str, Any]:
        values = asdict(self)
        values["config"] = dict(self.config)
        return values


@dataclass(frozen=True)
class Sample:
    """One seed's value of a measure of a checkpoint (None: diverged or not defined)."""

    definition: Definition
    model_id: int
    checkpoint_id: int
    epoch: int
    value: float | None
    source: str


Family = Callable[[Session, ArrayStore, int], Iterable[Sample]]


# --- families ---------------------------------------------------------------------------------


def _grid_text(s: Surface) -> str:
    text = f"{s.x_min:g}:{s.x_max:g}:{s.nx}"
    if s.ny is not None:
        text += f",{s.y_min:g}:{s.y_max:g}:{s.ny}"
    return text


def surface_samples(session: Session, store: ArrayStore, study_id: int) -> Iterator[Sample]:
    """Rise at radius r and flatness width of every complete surface centred on a checkpoint;
    surfaces that differ only in their direction seeds are seeds of one measure."""
    rows = session.execute(
        sa.select(Surface, Direction, Checkpoint)
        .join(Checkpoint, Checkpoint.id == Surface.checkpoint_id)
        .join(Model, Model.id == Checkpoint.model_id)
        .join(Direction, Direction.id == Surface.x_direction_id)
        # A retrained network's surface is not its model's checkpoint's.
        .where(Model.study_id == study_id, Surface.completed_at.is_not(None),
               Surface.retrain_id.is_(None))
        .order_by(Surface.id)
    ).all()
    for s, d, c in rows:
        base = Definition(
            family="surface", kind="", direction_kind=d.kind, normalization=d.normalization,
            ignore=d.ignore, direction_target=d.target, dims=1 if s.ny is None else 2,
            grid=_grid_text(s), split=s.split, subset_size=s.subset_size,
            n_minibatches=s.n_minibatches, minibatch_size=s.minibatch_size, bn_mode=s.bn_mode,
            precision=str(s.eval_config.get("precision", "fp32")),
        )  # fmt: skip
        for kind in SURFACE_KINDS:
            yield Sample(_with_kind(base, kind), c.model_id, c.id, c.epoch,
                         getattr(s, kind), f"surface:{s.id}")  # fmt: skip


def persistence_samples(session: Session, store: ArrayStore, study_id: int) -> Iterator[Sample]:
    """Persistence summaries of each model's retrain landscape; diagrams that differ only in
    the PHATE seed are seeds of one measure. The checkpoint is the one the retrains left."""
    rows = session.execute(
        sa.select(PersistenceDiagram, Embedding)
        .join(Embedding, Embedding.id == PersistenceDiagram.embedding_id)
        .join(Model, Model.id == Embedding.model_id)
        .where(Model.study_id == study_id, PersistenceDiagram.h0_count.is_not(None))
        .order_by(PersistenceDiagram.id)
    ).all()
    for p, e in rows:
        ckpt = session.execute(
            sa.select(Checkpoint.id, Checkpoint.epoch)
            .join(Retrain, Retrain.checkpoint_id == Checkpoint.id)
            .where(Retrain.model_id == e.model_id)
            .order_by(Checkpoint.epoch.desc())
            .limit(1)
        ).first()
        if ckpt is None:
            continue
        config = (("loss", p.loss_name), ("knn", p.knn), ("legacy", p.legacy),
                  ("n_pca", e.n_pca), ("samples", e.n_samples))  # fmt: skip
        for kind in PERSISTENCE_KINDS:
            definition = Definition(family="persistence", kind=kind, config=config)
            yield Sample(definition, e.model_id, ckpt.id, ckpt.epoch, getattr(p, kind),
                         f"persistence_diagram:{p.id}")  # fmt: skip


def weight_samples(session: Session, store: ArrayStore, study_id: int) -> Iterator[Sample]:
    """The L2 norm of the parameters (buffers left out) of every checkpoint, and its distance
    from the model's epoch-0 checkpoint when that is kept (Jiang et al.'s norm measures)."""
    import numpy as np

    models = session.scalars(sa.select(Model).where(Model.study_id == study_id).order_by(Model.id))
    for model in models:
        ckpts = session.scalars(
            sa.select(Checkpoint)
            .where(Checkpoint.model_id == model.id, Checkpoint.array_id.is_not(None))
            .order_by(Checkpoint.epoch)
        ).all()
        init: np.ndarray | None = None
        for c in ckpts:
            flat = read_array(session, store, c.array_id, verify=False, what=f"checkpoint {c.id}")
            params = np.concatenate(
                [np.asarray(flat[e["offset"]: e["offset"] + e["size"]], dtype=np.float64)
                 for e in c.layout if e["kind"] == "param"] or [np.zeros(0)]
            )  # fmt: skip
            if c.epoch == 0:
                init = params
            src = f"checkpoint:{c.id}"
            yield Sample(Definition("weights", "param_norm"), model.id, c.id, c.epoch,
                         float(np.linalg.norm(params)), src)  # fmt: skip
            if init is not None and c.epoch > 0:
                yield Sample(Definition("weights", "dist_from_init"), model.id, c.id, c.epoch,
                             float(np.linalg.norm(params - init)), src)  # fmt: skip


def curvature_samples(
    session: Session, store: ArrayStore, study_id: int, table: sa.Table | None = None
) -> Iterator[Sample]:
    """Top Hessian eigenvalue, trace and per-layer traces from ``hessian_spectra`` (issue 15),
    once that table exists; rows that differ only in their seed are seeds of one measure.

    Written against the planned columns (required: id, checkpoint_id, model_id, completed_at;
    read when present: split, subset_size, n_minibatches, minibatch_size, bn_mode, loss,
    dropout, top_eigenvalue, trace, layer_traces as JSON layer name -> trace; rows with a
    ``retrain_id`` are of retrained networks, not of the checkpoint, and left out). Rows differing
    in ``seed`` (or ``subset_seed``) are seeds. ``table``: for tests, before the ORM has it.
    """
    table = table if table is not None else Base.metadata.tables.get("hessian_spectra")
    if table is None:
        return
    c = table.c
    query = (
        sa.select(table, Checkpoint.epoch.label("ckpt_epoch"))
        .join(Checkpoint, Checkpoint.id == c.checkpoint_id)
        .join(Model, Model.id == Checkpoint.model_id)
        .where(Model.study_id == study_id, c.completed_at.is_not(None))
        .order_by(c.id)
    )
    if "retrain_id" in c:  # a retrained network's curvature is not its model's checkpoint's
        query = query.where(c.retrain_id.is_(None))
    rows = session.execute(query).mappings().all()
    for r in rows:
        base = Definition(
            family="curvature", kind="", split=r.get("split"), subset_size=r.get("subset_size"),
            n_minibatches=r.get("n_minibatches"), minibatch_size=r.get("minibatch_size"),
            bn_mode=r.get("bn_mode"),
            config=tuple((k, r[k]) for k in ("loss", "dropout") if r.get(k) is not None),
        )  # fmt: skip
        values: dict[str, Any] = {
            "hessian_top_eigenvalue": r.get("top_eigenvalue"), "hessian_trace": r.get("trace"),
        }  # fmt: skip
        for layer, value in sorted((r.get("layer_traces") or {}).items()):
            values[f"hessian_layer_trace:{layer}"] = value
        for kind, value in values.items():
            if value is not None:  # a row computes one measure; the others stay NULL
                yield Sample(_with_kind(base, kind), int(r["model_id"]), int(r["checkpoint_id"]),
                             int(r["ckpt_epoch"]), value, f"hessian_spectrum:{r['id']}")  # fmt: skip


LEVELSET_CONFIG = ("max_predictor_steps", "max_corrector_steps", "eta_min", "eta_c",
                   "eta_p_max", "turn_deg", "level_tol", "kkt_tol_deg", "grad_rms_floor")  # fmt: skip


def levelset_samples(session: Session, store: ArrayStore, study_id: int) -> Iterator[Sample]:
    """Endpoint metrics of every finished level-set traversal that starts from a model
    checkpoint: measures of that checkpoint. A paper setup's run trains its own network, which
    has no ``models`` row (no generalisation target): it gives no measure.

    Kinds: the endpoint's train/test loss and accuracy (``levelset_end_*``), its weight norm
    ``levelset_end_weight_norm`` (||theta||, biases included), ``levelset_norm_ratio`` (end
    norm / start norm: how much the level set lets the norm shrink), ``levelset_distance``
    (||theta_end - theta_start||), ``levelset_test_acc_change`` / ``levelset_test_loss_change``
    (end - start) and ``levelset_steps`` (predictor steps taken). Traversals that differ only
    in the training subset's seed are seeds of one measure.
    """
    import numpy as np

    rows = session.execute(
        sa.select(LevelSetRun, Checkpoint)
        .join(Checkpoint, Checkpoint.id == LevelSetRun.checkpoint_id)
        .join(Model, Model.id == Checkpoint.model_id)
        .where(Model.study_id == study_id, LevelSetRun.trace_array_id.is_not(None))
        .order_by(LevelSetRun.id)
    ).all()
    for run, c in rows:
        cfg = run.config or {}
        config = tuple((k, cfg[k]) for k in LEVELSET_CONFIG if cfg.get(k) is not None)
        base = Definition(family="levelset", kind="", split="train",
                          subset_size=cfg.get("train_subset"), bn_mode="eval", config=config)  # fmt: skip
        fields = list(run.trace_fields or [])
        trace = np.asarray(read_array(session, store, run.trace_array_id, verify=False,
                                      what=f"level-set run {run.id}'s trace"))  # fmt: skip
        start = dict(zip(fields, trace[0].tolist(), strict=True)) if len(trace) else {}
        r_end, r_start = run.final_weight_norm_sq, start.get("weight_norm_sq")
        values = {
            "levelset_end_train_loss": run.final_train_loss,
            "levelset_end_train_acc": run.final_train_acc,
            "levelset_end_test_loss": run.final_test_loss,
            "levelset_end_test_acc": run.final_test_acc,
            "levelset_end_weight_norm": None if r_end is None else math.sqrt(max(r_end, 0.0)),
            "levelset_norm_ratio": (math.sqrt(r_end / r_start)
                                    if r_end is not None and r_start else None),
            "levelset_distance": run.final_distance,
            "levelset_test_acc_change": _change(run.final_test_acc, start.get("test_acc")),
            "levelset_test_loss_change": _change(run.final_test_loss, start.get("test_loss")),
            "levelset_steps": run.n_predictor_steps,
        }  # fmt: skip
        for kind, value in values.items():
            yield Sample(_with_kind(base, kind), c.model_id, c.id, c.epoch, value,
                         f"levelset_run:{run.id}")  # fmt: skip


def _change(end: float | None, start: float | None) -> float | None:
    return None if end is None or start is None else end - start


MORSE_KINDS = {"morse_attractors": "n_attractors", "morse_nodes": "n_nodes",
               "morse_nontrivial": "n_nontrivial"}  # fmt: skip


def morse_samples(session: Session, store: ArrayStore, study_id: int) -> Iterator[Sample]:
    """Counts of every finished Morse graph over an ensemble of the study's models: the graph
    describes the training dynamics of one hyperparameter setting (its seeds are the ensemble),
    so each count is a measure of every member model, at the final checkpoint (the map's end).

    The definition's key says so (``of=setting-members``) and names the map (early epoch ->
    the measure's epoch), the weights' pick and count, subdivision and Conley indices. Graphs
    that differ only in the GP's seed are seeds of one measure. A DOODL3 ensemble's own small
    networks are not ``models`` rows (no generalisation target): they give no measure.
    """
    rows = session.execute(
        sa.select(MorseGraph, Ensemble, Model.id)
        .join(Ensemble, Ensemble.id == MorseGraph.ensemble_id)
        .join(EnsembleMember, EnsembleMember.ensemble_id == Ensemble.id)
        .join(Model, Model.id == EnsembleMember.model_id)
        .where(Model.study_id == study_id, MorseGraph.completed_at.is_not(None))
        .order_by(MorseGraph.id, EnsembleMember.model_index)
    ).all()
    for graph, ensemble, model_id in rows:
        ckpt = session.execute(
            sa.select(Checkpoint.id, Checkpoint.epoch)
            .where(Checkpoint.model_id == model_id, Checkpoint.epoch == ensemble.epochs)
        ).first()
        if ckpt is None:
            continue
        k = int((graph.source or {}).get("weights", len(graph.weight_names or []) or 2))
        config: tuple[tuple[str, Any], ...] = (
            ("of", "setting-members"), ("early_epoch", ensemble.early_epoch),
            ("pick", graph.pick), ("weights", k), ("subdiv", graph.subdiv),
            ("conley", bool(graph.conley)),
        )  # fmt: skip
        if graph.pick == "explicit":  # the weights themselves, not a rule choosing them
            config += (("weight_names", ",".join(graph.weight_names or [])),)
        for kind, column in MORSE_KINDS.items():
            value = getattr(graph, column)
            if value is None:  # no Conley indices asked for: no non-trivial count
                continue
            yield Sample(Definition(family="morse", kind=kind, config=config), model_id,
                         ckpt.id, ckpt.epoch, float(value), f"morse_graph:{graph.id}")  # fmt: skip


FAMILIES: tuple[Family, ...] = (surface_samples, persistence_samples, weight_samples,
                                curvature_samples, levelset_samples, morse_samples)  # fmt: skip


def _with_kind(base: Definition, kind: str) -> Definition:
    return replace(base, kind=kind)


# --- aggregation and storage -----------------------------------------------------------------


@dataclass(frozen=True)
class Aggregate:
    """The seeds of one measure of one checkpoint, summarised."""

    value: float | None
    standard_error: float | None
    n_seeds: int
    n_missing: int


def aggregate(values: Iterable[float | None]) -> Aggregate:
    """Mean of the finite values, standard error std(ddof=1) / sqrt(n) for n >= 2."""
    given = list(values)
    finite = [f for f in map(finite_or_none, given) if f is not None]
    n = len(finite)
    if n == 0:
        return Aggregate(None, None, 0, len(given))
    mean = math.fsum(finite) / n
    se = None
    if n >= 2:
        var = math.fsum((v - mean) ** 2 for v in finite) / (n - 1)
        se = math.sqrt(var / n)
    return Aggregate(mean, se, n, len(given) - n)


def _insert(session: Session, table: sa.Table) -> Any:
    """An INSERT that can say ON CONFLICT, in the session's dialect (SQLite or PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def definition_ids(session: Session, definitions: Iterable[Definition]) -> dict[str, int]:
    """Definition key -> id, adding the missing ones. ``INSERT ... ON CONFLICT DO NOTHING`` in
    key order: two refreshes (of any studies) adding the same definition at once both end up
    with the one row, and take the key locks in one order, so they cannot deadlock."""
    table = cast(sa.Table, MeasureDefinition.__table__)
    wanted = {d.key: d for d in definitions}
    ids: dict[str, int] = {}
    keys = sorted(wanted)
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        found = dict(session.execute(
            sa.select(table.c.key, table.c.id).where(table.c.key.in_(chunk))
        ).tuples().all())  # fmt: skip
        missing = [k for k in chunk if k not in found]
        if missing:
            session.execute(
                _insert(session, table)
                .values([{"key": k, **wanted[k].columns()} for k in missing])
                .on_conflict_do_nothing(index_elements=["key"])
            )
            found = dict(session.execute(
                sa.select(table.c.key, table.c.id).where(table.c.key.in_(chunk))
            ).tuples().all())  # fmt: skip
        ids.update(found)
    return ids


def lock_study(session: Session, study_id: int) -> None:
    """Hold the study's row until the transaction ends: one measures refresh of a study at a
    time. PostgreSQL: ``SELECT ... FOR UPDATE``; SQLite: every transaction of the tracker
    begins with ``BEGIN IMMEDIATE`` (tracker._db), which already serialises writers."""
    session.execute(sa.select(Study.id).where(Study.id == study_id).with_for_update())


_VALUE_COLUMNS = ("study_id", "model_id", "epoch", "value", "standard_error", "n_seeds",
                  "n_missing", "sources")  # fmt: skip


def refresh_measures(
    session: Session, store: ArrayStore, study_id: int, families: Iterable[Family] = FAMILIES
) -> int:
    """Bring the study's ``measures`` rows up to date with its results; return how many there
    are. Call it in one transaction (the rows change together or not at all).

    Derived data: every (definition, checkpoint) the results give is upserted on the unique
    key (``INSERT ... ON CONFLICT DO UPDATE``: its id stays), and rows the results no longer
    give are deleted. The study's row is locked first, so two refreshes of one study (the
    ``measures.refresh`` task, `tracker meta`) run one after the other, each reading the
    results as the other left them: no duplicate, no half-written and no stale rows.
    """
    lock_study(session, study_id)
    groups: dict[tuple[str, int], list[Sample]] = {}
    for family in families:
        for sample in family(session, store, study_id):
            groups.setdefault((sample.definition.key, sample.checkpoint_id), []).append(sample)
    ids = definition_ids(session, (samples[0].definition for samples in groups.values()))
    rows = []
    for (key, checkpoint_id), samples in sorted(groups.items()):
        first = samples[0]
        agg = aggregate(s.value for s in samples)
        rows.append({
            "definition_id": ids[key], "checkpoint_id": checkpoint_id, "study_id": study_id,
            "model_id": first.model_id, "epoch": first.epoch, "value": agg.value,
            "standard_error": agg.standard_error, "n_seeds": agg.n_seeds,
            "n_missing": agg.n_missing, "sources": [s.source for s in samples],
        })  # fmt: skip
    table = cast(sa.Table, Measure.__table__)
    for start in range(0, len(rows), 500):
        insert = _insert(session, table).values(rows[start : start + 500])
        session.execute(insert.on_conflict_do_update(
            index_elements=["definition_id", "checkpoint_id"],
            set_={c: insert.excluded[c] for c in _VALUE_COLUMNS},
        ))  # fmt: skip
    keep = {(r["definition_id"], r["checkpoint_id"]) for r in rows}
    stale = [mid for mid, def_id, ckpt in session.execute(
        sa.select(table.c.id, table.c.definition_id, table.c.checkpoint_id)
        .where(table.c.study_id == study_id)
    ).tuples() if (def_id, ckpt) not in keep]  # fmt: skip
    for start in range(0, len(stale), 500):
        session.execute(table.delete().where(table.c.id.in_(stale[start : start + 500])))
    session.expire_all()  # ORM objects the caller holds see the new values
    return len(rows)
