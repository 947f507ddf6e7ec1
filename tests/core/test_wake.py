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
