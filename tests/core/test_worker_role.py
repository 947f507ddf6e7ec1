"""The workers' least-privilege PostgreSQL role (`tracker db create-worker`, issue 17): a real
training and surface run end to end as that role, and the role cannot change the schema, read
server files or make roles."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from cli_support import run_tracker, tracker_env
from schema_support import migrated

from tracker._db import Database


@pytest.mark.postgres
def test_workers_compute_as_the_worker_role_and_can_change_rows_only(pg_url: str, tmp_path) -> None:
    owner_env = tracker_env(tmp_path, pg_url)
    owner = Database(pg_url)
    migrated(owner)  # the schema, as its owner: a copy of the suite's migrated template
    owner.dispose()
    role = f"w_{sa.engine.make_url(pg_url).database}"
    owner_env["TRACKER_WORKER_PASSWORD"] = "w0rk'er"
    made = run_tracker("db", "create-worker", "--role", role, env=owner_env)
    worker_url = sa.engine.make_url(pg_url).set(username=role, password="w0rk'er")
    worker_url_text = worker_url.render_as_string(hide_password=False)
    try:
        assert made.returncode == 0, made.stderr
        assert f"--db postgresql+psycopg://{role}:***@" in made.stdout and "w0rk" not in made.stdout
        assert run_tracker("db", "create-worker", "--role", role, env=owner_env).returncode == 0

        # The whole path as the worker: enqueue a tiny model and a surface, work, read back.
        env = tracker_env(tmp_path, worker_url_text)
        steps = [
            ("enqueue", "model", "--arch", "mlp", "--widths", "8", "--dataset", "digits",
             "--epochs", "1", "--study", "role"),
            ("work", "--no-progress"),
            ("enqueue", "surface", "--model", "1", "--x", "-1:1:3", "--subset", "64",
             "--study", "role"),
            ("work", "--no-progress"),
        ]  # fmt: skip
        for step in steps:
            proc = run_tracker(*step, env=env)
            assert proc.returncode == 0, (step, proc.stderr[-2000:])
        engine = sa.create_engine(worker_url_text)
        try:
            with engine.connect() as conn:
                done = conn.execute(sa.text("SELECT count(*) FROM tasks WHERE status = 'done'"))
                assert done.scalar_one() >= 2
                assert conn.execute(sa.text("SELECT count(*) FROM surfaces")).scalar_one() == 1
            # Everything outside rows is refused by the server itself.
            for sql in (
                "CREATE TABLE evil (x int)",
                "DROP TABLE tasks",
                "ALTER TABLE tasks ADD COLUMN evil int",
                "TRUNCATE tasks",
                "UPDATE alembic_version SET version_num = 'x'",
                "SELECT pg_read_file('/etc/passwd')",
                "CREATE ROLE evil",
                "COPY tasks TO PROGRAM 'true'",
            ):
                with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as err:
                    conn.exec_driver_sql(sql)
                    conn.commit()
                assert "permission denied" in str(err.value).lower() or "must be" in str(
                    err.value).lower(), sql  # fmt: skip
        finally:
            engine.dispose()
    finally:
        admin = sa.create_engine(pg_url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()


def test_create_worker_refuses_sqlite_and_bad_names_in_one_line(tmp_path) -> None:
    env = tracker_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    for args, says in (((), "for PostgreSQL"),):
        bad = run_tracker("db", "create-worker", *args, env=env)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr
        assert bad.stderr.strip().count("\n") == 0, bad.stderr
