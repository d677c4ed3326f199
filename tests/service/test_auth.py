"""API keys: the three ways to present one, tenants, anonymous loopback use, the rate limit."""
from __future__ import annotations

from fastapi.testclient import TestClient

from service.api.main import create_app
from worker.jobs.db import migrate
from worker.settings import Settings


def test_bearer_header_and_cookie_are_accepted(settings, queue):
    settings.allow_anonymous = False
    app = create_app(settings, queue=queue)
    key = app.state.store.create_key("clinic-a")
    with TestClient(app) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert c.get("/v1/models", headers={"X-API-Key": key}).status_code == 200
        c.cookies.set("feqa_session", key)        # the raw key is no session id
        assert c.get("/v1/models").status_code == 401
        c.cookies.clear()
        assert c.post("/v1/session", json={"api_key": key}).status_code == 201
        assert c.cookies.get("feqa_session") not in (None, key)
        assert c.get("/v1/models").status_code == 200


def test_missing_and_wrong_keys_are_401_problems(settings, queue):
    settings.allow_anonymous = False
    with TestClient(create_app(settings, queue=queue)) as c:
        for headers in ({}, {"Authorization": "Bearer feqa_00_nope"}, {"X-API-Key": "garbage"}):
            r = c.get("/v1/models", headers=headers)
            assert r.status_code == 401
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"


def test_anonymous_only_when_bound_to_loopback_and_allowed(tmp_path, queue):
    def status(**kw) -> int:
        s = Settings(var_dir=tmp_path / "var", model_dir=tmp_path / "m", **kw)
        migrate(s.db_url)
        with TestClient(create_app(s, queue=queue)) as c:
            return c.get("/v1/models").status_code

    assert status(host="127.0.0.1", allow_anonymous=True) == 200
    assert status(host="0.0.0.0", allow_anonymous=True) == 401
    assert status(host="127.0.0.1", allow_anonymous=False) == 401


def test_a_wrong_key_is_refused_even_where_anonymous_use_is_allowed(client):
    assert client.get("/v1/models", headers={"X-API-Key": "feqa_1_2"}).status_code == 401


def test_rate_limit_answers_429_with_retry_after(tmp_path, queue):
    s = Settings(var_dir=tmp_path / "var", model_dir=tmp_path / "m", rate_limit_per_minute=3)
    migrate(s.db_url)
    app = create_app(s, queue=queue)
    key = app.state.store.create_key("a")
    with TestClient(app) as c:
        codes = [c.get("/v1/models", headers={"X-API-Key": key}).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        r = c.get("/v1/models", headers={"X-API-Key": key})
        assert r.json()["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
        # another key has its own budget
        other = app.state.store.create_key("a")
        assert c.get("/v1/models", headers={"X-API-Key": other}).status_code == 200


def test_default_secret_is_refused_outside_development(tmp_path):
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="FEQA_SECRET_KEY"):
        Settings(environment="production", var_dir=tmp_path)
    assert Settings(environment="production", secret_key="s3cret-value", var_dir=tmp_path).environment == "production"
