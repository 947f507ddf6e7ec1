"""Code the user names instead of a built-in: ``module:callable`` or an installed entry point.

A study names its own network or data set without editing the tracker:

- ``my_pkg.nets:make_net``: ``import my_pkg.nets`` and take ``make_net`` (dots after the
  colon walk attributes, e.g. ``my_pkg:Nets.small``);
- a bare name that an installed package declares as an entry point in the group
  ``tracker.architectures`` or ``tracker.datasets``.

Workers on other machines import the same reference, so what is resolved here is recorded
with the module's version (its distribution's version, else ``__version__``, else a hash of
its source file): a result can be traced to the code that made it. Every failure is a
``UserCodeError`` whose one line names the module and the fix.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from tracker import UserCodeError

ARCHITECTURES = "tracker.architectures"
DATASETS = "tracker.datasets"
LOSSES = "tracker.losses"


def is_reference(name: str) -> bool:
    """Whether ``name`` is written ``module:callable``."""
    return isinstance(name, str) and ":" in name


def entry_point_names(group: str) -> list[str]:
    """The names installed packages declare in ``group``."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=group)})


def module_of(ref: str, group: str) -> str:
    """The module a reference or entry-point name lives in (for messages and versions)."""
    if is_reference(ref):
        return ref.split(":", 1)[0]
    for ep in importlib.metadata.entry_points(group=group, name=ref):
        return ep.value.split(":", 1)[0].strip()
    return ref


def resolve(ref: str, group: str, what: str) -> Callable[..., Any]:
    """The callable ``ref`` names; UserCodeError naming the module and the fix otherwise."""
    if is_reference(ref):
        module_name, _, attrs = ref.partition(":")
        if not module_name or not attrs:
            raise UserCodeError(f"{what} {ref!r} is not module:callable: write e.g. my_pkg.nets:make_net")  # fmt: skip
        module = _import(module_name, what, ref)
        target: Any = module
        for attr in attrs.split("."):
            if not hasattr(target, attr):
                raise UserCodeError(
                    f"module {module_name!r} has no {attrs!r} for {what} {ref!r}: "
                    f"define it there or fix the name"
                )
            target = getattr(target, attr)
    else:
        found = list(importlib.metadata.entry_points(group=group, name=ref))
        if not found:
            raise UserCodeError(f"no installed package provides {what} {ref!r} (entry point group {group!r})")  # fmt: skip
        module_name = found[0].value.split(":", 1)[0].strip()
        try:
            target = found[0].load()
        except Exception as err:
            raise _import_error(module_name, what, ref, err) from None
    if not callable(target):
        raise UserCodeError(f"{what} {ref!r} is a {type(target).__name__}, not a callable: name a function or class")  # fmt: skip
    return target


def call(fn: Callable[..., Any], ref: str, what: str, **kwargs: Any) -> Any:
    """``fn(**kwargs)``; an exception inside the user's code becomes one line naming it."""
    try:
        return fn(**kwargs)
    except UserCodeError:
        raise
    except Exception as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UserCodeError(
            f"{what} {ref!r} raised {type(err).__name__}"
            + (f": {text}" if text else "")
            + f" (called with {_short(kwargs)}): fix the code or its config"
        ) from None


@lru_cache(maxsize=64)
def module_version(module_name: str) -> str:
    """The version of the code behind ``module_name``: its distribution's version, else the
    module's ``__version__``, else ``sha256:`` of its source file (code on PYTHONPATH)."""
    top = module_name.split(".", 1)[0]
    module = sys.modules.get(module_name)
    for dist in _distributions_of(top, sys.modules.get(top) or module):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    if module is None:
        return "unknown"
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    path = getattr(module, "__file__", None)
    if path and Path(path).is_file():
        return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return "unknown"


def describe(ref: str, group: str) -> dict[str, str]:
    """What a spec row records of a reference: the reference, its module and its version."""
    module = module_of(ref, group)
    return {"ref": ref, "module": module, "version": module_version(module)}


def _import(module_name: str, what: str, ref: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except Exception as err:
        raise _import_error(module_name, what, ref, err) from None


def _import_error(module_name: str, what: str, ref: str, err: BaseException) -> UserCodeError:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return UserCodeError(
        f"cannot import module {module_name!r} for {what} {ref!r} ({type(err).__name__}"
        + (f": {text}" if text else "")
        + "): install it on this machine (pip install it, or put its folder on PYTHONPATH "
        "for every worker)"
    )


def _short(kwargs: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
    return text if len(text) <= 120 else text[:117] + "..."


def _distributions_of(top: str, module: Any) -> list[str]:
    """The installed distributions that provide the top-level package ``top``.

    A distribution named like the package is looked up directly (a fraction of a millisecond).
    Otherwise the whole mapping of installed packages is built, which reads every installed
    distribution's file list (~0.8 s with this project's environment), but only when the
    package's folder on sys.path holds installed distributions: code on PYTHONPATH or in the
    working directory, the usual home of a user's model, belongs to none."""
    try:
        name = importlib.metadata.distribution(top).metadata["Name"]
        return [name] if name else []
    except importlib.metadata.PackageNotFoundError:
        pass
    path = getattr(module, "__file__", None)
    if path:
        root = Path(path).resolve().parent
        if Path(path).name == "__init__.py":
            root = root.parent
        if not any(root.glob("*.dist-info")) and not any(root.glob("*.egg-info")):
            return []
    return importlib.metadata.packages_distributions().get(top, [])
