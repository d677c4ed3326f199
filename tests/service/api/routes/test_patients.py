"""GET /v1/patients/{ref}/assessments and /fhir: one patient's visits over time, tenant-scoped, audited without
patient data, paginated; deleting an assessment or its expiry removes it from the history.

In-process API (FastAPI TestClient) on a real SQLite job store; real API keys for two tenants."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from model.scales import MDS_UPDRS
from worker.jobs.db import Assessment, AuditEvent
from worker.jobs.store import NewItem


def visit(store, tenant: str, ref: str | None, days_ago: float, score: float, version: str = "1") -> str:
    aid = store.new_id()
    store.create_assessment(aid, tenant, [NewItem("smile", f"uploads/{aid}/0.video", "0" * 64, 1)],
                            protocol="pfed5", patient_ref=ref)
    (item,) = store.item_ids(aid)
    store.claim_item(item, "w", 3)
    model = {"name": "smile-compact", "version": version, "sha256": "ab" * 32, "trained_on": "simulated",
             "clinical_use": False}
    store.finish_item(item, {"expression": "smile", **MDS_UPDRS.grade(score), "scale": MDS_UPDRS.to_dict(),
                             "abstained": False, "model": model,
                             "repetitions": [{"index": 0, "measures": {"amplitude_iod": 0.2}}]}, {}, {})
    with store.session() as s:
        s.execute(update(Assessment).where(Assessment.id == aid).values(
            created_at=datetime.now(UTC) - timedelta(days=days_ago)))
    return aid


@pytest.fixture()
def keys(app):
    store = app.state.store
    return {t: {"Authorization": f"Bearer {store.create_key(t)}"} for t in ("clinic-a", "clinic-b")}


def test_history_is_tenant_scoped_paginated_audited_and_follows_deletion_and_retention(client, app, keys):
    store = app.state.store
    a = [visit(store, "clinic-a", "P-1", d, s, v) for d, s, v in ((30, 1.0, "1"), (20, 2.0, "1"), (10, 3.0, "2"))]
    other_patient = visit(store, "clinic-a", "P-2", 5, 1.0)
    other_tenant = visit(store, "clinic-b", "P-1", 5, 4.0)
    expired = visit(store, "clinic-a", "P-1", 400, 0.0)     # past the 365-day result retention

    r = client.get("/v1/patients/P-1/assessments", headers=keys["clinic-a"])
    assert r.status_code == 200
    body = r.json()
    assert [x["id"] for x in body["assessments"]] == a[::-1]          # newest first; none of the others
    assert body["next_cursor"] is None and body["patient_ref"] == "P-1"
    first = body["assessments"][0]["items"][0]["result"]
    assert first["score"] == 3.0 and first["scale"]["max"] == 4 and first["model"]["version"] == "2"
    assert other_patient not in r.text and other_tenant not in r.text and expired not in r.text
    # Clinic B sees only its own patient with the same reference.
    b = client.get("/v1/patients/P-1/assessments", headers=keys["clinic-b"]).json()
    assert [x["id"] for x in b["assessments"]] == [other_tenant]

    # Pages: two, then the last one, no overlap.
    p1 = client.get("/v1/patients/P-1/assessments", params={"limit": 2}, headers=keys["clinic-a"]).json()
    assert [x["id"] for x in p1["assessments"]] == [a[2], a[1]] and p1["next_cursor"]
    p2 = client.get("/v1/patients/P-1/assessments", params={"limit": 2, "cursor": p1["next_cursor"]},
                    headers=keys["clinic-a"]).json()
    assert [x["id"] for x in p2["assessments"]] == [a[0]] and p2["next_cursor"] is None
    bad = client.get("/v1/patients/P-1/assessments", params={"cursor": "not-a-cursor"}, headers=keys["clinic-a"])
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"
    assert client.get("/v1/patients/P-1/assessments", params={"limit": 0}, headers=keys["clinic-a"]).status_code == 422
    # Keyless from this machine is the anonymous tenant of the unit-test settings: none of the clinics' visits.
    assert client.get("/v1/patients/P-1/assessments").json()["assessments"] == []

    # Every read is audited with the ids it returned, never the patient reference.
    with store.session() as s:
        rows = list(s.query(AuditEvent).filter(AuditEvent.action == "patient_history").order_by(AuditEvent.id))
        assert [(e.tenant, e.detail["assessments"]) for e in rows[:2]] == [("clinic-a", a[::-1]),
                                                                           ("clinic-b", [other_tenant])]
        assert all("P-1" not in str(e.detail) for e in rows)
        assert all(e.actor not in ("", "anonymous") for e in rows[:2])     # the API key ids that read
        assert rows[-1].actor == "anonymous" and len(rows) == 5    # refused requests (bad cursor) read nothing

    # The FHIR Bundle: one Observation per visit, oldest first.
    bundle = client.get("/v1/patients/P-1/fhir", headers=keys["clinic-a"])
    assert bundle.status_code == 200 and bundle.headers["content-type"].startswith("application/fhir+json")
    fb = bundle.json()
    assert fb["resourceType"] == "Bundle" and fb["type"] == "collection" and fb["total"] == 3
    obs = [e["resource"] for e in fb["entry"]]
    assert [o["id"] for o in obs] == a and all(o["resourceType"] == "Observation" for o in obs)
    assert all(o["subject"] == {"identifier": {"value": "P-1"}} for o in obs)
    assert [o["component"][0]["valueQuantity"]["value"] for o in obs] == [1.0, 2.0, 3.0]
    assert fb["entry"][0]["fullUrl"].endswith(f"/v1/assessments/{a[0]}/fhir")

    # Deleting a visit removes it from the history and the Bundle.
    assert client.delete(f"/v1/assessments/{a[1]}", headers=keys["clinic-a"]).status_code == 204
    left = client.get("/v1/patients/P-1/assessments", headers=keys["clinic-a"]).json()["assessments"]
    assert [x["id"] for x in left] == [a[2], a[0]]
    assert client.get("/v1/patients/P-1/fhir", headers=keys["clinic-a"]).json()["total"] == 2
    # Another tenant cannot delete into this history either.
    assert client.delete(f"/v1/assessments/{a[0]}", headers=keys["clinic-b"]).status_code == 404


def test_history_pages_on_postgresql_with_equal_times(tmp_path):
    """The cursor (created_at, id) pages through PostgreSQL's timestamptz too, also when visits share a time."""
    from bench.servers import postgres_url
    from tests.service.conftest import pg_url_or_skip
    from worker.jobs.db import migrate
    from worker.jobs.store import Store

    with postgres_url(pg_url_or_skip()) as url:
        migrate(url)   # `feqa migrate`: a Store changes no schema
        store = Store(url)
        ids = [visit(store, "t", "P-9", 1, 1.0) for _ in range(3)]
        when = datetime.now(UTC) - timedelta(days=1)
        with store.session() as s:      # all three at the same instant: the id breaks the tie
            s.execute(update(Assessment).where(Assessment.id.in_(ids)).values(created_at=when))
        seen, before = [], None
        for _ in range(4):
            page, before = store.patient_assessments("t", "P-9", "k", limit=1, before=before)
            seen += [a.id for a, _ in page]
            if before is None:
                break
        assert seen == sorted(ids, reverse=True)


