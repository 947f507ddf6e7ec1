"""The public surface changes only on purpose."""

from __future__ import annotations

import tracker
from tracker._exceptions import TrackerError


def test_public_names_are_exactly_these():
    assert set(tracker.__all__) == {
        "ArraySpec", "ArrayStore", "ClaimedTask", "ConfigError", "CorruptArray", "Database",
        "DatabaseUnreachable", "LeaseLost", "NoGPU", "NotFound", "Queue", "QueueError",
        "QueryRejected",
        "SchemaOutOfDate", "Settings", "SpecError", "StoreError", "TaskContext", "TrackerError",
        "UserCodeError", "WorkerConfig", "connect", "enqueue", "get_or_create_study", "open_database", "resolve_settings",
        "run_worker", "task_kind",
    }  # fmt: skip
    for name in tracker.__all__:
        assert getattr(tracker, name) is not None


def test_every_user_facing_error_is_a_tracker_error():
    errors = [
        getattr(tracker, n)
        for n in tracker.__all__
        if n.endswith(("Error", "Found", "Date", "Unreachable", "Array", "Lost", "GPU", "Rejected"))
    ]
    assert errors and all(issubclass(e, TrackerError) for e in errors)


def test_settings_default_to_one_folder_and_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("TRACKER_DB_URL", raising=False)
    monkeypatch.delenv("TRACKER_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TRACKER_HOME", str(tmp_path / "home"))
    s = tracker.resolve_settings()
    assert s.db_url == f"sqlite:///{tmp_path / 'home' / 'tracker.db'}"
    assert s.store_url == str(tmp_path / "home" / "store.zarr")
    assert s.mlflow_uri == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    monkeypatch.setenv("TRACKER_DB_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("TRACKER_STORE", "s3://bucket/store.zarr")
    s = tracker.resolve_settings()
    assert (s.db_url, s.store_url) == ("postgresql+psycopg://u@h/db", "s3://bucket/store.zarr")
    assert tracker.resolve_settings(db_url="sqlite:///x.db").db_url == "sqlite:///x.db"
