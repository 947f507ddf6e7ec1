"""Bring your own model, data and checkpoint (issue 13): a user module outside the package,
trained with plain torch, saved in every checkpoint shape people have, imported with
`tracker import model`, surfaced by `tracker work` processes, and checked against a by-hand
evaluation of that module; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import torch
import torch.nn.functional as F
from cli_support import one_line_error, run_tracker, tracker_env
from schema_support import migrated

from compute.checkpoints import safetensors_available
from compute.state import load_flat
from tracker._arrays import read_array
from tracker._db import Database
from tracker._schema import (
    ArrayRef,
    Checkpoint,
    Direction,
    HessianSpectrum,
    Model,
    Retrain,
    Surface,
    Task,
)
from tracker._store import ArrayStore

USER_MODULE = textwrap.dedent('''
    """A researcher's own code: a network factory, a data loader, a loss."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    __version__ = "1.2.3"


    class TinyNet(nn.Module):
        def __init__(self, width, classes):
            super().__init__()
            self.flat = nn.Flatten()
            self.layers = nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, classes))

        def forward(self, x):
            return self.layers(self.flat(x))


    def make_net(width=16, classes=3):
        return TinyNet(width, classes)


    def load(n=120, seed=0):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 4, generator=g)
        y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 0.8).long()
        return (x[:80], y[:80]), (x[80:], y[80:])


    def per_sample(out, y):
        return F.cross_entropy(out, y, reduction="none")


    def broken_factory(width=16):
        raise ValueError(f"width {width} is not supported")


    def not_a_net():
        return "a string"


    def wrong_loader():
        return 42


    def wrong_split():
        return ([1, 2, 3], [4, 5])
