"""Loss-surface throughput: the tracker against loss-landscapes and a Goldstein-style loop.

One run, per case the same model, data, directions and grid, in grid points per second:

  (a) ``loss_landscapes.random_plane`` (the PyPI library, 3.0.6): one full forward per point,
      parameters moved in place. It draws its own directions (uniform, seeded through
      ``torch.manual_seed``), so only its throughput is comparable, not its values. It runs
      under ``torch.no_grad()`` (its in-place updates of leaf parameters need it).
  (b) a Goldstein-style loop (tomgoldstein/loss-landscape ``crunch``): per point the two
      directions, held as numpy arrays per parameter tensor, are combined, converted to
      tensors and added to the centre weights; then the evaluation set is read through a
      ``DataLoader`` (batch 128, no worker processes) in eval mode, summing loss and hits.
  (c) the tracker's engine alone: ``compute.engine.SurfaceEvaluator`` with strategy 'auto' on
      ready tensors; its construction is timed apart from ``evaluate`` over all points.
  (d) the whole tracker path on a 51x51 grid: a temporary TRACKER_HOME (SQLite, Zarr, MLflow),
      the models enqueued and trained through the queue (epochs=0: the seeded initial weights,
      which (a)-(c) build directly), ``tracker work --forever`` started before any surface is
      enqueued, then per case, after the workers have sat idle for ``--idle`` seconds (5: an
      idle worker polls every 2 s at most, as a running fleet would when a user enqueues), the
      time from ``add_surface`` (the function behind ``tracker enqueue surface``) to the
      surface row's ``completed_at``: direction tasks, tile tasks and the completing task,
      through SQLite and Zarr. The cold start of ``tracker work`` (launch to the first task
      claimed) is reported separately. Models with the same spec are one model in the tracker
      (digits-all and digits-mb128 share theirs, and so their directions).

  (p) plain inference for reference: one forward of the evaluation set per point with the
      weights fixed. A tool that evaluates points one at a time cannot beat it, so p/b is
      the most such a tool could gain over (b); the engine passes it only through work shared
      across points (the first-affine cache, batched points).

(b), (c) and (d) use the tracker's directions (filter-normalised Gaussian, seeds 0 and 1,
biases ignored); the largest |loss(b) - loss(c)| over the grid is printed as a check that
they compute the same surface.

Cases (``--cases``):
  digits-all     MLP [100, 100] on digits, all 1,797 samples (train + test). The tracker
                 evaluates a stored split, so (d) uses the train split (1,438 samples).
  digits-mb128   MLP [100, 100] on digits, one minibatch: the first 128 training samples.
  mnist5k        MLP [100, 100] on mnist5k (784 inputs), the 4,000 training samples.
  cnn-256        small CNN (conv 16, conv 32, dense 64) on digits, a fixed subset of 256
                 training samples (``fixed_subset`` seed 0, as ``--subset 256``).
  resnet56-mb256 ResNet-56 on one minibatch of 256 CIFAR-shaped inputs (seeded Gaussian noise:
                 throughput does not depend on the pixels): (c) against a per-point loop on
                 the same device (in-place parameter update, one forward per point). Run by
                 default only on a GPU.

Targets, on 2 CPU cores: (c) >= 1.5x (a) on every case; (d) >= 1.0x (a) and >= 20x (b); on a
GPU, ResNet-56 (c) >= 4x the per-point loop. Ratios print with PASS or MISS. The GPU cases
of issue 17 (g1: one minibatch, engine against the per-point loop; g2: 10,000 samples against
the compiled inference ceiling; g3: the whole tracker path on one ``--cuda`` worker) run with
``--gpu-cases`` (benchmarks/surface_gpu.py; benchmarks/gpu_check.sh runs them). (a)-(c) run in
this process with torch using every core; (d)'s workers share the cores (``tracker work``
gives each of its N workers cores/N threads).

    python benchmarks/surface.py [--cases a,b] [--grid 21] [--tracker-grid 51] [--workers 2]
                                 [--device cpu|cuda] [--threads N] [--repeat 2] [--idle 5]
                                 [--quick] [--no-tracker] [--verbose]

(a)-(c) and (p) run ``--repeat`` passes in turn; the first tables show the fastest pass of each,
and with two or more passes a spread table gives min / median / max of each rate and of c/a and
c/p paired within a pass (PASS there only when the worst pass meets the target: c/a >= 1.5,
c/p >= 1.0), with the load average at the start of each pass. On a loaded machine (a) and (p),
which use intra-op threads, lose more than the engine's point threads do; ``--threads 1`` gives
the ratios of the work itself. (d) runs once. ``--quick`` shrinks the grids to 5x5 and 9x9 with
one pass (a smoke run). Each pass prints its own figures. The exit status is 0 whatever the
ratios: this is a measurement, not a test.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python benchmarks/surface.py` puts this directory first on sys.path, where benchmarks/queue.py
# would shadow the standard library's `queue` (which torch, Dask and SQLAlchemy import).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
_REPO = _HERE.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

SEED = 0  # model init, data split, subset and direction seeds (y direction: SEED + 1)
STUDY = "bench-surface"
MLP_CONFIG = {"widths": [100, 100], "activation": "relu"}
CNN_CONFIG = {"channels": [16, 32], "hidden": [64]}
GOLDSTEIN_BATCH = 128

TARGET_C_OVER_A = 1.5
TARGET_C_OVER_P = 1.0  # the engine never slower than one plain forward per point
TARGET_D_OVER_A = 1.0
TARGET_D_OVER_B = 20.0
TARGET_GPU_C_OVER_LOOP = 4.0

CLAIM_TIMEOUT = 300.0
SURFACE_TIMEOUT = 1800.0
POLL = 0.02


@dataclass(frozen=True)
class Case:
    name: str
    architecture: str
    arch_config: dict[str, Any]
    dataset: str
    data: str  # 'all' | 'train' | 'minibatch' | 'subset' | 'synthetic'
    size: int | None = None
    gpu_only: bool = False

    def tracker_eval(self) -> dict[str, Any] | None:
        """The EvalSpec fields the tracker path uses (None: the tracker path does not run)."""
        if self.data in ("all", "train"):
            return {"split": "train"}
        if self.data == "minibatch":
            return {"split": "train", "minibatches": 1, "minibatch_size": self.size}
        if self.data == "subset":
            return {"split": "train", "subset": self.size, "subset_seed": SEED}
        return None


CASES = {
    c.name: c
    for c in (
        Case("digits-all", "mlp", MLP_CONFIG, "digits", "all"),
        Case("digits-mb128", "mlp", MLP_CONFIG, "digits", "minibatch", 128),
        Case("mnist5k", "mlp", MLP_CONFIG, "mnist5k", "train"),
        Case("cnn-256", "cnn", CNN_CONFIG, "digits", "subset", 256),
        Case("resnet56-mb256", "resnet56", {}, "cifar10", "synthetic", 256, gpu_only=True),
    )
}


@dataclass
class Timed:
    points: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class Problem:
    """One case's model, evaluation data and directions, built the way the tracker builds them."""

    case: Case
    model: nn.Module
    layout: list[dict[str, Any]]
    centre: torch.Tensor
    directions: list[torch.Tensor]
    x: torch.Tensor
    y: torch.Tensor
    loss: str


