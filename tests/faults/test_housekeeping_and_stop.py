"""Housekeeping that survives one bad item, a server that stops its workers, a broker that forgets what was
consumed, and data at rest that forgets what was deleted (issue 14 items 5-6).

- One stored video that cannot be deleted (an immutable directory) is logged and retried; the other expired
  videos are purged, and the worker's housekeeping still re-queues an item whose worker died.
- `feqa serve` sent SIGTERM (or SIGINT) stops its local worker before it exits: no orphan is left.
- The single-machine broker (SQLite kombu) holds no message row once its tasks were consumed.
- On PostgreSQL the audit log refuses TRUNCATE as well as UPDATE and DELETE, and a role with the
  application's grants (docker/postgres/init-app-role.sh) cannot drop or truncate it.
- On SQLite a deleted assessment's patient reference is found neither in the database file nor in its WAL.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench.servers import ROOT, feqa_serve, postgres_url
from tests.faults.support import upload, wait_for
from worker.jobs.db import migrate
from worker.jobs.housekeeping import purge
from worker.jobs.status import ItemStatus
from worker.jobs.storage import LocalStorage
from worker.jobs.store import NewItem, Store
from worker.settings import Settings


@contextlib.contextmanager
def immutable(path: Path):
    """A directory whose entries even root cannot remove (chattr +i); a non-root user gets mode 0555."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o555)
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o700)


def scored_item(store: Store, storage: LocalStorage, src: Path) -> tuple[str, int, str]:
    aid = store.new_id()
    key = f"uploads/{aid}/0.video"
    storage.put_file(key, src)
    store.create_assessment(aid, "t1", [NewItem("smile", key, "0" * 64, 10)])
    item = store.item_ids(aid)[0]
    store.claim_item(item, "w:1", 3)
    store.finish_item(item, {"score": 1.0}, {}, {})
    return aid, item, key


def test_one_undeletable_video_does_not_stop_the_purge_or_the_requeue(tmp_path, caplog, monkeypatch):
    migrate(f"sqlite:///{tmp_path / 'feqa.sqlite3'}")
    store = Store(f"sqlite:///{tmp_path / 'feqa.sqlite3'}")
    storage = LocalStorage(tmp_path / "storage")
    stuck_aid, stuck_item, stuck_key = scored_item(store, storage, Path(__file__))
    others = [scored_item(store, storage, Path(__file__)) for _ in range(2)]
    # an item left running by a worker that is gone
    orphan_aid = store.new_id()
    store.create_assessment(orphan_aid, "t1", [NewItem("smile", f"uploads/{orphan_aid}/0.video", "0" * 64, 10)])
    orphan = store.item_ids(orphan_aid)[0]
    store.claim_item(orphan, "gone-host:1", 3)

    settings = Settings(var_dir=tmp_path, video_retention_hours=0)
    with immutable(storage.path(stuck_key).parent), caplog.at_level(logging.WARNING):
        result = purge(store, storage, settings)
        assert result["videos"] == 2 and result["failed"] == 1, result
        assert storage.exists(stuck_key) and store.get_item(stuck_item).video_deleted_at is None
        for _, item, key in others:
            assert not storage.exists(key) and store.get_item(item).video_deleted_at is not None
        assert "retried in the next cycle" in caplog.text and stuck_aid not in caplog.text

        # the worker's housekeeping runs purge and then the orphan re-queueing, whatever purge met
        from worker import runtime

        sent: list[int] = []
        monkeypatch.setattr(runtime, "send_assess", lambda _app, ids, _q: sent.extend(ids))
        monkeypatch.setattr(runtime, "get_settings", lambda: settings)
        st = runtime.ProcessState(store=store, storage=storage, worker_id="here:1")
        runtime.housekeeping(st)
        assert sent == [orphan] and store.get_item(orphan).status == ItemStatus.QUEUED
    # once the file can be removed, the next cycle does it
    assert purge(store, storage, settings)["videos"] == 1
    assert not storage.exists(stuck_key)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_feqa_serve_stops_its_workers_and_the_broker_keeps_no_consumed_message(tmp_path, models, video, sig):
    with feqa_serve(tmp_path, model_dir=models) as stack:
        serve = stack.procs[0].popen
        with stack.client() as http:
            r = upload(http, video)
            assert r.status_code == 202, r.text
            assert stack.wait_done(http, r.json()["id"])["status"] == "succeeded"
        broker = stack.var_dir / "broker.sqlite3"
        with contextlib.closing(sqlite3.connect(broker)) as db:
            rows = db.execute("SELECT COUNT(*) FROM kombu_message").fetchone()[0]
        assert rows == 0, f"{rows} consumed message row(s) left in the broker"
        workers = [p for p in _children(serve.pid) if p != serve.pid]
        assert workers, "no local worker process found"
        os.kill(serve.pid, sig)                    # the server only, as a service manager's stop does
        serve.wait(60)
        wait_for(lambda: not any(_alive(p) for p in workers), 30, "the local workers stopped")


