"""A rotated PostgreSQL password needs no restart when the URL comes from
``DATABASE_URL_FILE`` (store/url_file.py).

A real cluster, with a role that must give its password over TCP; rotation as RDS and
Kubernetes do it: the role's password changes, then the mounted file is swapped.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from comments_api.store.repository import make_engine

from .support import VENV_BIN, PostgresServer, ServiceProcess


def rotating_role(pg: PostgresServer) -> tuple[str, str, str]:
    """(role, first password, database) on the session cluster."""
    suffix = uuid.uuid4().hex[:10]
    role, database = f"app_{suffix}", f"rot_{suffix}"
    pg.create_database(database)
    password = secrets.token_hex(16)
    pg.add_password_role(role, password, database)
    return role, password, database


def url(
    pg: PostgresServer, role: str, password: str, database: str, host: str = "127.0.0.1"
) -> str:
    return f"postgresql+psycopg://{role}:{password}@{host}:{pg.port}/{database}"


def swap(path: Path, value: str) -> None:
    # As the kubelet updates a Secret volume: a new file renamed over the old one.
    fresh = path.with_suffix(".new")
    fresh.write_text(value + "\n", encoding="utf-8")
    os.replace(fresh, path)


def rotate(pg: PostgresServer, role: str, database: str) -> str:
    password = secrets.token_hex(16)
    with pg.superuser(database) as conn:
        conn.execute(f"ALTER ROLE {role} PASSWORD '{password}'")
    return password


def url_in_a_file(pg: PostgresServer, tmp_path: Path) -> tuple[str, str, str, Path]:
    """A new role and database, and the file its URL is mounted as: (role, password,
    database, path)."""
    role, password, database = rotating_role(pg)
    path = tmp_path / "database-url"
    swap(path, url(pg, role, password, database))
    return role, password, database, path


def current_user(engine: object) -> str:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return str(conn.execute(text("SELECT current_user")).scalar())


def test_new_connections_use_the_password_now_in_the_file(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    role, first, database, path = url_in_a_file(pg_server, tmp_path)
    following = make_engine(url(pg_server, role, first, database), url_file=str(path))
    fixed = make_engine(url(pg_server, role, first, database))
    assert current_user(following) == current_user(fixed) == role

    second = rotate(pg_server, role, database)
    swap(path, url(pg_server, role, second, database))
    following.dispose()
    fixed.dispose()
    assert current_user(following) == role  # a new connection, with the new password
    with pytest.raises(OperationalError, match="password authentication failed"):
        current_user(fixed)  # what every restart-less worker did before

    # Briefly missing (a volume update in progress): the last URL is kept.
    path.unlink()
    following.dispose()
    assert current_user(following) == role


def test_a_rotation_keeps_the_statement_timeout_and_the_urls_options(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    """A URL with ``options`` (here a lock_timeout): the rotated connection was made with the
    URL's options alone, replacing the merged ones, so DB_STATEMENT_TIMEOUT was lost."""
    role, first, database, path = url_in_a_file(pg_server, tmp_path)
    options = "?options=" + quote("-c lock_timeout=1234")
    swap(path, url(pg_server, role, first, database) + options)
    engine = make_engine(
        url(pg_server, role, first, database) + options, statement_timeout=3.5, url_file=str(path)
    )

    def settings() -> tuple[str, str]:
        with engine.connect() as conn:
            statement = conn.execute(text("SHOW statement_timeout")).scalar()
            lock = conn.execute(text("SHOW lock_timeout")).scalar()
        return str(statement), str(lock)

    assert settings() == ("3500ms", "1234ms")
    second = rotate(pg_server, role, database)
    swap(path, url(pg_server, role, second, database) + options)
    engine.dispose()
    assert current_user(engine) == role  # the new password
    assert settings() == ("3500ms", "1234ms")
    engine.dispose()


def test_a_file_pointing_elsewhere_is_refused_until_a_restart(
    pg_server: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    role, password, database, path = url_in_a_file(pg_server, tmp_path)
    engine = make_engine(url(pg_server, role, password, database), url_file=str(path))
    assert current_user(engine) == role
    # Another database (and another host spelling): pooled connections and new ones would
    # reach different databases, so the change waits for a restart.
    other = rotating_role(pg_server)
    swap(path, url(pg_server, *other, host="localhost"))
    engine.dispose()
    with caplog.at_level(logging.ERROR, logger="comments_api.store.url_file"):
        assert current_user(engine) == role
    assert "restart to apply it" in caplog.text
    assert other[1] not in caplog.text  # never the password


def test_serve_survives_a_rotation_without_a_restart(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    role, first, database, path = url_in_a_file(pg_server, tmp_path)
    env = {
        "DATABASE_URL_FILE": str(path),
        "RATELIMIT_ENABLED": "false",
        "DUPLICATE_WINDOW": "0",
        "LOG_LEVEL": "info",
    }

    subprocess.run(
        [str(VENV_BIN / "comments-api"), "migrate"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    content = uuid.uuid4().hex[:12]
    with ServiceProcess(env, tmp_path) as service:

        def post(body: str) -> int:
            response = requests.post(
                f"{service.base}/api/v1/contents/{content}/comments",
                json={"body": body, "email": "rot@example.com"},
                timeout=10,
            )
            return response.status_code

        assert post("before the rotation") == 201
        swap(path, url(pg_server, role, rotate(pg_server, role, database), database))
        assert pg_server.end_sessions(database) > 0  # every pooled connection is now dead
        # Each worker reconnects with the file's new password. Both workers must have
        # reconnected: several requests, spread by the server over its workers.
        statuses = [post(f"after the rotation {i}") for i in range(8)]
        assert statuses == [201] * 8, statuses
        listed = requests.get(f"{service.base}/api/v1/contents/{content}/comments", timeout=10)
        assert listed.status_code == 200
        assert len(listed.json()["items"]) == 9
        assert "DATABASE_URL_FILE: new credentials" in service.log()
        assert first not in service.log()


def test_a_password_with_url_reserved_characters_migrates_and_serves(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    # Percent-encoded in the URL, as it must be. migrate (and serve, which migrates first)
    # handed the URL to Alembic's ConfigParser, whose interpolation refused the '%': a
    # ValueError traceback before anything ran.
    suffix = uuid.uuid4().hex[:10]
    role, database = f"app_{suffix}", f"pct_{suffix}"
    pg_server.create_database(database)
    password = "p@ss:w/rd%?#&=+" + secrets.token_hex(8)
    pg_server.add_password_role(role, password, database)
    env = {
        "DATABASE_URL": url(pg_server, role, quote(password, safe=""), database),
        "RATELIMIT_ENABLED": "false",
    }
    migrated = subprocess.run(
        [str(VENV_BIN / "comments-api"), "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr + migrated.stdout[-2000:]
    with ServiceProcess(env, tmp_path) as service:
        created = requests.post(
            f"{service.base}/api/v1/contents/pct/comments", json={"body": "hi"}, timeout=10
        )
        assert created.status_code == 201, created.text
        listed = requests.get(f"{service.base}/api/v1/contents/pct/comments", timeout=10)
        assert [c["body"] for c in listed.json()["items"]] == ["hi"]
