"""Idle workers are woken by the queue's changes, not by their next poll."""

from __future__ import annotations

import threading
import time

from tracker._queue import Queue, enqueue, get_or_create_study
from tracker._wake import PostgresWaker, SqliteWaker, open_waker


def _enqueue_later(db, payload: dict, delay: float = 0.2) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        with db.session() as s:
            enqueue(s, get_or_create_study(s, "wake"), "noop", payload)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_enqueue_wakes_an_idle_worker_and_empty_claims_do_not(db):
    waker = open_waker(db.url)
    try:
        assert isinstance(waker, SqliteWaker if db.dialect == "sqlite" else PostgresWaker)
        queue = Queue(db)
        # Idle workers claiming nothing must not wake each other (no storm of empty claims).
        assert queue.claim_batch("w1", 4, ["noop"], None) == []
        assert waker.wait(0.2) is False
        thread = _enqueue_later(db, {"i": 1})
        assert waker.wait(30.0) is True  # woken by the commit, long before the fallback
        thread.join()
    finally:
        waker.close()


def test_a_finished_parent_wakes_workers_for_its_released_child(db):
    queue = Queue(db)
    with db.session() as s:
        study = get_or_create_study(s, "wake")
        parent, _ = enqueue(s, study, "noop", {"p": 1})
        child, _ = enqueue(s, study, "noop", {"c": 1}, depends_on=[parent])
        child_id = child.id
    (claimed,) = queue.claim_batch("w1", 1, ["noop"], None)
    waker = open_waker(db.url)
    try:
        assert queue.complete(claimed)
        assert waker.wait(30.0) is True
        (released,) = queue.claim_batch("w2", 1, ["noop"], None)
        assert released.id == child_id
    finally:
        waker.close()


def test_an_unreachable_database_falls_back_to_sleeping():
    waker = open_waker("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert type(waker).__name__ == "Waker"
    assert waker.wait(0.01) is False


def test_an_idle_sqlite_waker_backs_off_and_a_change_resets_it(db):
    """While nothing changes the data_version checks grow apart (5 ms doubling to 50 ms): an
    idle loop no longer wakes its process every 5 ms. A commit by another process is still
    seen, and the next idle period starts from short checks again."""
    if db.dialect != "sqlite":
        return  # PostgreSQL listeners block on their connection: nothing to back off
    import sqlite3

    import tracker._wake as wake

    reads = []

    class Counting(SqliteWaker):
        def _read(self) -> int:
            reads.append(1)
            return super()._read()

    path = db.url.split("///", 1)[1]
    waker = Counting(path)
    try:
        assert waker.wait(0.6) is False
        # 5 + 10 + 20 + 40 ms, then every 50 ms: about 15 looks in 0.6 s (120 at a fixed 5 ms)
        assert len(reads) <= 20, len(reads)
        assert waker.check == wake.SQLITE_MAX_CHECK_SECONDS

        def other_process_commits() -> None:  # a plain connection: no notify_workers
            time.sleep(0.1)
            with sqlite3.connect(path) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS wake_probe (x INTEGER)")
                conn.execute("INSERT INTO wake_probe VALUES (1)")

        thread = threading.Thread(target=other_process_commits)
        thread.start()
        assert waker.wait(30.0) is True
        thread.join()
        assert waker.check == wake.SQLITE_CHECK_SECONDS
    finally:
        waker.close()


def test_worker_loops_of_one_process_are_woken_without_polling(db, monkeypatch):
    """notify_workers wakes the waiting loops of its own process at once, even when their
    next look at the database is far away (here: a minute)."""
    import tracker._wake as wake

    if db.dialect != "sqlite":
        return  # PostgreSQL delivers LISTEN/NOTIFY to every process alike
    monkeypatch.setattr(wake, "SQLITE_CHECK_SECONDS", 60.0)
    monkeypatch.setattr(wake, "SQLITE_MAX_CHECK_SECONDS", 60.0)
    waker = open_waker(db.url)
    try:
        thread = _enqueue_later(db, {"i": 3}, delay=0.2)
        assert waker.wait(30.0) is True  # the data_version look comes only after 60 s
        thread.join()
    finally:
        waker.close()
