"""The meta-analysis of a study: each measure definition (at one checkpoint epoch) ranked
against each generalisation target, shared by `tracker meta`, the dashboard and MLflow.

Only values of one definition and one epoch are ever correlated with one target. Targets use
one sign convention (larger = generalises worse): ``gap`` = train_acc - test_acc and
``loss_gap`` = test_loss - train_loss, the columns of ``models``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._schema import Measure, MeasureDefinition, Model

TARGETS = ("gap", "loss_gap")
# The hyperparameter axes of a granulated tau; the training seed only groups (never an axis).
AXES = ("batch_size", "lr", "weight_decay", "momentum", "optimizer", "architecture",
        "width", "epochs", "label_corruption", "dataset")  # fmt: skip


@dataclass(frozen=True)
class Correlation:
    """One measure definition at one epoch against one target over a study's models."""

    definition_id: int
    definition: str
    kind: str
    epoch: int
    target: str
    n_models: int
    mean_seeds: float
    tau: float
    tau_low: float
    tau_high: float
    psi: float
    psi_low: float
    psi_high: float
    psi_axes: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in self.__dict__.items()}  # fmt: skip


def hyperparameters(model: Model) -> dict[str, Any]:
    """The values a granulated tau may vary (``width``: the architecture's config as JSON)."""
    values = {axis: getattr(model, axis) for axis in AXES if axis != "width"}
    values["width"] = json.dumps(model.arch_config, sort_keys=True)
    return values


def study_models(session: Session, study_id: int) -> list[Model]:
    return list(session.scalars(sa.select(Model).where(Model.study_id == study_id).order_by(Model.id)))


def meta_table(
    session: Session,
    study_id: int,
    *,
    targets: tuple[str, ...] = TARGETS,
    draws: int = 1000,
    seed: int = 0,
    min_models: int = 3,
) -> list[Correlation]:
    """Kendall tau and granulated tau (95% bootstrap intervals, seeded) of every definition and
    epoch with at least ``min_models`` models that have both a value and the target."""
    from compute.meta import bootstrap_granulated, bootstrap_tau, granulated_tau, kendall_tau

    models = {m.id: m for m in study_models(session, study_id)}
    hp = {mid: hyperparameters(m) for mid, m in models.items()}
    varying = [a for a in AXES if len({json.dumps(h[a], default=str) for h in hp.values()}) > 1]
    rows = session.execute(
        sa.select(Measure, MeasureDefinition)
        .join(MeasureDefinition, MeasureDefinition.id == Measure.definition_id)
        .where(Measure.study_id == study_id, Measure.value.is_not(None))
        .order_by(MeasureDefinition.id, Measure.epoch, Measure.model_id)
    ).all()
    groups: dict[tuple[int, int], list[tuple[Measure, MeasureDefinition]]] = {}
    for measure, definition in rows:
        groups.setdefault((definition.id, measure.epoch), []).append((measure, definition))
    out = []
    for (def_id, epoch), members in groups.items():
        definition = members[0][1]
        for target in targets:
            pairs = [(m, getattr(models[m.model_id], target)) for m, _ in members
                     if getattr(models[m.model_id], target) is not None]  # fmt: skip
            if len(pairs) < min_models:
                continue
            values = [float(m.value) for m, _ in pairs if m.value is not None]
            goal = [float(g) for _, g in pairs]
            # Every hyperparameter (and the seed) identifies a model; only varying ones are axes.
            keys = [(*(json.dumps(hp[m.model_id][a], default=str) for a in AXES),
                     models[m.model_id].seed) for m, _ in pairs]  # fmt: skip
            axes = [AXES.index(a) for a in varying]
            gran = granulated_tau(values, goal, keys, axes)
            t_ci = bootstrap_tau(values, goal, draws=draws, seed=seed)
            p_ci = bootstrap_granulated(values, goal, keys, axes, draws=draws, seed=seed)
            out.append(Correlation(
                definition_id=def_id, definition=definition.key, kind=definition.kind,
                epoch=epoch, target=target, n_models=len(pairs),
                mean_seeds=sum(m.n_seeds for m, _ in pairs) / len(pairs),
                tau=kendall_tau(values, goal), tau_low=t_ci.low, tau_high=t_ci.high,
                psi=gran.psi, psi_low=p_ci.low, psi_high=p_ci.high,
                psi_axes={a: p for a, p in zip(varying, gran.per_axis, strict=True)},
            ))  # fmt: skip
    return out


def measure_rows(session: Session, study_id: int) -> list[dict[str, Any]]:
    """Every measure of the study with its definition, the model's hyperparameters and targets
    (the dashboard's scatter): one dict per (checkpoint, definition)."""
    models = {m.id: m for m in study_models(session, study_id)}
    rows = session.execute(
        sa.select(Measure, MeasureDefinition)
        .join(MeasureDefinition, MeasureDefinition.id == Measure.definition_id)
        .where(Measure.study_id == study_id)
        .order_by(Measure.definition_id, Measure.epoch, Measure.model_id)
    ).all()
    out = []
    for measure, definition in rows:
        model = models[measure.model_id]
        out.append({
            "definition_id": definition.id, "definition": definition.key, "kind": definition.kind,
            "epoch": measure.epoch, "model_id": model.id, "model": model.name or f"model-{model.id}",
            "value": measure.value, "standard_error": measure.standard_error,
            "n_seeds": measure.n_seeds, "n_missing": measure.n_missing,
            **hyperparameters(model), "seed": model.seed,
            "train_acc": model.train_acc, "test_acc": model.test_acc, "gap": model.gap,
            "loss_gap": model.loss_gap, "diverged": model.diverged,
        })  # fmt: skip
    return out