''')


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's module in a folder outside the package, importable here and by workers."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "my_nets.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    return folder


def _env(tmp_path: Path, db_url: str, code: Path | None) -> dict[str, str]:
    env = tracker_env(tmp_path, db_url, str(tmp_path / "store.zarr"))
    if code is not None:  # the worker processes import the user's module from here
        env["PYTHONPATH"] = os.pathsep.join([str(code), env["PYTHONPATH"]])
    return env


def _train(seed: int = 0, steps: int = 30) -> dict[str, torch.Tensor]:
    """Plain torch training of the user's network, as the researcher did it elsewhere."""
    import my_nets

    torch.manual_seed(seed)
    net = my_nets.make_net(width=16, classes=3)
    (x, y), _ = my_nets.load()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.state_dict()


def _save_every_shape(state: dict[str, torch.Tensor], folder: Path) -> list[Path]:
    folder.mkdir(exist_ok=True)
    files = {
        "plain.pt": state,
        "goldstein.t7": {"state_dict": state, "acc": 0.9, "epoch": 30},
        "script.pth": {"model": state, "optimizer": {"lr": 0.5}},
        "net.pth": {"net": state},
        "parallel.pt": {f"module.{k}": v for k, v in state.items()},
    }
    paths = []
    for name, content in files.items():
        torch.save(content, folder / name)
        paths.append(folder / name)
    return paths


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc.stdout


def _here(env: dict[str, str], *argv: str) -> str:
    """`tracker ARGV` through cli.main in this process, on ``env``'s database, store and home;
    it must succeed. Its stdout."""
    import contextlib
    import io

    from tracker.cli import main

    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*argv, "--db", env["TRACKER_DB_URL"], "--store", env["TRACKER_STORE"],
                         "--home", env["TRACKER_HOME"]])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert code == 0, out.getvalue() + err.getvalue()[-3000:]
    return out.getvalue()


USER_ARCH = ["--arch", "my_nets:make_net", "--arch-config", '{"width": 16}',
             "--dataset", "my_nets:load"]  # fmt: skip


@pytest.mark.slow
def test_a_user_model_in_every_checkpoint_shape_is_surfaced_like_a_hand_evaluation(
    tmp_path, sqlite_url, user_code
) -> None:
    env = _env(tmp_path, sqlite_url, user_code)
    paths = _save_every_shape(_train(), tmp_path / "ckpts")
    first = _ok(run_tracker("import", "model", str(paths[0]), *USER_ARCH, "--name", "mine",
                            "--study", "own", "--metrics-from-eval", env=env))  # fmt: skip
    assert "(imported)" in first
    model_id = int(first.split()[1])
    # Every other shape holds the same weights: the same model, found again. The same command
    # line, through cli.main in this process (the first import above was a real process; a
    # process each would import torch's loaders and scan the installed distributions again).
    for path in paths[1:]:
        out = _here(env, "import", "model", str(path), *USER_ARCH, "--name", "mine",
                    "--study", "own", "--metrics-from-eval")  # fmt: skip
        assert out.startswith(f"model {model_id} (already imported)"), (path, out)
    safetensors_file = tmp_path / "ckpts" / "net.safetensors"
    if safetensors_available():
        from safetensors.torch import save_file

        save_file(_train(), str(safetensors_file))
        out = _here(env, "import", "model", str(safetensors_file), *USER_ARCH,
                    "--name", "mine", "--study", "own", "--metrics-from-eval")  # fmt: skip
        assert out.startswith(f"model {model_id} (already imported)")
    else:  # not installed: the file is refused with the fix, and nothing is written
        safetensors_file.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
        one_line_error(run_tracker("import", "model", str(safetensors_file), *USER_ARCH, env=env),
                       "pip install safetensors", code=2)  # fmt: skip

    db = Database(sqlite_url)
    with db.session() as session:
        model = session.get(Model, model_id)
        assert (model.architecture, model.dataset, model.optimizer) == ("my_nets:make_net", "my_nets:load", "imported")  # fmt: skip
        code = model.config["code"]
        assert code["architecture"] == {"ref": "my_nets:make_net", "module": "my_nets", "version": "1.2.3"}  # fmt: skip
        assert code["dataset"]["version"] == "1.2.3"
        assert model.train_acc is not None and model.train_acc > 0.6

    _ok(run_tracker("enqueue", "surface", "--model", str(model_id), "--x", "-1:1:5",
                    "--y", "-1:1:3", env=env))  # fmt: skip
    # The worker loops in threads of the `work` process: a separate worker process (a fresh
    # interpreter, ~5 CPU-s) is what test_a_worker_without_the_users_code_... is about.
    _ok(run_tracker("work", "--no-progress", env=env))
    store = ArrayStore(str(tmp_path / "store.zarr"))
    with db.session() as session:
        surface = session.scalars(sa.select(Surface)).one()
        assert surface.completed_at is not None
        assert surface.eval_config["engine"]["first_affine"] is True
        assert surface.eval_config["engine"]["first_affine_source"] == "traced"
        loss = read_array(session, store, surface.loss_array_id)[0]
        ckpt = session.get(Checkpoint, surface.checkpoint_id)
        centre = torch.from_numpy(read_array(session, store, ckpt.array_id))
        layout = ckpt.layout
        dirs = [torch.from_numpy(read_array(session, store, session.get(Direction, d).array_id))
                for d in (surface.x_direction_id, surface.y_direction_id)]  # fmt: skip
        provenance = session.scalars(sa.select(Task.provenance).where(Task.kind == "surface.tile")).all()  # fmt: skip
    # By hand: the user's own module at centre + a d1 + b d2, on the train split.
    import my_nets

    (x, y), _ = my_nets.load()
    net = my_nets.make_net(width=16)
    for iy, b in enumerate(np.linspace(-1, 1, 3)):
        for ix, a in enumerate(np.linspace(-1, 1, 5)):
            load_flat(net, centre + float(a) * dirs[0] + float(b) * dirs[1], layout)
            with torch.no_grad():
                expected = F.cross_entropy(net(x), y).item()
            np.testing.assert_allclose(loss[iy, ix], expected, rtol=1e-5, atol=1e-6)
    assert provenance and all(p["torch"] == torch.__version__ and p["precision"] == "fp32"
                              and p["host"] and p["device"] for p in provenance)  # fmt: skip
    shown = _ok(run_tracker("show", "study", "own", env=env))
    assert "computed with:" in shown and f"torch {torch.__version__}" in shown


@pytest.mark.slow
def test_a_trajectory_of_checkpoints_gives_a_pca_plane_a_user_loss_and_retrains(tmp_path, sqlite_url, user_code) -> None:  # fmt: skip
    env = _env(tmp_path, sqlite_url, user_code)
    folder = tmp_path / "trajectory"
    folder.mkdir()
    for epoch, steps in ((0, 0), (5, 5), (10, 10), (20, 20)):
        torch.save(_train(steps=steps), folder / f"epoch_{epoch:02d}.pt")
    out = _ok(run_tracker("import", "model", str(folder), "--arch", "my_nets:make_net",
                          "--dataset", "my_nets:load", "--dataset-config",
                          '{"loss": "my_nets:per_sample"}', env=env))  # fmt: skip
    assert "epoch(s) 0, 5, 10, 20" in out
    model_id = int(out.split()[1])
    # The two requests through cli.main in this process; `tracker work` is the real process.
    _here(env, "enqueue", "surface", "--model", str(model_id), "--pca", "--x", "-1:1:3",
          "--y", "-1:1:3")  # fmt: skip
    _here(env, "enqueue", "retrain", "--model", str(model_id), "--seeds", "0", "--steps",
          "0.5", "--epochs", "1", "--batch-size", "40", "--lr", "0.01")  # fmt: skip
    # Curvature of the imported network under its own loss (the Hessian's probes: the
    # Gauss-Newton shortcut needs a known output Hessian), and below of the retrained one.
    _here(env, "enqueue", "hessian", "--model", str(model_id), "--top-k", "1", "--trace",
          "--probes", "10")  # fmt: skip
    _ok(run_tracker("work", "--no-progress", env=env))
    _here(env, "enqueue", "hessian", "--model", str(model_id), "--retrains", "all", "--top-k", "1")
    _ok(run_tracker("work", "--no-progress", env=env))
    with Database(sqlite_url).session() as session:
        spectra = session.scalars(sa.select(HessianSpectrum).order_by(HessianSpectrum.id)).all()
        assert [(h.measure, h.retrain_id is not None) for h in spectra] == [
            ("eigen", False), ("trace", False), ("eigen", True)]  # fmt: skip
        assert all(h.completed_at is not None and h.loss == "user" for h in spectra)
        assert all(h.config["loss"] == "my_nets:per_sample" for h in spectra)
        assert spectra[1].config["estimator"] == "hessian"
        assert "user code" in spectra[1].config["gauss_newton_refused"]
        assert math.isfinite(spectra[0].top_eigenvalue) and math.isfinite(spectra[2].top_eigenvalue)
        assert spectra[0].top_eigenvalue != spectra[2].top_eigenvalue
    with Database(sqlite_url).session() as session:
        surface = session.scalars(sa.select(Surface)).one()
        assert surface.completed_at is not None
        assert surface.eval_config["engine"]["loss"] == "my_nets:per_sample"
        model = session.get(Model, model_id)
        assert model.config["code"]["loss"]["ref"] == "my_nets:per_sample"
        assert session.get(Direction, surface.x_direction_id).explained_variance > 0
        retrain = session.scalars(sa.select(Retrain)).one()
        assert retrain.model_id == model_id and retrain.trajectory_array_id is not None


@pytest.mark.slow
def test_a_worker_without_the_users_code_fails_the_task_in_one_line(tmp_path, sqlite_url, user_code) -> None:  # fmt: skip
    env = _env(tmp_path, sqlite_url, user_code)
    path = _save_every_shape(_train(), tmp_path / "ckpts")[0]
    out = _ok(run_tracker("import", "model", str(path), *USER_ARCH, env=env))
    _ok(run_tracker("enqueue", "surface", "--model", out.split()[1], "--x", "-1:1:3", env=env))
    bare = _env(tmp_path, sqlite_url, None)  # a machine where the module is not installed
    proc = run_tracker("work", "--workers", "1", "--no-progress", env=bare)
    assert proc.returncode == 1
    with Database(sqlite_url).session() as session:
        errors = session.scalars(sa.select(Task.error).where(Task.status == "failed")).all()
    assert errors
    first = errors[0]
    assert "Traceback" not in first and len(first.splitlines()) == 1, first
    assert "cannot import module 'my_nets'" in first and "install it" in first


def _migrated(url: str) -> None:
    """A migrated database at ``url``: a copy of the suite's template, not Alembic again."""
    database = Database(url)
    try:
        migrated(database)
    finally:
        database.dispose()


def _counts(url: str, store: Path) -> tuple[int, ...]:
    with Database(url).session() as session:
        rows = tuple(session.scalar(sa.select(sa.func.count()).select_from(t))
                     for t in (Model, Checkpoint, Task, ArrayRef))  # fmt: skip
    files = sum(1 for _ in store.rglob("*") if _.is_file()) if store.exists() else 0
    return (*rows, files)


BAD_IMPORTS = [
    # (extra checkpoint tweak, argv after FILE, words the one line names)
    ("drop", USER_ARCH, ("missing keys", "layers.2.bias")),
    ("extra", USER_ARCH, ("unexpected keys", "layers.9.weight")),
    ("none", ["--arch", "my_nets:make_net", "--arch-config", '{"width": 8}',
              "--dataset", "my_nets:load"], ("layers.0.weight has shape", "[16, 4]", "[8, 4]")),
    ("none", ["--arch", "no_such_pkg.nets:make", "--dataset", "my_nets:load"],
     ("cannot import module 'no_such_pkg.nets'", "install it")),
    ("none", ["--arch", "my_nets:broken_factory", "--dataset", "my_nets:load"],
     ("'my_nets:broken_factory' raised ValueError", "width 16 is not supported")),
    ("none", ["--arch", "my_nets:not_a_net", "--dataset", "my_nets:load"],
     ("returned a str", "torch.nn.Module")),
    ("none", ["--arch", "my_nets:make_net", "--dataset", "my_nets:wrong_loader"],
     ("returned a int", "(x, y) tensors or a torch Dataset")),
    ("none", ["--arch", "my_nets:make_net", "--dataset", "my_nets:wrong_split"],
     ("returned a list as its train split",)),
    ("none", ["--arch", "my_nets:make_net", "--dataset", "my_nets:missing"],
     ("has no 'missing'",)),
    ("none", ["--arch", "my_nets:make_net", "--arch-config", '{"classes": 5}',
              "--dataset", "my_nets:load"], ("outputs (2, 5)", "needs (2, 3)")),
    ("pickle", USER_ARCH, ("pickled Python objects", "model.state_dict()")),
    ("garbage", USER_ARCH, ("not a PyTorch checkpoint",)),
]  # fmt: skip


@pytest.mark.parametrize(("tweak", "argv", "needles"), BAD_IMPORTS)
def test_bad_imports_are_one_line_exit_2_and_write_nothing(
    tmp_path, sqlite_url, user_code, tweak, argv, needles
) -> None:
    env = _env(tmp_path, sqlite_url, user_code)
    _migrated(sqlite_url)  # set-up: the refused import below is the real process
    state = _train(steps=1)
    path = tmp_path / "model.pt"
    if tweak == "drop":
        state.pop("layers.2.bias")
    elif tweak == "extra":
        state["layers.9.weight"] = torch.zeros(2)
    if tweak == "pickle":
        torch.save({"net": torch.nn.Linear(2, 2)}, path)
    elif tweak == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    else:
        torch.save(state, path)
    before = _counts(sqlite_url, tmp_path / "store.zarr")
    line = one_line_error(run_tracker("import", "model", str(path), *argv, env=env), *needles, code=2)  # fmt: skip
    assert _counts(sqlite_url, tmp_path / "store.zarr") == before, line


# --------------------------------------------------------------------------- torchvision


def _image_folder(root: Path, train: int = 100, test: int = 25) -> Path:
    """Two classes of tiny 8x8 RGB images (dark and bright noise), as PNG files."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c, name in enumerate(("dark", "bright")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.normal(60 + 130 * c, 40, (8, 8, 3)).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


@pytest.mark.slow
def test_a_torchvision_resnet_on_an_image_folder_gets_a_surface_and_an_interpolation(
    tmp_path, sqlite_url
) -> None:
    import torchvision

    env = _env(tmp_path, sqlite_url, None)
    images = _image_folder(tmp_path / "images")
    nets = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        nets[seed] = torchvision.models.resnet18(num_classes=2)
        torch.save({"state_dict": nets[seed].state_dict()}, tmp_path / f"resnet-{seed}.pth")
    argv = ["--arch", "torchvision.models:resnet18", "--arch-config", '{"num_classes": 2}',
            "--dataset", "imagefolder", "--data-root", str(images),
            "--dataset-config", '{"transform": "cifar"}', "--study", "vision"]  # fmt: skip
    ids = [int(_ok(run_tracker("import", "model", str(tmp_path / f"resnet-{s}.pth"), *argv,
                                "--name", f"r{s}", env=env)).split()[1]) for s in (0, 1)]  # fmt: skip
    _ok(run_tracker("enqueue", "surface", "--model", str(ids[0]), "--x", "-1:1:3", "--y",
                    "-1:1:3", "--subset", "64", env=env))  # fmt: skip
    _ok(run_tracker("enqueue", "surface", "--interpolate", str(ids[0]), str(ids[1]),
                    "--x", "0:1:3", env=env))  # fmt: skip
    _ok(run_tracker("work", "--no-progress", env=env))
    store = ArrayStore(str(tmp_path / "store.zarr"))
    with Database(sqlite_url).session() as session:
        plane, line = session.scalars(sa.select(Surface).order_by(Surface.id)).all()
        assert plane.completed_at is not None and line.completed_at is not None
        assert plane.eval_config["engine"]["first_affine_source"] == "traced"
        grid = read_array(session, store, plane.loss_array_id)[0]
        along = read_array(session, store, line.loss_array_id)[0, 0]
    assert grid.shape == (3, 3) and np.isfinite(grid).all()
    # The ends of the line are the two imported networks, evaluated by hand.
    from torchvision import transforms as T

    data = torchvision.datasets.ImageFolder(
        str(images / "train"),
        transform=T.Compose([T.ToTensor(), T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))]),
    )  # fmt: skip
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor(data.targets)
    for end, seed in ((0, 0), (2, 1)):
        nets[seed].eval()
        with torch.no_grad():
            expected = F.cross_entropy(nets[seed](x), y).item()
        np.testing.assert_allclose(along[end], expected, rtol=1e-4)


# --------------------------------------------------------------------------- Python API


@pytest.mark.slow
def test_the_python_api_round_trip(tmp_path, db, db_url, user_code, monkeypatch) -> None:
    import tracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    state = _train()
    torch.save(state, tmp_path / "net.pt")
    t = tracker.connect(db=db_url, store=str(tmp_path / "store.zarr"), home=tmp_path / "home")
    model_id = t.import_model(tmp_path / "net.pt", arch="my_nets:make_net",
                              arch_config={"width": 16}, dataset="my_nets:load", name="api",
                              study="notebook", metrics_from_eval=True)  # fmt: skip
    assert t.import_model(tmp_path / "net.pt", arch="my_nets:make_net", arch_config={"width": 16},
                          dataset="my_nets:load", name="api", study="notebook") == model_id  # fmt: skip
    surface_id = t.enqueue_surface(model_id, x=(-1, 1, 5), y=(-1, 1, 3))
    spectra_ids = t.enqueue_hessian(model_id, top_k=2, trace=True, probes=10)
    assert t.enqueue_hessian(model_id, top_k=2, trace=True, probes=10) == spectra_ids
    with pytest.raises(tracker.SpecError, match="use the fields of HessianRequest"):
        t.enqueue_hessian(model_id, topk=2)
    with pytest.raises(tracker.SpecError, match="add --retrains"):
        t.enqueue_hessian(model_id, saves="all")
    # workers=None: the worker loops in threads of this process (the user's module is
    # importable here), not a Dask cluster of fresh interpreters (~5 CPU-s, and its HTTP port
    # may be taken by another cluster on the machine); worker processes and the user's code:
    # test_a_worker_without_the_users_code_fails_the_task_in_one_line.
    threads = torch.get_num_threads()
    try:
        summary = t.work(workers=None)
    finally:
        torch.set_num_threads(threads)  # the loops set this process's torch threads
    assert summary.failed == 0 and summary.done >= 2

    models = t.models()
    row = models.set_index("id").loc[model_id]
    assert (row["name"], row["architecture"], bool(row["imported"])) == ("api", "my_nets:make_net", True)  # fmt: skip
    assert row["arch.width"] == 16 and row["train_acc"] > 0.6
    surfaces = t.surfaces(study="notebook")
    srow = surfaces.set_index("id").loc[surface_id]
    assert bool(srow["complete"]) and bool(srow["first_affine"]) and srow["model_id"] == model_id
    assert f"torch {torch.__version__}" in srow["provenance"] and "fp32" in srow["provenance"]
    spectra = t.spectra(study="notebook").set_index("id")
    assert sorted(spectra.index) == sorted(spectra_ids)
    assert set(spectra["measure"]) == {"eigen", "trace"} and spectra["complete"].all()
    eigen = spectra[spectra["measure"] == "eigen"].iloc[0]
    assert eigen["top_eigenvalue"] == eigen["eigenvalues"][0] and len(eigen["eigenvalues"]) == 2
    assert spectra["retrain_id"].isna().all() and set(spectra["model"]) == {"api"}

    grid = t.surface(surface_id)
    import my_nets

    (x, y), _ = my_nets.load()
    net = my_nets.make_net(width=16)
    net.load_state_dict(state)
    with torch.no_grad():
        centre = F.cross_entropy(net(x), y).item()
    try:
        import xarray  # noqa: F401
    except ImportError:
        assert grid["loss"].shape == (3, 5) and list(grid["x"]) == [-1, -0.5, 0, 0.5, 1]
        np.testing.assert_allclose(grid["loss"][1, 2], centre, rtol=1e-5)
        assert list(grid["y"]) == [-1, 0, 1] and grid["model_id"] == model_id
    else:
        assert grid.dims == ("y", "x") and grid.attrs["model_id"] == model_id
        np.testing.assert_allclose(float(grid.sel(x=0.0, y=0.0)), centre, rtol=1e-5)


def test_study_files_and_the_api_name_the_users_code(tmp_path, sqlite_url, user_code) -> None:
    import tracker

    study = tmp_path / "own.toml"
    study.write_text(textwrap.dedent("""
        study = "own-study"
        [[model]]
        name = "filed"
        architecture = "my_nets:make_net"
        arch = { width = 8 }
        dataset = "my_nets:load"
        data = { options = { n = 100 } }
        epochs = 1
        batch_size = 20
    """))
    t = tracker.connect(db=sqlite_url, store=str(tmp_path / "store.zarr"))
    counts = t.enqueue_study(study)
    assert counts["models_new"] == 1
    api_id = t.enqueue_model(arch="my_nets:make_net", dataset="my_nets:load",
                             arch_config={"width": 4}, epochs=1, study="own-study")  # fmt: skip
    models = t.models(study="own-study").set_index("name", drop=False)
    assert list(models["architecture"]) == ["my_nets:make_net"] * 2
    with Database(sqlite_url).session() as session:
        filed = session.scalars(sa.select(Model).where(Model.name == "filed")).one()
        assert filed.config["code"]["architecture"]["version"] == "1.2.3"
        assert filed.dataset_config["options"] == {"n": 100}
        assert session.get(Model, api_id).arch_config == {"width": 4}


def test_checkpoint_files_take_epochs_from_names_or_from_the_flag(tmp_path) -> None:
    from tracker import NotFound, SpecError
    from tracker.training.rows import checkpoint_files

    for name in ("run_e10.pt", "run_e3.pth", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    pairs = checkpoint_files([str(tmp_path)], None)
    assert [(Path(p).name, e) for p, e in pairs] == [("run_e3.pth", 3), ("run_e10.pt", 10)]
    files = [str(tmp_path / "run_e10.pt"), str(tmp_path / "run_e3.pth")]
    assert [e for _, e in checkpoint_files(files, [7, 1])] == [7, 1]
    with pytest.raises(SpecError, match="2 files need their epochs"):
        checkpoint_files(files, None)
    with pytest.raises(SpecError, match="gives 1 epoch"):
        checkpoint_files(files, [1])
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFound, match="holds no checkpoint files"):
        checkpoint_files([str(tmp_path / "empty")], None)