def test_fhir_uses_the_words_of_each_models_own_scale(client, app, keys):
    from model.scales import TORONTO

    store = app.state.store
    aid = store.new_id()
    store.create_assessment(aid, "clinic-a", [NewItem("brow", f"uploads/{aid}/0.video", "0" * 64, 1)],
                            protocol="toronto", patient_ref="P-T")
    (item,) = store.item_ids(aid)
    store.claim_item(item, "w", 3)
    store.finish_item(item, {"expression": "brow", **TORONTO.grade(2.2), "scale": TORONTO.to_dict(),
                             "abstained": False}, {}, {})
    fb = client.get("/v1/patients/P-T/fhir", headers=keys["clinic-a"]).json()
    comp = fb["entry"][0]["resource"]["component"][0]
    assert comp["interpretation"][0]["text"] == "mildly impaired"      # Toronto's 2, not MDS-UPDRS "mild"
    assert comp["interpretation"][0]["coding"][0]["code"] == "toronto_neuroface-2"   # the scale in the code too
    assert comp["code"]["text"] == "Toronto NeuroFace orofacial task: brow"


@pytest.mark.parametrize("ref", ["ward-3/P-17", "a/b/assessments", "x/fhir", "/lead", "P 1/%"])
def test_a_reference_with_slashes_works_raw_or_percent_encoded(client, app, keys, ref):
    from urllib.parse import quote

    store = app.state.store
    mine = visit(store, "clinic-a", ref, 2, 2.0)
    prefix = visit(store, "clinic-a", ref.split("/")[0] or "lead", 1, 1.0)    # a reference that is its prefix
    for sent in (quote(ref, safe=""), quote(ref, safe="/")):                 # %2F, and "/" as is
        r = client.get(f"/v1/patients/{sent}/assessments", headers=keys["clinic-a"])
        assert r.status_code == 200, (sent, r.text)
        assert r.json()["patient_ref"] == ref
        assert [x["id"] for x in r.json()["assessments"]] == [mine] and prefix not in r.text
        fb = client.get(f"/v1/patients/{sent}/fhir", headers=keys["clinic-a"])
        assert fb.status_code == 200 and fb.json()["total"] == 1, (sent, fb.text)
    # the plain route is unchanged, and another tenant still sees nothing
    assert client.get(f"/v1/patients/{quote(ref, safe='')}/assessments",
                      headers=keys["clinic-b"]).json()["assessments"] == []
