"""The SQL schema: one table per kind of result, one queue table for every kind of work.

Every piece of work (a training run, a surface tile, a retrain, an analysis) is a row of
``tasks``; the result tables point at the task that produces them. Arrays live in Zarr; rows
hold references to them through ``arrays``. The schema is created only by the Alembic
migrations in ``migrations/``; a test keeps them equal to this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    declared_attr,
    mapped_column,
    relationship,
)

from tracker._exceptions import NotFound

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# waiting: some dependency is not done yet; pending: claimable.
TASK_STATUSES = ("waiting", "pending", "running", "done", "failed")
DIRECTION_KINDS = ("random", "interpolation", "pca", "hessian")
HESSIAN_MEASURES = ("eigen", "trace", "density")


class Real(sa.types.TypeDecorator[float]):
    """A double where NaN and infinities are stored as NULL, on both backends.

    SQLite cannot store a NaN as a number (it used to be the text 'NaN', which ``avg()`` counts
    as 0), and PostgreSQL's NaN sorts above every number and poisons ``avg()``; NULL is what SQL
    aggregates skip. Where divergence matters a flag column says so (``models.diverged``;
    ``measures.n_missing`` counts the seeds left out).
    """

    impl = sa.Double
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        value = float(value)
        return value if math.isfinite(value) else None

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> float | None:
        if value is None:
            return None
        return float(value)


def finite_or_none(value: float | None) -> float | None:
    """``value`` if it is a finite number, else None (what a Real column stores)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTCDateTime = sa.DateTime(timezone=True)


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        float: Real(),
        datetime: UTCDateTime,
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }

    # What a NotFound message calls a row of this table, and where the user finds the ids.
    noun: ClassVar[str] = ""
    find_hint: ClassVar[str] = "`tracker show study NAME` lists them"

    @classmethod
    def find_or_raise_by_id(
        cls, session: Session, row_id: int | None, *, for_update: bool = False
    ) -> Self:
        """The row with this id; an unknown id (or none) is a NotFound that names the fix."""
        row = None if row_id is None else session.get(cls, row_id, with_for_update=for_update)
        if row is None:
            noun = cls.noun or cls.__tablename__.rstrip("s").replace("_", " ")
            raise NotFound(f"unknown {noun} id {row_id}: {cls.find_hint}")
        return row


class _Created:
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.current_timestamp())


class WorkRow(_Created):
    """Columns shared by rows that a spec creates and a task fills in."""

    @declared_attr
    def study_id(cls) -> Mapped[int]:
        return mapped_column(sa.ForeignKey("studies.id"), index=True)

    @declared_attr
    def task_id(cls) -> Mapped[int | None]:
        return mapped_column(sa.ForeignKey("tasks.id", ondelete="SET NULL"), index=True)

    spec_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)


class _SplitMetrics:
    """Loss and accuracy on each split, as real columns for SQL filters."""

    train_loss: Mapped[float | None]
    train_acc: Mapped[float | None]
    val_loss: Mapped[float | None]
    val_acc: Mapped[float | None]
    test_loss: Mapped[float | None]
    test_acc: Mapped[float | None]


class _Tagged:
    """Free-form labels and a note a user attaches to a row (`tracker tag`)."""

    tags: Mapped[list[Any] | None]
    note: Mapped[str | None] = mapped_column(sa.Text)


class Study(_Tagged, _Created, Base):
    """A label that groups work for comparison."""

    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    description: Mapped[str | None] = mapped_column(sa.Text)