@pytest.fixture()
def pg_store():
    base = os.environ.get("DATABASE_URL_TEST", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with postgres_url(base) as url:
        migrate(url)
        yield Store(url), url


def test_audit_log_refuses_truncate_update_delete_on_postgres(pg_store):
    store, url = pg_store
    store.audit("t1", "k1", "read", "a" * 32)
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    for stmt in ("TRUNCATE audit_log", "DELETE FROM audit_log", "UPDATE audit_log SET actor = 'x'"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), eng.begin() as c:
            c.execute(sa.text(stmt))
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT COUNT(*) FROM audit_log")).scalar() == 1
    eng.dispose()


def test_the_application_role_cannot_drop_or_truncate_the_audit_log(pg_store):
    """The compose deployment runs migrations as the owner and the app as a role with the grants of
    docker/postgres/init-app-role.sh; as that role, DROP and TRUNCATE of audit_log fail."""
    store, url = pg_store
    store.audit("t1", "k1", "read")
    role = f"feqa_app_test_{uuid.uuid4().hex[:8]}"
    schema = url.split("search_path%3D", 1)[1]
    grants = "\n".join(line for line in (ROOT / "docker" / "postgres" / "app-role-grants.sql").read_text()
                       .splitlines() if not line.startswith("--"))
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.begin() as c:
            c.execute(sa.text(f'CREATE ROLE "{role}" NOLOGIN'))
            for stmt in grants.replace(":app_role", f'"{role}"').replace(":schema", f'"{schema}"').split(";"):
                if stmt.strip():
                    c.execute(sa.text(stmt))
        for stmt in ("DROP TABLE audit_log", "TRUNCATE audit_log", "ALTER TABLE audit_log DISABLE TRIGGER ALL",
                     "DROP TRIGGER audit_log_append_only ON audit_log"):
            with pytest.raises(sa.exc.DBAPIError), eng.begin() as c:
                c.execute(sa.text(f'SET ROLE "{role}"'))
                c.execute(sa.text(stmt))
        with eng.begin() as c:          # while the application's own work still runs
            c.execute(sa.text(f'SET ROLE "{role}"'))
            c.execute(sa.text("INSERT INTO audit_log (at, tenant, actor, action) VALUES (now(), 't', 'a', 'x')"))
            assert c.execute(sa.text("SELECT COUNT(*) FROM audit_log")).scalar() == 2
    finally:
        with eng.begin() as c:
            if c.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar():
                c.execute(sa.text(f'DROP OWNED BY "{role}"'))
                c.execute(sa.text(f'DROP ROLE "{role}"'))
        eng.dispose()


def test_deleted_patient_reference_is_not_left_in_the_sqlite_files(tmp_path):
    db = tmp_path / "feqa.sqlite3"
    migrate(f"sqlite:///{db}")
    store = Store(f"sqlite:///{db}")
    secret = "PATIENT-WAL-" + uuid.uuid4().hex
    aid = store.new_id()
    store.create_assessment(aid, "t1", [NewItem("smile", f"uploads/{aid}/0.video", "0" * 64, 10)],
                            patient_ref=secret)
    for _ in range(3):
        store.get_assessment("t1", aid)          # some reads, as the API does
    assert store.delete_assessment("t1", aid) is not None
    time.sleep(0.1)
    for path in (db, Path(f"{db}-wal")):
        if path.exists():
            assert secret.encode() not in path.read_bytes(), path.name
