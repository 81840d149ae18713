from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from comments_api.app import create_app
from comments_api.clock import Clock
from comments_api.identity.credentials import SCOPE_MODERATE, generate_api_key
from comments_api.settings import Settings
from comments_api.store.repository import make_engine, migrate
from comments_api.web.common import EXTENSION_KEY

from .authkit import AUDIENCE, ISSUER, Signer, hs_signer
from .support import PostgresServer, RedisServer


@pytest.fixture(autouse=True)
def environment_left_as_found() -> Iterator[None]:
    """Fail a test that changes this process's environment and leaves it changed.

    A variable left behind reaches every later test on the same xdist worker: one test's
    PROMETHEUS_MULTIPROC_DIR (a tmp_path, deleted after it) put later in-process apps'
    metrics in multiprocess mode on a directory gone, and an unrelated test failed on a
    missing series. monkeypatch.setenv undoes itself; a direct write does not.
    """
    before = dict(os.environ)
    yield
    changed = sorted(
        key
        for key in before.keys() | os.environ.keys()
        if before.get(key) != os.environ.get(key) and key != "PYTEST_CURRENT_TEST"  # pytest's own
    )
    if changed:
        for key in changed:
            if key in before:
                os.environ[key] = before[key]
            else:
                del os.environ[key]
        pytest.fail(f"the test left the environment changed: {', '.join(changed)}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'comments.db'}"


@pytest.fixture
def postgres_url(pg_server: PostgresServer) -> str:
    return pg_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each API test runs once on SQLite and once on a real PostgreSQL server."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def make_app(database_url: str) -> Callable[..., Flask]:
    """Build an app on a migrated database; keyword arguments override settings.

    ``clock=`` (e.g. tests/clock.py's FakeClock) gives the services a time the test moves.
    """

    def build(clock: Clock | None = None, **overrides: object) -> Flask:
        # Rate limits are off unless a test turns them on: API tests send many writes
        # from one client address. The limiter has its own tests.
        base = Settings(database_url=database_url, ratelimit_enabled=False)
        settings = replace(base, **overrides)
        engine = make_engine(settings.database_url)
        migrate(engine)
        engine.dispose()
        return create_app(settings) if clock is None else create_app(settings, clock)

    return build


@pytest.fixture
def signer() -> Signer:
    """An HS256 key for readers' JWTs (a module may define its own)."""
    return hs_signer()


@pytest.fixture
def build(make_app: Callable[..., Flask], signer: Signer) -> Callable[..., Flask]:
    """make_app with HS256 JWTs from ``signer`` accepted; keyword arguments as make_app's."""

    def make(**overrides: object) -> Flask:
        return make_app(
            jwt_hs256_secret=signer.key, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, **overrides
        )

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def v1_delete() -> Callable[[FlaskClient, int], object]:
    """DELETE a comment with whatever credential the API requires for it."""

    def delete(client: FlaskClient, comment_id: int) -> object:
        # Only the author or a moderator may delete: use a moderator API key, made once
        # per app through the real storage API.
        app = client.application
        key = app.extensions.get("tests_moderator_key")
        if key is None:
            new = generate_api_key()
            app.extensions[EXTENSION_KEY].repo.add_api_key(
                new.key_id, "tests-moderator", new.key_hash, [SCOPE_MODERATE]
            )
            key = app.extensions["tests_moderator_key"] = new.key
        return client.delete(
            f"/api/v1/comments/{comment_id}", headers={"Authorization": f"Bearer {key}"}
        )

    return delete
