"""One model version per assessment (issue 18): the first claim pins the assessment's model set, a worker with
another version of an item's model cannot claim it and leaves it queued, the item fails with model_version_gone
once no live worker serves the pinned version for the bounded wait; progress moves only for the item's holder.
Runs on SQLite and, when DATABASE_URL_TEST is set, on PostgreSQL."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from worker.jobs.db import Item, utcnow
from worker.jobs.store import NewItem, PinMismatch, Store


def models(smile: str, frown: str | None = "1") -> list[dict]:
    """A worker's loaded models as its heartbeat lists them; the sha256 follows the version."""
    out = [{"name": "smile-compact", "version": smile, "expression": "smile", "sha256": smile * 64,
            "trained_on": "untrained"}]
    if frown is not None:
        out.append({"name": "frown-compact", "version": frown, "expression": "frown", "sha256": "f" * 64,
                    "trained_on": "untrained"})
    return out


def job(store: Store, expressions: tuple[str, ...] = ("smile", "smile", "frown")) -> tuple[str, list[int]]:
    aid = store.new_id()
    store.create_assessment(aid, "t", [NewItem(e, f"uploads/{aid}/{i}.video", "0" * 64, 10)
                                       for i, e in enumerate(expressions)])
    return aid, store.item_ids(aid)


def pinned(store: Store, aid: str) -> dict | None:
    return store.get_assessment("t", aid)[0].models


def test_the_first_claim_pins_the_model_set_and_another_version_cannot_claim(store):
    aid, (s0, s1, f2) = job(store)
    assert pinned(store, aid) is None                       # nothing pinned before a worker takes an item
    assert store.claim_item(s0, "w-v1", 3, models=models("1")) is not None
    assert pinned(store, aid) == {"smile": {"name": "smile-compact", "version": "1", "sha256": "1" * 64},
                                  "frown": {"name": "frown-compact", "version": "1", "sha256": "f" * 64}}
    # a worker already on smile version 2 is refused the second smile item, and nothing about it changes
    with pytest.raises(PinMismatch) as refused:
        store.claim_item(s1, "w-v2", 3, models=models("2"))
    assert (refused.value.item_id, refused.value.expression, refused.value.pinned["version"]) == (s1, "smile", "1")
    it = store.get_item(s1)
    assert (it.status, it.attempts, it.worker) == ("queued", 0, None)
    # its frown model is the pinned one: the frown item is its to score
    assert store.claim_item(f2, "w-v2", 3, models=models("2")).worker == "w-v2"
    # a worker without any smile model is refused too; the pinned version claims it
    with pytest.raises(PinMismatch):
        store.claim_item(s1, "w-frown-only", 3, models=[models("1")[1]])
    assert store.claim_item(s1, "w-v1b", 3, models=models("1")).worker == "w-v1b"
    assert pinned(store, aid)["smile"]["version"] == "1"    # the refusals changed no pin


def test_an_assessment_started_before_pinning_is_pinned_to_the_version_of_its_results(store):
    aid, (s0, s1, _) = job(store)
    store.claim_item(s0, "w-old", 3)                        # no models: an old worker, no pin written
    assert pinned(store, aid) is None
    store.finish_item(s0, {"model": {"name": "smile-compact", "version": "1", "sha256": "1" * 64}}, {}, {})
    with pytest.raises(PinMismatch):
        store.claim_item(s1, "w-v2", 3, models=models("2"))
    assert pinned(store, aid)["smile"]["version"] == "1"
    assert pinned(store, aid)["frown"]["sha256"] == "f" * 64   # from the claimer: no frown result yet


def test_an_expression_the_first_worker_lacks_is_pinned_by_the_first_that_has_it(store):
    aid, (s0, s1, f2) = job(store)
    store.claim_item(s0, "w-smile", 3, models=models("1", frown=None))
    assert set(pinned(store, aid)) == {"smile"}
    store.claim_item(f2, "w-frown", 3, models=models("1", frown="7"))
    assert pinned(store, aid)["frown"]["version"] == "7" and pinned(store, aid)["smile"]["version"] == "1"


