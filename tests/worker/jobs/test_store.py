"""Job store: keys hashed at rest, idempotency, exactly-once item results, append-only audit log.
Runs on SQLite and, when DATABASE_URL_TEST is set, on PostgreSQL."""
from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from worker.jobs.db import ApiKey
from worker.jobs.store import NewItem, Store, hash_secret


def one_item(store: Store, tenant: str = "t1", idem: str | None = None) -> tuple[str, int]:
    aid = store.new_id()
    aid, _ = store.create_assessment(aid, tenant, [NewItem("smile", f"uploads/{aid}/0.video", "0" * 64, 10)],
                                     idempotency_key=idem)
    return aid, store.item_ids(aid)[0]


def test_keys_are_stored_as_salted_hashes_and_verify(store):
    # given a new key
    key = store.create_key("clinic-a")
    # then only a salted hash is stored, and the key verifies to its tenant
    with store.session() as s:
        rows = list(s.scalars(sa.select(ApiKey)))
    assert len(rows) == 1
    row = rows[0]
    secret = key.split("_", 2)[2]
    assert secret not in (row.digest, row.salt) and row.digest == hash_secret(row.salt, secret)
    assert store.verify_key(key).tenant == "clinic-a"
    # a changed secret, a garbage key and a revoked key do not verify
    assert store.verify_key(key[:-2] + "xx") is None
    assert store.verify_key("nonsense") is None
    assert store.revoke_key(row.id)
    assert store.verify_key(key) is None


def test_two_keys_get_different_salts(store):
    store.create_key("a"), store.create_key("a")
    with store.session() as s:
        salts = {r.salt for r in s.scalars(sa.select(ApiKey))}
    assert len(salts) == 2


def test_idempotency_key_returns_the_existing_assessment_per_tenant(store):
    first, _ = one_item(store, "t1", idem="k1")
    # when the same tenant sends the same key again, the insert loses and reports the first id
    again, created = store.create_assessment(store.new_id(), "t1", [NewItem("smile", "uploads/x/0.video", "0", 1)],
                                             idempotency_key="k1")
    assert (again, created) == (first, False)
    # another tenant with the same key gets its own assessment
    other, created = store.create_assessment(store.new_id(), "t2", [NewItem("smile", "uploads/y/0.video", "0", 1)],
                                             idempotency_key="k1")
    assert created and other != first


def test_a_worker_whose_item_was_taken_over_cannot_write_its_result(store):
    _, item = one_item(store)
    assert store.claim_item(item, "w1", 3) is not None
    # w1's host is cut off: its heartbeat goes stale, the item is re-queued and w2 takes it over
    assert store.requeue_orphans(lambda w: False, older_than_s=3600) == [item]
    assert store.claim_item(item, "w2", 3) is not None
    assert not store.finish_item(item, {"score": 1.0}, {}, {"decoding": 0.5}, worker="w1")   # w1 back: refused
    assert store.finish_item(item, {"score": 2.0}, {}, {"decoding": 0.6}, worker="w2")
    it = store.get_item(item)
    assert (it.status, it.worker, it.result) == ("succeeded", "w2", {"score": 2.0})


def test_a_redelivered_task_cannot_write_a_second_result(store):
    _, item = one_item(store)
    assert store.claim_item(item, "w1", 3) is not None
    assert store.finish_item(item, {"score": 1.0}, {}, {"decoding": 0.5})
    # when the same task is delivered again (worker crash after writing, acks_late)
    assert store.claim_item(item, "w2", 3) is None
    assert not store.finish_item(item, {"score": 2.0}, {}, {"decoding": 0.5})
    it = store.get_item(item)
    assert it.status == "succeeded" and it.result == {"score": 1.0}
    assert dict((s, n) for s, n, _ in store.stage_stats()) == {"decoding": 1}


def test_claim_refuses_an_item_held_by_a_live_worker_and_takes_over_from_a_dead_one(store):
    _, item = one_item(store)
    assert store.claim_item(item, "w1", 3)
    assert store.claim_item(item, "w2", 3, alive=lambda w: True) is None
    taken = store.claim_item(item, "w2", 3, alive=lambda w: False)
    assert taken is not None and taken.worker == "w2" and taken.attempts == 2


