"""Data sets from the user's files and code, as the same ready tensors as the built-ins.

Three sources, each named where a data set is (``--dataset``, a study file) with its options in
the data set's config (``--data-root`` is ``root``, ``--dataset-config`` adds the rest):

- ``imagefolder``: ``root`` holds ``train/`` and ``test/`` (and optionally ``val/``), one
  sub-folder per class (torchvision ``ImageFolder``); ``transform`` names how an image becomes
  a tensor: ``tensor`` (pixels / 255), ``imagenet`` or ``cifar`` (then per-channel
  normalisation with those sets' statistics), ``grayscale`` (one channel, pixels / 255);
  ``size`` (optional) resizes every image to size x size first.
- ``tensors``: ``root`` is a ``.npz`` (``numpy.savez``) or ``.pt`` (``torch.save`` of a dict)
  file with ``train_x``, ``train_y``, ``test_x``, ``test_y`` (and optionally ``val_x``,
  ``val_y``).
- ``module:callable`` or an entry point of the group ``tracker.datasets``: called with the
  config's ``options`` table as keyword arguments, it returns ``(train, test)`` or
  ``(train, test, val)`` (or a dict with those keys), each split a pair of tensors ``(x, y)``
  or a ``torch.utils.data.Dataset`` of ``(x, y)`` items.

Integer targets make a classification set (classes = the config's ``num_classes``, else the
largest label + 1); floating targets a regression set (MSE). ``loss`` in the config overrides
the loss a surface evaluates: ``cross_entropy``, ``mse`` or a ``module:fn(outputs, targets)``
returning per-sample losses. Everything is loaded whole into memory, once per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compute import user
from tracker import NotFound, SpecError, UserCodeError

BUILTIN_SOURCES = ("imagefolder", "tensors")
TRANSFORMS = {
    "tensor": None,
    "grayscale": None,
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
_CONFIG_KEYS = {"root", "seed", "transform", "size", "options", "num_classes", "loss", "augment",
                "val_fraction"}  # fmt: skip
_SPLITS = ("train", "test", "val")


def check_external(name: str, config: dict[str, Any], builtins: Sequence[str] = ()) -> None:
    """Problems visible without loading: unknown source, config keys, missing path."""
    known = (*BUILTIN_SOURCES, *user.entry_point_names(user.DATASETS))
    if name not in known and not user.is_reference(name):
        raise SpecError(
            f"unknown dataset {name!r}: use one of {', '.join([*builtins, *known])}, "
            "or your own loader as module:callable"
        )
    if len(name) > 64:
        raise SpecError(f"dataset reference {name!r} is longer than 64 characters: use a shorter module path or an entry point")  # fmt: skip
    unknown = sorted(set(config) - _CONFIG_KEYS)
    if unknown:
        raise SpecError(f"dataset config has no key {unknown[0]!r}: allowed keys: {', '.join(sorted(_CONFIG_KEYS))}")  # fmt: skip
    if config.get("augment"):
        raise SpecError(f"augment (crop + flip) is defined for cifar10 only, not {name!r}")
    if name in BUILTIN_SOURCES and not config.get("root"):
        raise SpecError(f"the {name} dataset needs its path: pass --data-root (root in a study file)")  # fmt: skip
    if name == "imagefolder" and config.get("transform", "tensor") not in TRANSFORMS:
        raise SpecError(f"unknown image transform {config.get('transform')!r}: use one of {', '.join(TRANSFORMS)}")  # fmt: skip
    loss = config.get("loss")
    if loss is not None and loss not in ("cross_entropy", "mse") and not user.is_reference(loss):
        raise SpecError(f"unknown loss {loss!r}: use cross_entropy, mse or module:fn")


def read_external(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The fields of a ``compute.data.Dataset`` for ``name`` with ``config`` (see the module
    docstring): checked tensors, task, input shape, classes, info."""
    info: dict[str, Any] = {"source": name}
    if name == "imagefolder":
        splits = _image_folders(Path(config["root"]).expanduser(), config)
        info["source"] = f"imagefolder {config['root']} ({config.get('transform', 'tensor')})"
    elif name == "tensors":
        splits = _tensor_file(Path(config["root"]).expanduser())
        info["source"] = f"tensors {config['root']}"
    else:
        fn = user.resolve(name, user.DATASETS, "dataset")
        options = config.get("options") or {}
        if not isinstance(options, dict):
            raise SpecError(f"dataset options must be a table of keyword arguments, got {options!r}")  # fmt: skip
        splits = _user_splits(name, user.call(fn, name, "dataset", **options))
        info["code"] = user.describe(name, user.DATASETS)
    return _fields(name, splits, config, info)


# ---------------------------------------------------------------------------- sources

Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]


def _image_folders(root: Path, config: dict[str, Any]) -> Splits:
    import torchvision
    from torchvision import transforms as T

    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise NotFound(f"{root} has no train/ and test/ folders: put one sub-folder per class in each (torchvision ImageFolder)")  # fmt: skip
    name = config.get("transform", "tensor")
    steps: list[Any] = []
    if config.get("size"):
        steps.append(T.Resize((int(config["size"]), int(config["size"]))))
    if name == "grayscale":
        steps.append(T.Grayscale(1))
    steps.append(T.ToTensor())
    stats = TRANSFORMS[name]
    if stats is not None:
        steps.append(T.Normalize(*stats))
    transform = T.Compose(steps)
    out: Splits = {}
    classes: list[str] | None = None
    for split in _SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        try:
            images = torchvision.datasets.ImageFolder(str(folder), transform=transform)
        except (FileNotFoundError, OSError) as err:
            raise NotFound(f"{folder} cannot be read as an image folder ({err}): one sub-folder of images per class")from None  # fmt: skip
        if classes is not None and images.classes != classes:
            raise SpecError(f"{folder} has classes {images.classes}, train/ has {classes}: use the same class folders in every split")  # fmt: skip
        classes = images.classes
        out[split] = _stack(images, f"{folder}")
    return out


