"""SQL views for people, and the schema reference generated from the ORM.

The views (created by migration 0009_measures, the same columns on SQLite and PostgreSQL) join
what a meta-question needs into one row: ``v_models`` (hyperparameters, final metrics and the
generalisation targets), ``v_surfaces`` (a surface with its model's hyperparameters and
everything that defines it), ``v_measures`` (one measure of one checkpoint with its definition
and its model's targets). ``VIEW_DOCS`` documents each column; PostgreSQL gets them as
``COMMENT ON``, SQLite has no comments, so ``docs/schema.md`` (``schema_reference()``, tested to
be current: ``python -m tracker._views > docs/schema.md``) is where both are written down.
"""

from __future__ import annotations

import sqlalchemy as sa

from tracker._schema import Base

GAP_DOC = "generalisation gap: train_acc - test_acc (larger = generalises worse)"
LOSS_GAP_DOC = "loss gap: test_loss - train_loss (larger = generalises worse)"

_MODEL_COLUMNS: dict[str, str] = {
    "model_id": "models.id",
    "study": "studies.name of the model's study",
    "model_name": "models.name (from the study file; may be NULL)",
    "architecture": "architecture name (mlp, resnet56, ...)",
    "dataset": "data set name",
    "optimizer": "sgd or adam",
    "lr": "learning rate",
    "momentum": "momentum",
    "weight_decay": "weight decay",
    "batch_size": "training batch size",
    "epochs": "training epochs (the final checkpoint's epoch)",
    "model_seed": "the model's training seed (initialisation and data order)",
    "label_corruption": "fraction of training labels replaced at random",
}

VIEW_DOCS: dict[str, tuple[str, dict[str, str]]] = {
    "v_models": (
        "One row per model: hyperparameters, final metrics and the generalisation targets.",
        {
            **_MODEL_COLUMNS,
            "train_loss": "final training loss (NULL if NaN/infinite: see diverged)",
            "train_acc": "final training accuracy, a fraction",
            "test_loss": "final test loss",
            "test_acc": "final test accuracy, a fraction",
            "gap": GAP_DOC,
            "loss_gap": LOSS_GAP_DOC,
            "diverged": "a final loss was NaN or infinite (stored as NULL)",
            "mlflow_run_id": "the model's MLflow training run",
        },
    ),
    "v_surfaces": (
        "One row per surface centred on a trained checkpoint (surfaces around retrained "
        "networks are left out): the model's hyperparameters and everything that defines the "
        "surface.",
        {
            "surface_id": "surfaces.id",
            **_MODEL_COLUMNS,
            "epoch": "the centre checkpoint's epoch",
            "direction_kind": "random, interpolation, pca or hessian (the x direction)",
            "normalization": "filter, layer, model or none (the x direction)",
            "ignore": "biasbn (biases and BN weights not moved) or none",
            "direction_target": "weights (parameters only) or states (BN statistics too)",
            "x_seed": "seed of the x direction (NULL for interpolation and PCA)",
            "y_seed": "seed of the y direction (NULL for 1D)",
            "dims": "1 or 2",
            "x_min": "x grid start",
            "x_max": "x grid end",
            "nx": "x grid points",
            "ny": "y grid points (NULL for 1D)",
            "split": "evaluation split: train, test or val",
            "subset_size": "fixed seeded evaluation subset (NULL: the whole split)",
            "n_minibatches": "grids per minibatch (NULL: one grid)",
            "minibatch_size": "minibatch size of per-minibatch grids",
            "bn_mode": "BatchNorm during evaluation: eval, train or recompute",
            "precision": "fp32, tf32 or bf16",
            "centre_loss": "loss at the centre",
            "rise_r025": "mean loss rise on the circle of filter-normalised radius 0.25",
            "rise_r050": "mean loss rise at radius 0.5",
            "rise_r100": "mean loss rise at radius 1.0",
            "flatness_width": "distance to the nearest point with loss >= centre + 0.1",
            "completed": "1 when all tiles are done and the summary columns are filled",
        },
    ),
    "v_measures": (
        "One row per (model checkpoint, measure definition): the mean over direction seeds, its "
        "standard error and seed count, with the model's hyperparameters and targets. Correlate "
        "only rows of one definition_id and one epoch.",
        {
            "measure_id": "measures.id",
            **_MODEL_COLUMNS,
            "epoch": "the checkpoint's epoch",
            "is_final": "1 when the checkpoint is the model's last epoch",
            "definition_id": "measure_definitions.id: group by it (and epoch) before correlating",
            "definition": "the whole definition spelled out",
            "family": "surface, persistence, weights or curvature",
            "kind": "rise_r050, flatness_width, h0_total_p1, weight_norm, ...",
            "direction_kind": "random, interpolation or pca (NULL when no direction)",
            "normalization": "direction normalisation",
            "dims": "surface dimensions (1 or 2)",
            "split": "evaluation split",
            "bn_mode": "BatchNorm mode during evaluation",
            "precision": "evaluation precision",
            "value": "mean over direction seeds (NULL if every seed diverged)",
            "standard_error": "standard error of the mean across seeds (NULL for one seed)",
            "n_seeds": "seeds (surfaces) that went into the value",
            "n_missing": "seeds without a value (diverged, or the radius lies outside the grid), left out",
            "train_acc": "the model's final training accuracy",
            "test_acc": "the model's final test accuracy",
            "gap": GAP_DOC,
            "loss_gap": LOSS_GAP_DOC,
            "diverged": "the model's training diverged",
        },
    ),
}


def schema_reference() -> str:
    """Markdown: every table of the ORM (columns, types, keys) and every documented view."""
    out = [
        "# Schema reference",
        "",
        "Generated from the ORM (`tracker/_schema.py`) and `tracker/_views.py` by",
        "`python -m tracker._views > docs/schema.md`; `tests/meta/test_views.py` checks it is",
        "current. Floating-point columns hold NULL for NaN and infinities on both backends.",
        "",
        "## Tables",
    ]
    classes = {m.class_.__tablename__: m.class_ for m in Base.registry.mappers}
    for name in sorted(Base.metadata.tables):
        table = Base.metadata.tables[name]
        doc = (classes[name].__doc__ or "").strip().split("\n\n")[0] if name in classes else ""
        out += ["", f"### {name}", "", " ".join(doc.split()), "",
                "| column | type | null | references |", "|---|---|---|---|"]  # fmt: skip
        for col in table.columns:
            refs = ", ".join(fk.target_fullname for fk in col.foreign_keys)
            kind = "float (non-finite: NULL)" if isinstance(col.type, sa.types.TypeDecorator) else _type_name(col.type)
            key = " (primary key)" if col.primary_key else ""
            out.append(f"| {col.name}{key} | {kind} | {'yes' if col.nullable else 'no'} | {refs} |")
    out += ["", "## Views", ""]
    for name, (doc, columns) in VIEW_DOCS.items():
        out += [f"### {name}", "", doc, "", "| column | meaning |", "|---|---|"]
        out += [f"| {col} | {text} |" for col, text in columns.items()]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _type_name(type_: sa.types.TypeEngine[object]) -> str:
    if isinstance(type_, sa.Enum):
        return "enum: " + ", ".join(type_.enums)
    if isinstance(type_, sa.JSON):
        return "JSON"
    return type(type_).__name__.lower()


if __name__ == "__main__":
    print(schema_reference(), end="")