class Task(_Created, Base):
    """One claimable unit of work, whatever its kind; the queue is this table."""

    __tablename__ = "tasks"
    noun = "task"
    find_hint = "`tracker status` lists the studies and tasks"
    __table_args__ = (
        # The claim reads this index in order and stops at the first unlocked row.
        sa.Index("ix_tasks_claim", "status", "priority", "id"),
        sa.Index("ix_tasks_study_status", "study_id", "status"),
        sa.CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
        sa.CheckConstraint("max_attempts >= 1", name="max_attempts_positive"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(sa.ForeignKey("studies.id"))
    kind: Mapped[str] = mapped_column(sa.String(64), index=True)
    spec_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(_enum("task_status", *TASK_STATUSES), default="pending")
    # Lower runs first (FIFO within a priority); negative values jump the queue.
    priority: Mapped[int] = mapped_column(default=0)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    # Leases lost because the worker died: reclaimed without using an attempt (own budget).
    lease_losses: Mapped[int] = mapped_column(default=0, server_default="0")
    # Work that must run on a GPU (issue 17): workers started without --cuda never claim it.
    needs_gpu: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    lease_token: Mapped[str | None] = mapped_column(sa.String(36))
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(sa.String(200))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    result: Mapped[dict[str, Any] | None]
    # Where and with what the task computed (tracker._provenance), written when it is done.
    provenance: Mapped[dict[str, Any] | None]

    study: Mapped[Study] = relationship()


class TaskDependency(Base):
    """``task_id`` may run only once ``depends_on_id`` is done."""

    __tablename__ = "task_dependencies"
    task_id: Mapped[int] = mapped_column(
        sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    depends_on_id: Mapped[int] = mapped_column(
        sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class TaskBlock(Base):
    """The block ``[start, stop)`` of the shared array at ``path`` that a task wrote.

    Tasks that fill parts of one array (surface tiles) own whole chunks; this row says whose
    they are, so a damaged chunk is recomputed by the task that wrote it.
    """

    __tablename__ = "task_blocks"
    __table_args__ = (sa.UniqueConstraint("task_id", "path"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(sa.String(500), index=True)
    start: Mapped[list[Any]]
    stop: Mapped[list[Any]]


class ArrayRef(_Created, Base):
    """A Zarr array in the store: its path, shape, dtype and chunking, and the task that wrote it."""

    __tablename__ = "arrays"
    noun = "array"
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(sa.String(500), unique=True)
    shape: Mapped[list[Any]]
    dtype: Mapped[str] = mapped_column(sa.String(32))
    chunks: Mapped[list[Any]]
    task_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("tasks.id", ondelete="SET NULL"), index=True
    )


def _array_fk() -> Mapped[int | None]:
    return mapped_column(sa.ForeignKey("arrays.id", ondelete="SET NULL"))


class Model(_Tagged, WorkRow, Base):
    """A network to train: architecture, data set and optimiser settings as real columns."""

    __tablename__ = "models"
    noun = "model"
    find_hint = "`tracker show study NAME` lists a study's models"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str | None] = mapped_column(sa.String(200))
    architecture: Mapped[str] = mapped_column(sa.String(64), index=True)
    arch_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset: Mapped[str] = mapped_column(sa.String(64), index=True)
    dataset_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    optimizer: Mapped[str] = mapped_column(sa.String(16))
    lr: Mapped[float]
    momentum: Mapped[float] = mapped_column(default=0.0)
    weight_decay: Mapped[float] = mapped_column(default=0.0)
    batch_size: Mapped[int] = mapped_column(index=True)
    epochs: Mapped[int]
    seed: Mapped[int]
    label_corruption: Mapped[float] = mapped_column(default=0.0)
    lr_schedule: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    train_loss: Mapped[float | None]
    train_acc: Mapped[float | None]
    test_loss: Mapped[float | None]
    test_acc: Mapped[float | None]
    # The generalisation targets, one sign convention everywhere (larger = generalises worse):
    # gap = train_acc - test_acc, loss_gap = test_loss - train_loss.
    gap: Mapped[float | None]
    loss_gap: Mapped[float | None]
    # A final loss was NaN or infinite (stored as NULL): training diverged. (A NaN accuracy is
    # a regression task's, not divergence.)
    diverged: Mapped[bool] = mapped_column(default=False, server_default=sa.false())

    def record_final(self, metrics: Mapping[str, float | None]) -> None:
        """Set the final metrics, the generalisation targets and the divergence flag."""
        values = {k: metrics.get(k) for k in ("train_loss", "train_acc", "test_loss", "test_acc")}
        losses = (values["train_loss"], values["test_loss"])
        self.diverged = any(v is not None and not math.isfinite(float(v)) for v in losses)
        for key, value in values.items():
            setattr(self, key, finite_or_none(value))
        self.gap = _difference(self.train_acc, self.test_acc)
        self.loss_gap = _difference(self.test_loss, self.train_loss)


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


class Checkpoint(_SplitMetrics, _Created, Base):
    """A model's parameters (and buffers) at one epoch, with its metrics."""

    __tablename__ = "checkpoints"
    __table_args__ = (sa.UniqueConstraint("model_id", "epoch"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"))
    epoch: Mapped[int]
    layout: Mapped[list[Any]] = mapped_column(default=list)
    array_id: Mapped[int | None] = _array_fk()


class Direction(WorkRow, Base):
    """A direction in parameter space: random, interpolation between checkpoints, PCA, or a
    Hessian eigenvector (unit length, normalisation 'none': surface coordinates along it are
    plain distances in weight space)."""

    __tablename__ = "directions"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id"), index=True)
    kind: Mapped[str] = mapped_column(_enum("direction_kind", *DIRECTION_KINDS))
    seed: Mapped[int | None]
    normalization: Mapped[str] = mapped_column(
        _enum("direction_norm", "filter", "layer", "model", "none", "filter-std")
    )
    ignore: Mapped[str] = mapped_column(_enum("direction_ignore", "biasbn", "none"))
    target: Mapped[str] = mapped_column(_enum("direction_target", "weights", "states"))
    checkpoint_a_id: Mapped[int | None] = mapped_column(sa.ForeignKey("checkpoints.id"))
    checkpoint_b_id: Mapped[int | None] = mapped_column(sa.ForeignKey("checkpoints.id"))
    pca_component: Mapped[int | None]
    explained_variance: Mapped[float | None]
    array_id: Mapped[int | None] = _array_fk()
    # PCA x direction: the checkpoints' (epoch, x, y) on the plane.
    projection_array_id: Mapped[int | None] = _array_fk()
    # Hessian eigenvector: its index in the spectrum's top-k and the spectrum row.
    eigen_index: Mapped[int | None]
    hessian_spectrum_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("hessian_spectra.id"), index=True
    )


class Surface(WorkRow, Base):
    """A 1D or 2D grid of loss (and accuracy) values around a centre checkpoint, or around a
    save of a retrain's trajectory (the retrained network).

    A retrained network's surface (``retrain_id`` and ``save_index`` set) runs along the
    Hessian eigenvectors of that save; ``checkpoint_id`` is then the checkpoint the retrain
    jumped from (whose layout the trajectory has), and the surface is not its checkpoint's
    (``v_surfaces`` and the meta-analysis leave it out).
    """

    __tablename__ = "surfaces"
    noun = "surface"
    find_hint = "`tracker show study NAME` lists the surfaces"
    __table_args__ = (
        sa.CheckConstraint("nx >= 1", name="nx_positive"),
        sa.CheckConstraint("ny IS NULL OR ny >= 1", name="ny_positive"),
        sa.CheckConstraint(
            "(retrain_id IS NULL AND save_index IS NULL) OR "
            "(retrain_id IS NOT NULL AND save_index IS NOT NULL AND save_index >= 0)",
            name="retrain_point",
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    # Both empty only for a surface imported from a file (``source``).
    checkpoint_id: Mapped[int | None] = mapped_column(sa.ForeignKey("checkpoints.id"), index=True)
    retrain_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("retrains.id", ondelete="CASCADE"), index=True
    )
    save_index: Mapped[int | None]
    x_direction_id: Mapped[int | None] = mapped_column(sa.ForeignKey("directions.id"))
    y_direction_id: Mapped[int | None] = mapped_column(sa.ForeignKey("directions.id"))
    x_min: Mapped[float]
    x_max: Mapped[float]
    nx: Mapped[int]
    y_min: Mapped[float | None]
    y_max: Mapped[float | None]
    ny: Mapped[int | None]
    tile_nx: Mapped[int]
    tile_ny: Mapped[int | None]
    split: Mapped[str] = mapped_column(sa.String(16))
    subset_size: Mapped[int | None]
    minibatch_size: Mapped[int | None]
    n_minibatches: Mapped[int | None]
    bn_mode: Mapped[str] = mapped_column(_enum("bn_mode", "eval", "train", "recompute"))
    metrics: Mapped[list[Any]] = mapped_column(default=list)
    eval_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    loss_array_id: Mapped[int | None] = _array_fk()
    acc_array_id: Mapped[int | None] = _array_fk()
    completed_at: Mapped[datetime | None]
    centre_loss: Mapped[float | None]
    min_loss: Mapped[float | None]
    min_x: Mapped[float | None]
    min_y: Mapped[float | None]
    rise_r025: Mapped[float | None]
    rise_r050: Mapped[float | None]
    rise_r100: Mapped[float | None]
    flatness_width: Mapped[float | None]
    source: Mapped[str | None] = mapped_column(sa.String(500))
    # Goldstein's min/max Hessian eigenvalue map: per grid point, like loss and acc.
    curvature: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    lambda_min_array_id: Mapped[int | None] = _array_fk()
    lambda_max_array_id: Mapped[int | None] = _array_fk()
    lambda_ratio_array_id: Mapped[int | None] = _array_fk()
    # Seed 001's arrow: per group, the loss gradient at the centre on each direction,
    # g . d_k / |d_k| ([G][ndim]; null where not finite).
    centre_gradient: Mapped[list[Any] | None]


class Tile(Base):
    """A rectangle of a surface's grid [ix0, ix1) x [iy0, iy1), owning whole Zarr chunks."""

    __tablename__ = "tiles"
    __table_args__ = (sa.UniqueConstraint("surface_id", "ix0", "iy0"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    surface_id: Mapped[int] = mapped_column(sa.ForeignKey("surfaces.id", ondelete="CASCADE"))
    ix0: Mapped[int]
    ix1: Mapped[int]
    iy0: Mapped[int]
    iy1: Mapped[int]
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id"), unique=True)


class Retrain(WorkRow, Base):
    """A jump from a trained model along a direction, then retraining at a constant rate."""

    __tablename__ = "retrains"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id"), index=True)
    checkpoint_id: Mapped[int] = mapped_column(sa.ForeignKey("checkpoints.id"))
    direction_id: Mapped[int | None] = mapped_column(sa.ForeignKey("directions.id"))
    seed: Mapped[int]
    step_size: Mapped[float]
    epochs: Mapped[int]
    lr: Mapped[float]
    momentum: Mapped[float]
    weight_decay: Mapped[float]
    batch_size: Mapped[int]
    saves_per_epoch: Mapped[int] = mapped_column(default=1)
    augment: Mapped[bool] = mapped_column(default=False)
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    trajectory_array_id: Mapped[int | None] = _array_fk()


class TrajectoryPoint(_SplitMetrics, Base):
    """One saved point of a retrain trajectory with its metrics on every split."""

    __tablename__ = "trajectory_points"
    __table_args__ = (sa.UniqueConstraint("retrain_id", "save_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    retrain_id: Mapped[int] = mapped_column(sa.ForeignKey("retrains.id", ondelete="CASCADE"))
    save_index: Mapped[int]
    epoch: Mapped[float]


class Embedding(WorkRow, Base):
    """A PHATE embedding of all trajectory points of a model's retrains."""

    __tablename__ = "embeddings"
    noun = "embedding"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id"), index=True)
    method: Mapped[str] = mapped_column(sa.String(16), default="phate")
    n_samples: Mapped[int | None]
    seed: Mapped[int]
    knn_dist: Mapped[str] = mapped_column(sa.String(16), default="cosine")
    mds_dist: Mapped[str] = mapped_column(sa.String(16), default="cosine")
    n_pca: Mapped[int | None]
    t: Mapped[int | None]
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    coords_array_id: Mapped[int | None] = _array_fk()
    potential_array_id: Mapped[int | None] = _array_fk()
    order_array_id: Mapped[int | None] = _array_fk()


class PersistenceDiagram(WorkRow, Base):
    """Persistent homology of a loss-level filtration over an embedding's kNN graph."""

    __tablename__ = "persistence_diagrams"
    noun = "persistence diagram"
    id: Mapped[int] = mapped_column(primary_key=True)
    embedding_id: Mapped[int] = mapped_column(sa.ForeignKey("embeddings.id"), index=True)
    loss_name: Mapped[str] = mapped_column(sa.String(16))
    knn: Mapped[int]
    legacy: Mapped[bool] = mapped_column(default=False)
    max_dimension: Mapped[int] = mapped_column(default=2)
    diagram_array_id: Mapped[int | None] = _array_fk()
    h0_count: Mapped[int | None]
    h0_total_p1: Mapped[float | None]
    h0_total_p2: Mapped[float | None]
    h0_max: Mapped[float | None]
    h1_count: Mapped[int | None]
    h1_total_p1: Mapped[float | None]
    h1_total_p2: Mapped[float | None]
    h1_max: Mapped[float | None]


class LevelSetRun(WorkRow, Base):
    """A predictor/corrector traversal of a training-loss level set (seed 002).

    ``l0`` is the training loss after phase 1 (Adam); the ``final_*`` columns are the last
    predictor step on the level set. The trace array is [predictor steps, len(trace_fields)];
    the snapshots array holds theta (float32) before the predictor steps in ``snapshot_steps``
    (its rows beyond that list are unused). ``stop_reason``: kkt, step_cap or corrector_cap.
    """

    __tablename__ = "levelset_runs"
    noun = "level-set run"
    id: Mapped[int] = mapped_column(primary_key=True)
    setup: Mapped[str] = mapped_column(sa.String(32), index=True)
    # A traversal that starts from a tracker model's checkpoint (setup 'checkpoint', no phase 1)
    # has both; a paper setup's run trains its own network and has neither.
    model_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    checkpoint_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("checkpoints.id", ondelete="CASCADE"), index=True
    )
    run_index: Mapped[int]
    seed: Mapped[int]
    data_seed: Mapped[int | None]
    phase1_epochs: Mapped[int | None]
    max_predictor_steps: Mapped[int]
    max_corrector_steps: Mapped[int]
    eta_min: Mapped[float]
    eta_c: Mapped[float]
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    l0: Mapped[float | None]
    n_predictor_steps: Mapped[int | None]
    n_corrector_steps: Mapped[int | None]
    final_angle: Mapped[float | None]
    final_weight_norm_sq: Mapped[float | None]
    final_train_loss: Mapped[float | None]
    final_train_acc: Mapped[float | None]
    final_test_loss: Mapped[float | None]
    final_test_acc: Mapped[float | None]
    final_distance: Mapped[float | None]  # ||theta_end - theta_start||, biases included
    stop_reason: Mapped[str | None] = mapped_column(sa.String(32))
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    trace_fields: Mapped[list[Any] | None]
    snapshot_steps: Mapped[list[Any] | None]
    trace_array_id: Mapped[int | None] = _array_fk()
    snapshots_array_id: Mapped[int | None] = _array_fk()


class L2BaselineRun(WorkRow, Base):
    """The level-set setup's network trained with ``l2_lambda * sum(kernel^2)`` added (seed 002's
    baseline). Losses are data losses, without the penalty; ``final_penalty`` is the penalty."""

    __tablename__ = "l2_baseline_runs"
    noun = "L2 baseline run"
    id: Mapped[int] = mapped_column(primary_key=True)
    setup: Mapped[str] = mapped_column(sa.String(32), index=True)
    l2_lambda: Mapped[float] = mapped_column(index=True)
    run_index: Mapped[int]
    seed: Mapped[int]
    data_seed: Mapped[int]
    epochs: Mapped[int]
    lr: Mapped[float]
    batch_size: Mapped[int]
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    final_train_loss: Mapped[float | None]
    final_train_acc: Mapped[float | None]
    final_test_loss: Mapped[float | None]
    final_test_acc: Mapped[float | None]
    final_penalty: Mapped[float | None]
    final_kernel_sq_norm: Mapped[float | None]
    final_weight_norm_sq: Mapped[float | None]
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    params_array_id: Mapped[int | None] = _array_fk()


class Ensemble(WorkRow, Base):
    """DOODL3's ensemble: many small models of one setup, weights kept at an early and the
    final epoch. Trained by chunk tasks; ``task_id`` is the task that completes it.

    Setup ``models``: an ensemble of a study's trained models of one hyperparameter setting
    (its members name them), collected by ``ensemble.collect`` from their checkpoints."""

    __tablename__ = "ensembles"
    id: Mapped[int] = mapped_column(primary_key=True)
    setup: Mapped[str] = mapped_column(sa.String(32), index=True)
    n_models: Mapped[int]
    epochs: Mapped[int]
    early_epoch: Mapped[int]
    batch_size: Mapped[int]
    seed: Mapped[int]
    data_seed: Mapped[int]
    chunk_size: Mapped[int]
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    param_names: Mapped[list[Any]] = mapped_column(default=list)
    kernel_columns: Mapped[list[Any]] = mapped_column(default=list)
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    early_array_id: Mapped[int | None] = _array_fk()
    final_array_id: Mapped[int | None] = _array_fk()
    loss_array_id: Mapped[int | None] = _array_fk()
    completed_at: Mapped[datetime | None]


class EnsembleMember(Base):
    """One model of an ensemble: its test metrics (the violin plots read these)."""

    __tablename__ = "ensemble_members"
    __table_args__ = (sa.UniqueConstraint("ensemble_id", "model_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ensemble_id: Mapped[int] = mapped_column(sa.ForeignKey("ensembles.id", ondelete="CASCADE"))
    model_index: Mapped[int]
    # The tracker model this member is (an ensemble of a study's models, setup 'models'); NULL
    # for a DOODL3 ensemble's own small networks.
    model_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("models.id", ondelete="SET NULL"), index=True
    )
    accuracy: Mapped[float | None]
    balanced_accuracy: Mapped[float | None]
    entropy: Mapped[float | None]
    final_loss: Mapped[float | None]


class MorseGraph(WorkRow, Base):
    """A Morse graph of a learned map between two training checkpoints of an ensemble."""

    __tablename__ = "morse_graphs"
    noun = "Morse graph"
    find_hint = "`tracker enqueue morse --ensemble ID` creates one"
    id: Mapped[int] = mapped_column(primary_key=True)
    ensemble_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ensembles.id"), index=True)
    seed: Mapped[int | None]
    conley: Mapped[bool | None]
    seconds: Mapped[float | None]
    completed_at: Mapped[datetime | None]
    setup: Mapped[str] = mapped_column(sa.String(32), index=True)
    pick: Mapped[str] = mapped_column(sa.String(16))
    subdiv: Mapped[int]
    source: Mapped[dict[str, Any]] = mapped_column(default=dict)
    weight_names: Mapped[list[Any]] = mapped_column(default=list)
    gp_params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    n_nodes: Mapped[int | None]
    n_edges: Mapped[int | None]
    n_attractors: Mapped[int | None]
    n_nontrivial: Mapped[int | None]  # nodes with a non-trivial Conley index (None: not computed)
    graph: Mapped[dict[str, Any] | None]
    morse_sets_array_id: Mapped[int | None] = _array_fk()
    retraction_array_id: Mapped[int | None] = _array_fk()


class HessianSpectrum(WorkRow, Base):
    """One curvature measure of a checkpoint: top-k eigenvalues, the trace, or the density.

    Settings are real columns (split, subset, BN, loss, seed, tolerance), results too where
    SQL wants them (``top_eigenvalue``, ``trace``); lists are JSON (eigenvalues in the order
    asked for, largest first; per-layer traces by layer name). Non-finite values are NULL.
    Arrays: the eigenvectors [k, layout length] (also one ``directions`` row each), the Ritz
    values after each Lanczos step [iterations, k], the density's grid and values [2, bins].

    A retrained network's measure (``retrain_id`` and ``save_index`` set) is taken at that
    save of the retrain's trajectory instead; ``checkpoint_id`` and ``epoch`` are then the
    checkpoint it jumped from (whose layout the trajectory has). Its eigenvector
    ``directions`` rows name that checkpoint too; surfaces centred on the save use them.
    """

    __tablename__ = "hessian_spectra"
    noun = "Hessian spectrum"
    find_hint = "`tracker enqueue hessian --model ID` creates them"
    __table_args__ = (
        sa.CheckConstraint("top_k IS NULL OR top_k >= 1", name="top_k_positive"),
        sa.CheckConstraint(
            "(retrain_id IS NULL AND save_index IS NULL) OR "
            "(retrain_id IS NOT NULL AND save_index IS NOT NULL AND save_index >= 0)",
            name="retrain_point",
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id"), index=True)
    checkpoint_id: Mapped[int] = mapped_column(sa.ForeignKey("checkpoints.id"), index=True)
    epoch: Mapped[int]
    retrain_id: Mapped[int | None] = mapped_column(
        # use_alter: retrains -> directions -> hessian_spectra -> retrains is a cycle, which
        # SQLAlchemy's table sort breaks here (the migration adds the key after the column).
        sa.ForeignKey("retrains.id", ondelete="CASCADE", use_alter=True), index=True
    )
    save_index: Mapped[int | None]
    measure: Mapped[str] = mapped_column(_enum("hessian_measure", *HESSIAN_MEASURES), index=True)
    split: Mapped[str] = mapped_column(sa.String(16))
    subset_size: Mapped[int | None]
    subset_seed: Mapped[int] = mapped_column(default=0)
    minibatch_size: Mapped[int | None]
    n_minibatches: Mapped[int | None]
    bn_mode: Mapped[str] = mapped_column(_enum("hessian_bn_mode", "eval", "train"))
    dropout: Mapped[str] = mapped_column(sa.String(16), default="off")
    loss: Mapped[str] = mapped_column(sa.String(16))
    seed: Mapped[int]
    tol: Mapped[float]
    max_iter: Mapped[int]
    top_k: Mapped[int | None]
    per_layer: Mapped[bool] = mapped_column(default=False)
    probes: Mapped[int | None]
    density_runs: Mapped[int | None]
    density_steps: Mapped[int | None]
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Results: filled in the transaction that marks the task done.
    loss_value: Mapped[float | None]
    eigenvalues: Mapped[list[Any] | None]
    residuals: Mapped[list[Any] | None]
    iterations: Mapped[int | None]
    converged: Mapped[bool | None]
    top_eigenvalue: Mapped[float | None]
    trace: Mapped[float | None]
    trace_stderr: Mapped[float | None]
    trace_probes: Mapped[int | None]
    layer_traces: Mapped[dict[str, Any] | None]
    layer_trace_stderr: Mapped[dict[str, Any] | None]
    hvp_count: Mapped[int | None]
    seconds: Mapped[float | None]
    completed_at: Mapped[datetime | None]
    eigenvectors_array_id: Mapped[int | None] = _array_fk()
    history_array_id: Mapped[int | None] = _array_fk()
    density_array_id: Mapped[int | None] = _array_fk()


class MeasureDefinition(_Created, Base):
    """Everything that makes two measure values comparable; the meta-analysis only ever
    correlates values of one definition (and one checkpoint epoch) with one target.

    ``key`` spells the whole definition out (``rise_r050 1d random/filter/biasbn/weights
    x=-1:1:41 train subset=- mb=- bn=eval fp32``); the columns repeat its parts for SQL.
    Columns that do not apply to a family (a direction for a weight norm) are NULL.
    """

    __tablename__ = "measure_definitions"
    noun = "measure definition"
    find_hint = "`tracker meta --study NAME` lists them"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(500), unique=True)
    family: Mapped[str] = mapped_column(sa.String(32), index=True)
    kind: Mapped[str] = mapped_column(sa.String(64), index=True)
    direction_kind: Mapped[str | None] = mapped_column(sa.String(16))
    normalization: Mapped[str | None] = mapped_column(sa.String(16))
    ignore: Mapped[str | None] = mapped_column(sa.String(16))
    direction_target: Mapped[str | None] = mapped_column(sa.String(16))
    dims: Mapped[int | None]
    grid: Mapped[str | None] = mapped_column(sa.String(100))
    split: Mapped[str | None] = mapped_column(sa.String(16))
    subset_size: Mapped[int | None]
    n_minibatches: Mapped[int | None]
    minibatch_size: Mapped[int | None]
    bn_mode: Mapped[str | None] = mapped_column(sa.String(16))
    precision: Mapped[str | None] = mapped_column(sa.String(16))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Measure(_Created, Base):
    """One measure of one model checkpoint: the mean over direction seeds (or the single value),
    its standard error across seeds (NULL for one seed) and how many seeds it covers.

    Derived rows, refreshed from the result tables by the ``measures.refresh`` task a finished
    result asks for (and by ``tracker meta``), upserted on (definition, checkpoint).
    ``n_missing`` counts seeds without a value (NaN or infinite: diverged; or not reached inside
    the grid), left out of the mean.
    """

    __tablename__ = "measures"
    __table_args__ = (sa.UniqueConstraint("definition_id", "checkpoint_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(sa.ForeignKey("studies.id"), index=True)
    definition_id: Mapped[int] = mapped_column(
        sa.ForeignKey("measure_definitions.id", ondelete="CASCADE"), index=True
    )
    model_id: Mapped[int] = mapped_column(
        sa.ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    checkpoint_id: Mapped[int] = mapped_column(sa.ForeignKey("checkpoints.id", ondelete="CASCADE"))
    epoch: Mapped[int]
    value: Mapped[float | None]
    standard_error: Mapped[float | None]
    n_seeds: Mapped[int]
    n_missing: Mapped[int] = mapped_column(default=0, server_default="0")
    sources: Mapped[list[Any]] = mapped_column(default=list)