def _tensor_file(path: Path) -> Splits:
    if not path.is_file():
        raise NotFound(f"{path} does not exist: pass the .npz or .pt file of train_x, train_y, test_x, test_y")  # fmt: skip
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                raw: dict[str, Any] = {k: torch.from_numpy(np.array(f[k])) for k in f.files}
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SpecError(f"{path} cannot be read ({type(err).__name__}): save a dict of tensors with numpy.savez or torch.save")from None  # fmt: skip
    if not isinstance(raw, dict):
        raise SpecError(f"{path} holds a {type(raw).__name__}: save a dict with train_x, train_y, test_x, test_y")  # fmt: skip
    out: Splits = {}
    for split in _SPLITS:
        x, y = raw.get(f"{split}_x"), raw.get(f"{split}_y")
        if x is None and y is None and split == "val":
            continue
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise SpecError(f"{path} has no tensors {split}_x and {split}_y: save train_x, train_y, test_x, test_y")  # fmt: skip
        out[split] = (x, y)
    return out


def _user_splits(ref: str, value: Any) -> Splits:
    fix = "return (train, test) or (train, test, val), each (x, y) tensors or a torch Dataset"
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(_SPLITS))
        if unknown or "train" not in value or "test" not in value:
            raise UserCodeError(f"dataset {ref!r} returned a dict with keys {sorted(value)}: {fix}")  # fmt: skip
        items = dict(value)
    elif isinstance(value, tuple | list) and len(value) in (2, 3):
        items = dict(zip(_SPLITS, value, strict=False))
    else:
        raise UserCodeError(f"dataset {ref!r} returned a {type(value).__name__}: {fix}")
    out: Splits = {}
    for split, item in items.items():
        if isinstance(item, torch.utils.data.Dataset):
            out[split] = _stack(item, f"dataset {ref!r} {split} split")
        elif (
            isinstance(item, tuple | list) and len(item) == 2
            and all(isinstance(t, torch.Tensor | np.ndarray) for t in item)
        ):  # fmt: skip
            out[split] = (torch.as_tensor(item[0]), torch.as_tensor(item[1]))
        else:
            raise UserCodeError(f"dataset {ref!r} returned a {type(item).__name__} as its {split} split: {fix}")  # fmt: skip
    return out


def _stack(items: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A map-style dataset of (x, y) items as two stacked tensors."""
    xs, ys = [], []
    try:
        for i in range(len(items)):
            x, y = items[i]
            xs.append(torch.as_tensor(x))
            ys.append(torch.as_tensor(y))
    except UserCodeError:
        raise
    except Exception as err:
        raise UserCodeError(f"{what} cannot be read as (x, y) items ({type(err).__name__}: {err}): make each item an (input, target) pair".splitlines()[0]) from None  # fmt: skip
    if not xs:
        raise SpecError(f"{what} is empty: give it at least one sample")
    return torch.stack(xs), torch.stack(ys)


def _fields(name: str, splits: Splits, config: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    for split, (x, y) in splits.items():
        if x.dim() < 2 or y.dim() == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise UserCodeError(f"{name} {split} split: inputs {tuple(x.shape)} and targets {tuple(y.shape)} must have the same, non-zero number of rows")  # fmt: skip
        if not torch.is_floating_point(x):
            raise UserCodeError(f"{name} {split} split: inputs are {x.dtype}: give floating-point inputs (normalise them)")  # fmt: skip
    shapes = {tuple(x.shape[1:]) for x, _ in splits.values()}
    if len(shapes) != 1:
        raise UserCodeError(f"{name}: the splits' samples have different shapes {sorted(shapes)}: give every split the same sample shape")  # fmt: skip
    classification = not torch.is_floating_point(splits["train"][1])
    ys: dict[str, torch.Tensor] = {}
    if classification:
        for split, (_, y) in splits.items():
            if torch.is_floating_point(y) or y.dim() != 1:
                raise UserCodeError(f"{name} {split} split: targets {y.dtype} {tuple(y.shape)} are not 1-D integer class labels like the train split's")  # fmt: skip
            ys[split] = y.long()
        top = int(max(int(y.max()) for y in ys.values())) + 1
        num_classes = int(config.get("num_classes") or top)
        if min(int(y.min()) for y in ys.values()) < 0 or top > num_classes:
            raise UserCodeError(f"{name}: labels outside 0..{num_classes - 1}: give labels 0..C-1 (and num_classes C)")  # fmt: skip
    else:
        for split, (_, y) in splits.items():
            ys[split] = y.float().reshape(y.shape[0], -1)
        num_classes = int(ys["train"].shape[1])
    if config.get("loss"):
        info["loss"] = config["loss"]
    val = splits.get("val")
    return {
        "name": name,
        "task": "classification" if classification else "regression",
        "input_shape": tuple(int(s) for s in next(iter(shapes))),
        "num_classes": num_classes,
        "train_x": splits["train"][0].float().contiguous(),
        "train_y": ys["train"],
        "test_x": splits["test"][0].float().contiguous(),
        "test_y": ys["test"],
        "val_x": None if val is None else val[0].float().contiguous(),
        "val_y": ys.get("val"),
        "info": info,
    }
