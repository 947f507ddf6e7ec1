"""The [[ensemble]] and [[morse]] sections of study files: one `tracker enqueue FILE.toml` and
one `tracker work` give the Morse graph; a bad table is one line, exit 2, and writes nothing."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_support import run_tracker, tracker_env
from schema_support import migrated

from tracker._config import resolve
from tracker._db import open_database
from tracker._schema import Ensemble, MorseGraph, Study, Task, TaskDependency

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "doodl3_figure3.toml"
SMALL = """study = "doodl3-small"
[[ensemble]]
name = "iris"
setup = "doodl3-iris"
models = 4
epochs = 3
early_epoch = 1
chunk = 2

[[morse]]
ensemble = "iris"
subdiv = 8

[[morse]]
ensemble = "iris"
weights = ["dense_kernel_0_1", 5]
subdiv = 8
"""


class Home:
    """A tracker home at the migration head (embedded SQLite unless ``db_url``), for
    in-process CLI calls."""

    def __init__(self, root: Path, db_url: str | None = None) -> None:
        self.root = root
        self.settings = resolve(db_url=db_url, home=root / ".tracker")
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.db = open_database(self.settings.db_url, check=False)
        migrated(self.db)  # a copy of a migrated template

    def cli(self, *argv: str) -> tuple[int, str, str]:
        from tracker.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*argv, "--db", self.settings.db_url, "--store",
                         self.settings.store_url, "--home", str(self.settings.home)])  # fmt: skip
        return code, out.getvalue(), err.getvalue()

    def study_file(self, text: str) -> tuple[int, str, str]:
        path = self.root / "study.toml"
        path.write_text(text)
        return self.cli("enqueue", str(path))

    def counts(self) -> tuple[int, ...]:
        with self.db.session() as s:
            return tuple(
                int(s.scalar(sa.select(sa.func.count()).select_from(cls)))
                for cls in (Study, Ensemble, MorseGraph, Task)
            )


def test_a_study_file_ensemble_and_its_morse_graphs_run_through_tracker_work(
    tmp_path: Path,
) -> None:
    home = Home(tmp_path)
    code, out, err = home.study_file(SMALL)
    assert code == 0, err
    assert "1 ensemble(s) (1 new), 2 Morse graph(s) (2 new)" in out
    code, out, _ = home.study_file(SMALL)  # again: finds the same rows
    assert code == 0 and "1 ensemble(s) (0 new), 2 Morse graph(s) (0 new)" in out
    assert home.counts() == (1, 1, 2, 2 + 1 + 2)  # 2 train chunks, complete, 2 Morse tasks
    with home.db.session() as s:
        ensemble = s.scalar(sa.select(Ensemble))
        assert (ensemble.n_models, ensemble.epochs, ensemble.early_epoch) == (4, 3, 1)
        for row in s.scalars(sa.select(MorseGraph)):
            task = s.get(Task, row.task_id)
            parents = s.scalars(
                sa.select(TaskDependency.depends_on_id).where(TaskDependency.task_id == task.id)
            ).all()
            assert task.status == "waiting" and parents == [ensemble.task_id]
    work = run_tracker("work", "--no-progress",
                       env=tracker_env(tmp_path, home.settings.db_url, home.settings.store_url))  # fmt: skip
    assert work.returncode == 0, work.stderr[-3000:]
    with home.db.session() as s:
        rows = s.scalars(sa.select(MorseGraph).order_by(MorseGraph.id)).all()
        assert all(r.completed_at is not None and r.n_nodes >= 1 for r in rows)
        assert rows[0].pick == "max-variance" and len(rows[0].weight_names) == 2
        assert rows[1].pick == "explicit"
        assert rows[1].weight_names == ["dense_kernel_0_1", "dense_kernel_1_2"]
        assert rows[1].source["weight_columns"] == [1, 5]
        assert {s.get(Study, r.study_id).name for r in rows} == {"doodl3-small"}
    code, out, err = home.cli("show", "morse", str(rows[0].id))
    assert code == 0 and "subdiv 8" in out, err


def test_a_morse_table_on_an_existing_unfinished_ensemble_waits_for_it(
    tmp_path: Path, db_url: str
) -> None:
    """By id, an ensemble enqueued earlier: the study file's Morse graph waits on its training
    (the CLI refuses until the ensemble is finished)."""
    home = Home(tmp_path, db_url)
    code, _, err = home.cli("enqueue", "ensemble", "--setup", "doodl3-iris", "--models", "3",
                            "--epochs", "2", "--early-epoch", "1")  # fmt: skip
    assert code == 0, err
    code, out, err = home.study_file('study = "later"\n[[morse]]\nensemble = 1\nweights = 3\n'
                                     "subdiv = 9\nconley = false\n")  # fmt: skip
    assert code == 0 and "0 ensemble(s) (0 new), 1 Morse graph(s) (1 new)" in out, err
    with home.db.session() as s:
        row = s.scalar(sa.select(MorseGraph))
        assert row.ensemble_id == 1 and row.subdiv == 9 and row.conley is False
        assert row.source["weights"] == 3 and s.get(Task, row.task_id).status == "waiting"
        assert s.get(Study, row.study_id).name == "later"
    # A file's only ensemble needs no name: its [[morse]] tables leave `ensemble` out.
    code, out, err = home.study_file('study = "one"\n[[ensemble]]\nsetup = "doodl3-iris"\n'
                                     "models = 2\n[[morse]]\nsubdiv = 6\n")  # fmt: skip
    assert code == 0 and "1 ensemble(s) (1 new), 1 Morse graph(s) (1 new)" in out, err
    with home.db.session() as s:
        row = s.scalar(sa.select(MorseGraph).where(MorseGraph.subdiv == 6))
        ensemble = s.get(Ensemble, row.ensemble_id)
        assert ensemble.n_models == 2 and ensemble.epochs == 450
        dep = s.scalar(sa.select(TaskDependency).where(TaskDependency.task_id == row.task_id))
        assert dep.depends_on_id == ensemble.task_id


def test_the_figure_3_example_is_the_cli_defaults(tmp_path: Path) -> None:
    """examples/doodl3_figure3.toml is `enqueue ensemble --setup doodl3-iris` and `enqueue morse
    --ensemble ID` with no other option: 100 models x 450 epochs, two weights, subdivision 15."""
    from tracker import studyfile
    from tracker.morse.rows import EnsembleSpec, MorseSpec

    plan = studyfile.load(EXAMPLE)
    assert [e.spec for e in plan.ensembles] == [EnsembleSpec(setup="doodl3-iris")]
    assert [(m.ensemble, m.spec, m.force) for m in plan.morse] == [
        (plan.ensembles[0].name, MorseSpec(ensemble_id=0), False)
    ]
    home = Home(tmp_path)
    code, out, err = home.study_file(EXAMPLE.read_text())
    assert code == 0 and "1 ensemble(s) (1 new), 1 Morse graph(s) (1 new)" in out, err
    code, _, err = home.cli("enqueue", "ensemble", "--setup", "doodl3-iris", "--study",
                            "doodl3-figure3")  # fmt: skip
    assert code == 0, err
    assert home.counts()[1:3] == (1, 1)  # the CLI's defaults found the file's ensemble


ENSEMBLE = '[[ensemble]]\nname = "e"\nsetup = "doodl3-iris"\nmodels = 4\nepochs = 3\n'


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[ensemble]]\nsetup = "doodl3-iris"\nepoch = 3', "unknown key 'epoch' in [[ensemble]] number 1"),
        ("[[ensemble]]\nmodels = 4", 'has no setup: add setup = "doodl3-iris"'),
        ('[[ensemble]]\nsetup = "iris"', "[[ensemble]] number 1: unknown setup 'iris': use one of"),
        ('[[ensemble]]\nsetup = "doodl3-iris"\nmodels = "4"', "models in [[ensemble]] number 1 must be int"),
        ('[[ensemble]]\nsetup = "doodl3-iris"\nepochs = 3\nearly_epoch = 3',
         "[[ensemble]] number 1: early_epoch must be in 0..2"),
        ('[[ensemble]]\nsetup = "doodl3-iris"\nchunk = 0', "chunk must be at least 1"),
        ('[[ensemble]]\nsetup = "doodl3-iris"\nname = 3', "name in [[ensemble]] number 1 must be"),
        (ENSEMBLE + ENSEMBLE, "ensemble name 'e' is used twice"),
        ('[ensemble]\nsetup = "doodl3-iris"', "must be written as [[ensemble]] tables"),
        (ENSEMBLE + '[[morse]]\nensemble = "e"\nsubdivision = 9', "unknown key 'subdivision' in [[morse]] number 1"),
        (ENSEMBLE + '[[morse]]\nensemble = "f"', "names ensemble 'f', which the file does not define (ensembles: e)"),
        ("[[morse]]\nsubdiv = 9", "[[morse]] number 1 has no ensemble: add ensemble = "),
        (ENSEMBLE + '[[morse]]\nensemble = "e"\nweights = 9', "[[morse]] number 1: weights must be 2..8"),
        (ENSEMBLE + '[[morse]]\nensemble = "e"\nweights = 7', "ensemble 'e' (doodl3-iris) has 6 kernel weights, fewer than weights 7"),
        (ENSEMBLE + '[[morse]]\nensemble = "e"\nweights = true', "weights in [[morse]] number 1 must be a count"),
        (ENSEMBLE + '[[morse]]\nensemble = "e"\nweights = ["dense_kernel_0_0", "w"]', "has no parameter 'w'"),
        (ENSEMBLE + '[[morse]]\nensemble = "e"\nsubdiv = 19', "add force = true if you mean it"),
        (ENSEMBLE + '[[morse]]\nensemble = "e"\nweights = 3\nsubdiv = 2', "subdiv must be at least 3"),
        (ENSEMBLE + '[[morse]]\nensemble = "e"\npick = "max"', "unknown pick 'max': use one of max-variance"),
        (ENSEMBLE + '[[morse]]\nensemble = "e"\nconley = "yes"', "conley in [[morse]] number 1 must be bool"),
        (ENSEMBLE + "[[morse]]\nensemble = 1.5", "ensemble in [[morse]] number 1 must be an [[ensemble]] name or an id"),
        # Found only when writing: the ensemble rows of the file are rolled back with it.
        (ENSEMBLE + "[[morse]]\nensemble = 99", "[[morse]] number 1: unknown ensemble id 99"),
    ],
)  # fmt: skip
def test_a_bad_table_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, text: str, needle: str
) -> None:
    home = Home(tmp_path)
    before = home.counts()
    code, _, err = home.study_file('study = "bad"\n' + text + "\n")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    assert home.counts() == before == (0, 0, 0, 0)