def _claim_together(store: Store, claims: list[tuple[int, str]]) -> dict[str, bool]:
    """Each (item, smile version) claimed by its own thread, all released at once: version -> claimed."""
    start, out = threading.Barrier(len(claims)), {}

    def claim(item: int, version: str) -> None:
        start.wait()
        try:
            out[version] = store.claim_item(item, f"w-v{version}", 3, models=models(version)) is not None
        except PinMismatch:
            out[version] = False

    threads = [threading.Thread(target=claim, args=c) for c in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_two_workers_pinning_at_once_agree_on_one_version(store):
    # Two workers of different versions claim the two items of a fresh assessment at the same moment: one pins,
    # the other is refused; the pin is never overwritten (the conditional UPDATE on models_rev).
    for _ in range(5):
        aid, (a, b) = job(store, ("smile", "smile"))
        out = _claim_together(store, [(a, "1"), (b, "2")])
        winner = pinned(store, aid)["smile"]["version"]
        assert out == {"1": winner == "1", "2": winner == "2"}
        assert store.get_assessment("t", aid)[0].models_rev == 1


def test_a_left_item_waits_while_the_version_is_served_and_fails_once_it_is_gone(store):
    aid, (s0, s1, _) = job(store)
    store.heartbeat("host-a:1", models("1"), True)
    store.heartbeat("host-b:2", models("2"), True)
    store.claim_item(s0, "host-a:1", 3, models=models("1"))
    with pytest.raises(PinMismatch) as refused:
        store.claim_item(s1, "host-b:2", 3, models=models("2"))
    pin = refused.value.pinned
    # host-a still serves version 1: the item stays queued for it, no waiting clock runs
    assert store.wait_for_pinned(s1, "smile", pin, max_age_s=60, max_wait_s=0) == "served"
    assert store.get_item(s1).pin_wait_since is None
    # a worker of version 1 that takes tasks from another queue never gets this one: it does not count
    store.heartbeat("host-c:1", models("1"), True, {"queue": "feqa.other"})
    store.heartbeat("host-a:1", models("1"), True, {"queue": "feqa.gpu"})
    assert store.wait_for_pinned(s1, "smile", pin, 60, 300, queue="feqa.gpu") == "served"
    store.drop_heartbeat("host-a:1")
    assert store.wait_for_pinned(s1, "smile", pin, 60, 300, queue="feqa.gpu") == "waiting"
    store.drop_heartbeat("host-c:1")
    store.heartbeat("host-a:1", models("1"), True)
    assert store.wait_for_pinned(s1, "smile", pin, 60, 300, queue="feqa.gpu") == "served"
    # host-a is gone (rolled over to version 2): the item waits, up to max_wait_s
    store.drop_heartbeat("host-a:1")
    assert store.wait_for_pinned(s1, "smile", pin, max_age_s=60, max_wait_s=300) == "waiting"
    since = store.get_item(s1).pin_wait_since
    assert since is not None
    assert store.wait_for_pinned(s1, "smile", pin, max_age_s=60, max_wait_s=300) == "waiting"
    assert store.get_item(s1).pin_wait_since == since           # the clock is not restarted
    # back for a moment (a restart of the same version): the clock stops
    store.heartbeat("host-a:3", models("1"), True)
    assert store.wait_for_pinned(s1, "smile", pin, max_age_s=60, max_wait_s=300) == "served"
    assert store.get_item(s1).pin_wait_since is None
    store.drop_heartbeat("host-a:3")
    assert store.wait_for_pinned(s1, "smile", pin, max_age_s=60, max_wait_s=300) == "waiting"
    with store.session() as s:   # the wait has lasted longer than the bound
        s.execute(sa.update(Item).where(Item.id == s1).values(pin_wait_since=utcnow() - timedelta(seconds=301)))
    assert store.wait_for_pinned(s1, "smile", pin, max_age_s=60, max_wait_s=300) == "failed"
    it = store.get_item(s1)
    assert (it.status, it.error_code, it.result) == ("failed", "model_version_gone", None)
    assert "version 1" in it.error_message and "smile-compact" in it.error_message
    assert it.error_details == {"expression": "smile", "pinned": pin}
    assert store.wait_for_pinned(s1, "smile", pin, max_age_s=60, max_wait_s=300) == "done"
    # never scored by the other version meanwhile
    assert store.claim_item(s1, "host-b:2", 3, models=models("2")) is None


def test_a_claimed_item_is_not_touched_by_a_late_leave(store):
    _, (s0, s1, _) = job(store)
    store.claim_item(s0, "w-v1", 3, models=models("1"))
    with pytest.raises(PinMismatch) as refused:
        store.claim_item(s1, "w-v2", 3, models=models("2"))
    store.claim_item(s1, "w-v1", 3, models=models("1"))           # the right worker took it meanwhile
    assert store.wait_for_pinned(s1, "smile", refused.value.pinned, 60, 0) == "done"
    it = store.get_item(s1)
    assert (it.status, it.worker) == ("running", "w-v1")


def test_retry_keeps_the_pin_while_a_result_exists_and_drops_it_when_all_failed(store):
    aid, (s0, s1) = job(store, ("smile", "smile"))
    store.claim_item(s0, "w-v1", 3, models=models("1"))
    store.finish_item(s0, {"score": 1.0}, {}, {})
    store.fail_item(s1, "model_version_gone", "gone")
    assert store.retry_failed("t", aid) == [s1]
    assert pinned(store, aid)["smile"]["version"] == "1"        # s0 was scored by version 1: s1 must be too
    aid, (s0, s1) = job(store, ("smile", "smile"))
    store.claim_item(s0, "w-v1", 3, models=models("1"))
    store.fail_item(s0, "model_version_gone", "gone")
    store.fail_item(s1, "model_version_gone", "gone")
    assert sorted(store.retry_failed("t", aid)) == [s0, s1]
    assert pinned(store, aid) is None                            # nothing scored: the retry takes today's version
    assert store.claim_item(s1, "w-v2", 3, models=models("2")) is not None
    assert pinned(store, aid)["smile"]["version"] == "2"


def test_progress_moves_only_for_the_worker_holding_the_item(store):
    _, (s0, *_) = job(store)
    store.claim_item(s0, "w1", 3)
    assert store.set_progress(s0, "tracking", 40.0, worker="w1")
    # w1 is cut off, its item re-queued and taken over by w2; w1 reconnects and reports its old progress
    assert store.requeue_orphans(lambda w: False, older_than_s=3600) == [s0]
    store.claim_item(s0, "w2", 3)
    assert store.set_progress(s0, "decoding", 10.0, worker="w2")
    assert not store.set_progress(s0, "scoring", 90.0, worker="w1")
    it = store.get_item(s0)
    assert (it.stage, it.percent, it.worker) == ("decoding", 10.0, "w2")