def test_a_video_that_keeps_killing_its_worker_ends_failed(store):
    _, item = one_item(store)
    for _ in range(3):
        assert store.claim_item(item, "dead", 3) is not None
    # the fourth start after three lost workers fails the item instead of looping forever
    assert store.claim_item(item, "w", 3) is None
    it = store.get_item(item)
    assert (it.status, it.error_code) == ("failed", "worker_lost")


def test_assessment_status_follows_its_items(store):
    aid = store.new_id()
    store.create_assessment(aid, "t", [NewItem("smile", f"uploads/{aid}/{i}.video", "0", 1) for i in range(2)])
    a_ids = store.item_ids(aid)
    from worker.jobs.store import assessment_status

    def status():
        return assessment_status(store.get_assessment("t", aid)[1])

    assert status() == "queued"
    store.claim_item(a_ids[0], "w", 3)
    assert status() == "running"
    store.finish_item(a_ids[0], {}, {}, {})
    store.claim_item(a_ids[1], "w", 3)
    store.fail_item(a_ids[1], "no_face", "no face")
    assert status() == "partly_failed"
    assert store.retry_failed("t", aid) == [a_ids[1]]
    assert status() == "running"


def test_other_tenants_cannot_read_delete_or_retry(store):
    aid, _ = one_item(store, "t1")
    assert store.get_assessment("t2", aid) is None
    assert store.delete_assessment("t2", aid) is None
    assert store.retry_failed("t2", aid) == []
    assert store.get_assessment("t1", aid) is not None


def test_audit_log_is_append_only(store):
    aid, _ = one_item(store)
    store.audit("t1", "key1", "upload", aid, {"items": 1})
    store.delete_assessment("t1", aid)
    store.audit("t1", "key1", "delete", aid)
    # the trail outlives the deletion
    assert [e.action for e in store.audit_events(aid)] == ["upload", "delete"]
    # and the database refuses to change or remove it
    for stmt in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(sa.exc.DBAPIError):
            with store.session() as s:
                s.execute(sa.text(stmt))
    assert len(store.audit_events(aid)) == 2


def test_orphans_of_dead_workers_are_requeued(store):
    _, item = one_item(store)
    store.claim_item(item, "w-dead", 3)
    assert store.requeue_orphans(lambda w: True, older_than_s=3600) == []
    assert store.requeue_orphans(lambda w: False, older_than_s=3600) == [item]
    assert store.get_item(item).status == "queued"


def test_heartbeats_make_workers_ready(store):
    assert store.ready_workers(60) == []
    store.heartbeat("h:1", [], warmed=False)
    assert store.ready_workers(60) == []
    store.heartbeat("h:1", [{"expression": "smile"}], warmed=True)
    assert [w.worker_id for w in store.ready_workers(60)] == ["h:1"]
    assert store.heartbeat_age("h:1") < 5 and store.heartbeat_age("nope") == float("inf")


def test_purge_removes_expired_videos_and_assessments(store, tmp_path):
    from worker.jobs.housekeeping import purge
    from worker.jobs.storage import LocalStorage
    from worker.settings import Settings

    storage = LocalStorage(tmp_path / "storage")
    aid, item = one_item(store, "t1", idem="k")
    storage.put_file(f"uploads/{aid}/0.video", Path(__file__))
    store.claim_item(item, "w", 3)
    store.finish_item(item, {"score": 1.0}, {}, {})
    def counts(settings) -> tuple[int, int]:
        r = purge(store, storage, settings)
        return r["videos"], r["assessments"]

    keep = Settings(var_dir=tmp_path, video_retention_hours=1, result_retention_days=1)
    assert counts(keep) == (0, 0)
    now = Settings(var_dir=tmp_path, video_retention_hours=0, result_retention_days=1)
    assert counts(now) == (1, 0)
    assert not storage.exists(f"uploads/{aid}/0.video") and store.get_item(item).video_deleted_at is not None
    expire = Settings(var_dir=tmp_path, video_retention_hours=0, result_retention_days=0)
    assert counts(expire) == (0, 1)
    assert store.get_assessment("t1", aid) is None
    assert [e.action for e in store.audit_events(aid)] == ["purge"]
    # the idempotency key of a purged or deleted assessment starts a new one
    again, created = store.create_assessment(store.new_id(), "t1", [NewItem("smile", "u/0.video", "0", 1)],
                                             idempotency_key="k")
    assert created and again != aid
