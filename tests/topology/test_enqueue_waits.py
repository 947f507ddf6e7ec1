"""`tracker enqueue topology` while retrains are unfinished (issue 14 item 11): it waits on
them, so `enqueue retrain && enqueue topology && work` runs in one go; only failed retrains
are refused, naming them and the fix, with nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_support import run_tracker, tracker_env
from schema_support import migrated

from tracker._config import resolve
from tracker._db import open_database
from tracker._schema import Embedding, PersistenceDiagram, Retrain, Task


class Home:
    def __init__(self, root: Path) -> None:
        self.settings = resolve(home=root / ".tracker")
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.db = open_database(self.settings.db_url, check=False)
        migrated(self.db)  # a copy of a migrated template
        self.env = tracker_env(root)

    def cli(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        """`tracker ARGV` in this process (cheaper than a process)."""
        from tracker.cli import main

        capsys.readouterr()
        code = main(["--db", self.settings.db_url, "--store", self.settings.store_url,
                     "--home", str(self.settings.home), *argv])  # fmt: skip
        out = capsys.readouterr()
        return code, out.out, out.err

    def count(self, cls: type) -> int:
        with self.db.session() as s:
            return int(s.scalar(sa.select(sa.func.count()).select_from(cls)))


def test_enqueue_retrain_then_topology_then_one_work_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = Home(tmp_path)
    code, _, err = home.cli(capsys, "enqueue", "model", "--name", "mlp", "--arch", "mlp",
                            "--widths", "8", "--dataset", "digits", "--epochs", "2",
                            "--study", "topo")  # fmt: skip
    assert code == 0, err
    code, _, err = home.cli(capsys, "enqueue", "retrain", "--model", "mlp", "--seeds", "0-1",
                            "--steps", "0.5", "--epochs", "2", "--batch-size", "64")  # fmt: skip
    assert code == 0, err
    # Nothing has run yet: the topology is enqueued waiting on the retrains, not refused.
    code, out, err = home.cli(capsys, "enqueue", "topology", "--model", "mlp", "--knn", "3")
    assert code == 0, err
    assert "waiting on unfinished retrains" in out
    with home.db.session() as s:
        emb = s.scalar(sa.select(Embedding))
        assert s.get(Task, emb.task_id).status == "waiting"
    work = run_tracker("work", "--no-progress", env=home.env)
    assert work.returncode == 0, work.stderr[-3000:]
    assert "failed 0" in work.stdout
    with home.db.session() as s:
        assert s.scalar(sa.select(Embedding)).coords_array_id is not None
        diagram = s.scalar(sa.select(PersistenceDiagram))
        assert diagram.diagram_array_id is not None and diagram.h0_count
        statuses = set(s.scalars(sa.select(Task.status)))
    assert statuses == {"done"}

    # A retrain that failed: a new topology over it is refused (its task could never run).
    code, _, err = home.cli(capsys, "enqueue", "retrain", "--model", "mlp", "--seeds", "7",
                            "--steps", "0.5", "--epochs", "1")  # fmt: skip
    assert code == 0, err
    with home.db.session() as s:
        broken = s.scalar(sa.select(Retrain).where(Retrain.seed == 7))
        s.execute(sa.update(Task).where(Task.id == broken.task_id)
                  .values(status="failed", error="RuntimeError: boom"))  # fmt: skip
    tasks, embeddings = home.count(Task), home.count(Embedding)
    code, _, err = home.cli(capsys, "enqueue", "topology", "--model", "mlp", "--knn", "3")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"retrain {broken.id} (task {broken.task_id}: failed)" in err
    assert "tracker requeue --failed" in err
    assert home.count(Task) == tasks and home.count(Embedding) == embeddings
