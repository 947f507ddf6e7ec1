"""The queue's contract, on SQLite and PostgreSQL: leases, compare-and-swap, attempts, dependencies."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from tracker._exceptions import QueueError
from tracker._queue import Queue, enqueue, get_or_create_study, requeue
from tracker._schema import Task


def _add(db, n=1, kind="noop", study="s", **kw):
    with db.session() as session:
        st = get_or_create_study(session, study)
        tasks = [
            enqueue(session, st, kind, {"i": i, **kw.pop("payload", {})}, **kw)[0] for i in range(n)
        ]
        return [t.id for t in tasks]


def _task(db, task_id) -> Task:
    with db.session() as session:
        return session.get(Task, task_id)


def test_enqueue_same_spec_twice_is_a_noop(db):
    with db.session() as session:
        st = get_or_create_study(session, "s")
        a, new_a = enqueue(session, st, "noop", {"x": 1, "y": [1, 2]})
        b, new_b = enqueue(session, st, "noop", {"y": [1, 2], "x": 1})
    assert new_a and not new_b and a.id == b.id
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Task)) == 1


def test_claim_leases_in_priority_then_id_order(db):
    low = _add(db, 2)
    with db.session() as session:
        st = get_or_create_study(session, "s")
        urgent, _ = enqueue(session, st, "noop", {"urgent": True}, priority=-5)
    q = Queue(db)
    order = [q.claim("w").id for _ in range(3)]
    assert order == [urgent.id, *low]
    assert q.claim("w") is None


def test_complete_is_compare_and_swap_on_the_lease_token(db):
    (tid,) = _add(db)
    q = Queue(db)
    claimed = q.claim("w1")
    forged = type(claimed)(**{**claimed.__dict__, "lease_token": "not-the-token"})
    assert q.complete(forged) is False
    assert _task(db, tid).status == "running"
    assert q.complete(claimed, {"answer": 42}) is True
    row = _task(db, tid)
    assert (row.status, row.result, row.lease_token) == ("done", {"answer": 42}, None)
    assert q.complete(claimed) is False  # a second completion changes nothing


def test_expired_lease_is_reclaimed_once_and_the_old_holder_loses(db):
    (tid,) = _add(db)
    q = Queue(db, lease_seconds=0.4)
    first = q.claim("w1")
    assert q.claim("w2") is None  # the lease is live
    time.sleep(0.8)
    second = q.claim("w2")
    # The same attempt: w1 died, the task did not fail; the loss is counted apart.
    assert second is not None and second.id == tid and second.attempt == 1
    assert q.claim("w3") is None  # reclaimed once, not by everyone
    assert q.heartbeat(first) is False
    assert q.complete(first) is False
    assert q.complete(second) is True
    row = _task(db, tid)
    assert (row.status, row.attempts, row.lease_losses, row.worker) == ("done", 1, 1, "w2")


def test_heartbeat_keeps_a_lease_alive(db):
    _add(db)
    q = Queue(db, lease_seconds=0.6)
    held = q.claim("w1")
    for _ in range(4):
        time.sleep(0.3)
        assert q.heartbeat(held) is True
    assert q.claim("w2") is None
    assert q.complete(held) is True


def test_failures_are_retried_until_max_attempts_then_failed_with_the_error(db):
    (tid,) = _add(db, max_attempts=2)
    q = Queue(db)
    assert q.fail(q.claim("w"), "ValueError: first") == "pending"
    assert q.fail(q.claim("w"), "ValueError: second") == "failed"
    row = _task(db, tid)
    assert row.status == "failed" and row.attempts == 2
    assert row.error == "attempt 2/2: ValueError: second"
    assert q.claim("w") is None


def test_a_dead_workers_lease_is_reclaimed_without_using_an_attempt(db):
    (tid,) = _add(db, max_attempts=1)
    q = Queue(db, lease_seconds=0.3)
    q.claim("w1")  # w1 dies holding it
    time.sleep(0.6)
    task = q.claim("w2")
    assert task is not None and task.id == tid and task.attempt == 1
    row = _task(db, tid)
    assert (row.status, row.attempts, row.lease_losses, row.worker) == ("running", 1, 1, "w2")
    # A run that raises still uses the attempt: with one attempt the task fails.
    assert q.fail(task, "ValueError: real failure") == "failed"


def test_lease_losses_beyond_their_budget_fail_the_task_inside_the_claim(db):
    (tid,) = _add(db, max_attempts=1)
    q = Queue(db, lease_seconds=0.3, max_lease_losses=2)
    for worker in ("w1", "w2", "w3"):
        assert q.claim(worker) is not None
        time.sleep(0.6)
    assert q.claim("w4") is None
    row = _task(db, tid)
    assert row.status == "failed" and row.attempts == 1 and row.lease_losses == 2
    assert "lost its lease 3 times" in row.error and "w3" in row.error


def test_dependencies_gate_claims_and_failures_cascade(db):
    with db.session() as session:
        st = get_or_create_study(session, "s")
        parent, _ = enqueue(session, st, "noop", {"p": 1}, max_attempts=1)
        child, _ = enqueue(session, st, "noop", {"c": 1}, depends_on=[parent])
        grandchild, _ = enqueue(session, st, "noop", {"g": 1}, depends_on=[child])
        other, _ = enqueue(session, st, "noop", {"o": 1})
    q = Queue(db)
    held = q.claim("w")
    assert held.id == parent.id
    assert q.claim("w").id == other.id  # the child waits for its parent
    assert q.claim("w") is None
    assert q.fail(held, "RuntimeError: boom") == "failed"
    assert _task(db, child.id).status == "failed"
    assert _task(db, child.id).error == f"dependency task {parent.id} failed"
    assert _task(db, grandchild.id).status == "failed"

    with db.session() as session:
        assert requeue(session, [parent.id]) == sorted([parent.id, child.id, grandchild.id])
    assert q.claim("w").id == parent.id
    assert q.claim("w") is None


def test_done_dependencies_release_children(db):
    with db.session() as session:
        st = get_or_create_study(session, "s")
        parent, _ = enqueue(session, st, "noop", {"p": 1})
        child, _ = enqueue(session, st, "noop", {"c": 1}, depends_on=[parent])
    q = Queue(db)
    held = q.claim("w")
    assert q.claim("w") is None
    assert q.complete(held)
    assert q.claim("w").id == child.id


def test_requeue_refuses_a_running_task(db):
    (tid,) = _add(db)
    Queue(db).claim("w")
    with db.session() as session, pytest.raises(QueueError, match="running under a live lease"):
        requeue(session, [tid])


def test_claim_filters_by_kind_and_study(db):
    a = _add(db, 1, kind="noop", study="a")
    b = _add(db, 1, kind="other", study="b")
    q = Queue(db)
    assert q.claim("w", kinds=["other"]).id == b[0]
    with db.session() as session:
        sid = get_or_create_study(session, "a").id
    assert q.claim("w", study_ids=[sid + 1000]) is None
    assert q.claim("w", study_ids=[sid]).id == a[0]


def test_a_task_waits_until_every_dependency_is_done(db):
    with db.session() as session:
        st = get_or_create_study(session, "s")
        a, _ = enqueue(session, st, "noop", {"a": 1})
        b, _ = enqueue(session, st, "noop", {"b": 1})
        child, _ = enqueue(session, st, "noop", {"c": 1}, depends_on=[a, b])
    assert _task(db, child.id).status == "waiting"
    q = Queue(db)
    held_a, held_b = q.claim("w"), q.claim("w")
    assert q.complete(held_a)
    assert _task(db, child.id).status == "waiting"  # b is still running
    assert q.complete(held_b)
    assert _task(db, child.id).status == "pending"
    assert q.claim("w").id == child.id


def test_enqueue_after_the_dependency_finished_or_failed(db):
    with db.session() as session:
        st = get_or_create_study(session, "s")
        ok, _ = enqueue(session, st, "noop", {"ok": 1})
        bad, _ = enqueue(session, st, "noop", {"bad": 1}, max_attempts=1)
    q = Queue(db)
    q.complete(q.claim("w"))
    q.fail(q.claim("w"), "boom")
    with db.session() as session:
        st = get_or_create_study(session, "s")
        after_ok, _ = enqueue(session, st, "noop", {"after": "ok"}, depends_on=[ok])
        after_bad, _ = enqueue(session, st, "noop", {"after": "bad"}, depends_on=[bad])
    assert _task(db, after_ok.id).status == "pending"
    row = _task(db, after_bad.id)
    assert (row.status, row.error) == ("failed", f"dependency task {bad.id} failed")


def test_a_batch_claim_leases_tasks_in_order_under_one_token(db):
    ids = _add(db, 5)
    q = Queue(db, lease_seconds=0.5)
    batch = q.claim_batch("w", 3)
    assert [t.id for t in batch] == ids[:3]
    assert len({t.lease_token for t in batch}) == 1 and all(t.attempt == 1 for t in batch)
    rest = q.claim_batch("w2", 10)
    assert [t.id for t in rest] == ids[3:]
    for _ in range(3):
        time.sleep(0.3)
        assert q.heartbeat_batch(batch)  # all three leases stay alive together
        assert q.heartbeat_batch(rest)
    assert q.claim("w3") is None


def test_complete_batch_marks_only_the_tasks_still_held_and_releases_dependents(db):
    with db.session() as session:
        st = get_or_create_study(session, "s")
        a, _ = enqueue(session, st, "noop", {"a": 1})
        b, _ = enqueue(session, st, "noop", {"b": 1})
        child, _ = enqueue(session, st, "noop", {"c": 1}, depends_on=[a, b])
    q = Queue(db, lease_seconds=0.3)
    batch = q.claim_batch("w1", 2)
    time.sleep(0.6)
    (stolen,) = Queue(db).claim_batch("w2", 1)  # a's lease expired and went to w2
    assert stolen.id == a.id
    assert q.complete_batch([(t, {"n": t.id}) for t in batch]) == [False, True]
    assert _task(db, b.id).result == {"n": b.id}
    assert _task(db, child.id).status == "waiting"  # a is not done yet
    assert q.complete_batch([(stolen, None)]) == [True]
    assert _task(db, child.id).status == "pending"


def test_non_finite_numbers_in_a_result_are_stored_as_null(db):
    """A regression model's accuracy is NaN; PostgreSQL's JSONB refuses NaN in a result."""
    queue = Queue(db)
    with db.session() as s:
        enqueue(s, get_or_create_study(s, "nan"), "noop", {"i": 1})
    (claimed,) = queue.claim_batch("w", 1, ["noop"], None)
    seen = {}
    result = {"final": {"test_acc": float("nan"), "loss": 0.5}, "curve": [float("inf"), 1.0]}
    assert queue.complete(claimed, result, on_commit=lambda s: seen.update(result))
    with db.session() as s:
        stored = s.get(Task, claimed.id).result
    assert stored == {"final": {"test_acc": None, "loss": 0.5}, "curve": [None, 1.0]}
    assert seen["final"]["test_acc"] != seen["final"]["test_acc"]  # finalize still sees NaN