@dataclass
class CaseResult:
    case: Case
    samples: int
    a: Timed | None = None
    b: Timed | None = None
    c: Timed | None = None
    c_build_s: float | None = None
    c_plan: dict[str, Any] = field(default_factory=dict)
    loop: Timed | None = None  # the GPU case's per-point loop
    plain: Timed | None = None  # (p) one forward per point at fixed weights
    max_diff: float | None = None  # largest |loss(b) - loss(c)|
    d: TrackerResult | None = None
    # Every pass of (a), (c) and (p), in order: the spread, and ratios paired within a pass.
    passes: list[dict[str, Timed]] = field(default_factory=list)
    pass_load: list[float] = field(default_factory=list)  # 1-minute load average per pass


@dataclass
class TrackerResult:
    points: int
    samples: int
    seconds: float  # enqueue to completed_at
    enqueue_s: float
    first_claim_s: float | None
    engine_s: float  # evaluate() time summed over tiles (both workers)
    tiles: int
    strategy: str

    @property
    def rate(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else float("inf")


# --- the problem ------------------------------------------------------------------------------


def build_problem(case: Case, device: torch.device) -> Problem:
    from compute import data as data_mod
    from compute.directions import random_direction
    from compute.models import build_model, check_architecture
    from compute.state import flatten_state, layout_of

    if case.data == "synthetic":
        gen = torch.Generator().manual_seed(SEED)
        size = int(case.size or 256)
        x = torch.randn(size, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (size,), generator=gen)
        input_shape, classes, loss = (3, 32, 32), 10, "cross_entropy"
    else:
        ds = data_mod.load_dataset(case.dataset, seed=SEED)
        x, y = ds.split("train")
        if case.data == "all":
            parts = [(ds.train_x, ds.train_y), (ds.test_x, ds.test_y)]
            if ds.val_x is not None and ds.val_y is not None:
                parts.append((ds.val_x, ds.val_y))
            x = torch.cat([p[0] for p in parts])
            y = torch.cat([p[1] for p in parts])
        elif case.data == "minibatch":
            x, y = x[: case.size], y[: case.size]
        elif case.data == "subset":
            x, y = data_mod.fixed_subset(x, y, int(case.size or 0), SEED)
        input_shape, classes, loss = ds.input_shape, ds.num_classes, data_mod.loss_kind(ds)
    cfg = check_architecture(case.architecture, dict(case.arch_config))
    model = build_model(
        case.architecture, cfg, input_shape=input_shape, num_classes=classes, seed=SEED
    )
    model.eval()
    layout = layout_of(model)
    centre = flatten_state(model, layout)
    directions = [
        random_direction(
            layout, centre, seed=SEED + k, normalization="filter", ignore="biasbn", target="weights"
        )
        for k in range(2)
    ]
    return Problem(case, model.to(device), layout, centre, directions, x, y, loss)


def grid_coords(n: int) -> np.ndarray:
    """Points of the n x n grid on [-1, 1]^2, row-major (y outer, x inner), as [n*n, 2]."""
    xs = np.linspace(-1.0, 1.0, n)
    gx, gy = np.meshgrid(xs, xs)
    return np.column_stack([gx.ravel(), gy.ravel()])


def _criterion(loss: str) -> nn.Module:
    return nn.CrossEntropyLoss() if loss == "cross_entropy" else nn.MSELoss()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best(old: Timed | None, new: Timed) -> Timed:
    return new if old is None or new.seconds < old.seconds else old


# --- (a) loss-landscapes ----------------------------------------------------------------------


def run_loss_landscapes(p: Problem, n: int, device: torch.device) -> Timed:
    import loss_landscapes
    import loss_landscapes.metrics

    x, y = p.x.to(device), p.y.to(device)
    metric = loss_landscapes.metrics.Loss(_criterion(p.loss), x, y)
    torch.manual_seed(SEED)  # its directions come from the global generator
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        values = loss_landscapes.random_plane(
            p.model, metric, 1.0, n, normalization="filter", deepcopy_model=True
        )
    _sync(device)
    seconds = time.perf_counter() - start
    points = int(np.asarray(values).size)
    if points != n * n:
        raise RuntimeError(f"loss_landscapes returned {points} values for a {n}x{n} grid")
    return Timed(points, seconds)


# --- (b) Goldstein-style loop -----------------------------------------------------------------


def run_goldstein(p: Problem, coords: np.ndarray, device: torch.device) -> tuple[Timed, np.ndarray]:
    """Per point: numpy directions -> tensors added to the weights, then a DataLoader pass."""
    import copy

    from torch.utils.data import DataLoader, TensorDataset

    from compute.state import unflatten

    net = copy.deepcopy(p.model).to(device).eval()
    params = list(net.parameters())
    names = [name for name, _ in net.named_parameters()]
    weights = [q.data.clone() for q in params]
    # The direction files hold one numpy array per parameter tensor, in parameter order.
    dx, dy = (unflatten(d, p.layout) for d in p.directions)
    dirs = [
        [dx[name].numpy().copy() for name in names],
        [dy[name].numpy().copy() for name in names],
    ]
    loader = DataLoader(TensorDataset(p.x, p.y), batch_size=GOLDSTEIN_BATCH, shuffle=False)
    criterion = _criterion(p.loss)
    losses = np.zeros(coords.shape[0])
    _sync(device)
    start = time.perf_counter()
    for i, (a, b) in enumerate(coords):
        changes = [d0 * a + d1 * b for d0, d1 in zip(dirs[0], dirs[1], strict=True)]
        for q, w, change in zip(params, weights, changes, strict=True):
            q.data = w + torch.from_numpy(np.asarray(change)).to(device=w.device, dtype=w.dtype)
        total, total_loss, correct = 0, 0.0, 0
        with torch.no_grad():
            for inputs, targets in loader:
                inputs, targets = inputs.to(device), targets.to(device)
                outputs = net(inputs)
                total += inputs.shape[0]
                total_loss += criterion(outputs, targets).item() * inputs.shape[0]
                if p.loss == "cross_entropy":
                    correct += int((outputs.argmax(1) == targets).sum().item())
        losses[i] = total_loss / total
    seconds = time.perf_counter() - start
    return Timed(coords.shape[0], seconds), losses


# --- (c) the engine ---------------------------------------------------------------------------


def run_engine(
    p: Problem, coords: np.ndarray, device: torch.device
) -> tuple[Timed, float, dict[str, Any], np.ndarray]:
    from compute.engine import SurfaceEvaluator

    _sync(device)
    start = time.perf_counter()
    evaluator = SurfaceEvaluator(
        p.model,
        p.layout,
        p.centre,
        p.directions,
        [(p.x, p.y)],
        loss=p.loss,
        bn_mode="eval",
        device=device,
        strategy="auto",
    )
    _sync(device)
    build = time.perf_counter() - start
    start = time.perf_counter()
    values = evaluator.evaluate(coords)
    _sync(device)
    seconds = time.perf_counter() - start
    return Timed(coords.shape[0], seconds), build, evaluator.plan, values["loss"][0]


# --- (p) plain inference: the ceiling of a per-point evaluator ---------------------------------


def run_plain(p: Problem, coords: np.ndarray, device: torch.device) -> Timed:
    """One forward of the evaluation set per point at fixed weights (nothing moves): no tool
    that evaluates points one at a time can beat it, so p/b bounds what such a tool gains
    over (b); beyond it only work shared across points helps (first-affine, batching)."""
    x, y = p.x.to(device), p.y.to(device)
    criterion = _criterion(p.loss)
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(coords.shape[0]):
            criterion(p.model(x), y).item()
    _sync(device)
    return Timed(coords.shape[0], time.perf_counter() - start)


# --- the GPU case's per-point loop ------------------------------------------------------------


def run_point_loop(p: Problem, coords: np.ndarray, device: torch.device) -> Timed:
    """Per point: centre + a d1 + b d2 on the device copied into the weights, one forward."""
    import copy

    from compute.state import unflatten

    net = copy.deepcopy(p.model).to(device).eval()
    state = net.state_dict()
    centre, d1, d2 = (v.to(device) for v in (p.centre, *p.directions))
    x, y = p.x.to(device), p.y.to(device)
    criterion = _criterion(p.loss)
    points = torch.as_tensor(coords, dtype=torch.float32)
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for a, b in points.tolist():
            flat = centre + a * d1 + b * d2
            for name, piece in unflatten(flat, p.layout).items():
                state[name].copy_(piece)
            criterion(net(x), y).item()
    _sync(device)
    return Timed(coords.shape[0], time.perf_counter() - start)


# --- (d) the whole tracker path ---------------------------------------------------------------


def _now() -> datetime:
    """The database's clock format: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def _wait(what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            raise RuntimeError(
                f"`tracker work` exited ({proc.returncode}) while waiting for {what}:\n"
                + _tail(log)
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _failed(db: Any, study_id: int) -> str | None:
    import sqlalchemy as sa

    from tracker._schema import Task

    with db.session() as s:
        row = s.execute(
            sa.select(Task.id, Task.kind, Task.error)
            .where(Task.study_id == study_id, Task.status == "failed")
            .limit(1)
        ).first()
    if row is None:
        return None
    return f"task {row.id} ({row.kind}) failed:\n{row.error}"


def run_tracker_path(
    cases: list[Case],
    n: int,
    workers: int,
    samples: dict[str, int],
    idle: float = 0.0,
    verbose: bool = False,
) -> tuple[float, dict[str, TrackerResult]]:
    """Cold start of `tracker work`, then enqueue-to-complete per case; see the module doc."""
    import sqlalchemy as sa

    from tracker._db import open_database
    from tracker._migrate import upgrade
    from tracker._queue import get_or_create_study
    from tracker._schema import Study, Surface, Task
    from tracker.surfaces.rows import EvalSpec, Grid, SurfaceSpec, add_surface
    from tracker.training.rows import DirectionSpec, ModelSpec, add_model, check_model

    tmp = Path(tempfile.mkdtemp(prefix="bench-surface-"))
    home = tmp / ".tracker"
    home.mkdir()
    db_url = f"sqlite:///{home / 'tracker.db'}"
    env = dict(os.environ)
    for key in ("TRACKER_DB_URL", "TRACKER_STORE", "MLFLOW_TRACKING_URI", "TRACKER_TORCH_THREADS"):
        env.pop(key, None)
    env["TRACKER_HOME"] = str(home)
    log = tmp / "work.log"
    proc: subprocess.Popen[bytes] | None = None
    db = open_database(db_url, check=False)
    try:
        upgrade(db, "head")
        model_ids: dict[str, int] = {}
        with db.session() as s:
            study = get_or_create_study(s, STUDY)
            study_id = study.id
            for case in cases:
                spec = check_model(
                    ModelSpec(
                        architecture=case.architecture,
                        dataset=case.dataset,
                        arch_config=dict(case.arch_config),
                        dataset_config={"seed": SEED},
                        epochs=0,
                        seed=SEED,
                        name=case.name,
                    )
                )
                model, _ = add_model(s, study, spec)
                model_ids[case.name] = model.id
        launched = _now()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tracker.cli",
                    "work",
                    "--forever",
                    "--workers",
                    str(workers),
                    "--no-progress",
                ],
                env=env,
                cwd=tmp,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def first_claim() -> datetime | None:
            with db.session() as s:
                return s.scalar(sa.select(sa.func.min(Task.started_at)))

        claimed = _wait("the first claim", first_claim, CLAIM_TIMEOUT, proc, log)
        cold_start = (claimed - launched).total_seconds()

        def trained() -> bool:
            problem = _failed(db, study_id)
            if problem:
                raise RuntimeError(problem)
            with db.session() as s:
                left = s.scalar(
                    sa.select(sa.func.count())
                    .select_from(Task)
                    .where(Task.kind == "train", Task.status != "done")
                )
            return left == 0

        _wait("training (epochs=0)", trained, CLAIM_TIMEOUT, proc, log)

        results: dict[str, TrackerResult] = {}
        grid = Grid(-1.0, 1.0, n)
        for case in cases:
            ev = case.tracker_eval()
            assert ev is not None
            # Idle workers poll ever more slowly (up to every 2 s): enqueue into that state.
            time.sleep(idle)
            with db.session() as s:
                last_task = s.scalar(sa.select(sa.func.max(Task.id))) or 0
            started = _now()
            t0 = time.perf_counter()
            with db.session() as s:
                study = s.get(Study, study_id)
                surface, _ = add_surface(
                    s,
                    study,
                    SurfaceSpec(
                        model=model_ids[case.name],
                        x=grid,
                        y=grid,
                        x_direction=DirectionSpec(seed=SEED),
                        y_direction=DirectionSpec(seed=SEED + 1),
                        evaluation=EvalSpec(**ev),
                    ),
                )
                surface_id = surface.id
            enqueue_s = time.perf_counter() - t0

            def complete(surface_id: int = surface_id) -> datetime | None:
                problem = _failed(db, study_id)
                if problem:
                    raise RuntimeError(problem)
                with db.session() as s:
                    return s.scalar(sa.select(Surface.completed_at).where(Surface.id == surface_id))

            done = _wait(
                f"surface {surface_id} ({case.name})", complete, SURFACE_TIMEOUT, proc, log
            )
            with db.session() as s:
                # This surface's own tasks (directions may be shared with an earlier surface).
                rows = s.execute(
                    sa.select(
                        Task.id,
                        Task.kind,
                        Task.worker,
                        Task.started_at,
                        Task.finished_at,
                        Task.result,
                    )
                    .where(Task.id > last_task)
                    .order_by(Task.started_at)
                ).all()
            tiles = [r.result or {} for r in rows if r.kind == "surface.tile"]
            first = min((r.started_at for r in rows if r.started_at is not None), default=None)
            if verbose:
                for r in rows:
                    info = {k: v for k, v in (r.result or {}).items() if k in ("points", "seconds")}
                    print(
                        f"    task {r.id} {r.kind:<16} {r.worker}: "
                        f"{(r.started_at - started).total_seconds():7.3f} -> "
                        f"{(r.finished_at - started).total_seconds():7.3f} s {info}",
                        flush=True,
                    )
            results[case.name] = TrackerResult(
                points=n * n,
                samples=samples[case.name],
                seconds=(done - started).total_seconds(),
                enqueue_s=enqueue_s,
                first_claim_s=(first - started).total_seconds() if first else None,
                engine_s=sum(float(r.get("seconds", 0.0)) for r in tiles),
                tiles=len(tiles),
                strategy=str((tiles[0].get("plan") or {}).get("strategy", "?")) if tiles else "?",
            )
        return cold_start, results
    finally:
        if proc is not None:
            _stop(proc)
        db.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop `tracker work` and its Dask processes (its own process group)."""
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    # Dask's worker processes may outlive the CLI by a moment; they share its group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def tracker_samples(case: Case) -> int:
    """How many samples the tracker path evaluates per point for ``case``."""
    from compute import data as data_mod

    ds = data_mod.load_dataset(case.dataset, seed=SEED)
    n = int(ds.split("train")[0].shape[0])
    return min(n, int(case.size)) if case.data in ("minibatch", "subset") else n


# --- report -----------------------------------------------------------------------------------


def _rate(t: Timed | TrackerResult | None) -> str:
    return "-" if t is None else f"{t.rate:,.1f}"


def _ratio(top: Timed | TrackerResult | None, bottom: Timed | None, target: float) -> str:
    if top is None or bottom is None:
        return "-"
    r = top.rate / bottom.rate
    return f"{r:.2f}x {'PASS' if r >= target else 'MISS'}"


def _plain_ratio(top: Timed | TrackerResult | None, bottom: Timed | None) -> str:
    if top is None or bottom is None:
        return "-"
    return f"{top.rate / bottom.rate:.2f}x"


_SPREAD_HEADERS = ["a", "c", "p", "c/a", "c/p"]


def _three(values: list[float], digits: int) -> str:
    """min / median / max of ``values``."""
    v = sorted(values)
    return " / ".join(f"{x:,.{digits}f}" for x in (v[0], float(np.median(v)), v[-1]))


def _spread_row(r: CaseResult) -> list[str]:
    loads = f"{min(r.pass_load):.1f}-{max(r.pass_load):.1f}"
    row = [r.case.name, str(len(r.passes)), loads]
    if not all("a" in p for p in r.passes):  # the GPU case: engine and per-point loop
        return [*row, "-", _three([p["c"].rate for p in r.passes], 0), "-", "-", "-"]
    c_a = [p["c"].rate / p["a"].rate for p in r.passes]
    c_p = [p["c"].rate / p["p"].rate for p in r.passes]
    return [
        *row,
        _three([p["a"].rate for p in r.passes], 0),
        _three([p["c"].rate for p in r.passes], 0),
        _three([p["p"].rate for p in r.passes], 0),
        f"{_three(c_a, 2)} {'PASS' if min(c_a) >= TARGET_C_OVER_A else 'MISS'}",
        f"{_three(c_p, 2)} {'PASS' if min(c_p) >= TARGET_C_OVER_P else 'MISS'}",
    ]


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(
                v.rjust(w) if i else v.ljust(w)
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)


def report(results: list[CaseResult], n: int, nd: int, cold_start: float | None) -> str:
    out: list[str] = []
    rows = []
    for r in results:
        if r.case.gpu_only or r.loop is not None:
            continue
        rows.append(
            [
                r.case.name,
                str(r.samples),
                _rate(r.a),
                _rate(r.b),
                _rate(r.c),
                _rate(r.d),
                _ratio(r.c, r.a, TARGET_C_OVER_A),
                _ratio(r.d, r.a, TARGET_D_OVER_A),
                _ratio(r.d, r.b, TARGET_D_OVER_B),
            ]
        )
    if rows:
        out.append(
            f"points per second ((a)-(c) on a {n}x{n} grid, (d) on {nd}x{nd}); "
            f"targets c/a >= {TARGET_C_OVER_A}, d/a >= {TARGET_D_OVER_A}, d/b >= {TARGET_D_OVER_B}"
        )
        out.append(table(["case", "samples", "a", "b", "c", "d", "c/a", "d/a", "d/b"], rows))
        out.append("")
        out.append(
            "(p) plain inference, one forward per point at fixed weights: p/b is the most any "
            "per-point evaluator gains over (b); c/p is what the engine's shared work adds"
        )
        out.append(
            table(
                ["case", "p", "p/b", "c/p", "d/p"],
                [
                    [
                        r.case.name,
                        _rate(r.plain),
                        _plain_ratio(r.plain, r.b),
                        _plain_ratio(r.c, r.plain),
                        _plain_ratio(r.d, r.plain),
                    ]
                    for r in results
                    if r.plain is not None
                ],
            )
        )
    spread = [r for r in results if len(r.passes) > 1]
    if spread:
        out.append("")
        out.append(
            "spread over the passes (min / median / max): rates in points per second, ratios "
            "paired within a pass; PASS only when the worst pass meets the target"
        )
        out.append(
            table(["case", "passes", "load", *_SPREAD_HEADERS], [_spread_row(r) for r in spread])
        )
    gpu = [r for r in results if r.loop is not None]
    if gpu:
        out.append("")
        out.append(
            f"per-point loop vs engine on the same device; target c/loop >= {TARGET_GPU_C_OVER_LOOP}"
        )
        out.append(
            table(
                ["case", "samples", "loop", "c", "c/loop"],
                [
                    [
                        r.case.name,
                        str(r.samples),
                        _rate(r.loop),
                        _rate(r.c),
                        _ratio(r.c, r.loop, TARGET_GPU_C_OVER_LOOP),
                    ]
                    for r in gpu
                ],
            )
        )
    out.append("")
    out.append("engine plans and checks:")
    for r in results:
        plan = r.c_plan
        parts = [
            f"  {r.case.name}: {plan.get('strategy', '?')} K={plan.get('points_per_call', '?')}",
            f"first-affine {plan.get('first_affine_note', '?')}",
            *(["channels-last"] if plan.get("channels_last") else []),
            f"build {r.c_build_s:.2f} s" if r.c_build_s is not None else "build -",
        ]
        if r.max_diff is not None:
            parts.append(f"max |loss(b) - loss(c)| = {r.max_diff:.1e}")
        out.append(", ".join(parts))
    tracked = [r for r in results if r.d is not None]
    if tracked:
        out.append("")
        out.append(f"tracker path (d), {nd}x{nd} grid: enqueue -> completed_at")
        out.append(
            table(
                [
                    "case",
                    "samples",
                    "tiles",
                    "strategy",
                    "enqueue s",
                    "first claim s",
                    "engine s (sum)",
                    "total s",
                    "points/s",
                ],
                [
                    [
                        r.case.name,
                        str(r.d.samples),
                        str(r.d.tiles),
                        r.d.strategy,
                        f"{r.d.enqueue_s:.3f}",
                        "-" if r.d.first_claim_s is None else f"{r.d.first_claim_s:.2f}",
                        f"{r.d.engine_s:.2f}",
                        f"{r.d.seconds:.2f}",
                        f"{r.d.rate:,.1f}",
                    ]
                    for r in tracked
                    if r.d is not None
                ],
            )
        )
        if any(r.d is not None and r.d.samples != r.samples for r in tracked):
            out.append(
                "note: where the samples differ, (d) evaluates the stored train split "
                "(the tracker cannot express train + test together)."
            )
    if cold_start is not None:
        out.append("")
        out.append(
            f"cold start of `tracker work` (launch to first task claimed): {cold_start:.2f} s"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--grid", type=int, default=21, help="grid side for (a)-(c) (21)")
    parser.add_argument("--tracker-grid", type=int, default=51, help="grid side for (d) (51)")
    parser.add_argument("--workers", type=int, default=2, help="`tracker work` workers (2)")
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="device for (a)-(c) (default: cuda when available)",
    )
    parser.add_argument("--quick", action="store_true", help="5x5 and 9x9 grids: a smoke run")
    parser.add_argument("--no-tracker", action="store_true", help="skip (d)")
    parser.add_argument("--verbose", action="store_true", help="(d): every task's timeline")
    parser.add_argument(
        "--idle",
        type=float,
        default=None,
        help="(d): seconds the workers sit idle before each enqueue (5; 0 with --quick)",
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="passes of (a)-(c) per case; the best counts (2)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for (a)-(c) (all cores)"
    )
    parser.add_argument("--gpu-cases", action="store_true",
                        help="run the GPU cases g1-g3 instead (benchmarks/surface_gpu.py)")  # fmt: skip
    parser.add_argument("--json", help="--gpu-cases: write the figures to this JSON file")
    parser.add_argument("--g3-grid", type=int, default=51, help="--gpu-cases: g3's grid side")
    parser.add_argument("--compile-mode", default="default",
                        choices=["default", "reduce-overhead", "max-autotune"],
                        help="--gpu-cases: torch.compile mode of g2/g3 (default)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.gpu_cases:
        from benchmarks.surface_gpu import run as run_gpu_cases

        chosen = [c.strip() for c in (args.cases or "g1,g2,g3").split(",") if c.strip()]
        if not set(chosen) <= {"g1", "g2", "g3"}:
            parser.error("--gpu-cases takes --cases from g1, g2, g3")
        return run_gpu_cases(chosen, args.json, args.g3_grid, args.compile_mode)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.cases:
        names = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in names if c not in CASES]
        if unknown:
            parser.error(f"unknown case(s) {', '.join(unknown)}: choose from {', '.join(CASES)}")
    else:
        names = [c.name for c in CASES.values() if device.type == "cuda" or not c.gpu_only]
    n, nd = (5, 9) if args.quick else (args.grid, args.tracker_grid)
    if args.quick:
        args.repeat = 1
    if args.idle is None:
        args.idle = 0.0 if args.quick else 5.0
    if n < 2 or nd < 2:
        parser.error("grids need at least 2 points a side")
    if args.repeat < 1 or args.workers < 1:
        parser.error("--repeat and --workers must be at least 1")
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, args.threads or cores))
    print(
        f"device {device}; torch {torch.__version__} with {torch.get_num_threads()} threads for "
        f"(a)-(c) ({cores} cores here); (d): {args.workers} workers; load average "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )
    coords = grid_coords(n)
    results: list[CaseResult] = []
    for name in names:
        case = CASES[name]
        p = build_problem(case, device)
        r = CaseResult(case, samples=int(p.x.shape[0]))
        print(f"[{name}] {r.samples} samples, {p.centre.numel():,} state values", flush=True)
        for rep in range(args.repeat):
            r.pass_load.append(os.getloadavg()[0])
            c, build, r.c_plan, c_loss = run_engine(p, coords, device)
            r.c, r.c_build_s = _best(r.c, c), min(build, r.c_build_s or build)
            line = f"(c) engine {c.rate:,.1f}"
            if case.gpu_only:
                loop = run_point_loop(p, coords, device)
                r.loop = _best(r.loop, loop)
                line += f", per-point loop {loop.rate:,.1f} points/s"
                r.passes.append({"c": c, "loop": loop})
            else:
                a = run_loss_landscapes(p, n, device)
                r.a = _best(r.a, a)
                b, b_loss = run_goldstein(p, coords, device)
                r.b = _best(r.b, b)
                plain = run_plain(p, coords, device)
                r.plain = _best(r.plain, plain)
                r.max_diff = float(np.max(np.abs(b_loss - c_loss)))
                r.passes.append({"a": a, "c": c, "p": plain})
                line += (
                    f", (a) loss-landscapes {a.rate:,.1f}, (b) Goldstein loop {b.rate:,.1f}, "
                    f"(p) plain {plain.rate:,.1f} points/s; c/a {c.rate / a.rate:.2f}, "
                    f"c/p {c.rate / plain.rate:.2f}"
                )
            print(f"[{name}] pass {rep + 1}: {line} (load {r.pass_load[-1]:.2f})", flush=True)
        results.append(r)
    cold_start = None
    tracked = [r for r in results if r.case.tracker_eval() is not None]
    if tracked and not args.no_tracker:
        print(f"(d) tracker path: {len(tracked)} surface(s) of {nd}x{nd}", flush=True)
        samples = {r.case.name: tracker_samples(r.case) for r in tracked}
        cold_start, d = run_tracker_path(
            [r.case for r in tracked], nd, args.workers, samples, args.idle, args.verbose
        )
        for r in tracked:
            r.d = d[r.case.name]
    print()
    print(report(results, n, nd, cold_start))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
