"""Task kinds: the registered functions that workers run for each kind of task.

A kind has a ``run`` function (the computation: receives a TaskContext, writes arrays,
returns a small JSON result) and an optional ``finalize`` function that writes result rows
in the same transaction that marks the task done. Plugins are modules that register kinds
when imported; workers import the built-in ones and any named with ``--plugin``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tracker._exceptions import ConfigError, NotFound

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tracker._context import TaskContext

RunFn = Callable[["TaskContext"], "dict[str, Any] | None"]
FinalizeFn = Callable[["Session", "TaskContext", "dict[str, Any] | None"], None]

# Modules whose kinds every worker knows: each method's kinds.py. Named by string, so the core
# imports no method package (the import contracts check it).
BUILTIN_PLUGINS: tuple[str, ...] = (
    "tracker._builtin",
    "tracker.training.kinds",
    "tracker.surfaces.kinds",
    "tracker.topology.kinds",
    "tracker.levelsets.kinds",
    "tracker.morse.kinds",
    "tracker.curvature.kinds",
    "tracker.surfaces.artifacts",
    "tracker.meta.kinds",
)


# The built-in kinds by name: the module that registers each, and whether it is claimed in
# batches. With this a worker claims (and `tracker work` counts the queue) before importing
# torch; a kind's module is imported when a task of that kind first runs. A test checks this
# table against what the modules register.
BUILTIN_KINDS: dict[str, tuple[str, bool]] = {
    "noop": ("tracker._builtin", True),
    "train": ("tracker.training.kinds", False),
    "direction": ("tracker.training.kinds", False),
    "surface.tile": ("tracker.surfaces.kinds", False),
    "surface.complete": ("tracker.surfaces.kinds", True),
    "retrain": ("tracker.topology.kinds", False),
    "embedding": ("tracker.topology.kinds", False),
    "persistence": ("tracker.topology.kinds", False),
    "levelset.run": ("tracker.levelsets.kinds", False),
    "levelset.l2": ("tracker.levelsets.kinds", False),
    "ensemble.train": ("tracker.morse.kinds", False),
    "ensemble.complete": ("tracker.morse.kinds", True),
    "ensemble.collect": ("tracker.morse.kinds", False),
    "morse": ("tracker.morse.kinds", False),
    "hessian": ("tracker.curvature.kinds", False),
    "model.import": ("tracker.training.kinds", False),
    "surface.range": ("tracker.surfaces.kinds", True),
    "surface.artifacts": ("tracker.surfaces.artifacts", True),
    # Rebuilds a study's measures; asked for by tracker._queue.request_measures_refresh.
    "measures.refresh": ("tracker.meta.kinds", False),
}

# Follow-ups: tasks an enqueue adds after the result asked for, or that finishing it asks for
# (figures on the MLflow run, the study's measures). `tracker enqueue ... --wait` returns when
# the result is done and leaves these to the workers.
FOLLOW_UP_KINDS: frozenset[str] = frozenset({"surface.artifacts", "measures.refresh"})

# Kinds whose body logs to MLflow and does nothing else: a worker where MLflow is not installed
# (a GPU box, see benchmarks/gpu_wheels.sh) leaves them for workers that have it.
MLFLOW_KINDS: frozenset[str] = frozenset({"surface.artifacts"})


def mlflow_installed() -> bool:
    """Whether this process can import MLflow (looked up, not imported)."""
    import importlib.util

    try:
        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):
        return False


def runnable_here(kinds: Iterable[str]) -> list[str]:
    """``kinds`` less those this process cannot run (the MLflow ones without MLflow)."""
    names = list(kinds)
    if mlflow_installed():
        return names
    return [k for k in names if k not in MLFLOW_KINDS]


@dataclass(frozen=True)
class TaskKind:
    name: str
    run: RunFn
    finalize: FinalizeFn | None = None
    # Short tasks are claimed in batches; long ones (batch=False) one at a time.
    batch: bool = True
    # Its results feed the meta-analysis: finishing one requests a measures refresh.
    measures: bool = False


_KINDS: dict[str, TaskKind] = {}


def task_kind(
    name: str, *, finalize: FinalizeFn | None = None, batch: bool = True, measures: bool = False
) -> Callable[[RunFn], RunFn]:
    """Register the decorated function as the body of tasks of kind ``name``.

    ``batch=False`` marks a long kind: a worker claims its tasks one at a time. ``measures``:
    its rows are read by the meta-analysis, so the transaction that marks one done also asks
    for a refresh of its study's measures.
    """

    def register(fn: RunFn) -> RunFn:
        existing = _KINDS.get(name)
        if existing is not None and existing.run.__qualname__ != fn.__qualname__:
            raise ConfigError(f"task kind {name!r} is registered twice: rename one of them")
        _KINDS[name] = TaskKind(name=name, run=fn, finalize=finalize, batch=batch,
                                measures=measures)  # fmt: skip
        return fn

    return register


def get_kind(name: str) -> TaskKind:
    """The kind ``name``, importing its built-in module on first use."""
    if name not in _KINDS and name in BUILTIN_KINDS:
        importlib.import_module(BUILTIN_KINDS[name][0])
    try:
        return _KINDS[name]
    except KeyError:
        raise NotFound(
            f"no function is registered for task kind {name!r}: load its plugin with --plugin MODULE"
        ) from None


def kind_names() -> list[str]:
    return sorted(_KINDS)


def load_plugins(modules: Iterable[str] = ()) -> list[str]:
    """Import the built-in plugins and ``modules``; return the registered kind names."""
    _import_plugins((*BUILTIN_PLUGINS, *modules))
    return kind_names()


def known_kinds(modules: Iterable[str] = ()) -> dict[str, bool]:
    """Kind name -> batched, for the built-in kinds and those of plugin ``modules``.

    Only the plugins are imported: the built-in kinds' modules (torch and the rest) wait until
    a task of theirs runs (get_kind), so listing the kinds costs no heavy import.
    """
    _import_plugins(modules)
    known = {name: batch for name, (_, batch) in BUILTIN_KINDS.items()}
    known.update({name: kind.batch for name, kind in _KINDS.items()})
    return dict(sorted(known.items()))


def _import_plugins(modules: Iterable[str]) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(
                f"cannot import plugin module {module!r} ({err}): check its name and PYTHONPATH"
            ) from None
