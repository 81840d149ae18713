"""The command line operators use."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from comments_api.store.repository import head_revision

from .support import VENV_BIN, free_port


def run(*args, env=None, cwd=None):
    return subprocess.run(
        [str(VENV_BIN / "comments-api"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        check=False,
    )


def test_help_explains_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "migrate"):
        assert command in result.stdout
    for command in ("serve", "migrate"):
        sub = run(command, "--help")
        assert sub.returncode == 0
        assert len(sub.stdout.split("\n\n")[1].strip()) > 20  # a real sentence, not a stub
    assert "SHUTDOWN_DELAY" in run("serve", "--help").stdout


def test_bad_configuration_is_a_clear_error_not_a_traceback(tmp_path):
    result = run("migrate", env={"PORT": "eighty", "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert result.returncode != 0
    assert "PORT must be an integer" in result.stderr
    assert "Traceback" not in result.stderr
    result = run("migrate", env={"DATABASE_URL": "mysql://x"})
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


@pytest.mark.parametrize("command", [("serve",), ("migrate",), ("keys", "list")])
def test_an_unreachable_database_is_one_line_that_says_why(tmp_path, command):
    # serve migrates first (MIGRATE_ON_START): it used to end in a SQLAlchemy traceback.
    # A port nothing listens on: connections are refused.
    url = f"postgresql+psycopg://app:hunter2secret@127.0.0.1:{free_port()}/comments"
    result = run(*command, env={"DATABASE_URL": url, "PORT": str(free_port())})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Error: cannot reach the database: connection failed:" in result.stderr
    assert "Connection refused" in result.stderr
    assert "hunter2secret" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("env", "message", "before_migrating"),
    [
        # Checked only when the app was built, they ended serve in a traceback; now the
        # environment's own checks refuse them, before the database is touched.
        ({"RATELIMIT_READ": "lots"}, "RATELIMIT_READ must look like '10/minute;100/hour'", True),
        ({"RATELIMIT_STORAGE_URL": "bogus://x"}, "RATELIMIT_STORAGE_URL must start with", True),
        # The JWT keys are read, and the metrics directory made, when the app is built
        # (after migrating): each was a traceback, exit 1.
        (
            {"JWT_JWKS_URL": "idp.example/jwks.json", "JWT_ISSUER": "i", "JWT_AUDIENCE": "a"},
            "JWT_JWKS_URL: Invalid JWKS URI scheme",
            False,
        ),
        ({"JWT_HS256_SECRET": "x" * 40}, "JWT_ISSUER and JWT_AUDIENCE are required", False),
        ({"PROMETHEUS_MULTIPROC_DIR": "/proc/no"}, "PROMETHEUS_MULTIPROC_DIR: cannot", False),
    ],
)
def test_bad_settings_stop_serve_in_one_line(tmp_path, env, message, before_migrating):
    result = run("serve", env={"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", **env})
    assert result.returncode == 2, result.stderr
    # No usage hint before it (click's UsageError printed one): the command line was right.
    assert "Usage:" not in result.stderr
    assert "--help" not in result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert (tmp_path / "x.db").exists() is not before_migrating


@pytest.mark.parametrize(
    ("command", "name", "url"),
    [
        # An '@' left unencoded in the password: SQLAlchemy ends the password at the first
        # one and reads the rest as the host and port. The int() of that "port" (or the
        # host's name resolution) failed with the password's tail in its message.
        (("migrate",), "DATABASE_URL", "postgresql+psycopg://app:pa55@word:TAIL@127.0.0.1/c"),
        (("keys", "list"), "DATABASE_URL", "postgresql+psycopg://app:pa55@word:TAIL@127.0.0.1/c"),
        (("serve",), "DATABASE_URL", "postgresql+psycopg://app:pa55@word:TAIL@127.0.0.1/c"),
        # A sentinel limits cannot read: its ConfigurationError quoted the whole URL in the
        # traceback that stopped serve.
        (("serve",), "RATELIMIT_STORAGE_URL", "redis+sentinel://:pa55TAIL@127.0.0.1:2637x/m"),
        (
            ("serve",),
            "RATELIMIT_STORAGE_URL",
            "redis+sentinel://:pa55TAIL@127.0.0.1:26379,127.0.0.1:99999/m",
        ),
    ],
)
def test_a_url_the_driver_would_misread_is_refused_without_its_password(
    tmp_path, command, name, url
):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "PORT": str(free_port()), name: url}
    result = run(*command, env=env)
    assert result.returncode == 2, result.stderr
    assert "TAIL" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert f"{name}: the host and port cannot be read" in result.stderr


@pytest.mark.parametrize("command", [("migrate",), ("serve",), ("keys", "list"), ("export",)])
def test_a_database_url_option_libpq_lacks_is_one_line_before_connecting(tmp_path, command):
    # psycopg's "invalid connection option" at the first connection was a traceback in
    # migrate and serve; ?port=abc was SQLAlchemy's traceback in every command.
    for query in ("sslmode=disable&foo=hunter2secret", "port=abc"):
        url = f"postgresql+psycopg://app:hunter2secret@127.0.0.1:{free_port()}/c?{query}"
        result = run(*command, env={"DATABASE_URL": url, "PORT": str(free_port())})
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("Error: configuration error: DATABASE_URL: ")
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "hunter2secret" not in result.stderr + result.stdout


def test_a_storage_url_redis_py_cannot_read_stops_serve_in_one_line(tmp_path):
    # redis-py's ValueError (or limits' ConfigurationError for a sentinel URL without its
    # service name) when the limiter was built: a traceback after migrating.
    for url in ("redis://:hunter2secret@127.0.0.1:6379/0?db=x", "redis+sentinel://127.0.0.1"):
        env = {"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "RATELIMIT_STORAGE_URL": url}
        result = run("serve", env={**env, "PORT": str(free_port())})
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("Error: configuration error: RATELIMIT_STORAGE_URL: ")
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "hunter2secret" not in result.stderr
        assert not (tmp_path / "x.db").exists()  # refused before migrating


def test_serve_never_empties_a_metrics_directory_holding_other_files(tmp_path):
    # serve empties PROMETHEUS_MULTIPROC_DIR at every start: pointed at a data directory,
    # /tmp or ".", it deleted everything there, subdirectories included.
    shared = tmp_path / "shared"
    (shared / "reports").mkdir(parents=True)
    (shared / "reports" / "q3.csv").write_text("kept\n")
    (shared / "notes.txt").write_text("kept\n")
    (shared / "counter_123.db").write_bytes(b"a metrics file of an earlier run")
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        "PORT": str(free_port()),
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
    }
    result = run("serve", env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "'notes.txt', 'reports', which are not metrics files" in lines[0]
    assert "nothing was deleted" in lines[0]
    assert (shared / "notes.txt").read_text() == "kept\n"
    assert (shared / "reports" / "q3.csv").read_text() == "kept\n"
    assert (shared / "counter_123.db").exists()


@pytest.mark.parametrize("command", [("migrate",), ("serve",), ("keys", "list")])
def test_an_unusable_sqlite_file_is_one_line_that_says_why(tmp_path, command):
    # sqlite3's DatabaseError (not an OperationalError) for a file of another kind was a
    # traceback.
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/passwd", "PORT": str(free_port())}
    result = run(*command, env=env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "Error: cannot reach the database: file is not a database" in result.stderr


@pytest.mark.parametrize("command", [("migrate",), ("serve",), ("import", "{export}")])
@pytest.mark.parametrize(
    ("missing", "why"),
    [("comentz", "does not exist"), ("comentz/deeper", "does not exist"),
     ("export.jsonl", "is not a directory")],
)  # fmt: skip
def test_a_sqlite_path_in_a_missing_directory_is_one_line_and_creates_nothing(
    tmp_path, command, missing, why
):
    # A mistyped directory (sqlite:////var/lib/comentz/x.db) was created, with a new empty
    # database in it, and served as though it were the database.
    from comments_api.store.repository import head_revision

    export = tmp_path / "export.jsonl"
    export.write_text(
        '{"format": "comments-api-export", "version": 1, "schema_revision": '
        f'"{head_revision()}", "tables": {{}}}}\n'
    )
    directory = tmp_path / missing
    env = {"DATABASE_URL": f"sqlite:///{directory}/x.db", "PORT": str(free_port())}
    result = run(*(arg.format(export=export) for arg in command), env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"Error: configuration error: DATABASE_URL: {directory} {why}; correct the path, "
        "or create the directory first\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["export.jsonl"]


def test_the_default_database_directory_is_created_on_first_run(tmp_path):
    # `make run` on a fresh checkout: ./data is made for the default DATABASE_URL.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [str(VENV_BIN / "comments-api"), "migrate"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "data" / "comments.db") as conn:
        assert conn.execute("SELECT count(*) FROM comments").fetchone() == (0,)


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_database_is_refused(url):
    # sqlite:/// was a TypeError traceback from create_engine; :memory: would be one
    # database per worker, lost at every restart.
    result = run("migrate", env={"DATABASE_URL": url})
    assert result.returncode == 2, result.stderr
    assert "DATABASE_URL sqlite:/// needs a file path" in result.stderr


def test_migrate_logs_the_migrations_not_alembics_plugins(tmp_path):
    result = run("migrate", env={"DATABASE_URL": f"sqlite:///{tmp_path}/c.db"})
    assert result.returncode == 0, result.stderr
    assert "Running upgrade  -> 0001" in result.stdout
    assert "setup plugin" not in result.stdout


def _migrated_by_a_newer_release(url: str) -> None:
    """Our schema, at a revision this code does not ship (9999)."""
    from sqlalchemy import text

    from comments_api.store.repository import make_engine, migrate

    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
@pytest.mark.parametrize("command", [("migrate",), ("export", "-"), ("keys", "list")])
def test_a_schema_newer_than_this_code_is_one_line_that_says_so(request, store, command):
    # After rolling the code back, not the schema: migrate ended in Alembic's "Can't
    # locate revision" traceback, and the other commands advised running migrate.
    from comments_api.store.repository import head_revision

    url = request.getfixturevalue(f"{store}_url")
    _migrated_by_a_newer_release(url)
    result = run(*command, env={"DATABASE_URL": url, "LOG_LEVEL": "warning"})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        "Error: the database schema is at revision 9999, which this version does not know "
        f"(its newest is {head_revision()}): a newer comments-api migrated it"
    ) in result.stderr
    assert "run `comments-api migrate`" not in result.stderr


def test_migrate_on_a_newer_schema_whose_revision_then_times_out_is_one_line(postgres_url):
    # Alembic refused the revision it read (a newer release's), and the second read, the
    # one that names it in the message, timed out: a traceback from inside the handler.
    # The revision as a view that takes 30 s to read wherever a statement timeout is set:
    # a database slowed down between the two reads (the migration runs without one).
    from sqlalchemy import text

    from comments_api.store.repository import make_engine, migrate

    engine = make_engine(postgres_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(
            text(
                "CREATE VIEW alembic_version AS SELECT '9999'::varchar(32) AS version_num "
                "FROM (SELECT pg_sleep(CASE WHEN current_setting('statement_timeout') = '0' "
                "THEN 0 ELSE 30 END)) AS slow"
            )
        )
    engine.dispose()
    result = run(
        "migrate",
        env={"DATABASE_URL": postgres_url, "LOG_LEVEL": "warning", "DB_STATEMENT_TIMEOUT": "1"},
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "Error: cannot reach the database: canceling statement due to statement timeout; "
        "nothing was migrated"
    ]


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_serve_migrating_on_start_serves_a_schema_a_newer_release_migrated(
    request, store, tmp_path
):
    # A rollback of the code, not of the schema, on a replica that migrates on start
    # (MIGRATE_ON_START's default, compose.yaml's app): serve exited 1 ("a newer
    # comments-api migrated it"), and restart: unless-stopped looped on it, while /readyz
    # serves a schema ahead (expand/contract: docs/deployment.md).
    import requests

    from .support import ServiceProcess

    url = request.getfixturevalue(f"{store}_url")
    _migrated_by_a_newer_release(url)
    with ServiceProcess({"DATABASE_URL": url}, tmp_path, workers=1) as server:
        ready = requests.get(f"{server.base}/readyz", timeout=5)
        assert ready.json() == {"status": "ready", "schema_revision": "9999"}
        created = requests.post(
            f"{server.base}/api/v1/contents/a/comments",
            json={"body": "after a rollback"},
            timeout=5,
        )
        assert created.status_code == 201, created.text
    assert "database schema 9999 is ahead of this code's" in server.log()


def test_a_key_name_keys_list_cannot_print_on_one_line_is_refused(tmp_path):
    # `keys list` is tab-separated, one key a line: this name made up a second key's line.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/k.db", "LOG_LEVEL": "warning"}
    assert run("migrate", env=env).returncode == 0
    names = [
        "backend\tadmin",
        "backend\nfake\tadmin",
        "bell\x07",
        # Format characters (Cf): a right-to-left override made "backend\u202enimda" read
        # "backendadmin" reversed in a terminal; zero-width ones make two names look alike.
        "backend\u202enimda",
        "back\u200bend",
        "\ufeffbackend",
        "backend\u2066x\u2069",
        # Bytes that are not UTF-8 reach Python as lone surrogates (Cs), then failed to be
        # stored or printed.
        "backend\udcff",
    ]
    for name in names:
        result = run("keys", "create", "--name", name, "--scope", "comments:write", env=env)
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.splitlines()[-1] == (
            "Error: Invalid value for --name: must not contain control or format characters "
            "(tabs, line breaks, bidirectional or zero-width marks)"
        ), name
    assert (
        run("keys", "create", "--name", "site backend ✓", "--scope", "admin", env=env).returncode
        == 0
    )
    listed = run("keys", "list", env=env).stdout.splitlines()
    assert len(listed) == 2
    assert listed[1].split("\t")[1] == "site backend ✓"


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_the_longest_statement_timeout_accepted_is_the_one_the_database_applies(request, store):
    # One millisecond more and PostgreSQL refused every connection (FATAL: invalid value
    # for statement_timeout) while SQLite's busy timeout silently became 0.
    from sqlalchemy import text

    from comments_api.settings import Settings
    from comments_api.store.repository import make_engine

    url = request.getfixturevalue(f"{store}_url")
    settings = Settings.from_env({"DATABASE_URL": url, "DB_STATEMENT_TIMEOUT": "2147483.647"})
    engine = make_engine(url, statement_timeout=settings.db_statement_timeout)
    try:
        with engine.connect() as conn:
            query = "SHOW statement_timeout" if store == "postgres" else "PRAGMA busy_timeout"
            applied = str(conn.execute(text(query)).scalar())
    finally:
        engine.dispose()
    assert applied.removesuffix("ms") == "2147483647"


def test_keys_revoke_takes_an_id_or_a_pasted_key_and_never_echoes_a_secret(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/keys.db", "LOG_LEVEL": "warning"}
    assert run("migrate", env=env).returncode == 0
    key = run("keys", "create", "--name", "backend", "--scope", "admin", env=env).stdout.strip()
    secret = key.rsplit("_", 1)[1]
    # The whole key pasted in place of its id: it was "no active key with id cak_…_<secret>"
    # on stderr, the secret with it. Now it revokes the key it is.
    revoked = run("keys", "revoke", key, env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert secret not in revoked.stdout + revoked.stderr
    listed = run("keys", "list", env=env).stdout.splitlines()[1].split("\t")
    assert listed[5] != "-"  # revoked_at
    # Not an id at all: one line that says what an id is, not the value echoed back.
    for wrong in ("a\nb", "x" * 100_000, "cak_zz_"):
        refused = run("keys", "revoke", wrong, env=env)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.splitlines()[-1] == (
            "Error: Invalid value for KEY_ID: must be a key id: 12 hex digits, "
            "as `comments-api keys list` shows"
        )
        assert len(refused.stderr) < 400


@pytest.mark.parametrize("stdout", ["closed", "/dev/full"])
def test_a_key_that_cannot_be_printed_is_revoked_and_the_command_fails(tmp_path, stdout):
    # Only the key's hash is stored. With stdout closed it exited 0 with no key shown; on a
    # full disk it was a traceback. Either way a live admin key stood that no one held.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/keys.db", "LOG_LEVEL": "warning"}
    assert run("migrate", env=env).returncode == 0
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [
                str(VENV_BIN / "comments-api"),
                "keys",
                "create",
                "--name",
                "lost",
                "--scope",
                "admin",
            ],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env={**os.environ, **env},
            preexec_fn=(lambda: os.close(1)) if stdout == "closed" else None,
            check=False,
        )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Error: the key could not be written to stdout" in result.stderr
    assert "is revoked; nothing usable was created" in result.stderr
    listed = run("keys", "list", env=env).stdout.splitlines()
    assert len(listed) == 2, listed
    assert listed[1].split("\t")[1] == "lost"
    assert listed[1].split("\t")[5] != "-"  # revoked_at


@pytest.mark.parametrize("command", [("keys", "list"), ("export",), ("backup", "copy.db")])
def test_a_mistyped_sqlite_path_is_refused_and_creates_nothing(tmp_path, command):
    # keys and export created an empty database file (and its directories) at the wrong
    # path, then said "run `comments-api migrate`" as though that were the database.
    missing = tmp_path / "typo" / "comments.db"
    result = run(*command, env={"DATABASE_URL": f"sqlite:///{missing}"})
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        f"Error: no database at {missing}: check DATABASE_URL, or create it with "
        "`comments-api migrate`\n"
    )
    assert not (tmp_path / "typo").exists()


def test_a_key_change_while_another_writer_holds_the_database_is_one_line(tmp_path):
    # SQLite's lock held past the command's wait (DB_STATEMENT_TIMEOUT, 1 s here):
    # "database is locked" was a traceback.
    db = tmp_path / "keys.db"
    env = {"DATABASE_URL": f"sqlite:///{db}", "LOG_LEVEL": "warning", "DB_STATEMENT_TIMEOUT": "1"}
    assert run("migrate", env=env).returncode == 0
    key = run("keys", "create", "--name", "backend", "--scope", "admin", env=env).stdout.strip()
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        for command in (
            ("keys", "create", "--name", "other", "--scope", "admin"),
            ("keys", "revoke", key),
        ):
            result = run(*command, env=env)
            assert result.returncode == 1, result.stderr
            assert result.stderr == (
                "Error: the database refused the change, nothing was changed: database is locked\n"
            )
    finally:
        writer.rollback()
        writer.close()
    listed = run("keys", "list", env=env).stdout.splitlines()[1:]
    assert [line.split("\t")[1::4] for line in listed] == [["backend", "-"]]  # not revoked


def test_migrate_while_another_writer_holds_the_database_says_it_is_locked(tmp_path):
    # It said "cannot reach the database: database is locked", as though it were down.
    from comments_api.store.repository import make_engine, migrate, shipped_revisions

    db = tmp_path / "locked.db"
    previous = max(shipped_revisions()[1])  # one migration left to run
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine, previous)
    engine.dispose()
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        # Past its wait (DB_STATEMENT_TIMEOUT, 1 s here).
        env = {
            "DATABASE_URL": f"sqlite:///{db}",
            "LOG_LEVEL": "warning",
            "DB_STATEMENT_TIMEOUT": "1",
        }
        result = run("migrate", env=env)
    finally:
        writer.rollback()
        writer.close()
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        "Error: the database is locked by another writer; nothing was migrated, run it again "
        "once that writer is done: database is locked\n"
    )
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (previous,)


def test_migrate_waits_for_the_write_lock_as_long_as_db_statement_timeout(tmp_path):
    # migrate (and serve's MIGRATE_ON_START) waited make_engine's fixed 5 s for SQLite's
    # lock, as keys did: a lock held 6 s by an import failed the migration an operator had
    # allowed 60 s for.
    import threading

    from comments_api.store.repository import make_engine, migrate, shipped_revisions

    db = tmp_path / "waits.db"
    previous = max(shipped_revisions()[1])  # one migration left to run
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine, previous)
    engine.dispose()
    env = {"DATABASE_URL": f"sqlite:///{db}", "LOG_LEVEL": "warning", "DB_STATEMENT_TIMEOUT": "60"}
    writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    release = threading.Timer(6.5, writer.rollback)
    release.start()
    try:
        result = run("migrate", env=env)
    finally:
        release.join()
        writer.close()
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() != (previous,)


def test_backup_to_a_dash_is_refused_and_writes_no_file_named_dash(tmp_path):
    # "-" means stdout to export and import; backup wrote a file named "-" in the current
    # directory. A backup is checked whole before it is named, which a stream cannot be.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/live.db", "LOG_LEVEL": "warning"}
    assert run("migrate", env=env).returncode == 0
    result = run("backup", "-", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: Invalid value for 'DEST': a backup is not written to stdout ('-'): it is a "
        "SQLite file, checked before it is given its name; give a file name (./- for a "
        "file named '-')"
    )
    assert not (tmp_path / "-").exists()
    assert run("backup", "./-", env=env, cwd=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "-") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_keys_wait_for_the_write_lock_as_long_as_db_statement_timeout(tmp_path):
    # keys waited a fixed 5 s whatever DB_STATEMENT_TIMEOUT said: a lock held 6 s by a
    # migration or an import failed the key change an operator had allowed 60 s for.
    import threading

    db = tmp_path / "keys.db"
    env = {"DATABASE_URL": f"sqlite:///{db}", "LOG_LEVEL": "warning", "DB_STATEMENT_TIMEOUT": "60"}
    assert run("migrate", env=env).returncode == 0
    writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    release = threading.Timer(6.5, writer.rollback)
    release.start()
    try:
        result = run("keys", "create", "--name", "waited", "--scope", "admin", env=env)
    finally:
        release.join()
        writer.close()
    assert result.returncode == 0, result.stderr
    listed = run("keys", "list", env=env).stdout.splitlines()[1:]
    assert [line.split("\t")[1] for line in listed] == ["waited"]


def _run_into(target, *args, env, stream="stdout"):
    """The command with ``stream`` written to ``target``: "/dev/full" (a full disk) or
    "closed" (the shell's `>&-` / `2>&-`); the other stream captured."""
    fd = 1 if stream == "stdout" else 2
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [str(VENV_BIN / "comments-api"), *args],
            stdout=full if stream == "stdout" else subprocess.PIPE,
            stderr=full if stream == "stderr" else subprocess.PIPE,
            text=True,
            timeout=60,
            env={**os.environ, **env},
            preexec_fn=(lambda: os.close(fd)) if target == "closed" else None,
            check=False,
        )


