"""Bad input found by an operator and a hostile user: one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_support import one_line_error, run_tracker, tracker_env


def _counts(db_url: str) -> dict[str, int]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                    for t in ("studies", "tasks")}  # fmt: skip
    finally:
        engine.dispose()


CASES = [
    (["enqueue", "noop", "--seconds", "nan"], ["--seconds", "got nan"]),
    (["enqueue", "noop", "--seconds", "inf"], ["--seconds", "got inf"]),
    (["enqueue", "noop", "--count", "99999999999"], ["--count", "at most 1,000,000"]),
    (["enqueue", "noop", "--study", "x" * 300], ["too long", "200"]),
    (["enqueue", "noop", "--study", "a\x01b"], ["control characters"]),
    (["work", "--lease", "nan"], ["--lease"]),
    (["work", "--lease", "inf"], ["--lease"]),
    (["db", "downgrade", "nosuchrev"], ["nosuchrev", "base"]),
]


@pytest.mark.parametrize(("argv", "needles"), CASES, ids=[" ".join(a)[:40] for a, _ in CASES])
def test_bad_flags_are_one_line_and_write_nothing(db, tmp_path: Path, argv, needles) -> None:
    env = tracker_env(tmp_path, db.url)
    before = _counts(db.url)
    one_line_error(run_tracker(*argv, env=env), *needles, code=2)
    assert _counts(db.url) == before
    assert db.revision() is not None  # the schema is still there


def test_study_names_with_nul_or_too_long_are_refused_before_the_database(db) -> None:
    from tracker._exceptions import SpecError
    from tracker._queue import get_or_create_study

    for name in ("a\x00b", "x" * 201, "", "   "):
        with db.session() as session, pytest.raises(SpecError):
            get_or_create_study(session, name)
    assert _counts(db.url)["studies"] == 0


def test_a_database_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a file")
    env = tracker_env(tmp_path, f"sqlite:///{tmp_path / 'f' / 'x.db'}")
    one_line_error(run_tracker("db", "upgrade", env=env), "cannot create the folder", "--db", code=2)
