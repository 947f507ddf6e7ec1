"""Command line of training: `enqueue model` and `train` (one model, in the foreground).

Only the standard library and ``tracker._cliutil`` are imported at module top (`tracker
--help` builds these parsers); each command imports what it needs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracker._cli_output import Enqueued, emit
from tracker._cliutil import DEFAULT_STUDY, lazy_command, open_db, settings

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
    p.add_argument("--study", default=DEFAULT_STUDY, help="study label")
    p.add_argument("--name", help="a label for the model")
    p.add_argument("--arch", required=True,
                   help="architecture (mlp, cnn, resnet20, ...) or your factory as module:callable")  # fmt: skip
    p.add_argument("--arch-config", default="{}", metavar="JSON",
                   help='architecture options as JSON, e.g. \'{"widths": [64, 64]}\'')  # fmt: skip
    p.add_argument("--widths", help="MLP hidden widths, e.g. 64,64")
    p.add_argument("--activation", help="MLP activation: relu, tanh or sigmoid")
    add_data_flags(p)
    p.add_argument("--augment", action="store_true", help="CIFAR augmentation (crop + flip)")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-seed", "--seed", dest="seed", type=int, default=0,
                   help="seed of the initial weights and the minibatch order")
    p.add_argument("--label-corruption", type=float, default=0.0, metavar="P",
                   help="redraw a fraction P of the train labels (uniformly over the classes)")  # fmt: skip
    p.add_argument("--corrupt-test", action="store_true",
                   help="corrupt the test labels with the same P too (seed 000's runs do)")  # fmt: skip
    p.add_argument("--lr-milestones", default="", metavar="E1,E2",
                   help="epochs at which the learning rate is multiplied by --lr-gamma")  # fmt: skip
    p.add_argument("--lr-gamma", type=float, default=0.1)
    p.add_argument("--checkpoints", default="0", metavar="E1,E2,...",
                   help="epochs whose weights are kept (the last always is; default 0)")  # fmt: skip


def add_data_flags(p: argparse.ArgumentParser) -> None:
    """The flags that name a data set (shared by the model commands and `import model`)."""
    p.add_argument("--dataset", required=True,
                   help="a built-in (digits, cifar10, ...), imagefolder, tensors, or your loader "
                   "as module:callable")  # fmt: skip
    p.add_argument("--data-root",
                   help="folder of data sets that need files (mnist, cifar10), the imagefolder "
                   "folder or the tensors file")  # fmt: skip
    p.add_argument("--dataset-config", default="{}", metavar="JSON",
                   help='more data options as JSON, e.g. \'{"transform": "imagenet"}\' or '
                   '\'{"options": {...}}\' for your loader')  # fmt: skip
    p.add_argument("--data-seed", type=int, default=0, help="seed of the train/test split")


def json_object(text: str, flag: str) -> dict[str, Any]:
    """A flag's JSON object; SpecError naming the flag otherwise."""
    from tracker._exceptions import SpecError

    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(f"{flag} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise SpecError(f"{flag} must be a JSON object")
    return value


def data_config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The data set config the data flags describe."""
    data_cfg: dict[str, Any] = {"seed": args.data_seed}
    if args.data_root:
        data_cfg["root"] = str(Path(args.data_root).absolute())
    data_cfg.update(json_object(args.dataset_config, "--dataset-config"))
    return data_cfg


def add_import_model_parser(imports: Any, common: argparse.ArgumentParser) -> None:
    """`import model`: checkpoint files of a network trained elsewhere (the `import` group is
    made by the surfaces' command line, next to `import h5`)."""
    p = imports.add_parser("model", parents=[common],
                           help="checkpoint files of your own network (state_dict, .pth/.t7, "
                           "DataParallel, safetensors) as a model row")  # fmt: skip
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="checkpoint files, or one folder of them (epochs from the numbers in "
                   "their names)")  # fmt: skip
    p.add_argument("--arch", required=True,
                   help="the architecture: a built-in or your factory as module:callable")  # fmt: skip
    p.add_argument("--arch-config", default="{}", metavar="JSON",
                   help="keyword arguments of the factory, e.g. '{\"num_classes\": 10}'")  # fmt: skip
    add_data_flags(p)
    p.add_argument("--name", help="a label for the model")
    p.add_argument("--study", default=DEFAULT_STUDY, help="study label")
    p.add_argument("--epoch", default=None, metavar="E1,E2,...",
                   help="the epoch of each file (default: 0 for one file, else from names)")  # fmt: skip
    p.add_argument("--metrics-from-eval", action="store_true",
                   help="evaluate train/test loss and accuracy of each checkpoint once")  # fmt: skip
    p.set_defaults(func=lazy_command(__name__, "cmd_import_model"))


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
    from tracker.training.rows import ModelSpec

    arch_config = json_object(args.arch_config, "--arch-config")
    if args.widths:
        arch_config["widths"] = ints(args.widths, "--widths")
    if args.activation:
        arch_config["activation"] = args.activation
    data_cfg = data_config_from_args(args)
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
        mid, tid = model.id, model.task_id
    emit(args, Enqueued(args.study, "models", [mid], tasks=[tid] if tid else []),
         f"model {mid} ({'new' if new else 'already queued'}) in study {args.study!r}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Enqueue one model and train it here, in the foreground."""
    import importlib
    import threading

    from tracker._exceptions import SpecError
    from tracker._malloc import tune_this_process
    from tracker._mlflow import discard_prestarted, prestart
    from tracker._queue import get_or_create_study
    from tracker._schema import Model, Task
    from tracker._worker import WorkerConfig, run_worker
    from tracker.training.rows import add_model, check_model

    cfg = settings(args)
    # The training runs on this thread: the allocator set for it (tracker._malloc, ~16% a
    # step on ResNet-20), before anything heavy is allocated.
    tune_this_process(1)
    # MLflow's import and store open in a side process now, beside torch's import here (a
    # spec that check_model refuses stops it at exit).
    prestart(cfg.mlflow_uri)
    spec = check_model(model_spec_from_args(args))
    # torch.optim's first step imports torch._dynamo (~1.7 s): a thread starts on it now and
    # runs while this thread waits on the database and on the side process.
    threading.Thread(target=importlib.import_module, args=("torch._dynamo",), daemon=True).start()
    db = open_db(args)
    with db.session() as session:
        study = get_or_create_study(session, args.study)
        model, _ = add_model(session, study, spec)
        mid, sid, tid = model.id, study.id, model.task_id
    with db.session() as session:
        status = Task.find_or_raise_by_id(session, tid).status
    if status == "done":
        discard_prestarted()
    else:
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


# --- import -----------------------------------------------------------------------------------

def cmd_import_model(args: argparse.Namespace) -> int:
    """Import checkpoint files as a model row with its checkpoints in the store."""
    from tracker.training.rows import ImportSpec, checkpoint_files, import_model

    epochs = None if args.epoch is None else ints(args.epoch, "--epoch")
    spec = ImportSpec(
        files=checkpoint_files(args.files, epochs), architecture=args.arch,
        dataset=args.dataset, arch_config=json_object(args.arch_config, "--arch-config"),
        dataset_config=data_config_from_args(args), name=args.name,
        metrics_from_eval=args.metrics_from_eval,
    )  # fmt: skip
    db = open_db(args)
    done = import_model(db, settings(args).store_url, spec, study=args.study)
    state = "imported" if done.new else "already imported"
    kept = ", ".join(map(str, done.epochs))
    print(f"model {done.model_id} ({state}) in study {args.study!r}: checkpoints at epoch(s) {kept}")
    return 0
