"""Data sets from the user's files and code become the same tensors as the built-ins."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compute import data as data_mod
from tracker import SpecError, TrackerError, UserCodeError


def test_an_npz_file_is_a_classification_set(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "arrays.npz"
    np.savez(path, train_x=rng.normal(size=(20, 3)).astype(np.float32),
             train_y=rng.integers(0, 4, 20), test_x=rng.normal(size=(5, 3)).astype(np.float32),
             test_y=np.array([0, 1, 2, 3, 3]))  # fmt: skip
    ds = data_mod.load_configured("tensors", {"root": str(path)})
    assert (ds.task, ds.input_shape, ds.num_classes) == ("classification", (3,), 4)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert data_mod.loss_kind(ds) == "cross_entropy"
    corrupted = data_mod.load_configured("tensors", {"root": str(path), "seed": 1}, 0.5)
    assert corrupted.corrupted_indices is not None and len(corrupted.corrupted_indices) == 10


def test_a_pt_file_with_float_targets_is_a_regression_set(tmp_path):
    path = tmp_path / "reg.pt"
    torch.save({"train_x": torch.randn(12, 2), "train_y": torch.randn(12),
                "test_x": torch.randn(4, 2), "test_y": torch.randn(4),
                "val_x": torch.randn(3, 2), "val_y": torch.randn(3)}, path)  # fmt: skip
    ds = data_mod.load_configured("tensors", {"root": str(path)})
    assert (ds.task, ds.num_classes, tuple(ds.train_y.shape)) == ("regression", 1, (12, 1))
    assert ds.split("val")[0].shape == (3, 2) and data_mod.loss_kind(ds) == "mse"


def test_a_loader_may_return_torch_datasets(tmp_path, monkeypatch):
    (tmp_path / "loaders.py").write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def load(n=10):\n"
        "    x = torch.arange(n * 2, dtype=torch.float32).reshape(n, 2)\n"
        "    y = torch.arange(n) % 2\n"
        "    return {'train': TensorDataset(x, y), 'test': (x[:3], y[:3])}\n"
        "def bad_items():\n"
        "    return (torch.utils.data.TensorDataset(torch.zeros(3)), (torch.zeros(2, 1), torch.zeros(2)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ds = data_mod.load_configured("loaders:load", {"options": {"n": 8}})
    assert ds.train_x.shape == (8, 2) and ds.num_classes == 2
    assert ds.info["code"]["module"] == "loaders" and ds.info["code"]["version"].startswith("sha256:")
    with pytest.raises(UserCodeError, match="cannot be read as \\(x, y\\) items"):
        data_mod.load_configured("loaders:bad_items", {})


def test_an_image_folder_with_a_named_transform(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (6, 6), (40 * i, 100, 200)).save(tmp_path / split / c / f"{i}.png")
    ds = data_mod.load_configured("imagefolder", {"root": str(tmp_path), "transform": "grayscale", "size": 4})  # fmt: skip
    assert ds.input_shape == (1, 4, 4) and ds.num_classes == 2 and ds.train_x.shape[0] == 6
    with pytest.raises(SpecError, match="unknown image transform 'sepia'"):
        data_mod.load_configured("imagefolder", {"root": str(tmp_path), "transform": "sepia"})


@pytest.mark.parametrize(("name", "config", "needle"), [
    ("tensors", {}, "needs its path"),
    ("tensors", {"root": "/nowhere.npz"}, "does not exist"),
    ("imagefolder", {"root": "/nowhere"}, "has no train/ and test/"),
    ("tensors", {"root": "x.npz", "colour": 1}, "no key 'colour'"),
    ("webdataset", {}, "unknown dataset 'webdataset'"),
    ("tensors", {"root": "x.npz", "loss": "hinge"}, "unknown loss 'hinge'"),
])  # fmt: skip
def test_bad_data_sets_are_refused_with_the_fix(name, config, needle):
    with pytest.raises(TrackerError, match=needle) as info:  # SpecError or NotFound
        data_mod.load_configured(name, config)
    assert "\n" not in str(info.value)


def test_installed_entry_points_name_architectures_and_data_sets(tmp_path, monkeypatch):
    from compute import models as models_mod

    (tmp_path / "lab_nets.py").write_text(
        "import torch\n"
        "def tiny(width=3):\n"
        "    return torch.nn.Linear(2, width)\n"
        "def pairs():\n"
        "    x = torch.randn(6, 2)\n"
        "    return (x, torch.arange(6) % 3), (x[:2], torch.arange(2))\n"
    )
    info = tmp_path / "lab_nets-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-nets\nVersion: 2.0\n")
    (info / "top_level.txt").write_text("lab_nets\n")
    (info / "entry_points.txt").write_text(
        "[tracker.architectures]\nlab-tiny = lab_nets:tiny\n\n[tracker.datasets]\nlab-pairs = lab_nets:pairs\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "lab-tiny" in models_mod.architecture_names()
    net = models_mod.build_model("lab-tiny", {"width": 3}, input_shape=(2,), num_classes=3, seed=0)
    assert isinstance(net, torch.nn.Linear) and net.out_features == 3
    ds = data_mod.load_configured("lab-pairs", {})
    assert ds.num_classes == 3 and ds.info["code"] == {"ref": "lab-pairs", "module": "lab_nets", "version": "lab-nets 2.0"}  # fmt: skip
    with pytest.raises(SpecError, match="unknown architecture 'lab-huge'"):
        models_mod.check_architecture("lab-huge", {})
