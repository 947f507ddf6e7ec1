"""Command line of training: `enqueue model` and `train` (one model, in the foreground).

Only the standard library and ``tracker._cliutil`` are imported at module top (`tracker
--help` builds these parsers); each command imports what it needs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracker._cliutil import lazy_command, open_db, settings

if TYPE_CHECKING:
    from tracker.training.rows import ModelSpec


def add_parsers(*, sub: Any, enqueue: Any, common: argparse.ArgumentParser, **_: Any) -> None:
    """Add `enqueue model` and `train`."""
    model_flags = argparse.ArgumentParser(add_help=False)
    add_model_flags(model_flags)
    p = enqueue.add_parser("model", parents=[common, model_flags], help="a model to train")
    p.set_defaults(func=lazy_command(__name__, "cmd_enqueue_model"))
    p = sub.add_parser("train", parents=[common, model_flags],
                       help="train one model here, in the foreground (logged to MLflow)")  # fmt: skip
    p.set_defaults(func=lazy_command(__name__, "cmd_train"))


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """The flags that describe a model to train (shared by `enqueue model` and `train`)."""
    p.add_argument("--study", default="default", help="study label (default: default)")
    p.add_argument("--name", help="a label for the model")
    p.add_argument("--arch", required=True, help="architecture (mlp, cnn, resnet20, ...)")
    p.add_argument("--arch-config", default="{}", metavar="JSON",
                   help='architecture options as JSON, e.g. \'{"widths": [64, 64]}\'')  # fmt: skip
    p.add_argument("--widths", help="MLP hidden widths, e.g. 64,64")
    p.add_argument("--activation", help="MLP activation: relu, tanh or sigmoid")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-root", help="folder of data sets that need files (mnist, cifar10)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the train/test split")
    p.add_argument("--augment", action="store_true", help="CIFAR augmentation (crop + flip)")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-corruption", type=float, default=0.0, metavar="P",
                   help="redraw a fraction P of the train labels (uniformly over the classes)")  # fmt: skip
    p.add_argument("--corrupt-test", action="store_true",
                   help="corrupt the test labels with the same P too (seed 000's runs do)")  # fmt: skip
    p.add_argument("--lr-milestones", default="", metavar="E1,E2",
                   help="epochs at which the learning rate is multiplied by --lr-gamma")  # fmt: skip
    p.add_argument("--lr-gamma", type=float, default=0.1)
    p.add_argument("--checkpoints", default="0", metavar="E1,E2,...",
                   help="epochs whose weights are kept (the last always is; default 0)")  # fmt: skip


# --- commands ---------------------------------------------------------------------------------


def ints(text: str, what: str) -> list[int]:
    """A comma-separated list of integers (``what`` names the flag in the error)."""
    from tracker._exceptions import SpecError

    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SpecError(f"{what} {text!r} is not a comma-separated list of integers") from None


def model_spec_from_args(args: argparse.Namespace) -> ModelSpec:
    """The model spec the flags of `enqueue model` / `train` describe (not yet checked)."""
    from tracker._exceptions import SpecError
    from tracker.training.rows import ModelSpec

    try:
        arch_config = json.loads(args.arch_config)
    except json.JSONDecodeError as err:
        raise SpecError(f"--arch-config is not valid JSON ({err})") from None
    if not isinstance(arch_config, dict):
        raise SpecError("--arch-config must be a JSON object")
    if args.widths:
        arch_config["widths"] = ints(args.widths, "--widths")
    if args.activation:
        arch_config["activation"] = args.activation
    data_cfg: dict[str, Any] = {"seed": args.data_seed}
    if args.data_root:
        data_cfg["root"] = str(Path(args.data_root).absolute())
    if args.augment:
        data_cfg["augment"] = True
    if args.corrupt_test:
        data_cfg["corrupt_test"] = True
    schedule = {}
    if args.lr_milestones:
        schedule = {
            "milestones": ints(args.lr_milestones, "--lr-milestones"),
            "gamma": args.lr_gamma,
        }
    return ModelSpec(
        architecture=args.arch, dataset=args.dataset, arch_config=arch_config,
        dataset_config=data_cfg, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, batch_size=args.batch_size, epochs=args.epochs,
        seed=args.seed, label_corruption=args.label_corruption, lr_schedule=schedule,
        checkpoint_epochs=tuple(ints(args.checkpoints, "--checkpoints")), name=args.name,
    )  # fmt: skip


# --- enqueue ----------------------------------------------------------------------------------


def cmd_enqueue_model(args: argparse.Namespace) -> int:
    from tracker._queue import get_or_create_study
    from tracker.training.rows import add_model, check_model

    spec = check_model(model_spec_from_args(args))
    db = open_db(args)
    with db.session() as session:
        study = get_or_create_study(session, args.study)
        model, new = add_model(session, study, spec)
        mid = model.id
    print(f"model {mid} ({'new' if new else 'already queued'}) in study {args.study!r}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Enqueue one model and train it here, in the foreground."""
    from tracker._exceptions import SpecError
    from tracker._queue import get_or_create_study
    from tracker._schema import Model, Task
    from tracker._worker import WorkerConfig, run_worker
    from tracker.training.rows import add_model, check_model

    spec = check_model(model_spec_from_args(args))
    cfg = settings(args)
    db = open_db(args)
    with db.session() as session:
        study = get_or_create_study(session, args.study)
        model, _ = add_model(session, study, spec)
        mid, sid, tid = model.id, study.id, model.task_id
    with db.session() as session:
        status = Task.find_or_raise_by_id(session, tid).status
    if status != "done":
        print(f"training model {mid} ({spec.architecture} on {spec.dataset}, {spec.epochs} epochs)")
        run_worker(WorkerConfig(db_url=cfg.db_url, store_url=cfg.store_url,
                                mlflow_uri=cfg.mlflow_uri, kinds=("train",),
                                study_ids=(sid,)))  # fmt: skip
    with db.session() as session:
        model = Model.find_or_raise_by_id(session, mid)
        task = Task.find_or_raise_by_id(session, tid)
        if task.status != "done":
            raise SpecError(f"training model {mid} did not finish ({task.status}): `tracker show task {tid}` has the error")  # fmt: skip
        print(
            f"model {mid}: train loss {model.train_loss:.4f} acc {model.train_acc:.4f}, "
            f"test loss {model.test_loss:.4f} acc {model.test_acc:.4f}; MLflow run {model.mlflow_run_id}"
        )
    return 0
