"""Timestamps on the wire are UTC ("…Z") whatever time zone the PostgreSQL session has.

psycopg hands back ``timestamptz`` values in the session's ``TimeZone``: the server's
``timezone`` (initdb takes the host's), the database's or role's ``ALTER … SET timezone``,
or the client's ``PGTZ``. SQLite has none; both must give the same string for an instant.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from dataclasses import replace

import pytest

from comments_api.app import create_app
from comments_api.identity.credentials import SCOPE_ADMIN, SCOPE_MODERATE
from comments_api.settings import Settings
from comments_api.store.repository import make_engine, migrate

from .authkit import api_key, bearer
from .support import VENV_BIN, PostgresServer

UTC_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def kolkata_url(pg_server: PostgresServer) -> str:
    """A migrated database whose sessions run in UTC+05:30."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = pg_server.create_database(name)
    with pg_server.superuser() as conn:
        conn.execute(f"ALTER DATABASE \"{name}\" SET timezone = 'Asia/Kolkata'")
    return url


def test_timestamps_are_utc_on_a_postgres_session_in_another_time_zone(kolkata_url: str) -> None:
    url = kolkata_url
    settings = replace(Settings(database_url=url), ratelimit_enabled=False)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    app = create_app(settings)
    client = app.test_client()
    admin = bearer(api_key(app, SCOPE_ADMIN, SCOPE_MODERATE))

    created = client.post(
        "/api/v1/contents/tz/comments",
        json={"body": "hello", "email": "a@example.com"},
        headers={"Idempotency-Key": "tz-1"},
    )
    assert created.status_code == 201
    stamp = created.json["created_at"]
    assert UTC_STAMP.fullmatch(stamp)
    comment_id = created.json["id"]
    # The same instant, the same string: the stored row read back, one comment and a page.
    assert client.get(f"/api/v1/comments/{comment_id}").json["created_at"] == stamp
    (listed,) = client.get("/api/v1/contents/tz/comments").json["items"]
    assert listed["created_at"] == listed["updated_at"] == stamp

    banned = client.post("/api/v1/moderation/bans", json={"email": "b@example.com"}, headers=admin)
    assert banned.status_code == 201
    (ban,) = client.get("/api/v1/moderation/bans", headers=admin).json["items"]
    assert UTC_STAMP.fullmatch(ban["created_at"])

    assert client.delete(f"/api/v1/comments/{comment_id}", headers=admin).status_code == 204
    tombstone = client.get(f"/api/v1/comments/{comment_id}").json
    assert tombstone["created_at"] == stamp
    assert UTC_STAMP.fullmatch(tombstone["deleted_at"])
    # The key's replay (its answer erased by the delete) reads as the tombstone's GET.
    replay = client.post(
        "/api/v1/contents/tz/comments",
        json={"body": "hello", "email": "a@example.com"},
        headers={"Idempotency-Key": "tz-1"},
    )
    assert {k: replay.json[k] for k in tombstone} == tombstone

    audit = client.get("/api/v1/admin/audit-log", headers=admin).json["items"]
    assert audit
    assert all(UTC_STAMP.fullmatch(e["created_at"]) for e in audit)


def test_keys_list_prints_utc_on_a_postgres_session_in_another_time_zone(kolkata_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": kolkata_url, "LOG_LEVEL": "warning"}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [str(VENV_BIN / "comments-api"), *args], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("migrate")
    cli("keys", "create", "--name", "backend", "--scope", "admin")
    header, line = cli("keys", "list").splitlines()
    created_at = line.split("\t")[header.split("\t").index("created_at")]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created_at), created_at