@pytest.mark.parametrize("stdout", ["closed", "/dev/full"])
def test_a_key_list_that_cannot_reach_stdout_fails_in_one_line(tmp_path, stdout):
    # On a full disk it was a traceback; with stdout closed an exit 0 that listed nothing.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/keys.db", "LOG_LEVEL": "warning"}
    assert run("migrate", env=env).returncode == 0
    assert run("keys", "create", "--name", "k", "--scope", "admin", env=env).returncode == 0
    result = _run_into(stdout, "keys", "list", env=env)
    assert result.returncode == 1, result.stderr
    why = "standard output is closed" if stdout == "closed" else "No space left on device"
    assert result.stderr == f"Error: the key list could not be written to stdout: {why}\n"


def test_a_change_made_whose_confirmation_cannot_reach_stdout_is_exit_0(tmp_path):
    # migrate and keys revoke printed "done" after the change: on a full disk a traceback
    # and exit 1 said the migration or the revocation had failed.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/keys.db", "LOG_LEVEL": "warning"}
    migrated = _run_into("/dev/full", "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stderr.endswith(
        f"database is at revision {head_revision()} (stdout: No space left on device)\n"
    )
    key = run("keys", "create", "--name", "k", "--scope", "admin", env=env).stdout.strip()
    key_id = key.split("_")[1]
    revoked = _run_into("/dev/full", "keys", "revoke", key_id, env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stderr == f"revoked key {key_id} (stdout: No space left on device)\n"
    assert run("keys", "list", env=env).stdout.splitlines()[1].split("\t")[5] != "-"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_log_lines_a_full_stdout_refuses_are_dropped_in_one_line_not_tracebacks(
    tmp_path, log_format
):
    # The migration logs at info, to stdout: each line was a 40-line "--- Logging error ---"
    # traceback on stderr around migrate's one-line confirmation (exit 0 all the same).
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/logs.db", "LOG_FORMAT": log_format}
    migrated = _run_into("/dev/full", "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stderr == (
        "log lines that stdout refuses are dropped: No space left on device\n"
        f"database is at revision {head_revision()} (stdout: No space left on device)\n"
    )


@pytest.mark.parametrize("stderr", ["closed", "/dev/full"])
def test_a_stderr_that_takes_nothing_neither_stops_nor_fails_a_command(tmp_path, stderr):
    # Progress and summaries go to stderr: on a full disk (a cron job's log) the progress
    # label stopped an export and an import that had nothing wrong, and the summary made
    # a finished backup, and a created key already on stdout, exit 1.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/live.db", "LOG_LEVEL": "warning"}
    assert run("migrate", env=env).returncode == 0
    created = _run_into(
        stderr, "keys", "create", "--name", "k", "--scope", "admin", env=env, stream="stderr"
    )
    assert created.returncode == 0
    assert created.stdout.startswith("cak_")
    for command in (["export", str(tmp_path / "copy.jsonl")], ["backup", str(tmp_path / "b.db")]):
        done = _run_into(stderr, *command, env=env, stream="stderr")
        assert done.returncode == 0, command
        assert Path(command[1]).is_file()
    copy = {"DATABASE_URL": f"sqlite:///{tmp_path}/copy.db", "LOG_LEVEL": "warning"}
    imported = _run_into(stderr, "import", str(tmp_path / "copy.jsonl"), env=copy, stream="stderr")
    assert imported.returncode == 0
    keys = run("keys", "list", env=copy).stdout.splitlines()
    assert [line.split("\t")[1] for line in keys[1:]] == ["k"]


@pytest.mark.parametrize("command", [("migrate",), ("serve",)])
def test_a_role_that_may_not_create_the_tables_is_one_line(pg_server, tmp_path, command):
    # PostgreSQL 15 gives roles other than the database's owner no CREATE on schema
    # public: migrate, and serve migrating on start, ended in a ProgrammingError traceback.
    database = f"rights_{tmp_path.name[-20:].replace('-', '_')}"
    role = f"norights_{database}"
    pg_server.create_database(database)
    with pg_server.superuser(database) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # as 15 does, on any
    url = f"postgresql+psycopg://{role}@127.0.0.1:{pg_server.port}/{database}"
    result = run(*command, env={"DATABASE_URL": url, "PORT": str(free_port())})
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: the database refused the migration: permission denied for schema public; the "
        "role in DATABASE_URL must be allowed to create and alter the tables (the owner of "
        "the database, or of its schema)"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("stderr", ["closed", "/dev/full"])
def test_click_s_own_errors_keep_their_exit_code_and_off_stdout_whatever_stderr_takes(
    tmp_path, stderr
):
    # click wrote them itself: on a full stderr a traceback turned a usage error's exit 2
    # into 1, and with stderr closed it wrote them to stdout, among a command's output.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/live.db", "LOG_LEVEL": "warning"}
    assert run("migrate", env=env).returncode == 0
    usage = _run_into(stderr, "export", str(tmp_path / "live.db"), env=env, stream="stderr")
    assert (usage.returncode, usage.stdout) == (2, "")
    unknown = _run_into(stderr, "no-such-command", env=env, stream="stderr")
    assert (unknown.returncode, unknown.stdout) == (2, "")
    failed = _run_into(stderr, "keys", "revoke", "0" * 12, env=env, stream="stderr")
    assert (failed.returncode, failed.stdout) == (1, "")


@pytest.mark.parametrize("stdout", ["closed", "/dev/full"])
@pytest.mark.parametrize("args", [("--help",), ("--version",), ("keys", "list", "--help")])
def test_help_or_version_that_cannot_reach_stdout_fails_in_one_line(stdout, args):
    # A full stdout was click's traceback; a closed one an exit 0 that showed nothing.
    result = _run_into(stdout, *args, env={})
    assert result.returncode == 1, result.stderr
    why = "standard output is closed" if stdout == "closed" else "No space left on device"
    assert result.stderr == f"Error: could not write to stdout: {why}\n"
