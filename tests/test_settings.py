"""Typed settings from the environment."""

from __future__ import annotations

from dataclasses import fields

import pytest

from comments_api.settings import DEFAULT_SQLITE_URL, Settings, SettingsError

pytestmark = pytest.mark.unit  # the fast tier: no servers, no network


def test_defaults_are_safe():
    settings = Settings.from_env({})
    assert settings.port == 8000
    assert settings.debug is False
    assert settings.database_url == DEFAULT_SQLITE_URL
    assert settings.workers >= 2
    assert settings.jwt_hs256_secret is None
    assert settings.auth_mode == "open"


def test_values_are_parsed_and_typed():
    settings = Settings.from_env(
        {"PORT": "9000", "DEBUG": "true", "WORKERS": "3", "LOG_LEVEL": "WARNING",
         "CORS_ORIGINS": "https://a.example, https://b.example", "SHUTDOWN_DELAY": "2.5"}
    )  # fmt: skip
    assert (settings.port, settings.debug, settings.workers) == (9000, True, 3)
    assert settings.log_level == "warning"
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.shutdown_delay == 2.5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "http"}, "PORT must be an integer"),
        ({"WORKERS": "0"}, "WORKERS must be >= 1"),
        ({"DEBUG": "maybe"}, "DEBUG must be a boolean"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of"),
        ({"CORS_ORIGINS": "*"}, "CORS_ORIGINS"),
        # Never equal to a browser's Origin header, so never allowed: refused at start.
        ({"CORS_ORIGINS": "https://www.news.example/"}, "'https://www.news.example/' is not an"),
        ({"CORS_ORIGINS": "https://a.example,https://News.example"}, "'https://News.example'"),
        ({"CORS_ORIGINS": "https://a.example:443"}, "'https://a.example:443' is not an origin"),
        ({"CORS_ORIGINS": "www.news.example"}, "'www.news.example' is not an origin"),
        ({"CORS_ORIGINS": "https://a.example/comments"}, "CORS_ORIGINS: 'https://a.example/c"),
        ({"PORT": "70000"}, "PORT must be <= 65535, got 70000"),
        # Each failed only later: a 500 on every legacy list (a SQL LIMIT past SQLite's
        # integers) or every create (the comment model's max_length).
        ({"LEGACY_LIST_MAX": "99999999999999999999"}, "LEGACY_LIST_MAX must be <= 1000000"),
        ({"MAX_COMMENT_LENGTH": str(10**20)}, "MAX_COMMENT_LENGTH must be <= 1000000, got"),
        # float() reads these; inf made SIGTERM's wait overflow, and 1e12 s before now is
        # before year 1, so every create answered 500.
        ({"SHUTDOWN_DELAY": "inf"}, "SHUTDOWN_DELAY must be a finite number, got 'inf'"),
        ({"DUPLICATE_WINDOW": "nan"}, "DUPLICATE_WINDOW must be a finite number"),
        ({"DUPLICATE_WINDOW": "1e12"}, "DUPLICATE_WINDOW must be at most 315576000 seconds"),
        # 0 refused every wait at once.
        ({"REQUEST_HEADER_TIMEOUT": "0"}, "REQUEST_HEADER_TIMEOUT must be a positive number"),
        ({"REQUEST_BODY_TIMEOUT": "0"}, "REQUEST_BODY_TIMEOUT must be a positive number"),
        ({"RESPONSE_SEND_TIMEOUT": "0"}, "RESPONSE_SEND_TIMEOUT must be a positive number"),
        ({"DB_POOL_TIMEOUT": "0"}, "DB_POOL_TIMEOUT must be a positive number"),
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL"),
        # Drivers the lock does not install: a ModuleNotFoundError traceback at connect.
        ({"DATABASE_URL": "postgresql+psycopg2://u@db/x"}, "DATABASE_URL must be sqlite"),
        ({"DATABASE_URL": "postgresql+asyncpg://u@db/x"}, "DATABASE_URL must be sqlite"),
        # A ValueError traceback from the URL parser; the URL (a password) is not echoed.
        (
            {"DATABASE_URL": "postgresql+psycopg://u:pw@db:5432x/x"},
            "a port is a number from 1 to 65535",
        ),
        ({"DATABASE_URL": "postgresql+psycopg://u:pw@db:70000/x"}, "a port is a number from 1"),
        # Port 0 connected to the driver's default port instead (5432, 6379).
        ({"DATABASE_URL": "postgresql+psycopg://u:pw@db:0/x"}, "a port is a number from 1"),
        ({"RATELIMIT_STORAGE_URL": "redis://r:0/0"}, "a port is a number from 1 to 65535"),
        # In memory for SQLAlchemy: create_engine's TypeError traceback (no pool timeout).
        ({"DATABASE_URL": "sqlite:///c.db?mode=memory"}, "sqlite:/// needs a file path"),
        ({"DATABASE_URL": "sqlite:///file:c?mode=memory&uri=true"}, "needs a file path"),
        ({"DATABASE_URL": "sqlite:///file::memory:?uri=true"}, "needs a file path"),
        # Without uri=true SQLite never saw them: ?mode=ro opened the file read-write. With
        # it, the service made a directory 'file:' for the path, and ?timeout= lost to
        # DB_STATEMENT_TIMEOUT.
        ({"DATABASE_URL": "sqlite:///c.db?mode=ro"}, r"takes no query parameters \(got mode\);"),
        ({"DATABASE_URL": "sqlite:///file:c.db?mode=ro&uri=true"}, r"\(got mode, uri\)"),
        ({"DATABASE_URL": "sqlite:////srv/c.db?timeout=30"}, r"\(got timeout\); the service"),
        ({"DATABASE_URL": "sqlite:///c.db?cache"}, r"\(got cache\)"),
        # No shell expands "~": SQLite opened a directory named "~" ("unable to open").
        ({"DATABASE_URL": "sqlite:///~/comments.db"}, "does not expand"),
        # Redis refused the EXPIRE: limits fell back to per process for good.
        ({"RATELIMIT_READ": "10/99999999999 years"}, "a window is at most ten years"),
        ({"DATABASE_URL": "postgresql+psycopg://u:pw@[::1/x"}, "an IPv6 address goes in"),
        ({"WAITING_ANSWERS_MAX_BYTES": "65536"}, "WAITING_ANSWERS_MAX_BYTES must be >= 1048576"),
        # Checked whether or not rate limiting is on: a typo is never "no limit".
        ({"RATELIMIT_READ": "lots"}, "RATELIMIT_READ must look like"),
        ({"RATELIMIT_ANONYMOUS_WRITE": "ten/minute"}, "RATELIMIT_ANONYMOUS_WRITE must look"),
        ({"RATELIMIT_AUTHENTICATED_WRITE": ";"}, "RATELIMIT_AUTHENTICATED_WRITE must look"),
        # Taken literally, an amount of 0 refused every request: never a way to switch off.
        (
            {"RATELIMIT_READ": "0/minute"},
            "^RATELIMIT_READ: '0/minute' allows no request at all; .* RATELIMIT_ENABLED=false",
        ),
        ({"RATELIMIT_ANONYMOUS_WRITE": "10/minute;0 per hour"}, "'0 per hour' allows no"),
        ({"RATELIMIT_AUTHENTICATED_WRITE": "00/second"}, r"RATELIMIT_ENABLED=false\)$"),
        # limits read a window of 0 units as one unit: this limited per hour.
        ({"RATELIMIT_READ": "600/minute;10 per 0 hours"}, "'10 per 0 hours' has a window of 0"),
        ({"RATELIMIT_STORAGE_URL": "memcached://cache:11211"}, "got memcached://$"),
        ({"RATELIMIT_STORAGE_URL": "async+redis://r:6379"}, "got async\\+redis://$"),
        ({"RATELIMIT_STORAGE_URL": "cache:6379"}, "got no scheme$"),
        # A ValueError traceback when the limiter was built; a db name, a fallback later.
        ({"RATELIMIT_STORAGE_URL": "redis://r:63x9/0"}, "the host and port cannot be read"),
        ({"RATELIMIT_STORAGE_URL": "redis://r:6379/limits"}, "the path is a database number"),
        # redis-py reads the whole URL with urllib: this '[' fails it at the first request.
        ({"RATELIMIT_STORAGE_URL": "redis://:p[ss@r:6379/0"}, "are percent-encoded"),
        # Read as seconds by redis-py (a traceback at the first request) and by the limiter
        # for sentinel URLs (one at start).
        (
            {"RATELIMIT_STORAGE_URL": "redis+sentinel://s:26379/m?socket_timeout=half"},
            "socket_timeout must be a positive number of seconds",
        ),
        (
            {"RATELIMIT_STORAGE_URL": "redis://r:6379/0?socket_connect_timeout=0"},
            "socket_connect_timeout must be a positive number of seconds",
        ),
        # gunicorn's bind puts ':PORT' after HOST: 'localhost:99' bound port 99, and
        # `healthcheck` ended in a traceback on each of these.
        # 32-bit milliseconds: PostgreSQL refused every connection past it, SQLite's busy
        # timeout turned 0 (no wait at all).
        ({"DB_STATEMENT_TIMEOUT": "2147483.648"}, "DB_STATEMENT_TIMEOUT must be at most"),
        ({"DB_STATEMENT_TIMEOUT": "2592000"}, "DB_STATEMENT_TIMEOUT must be at most 2147483.647"),
        ({"HOST": "localhost:99"}, "HOST must be an IP address .* got 'localhost:99'"),
        ({"HOST": "[::1]"}, "HOST must be an IP address \\(IPv6 without brackets\\)"),
        ({"HOST": " "}, "HOST must be an IP address"),
        ({"HOST": "news example"}, "HOST must be an IP address"),
        ({"HOST": "0.0.0.0\n"}, "HOST must be an IP address"),
        # A path, refused blank as the *_FILE paths are: serve made (and emptied at every
        # start) a directory named ' ' in its working directory.
        ({"PROMETHEUS_MULTIPROC_DIR": " "}, "PROMETHEUS_MULTIPROC_DIR must be a directory .*' '$"),
        ({"PROMETHEUS_MULTIPROC_DIR": "/tmp/metrics\n"}, "without surrounding whitespace"),
        # libpq refused the option at the first connection, SQLAlchemy the port when the
        # engine was made: each a traceback in migrate and serve.
        (
            {"DATABASE_URL": "postgresql+psycopg://u:pw@db/x?sslmode=require&foo=bar"},
            "^DATABASE_URL: libpq has no connection option 'foo' ",
        ),
        ({"DATABASE_URL": "postgresql+psycopg://u:pw@db/x?port=abc"}, "a port is a number from"),
        # Through PgBouncer: an empty mode was read as a direct connection; ?options= failed
        # every connection (PgBouncer refuses the startup parameter), none at start.
        ({"DATABASE_URL": "postgresql+psycopg://u@db/x?pooler="}, "pooler= takes one of"),
        ({"DATABASE_URL": "postgresql+psycopg://u@db/x?pooler=Session"}, "pooler= takes one of"),
        (
            {"DATABASE_URL": "postgresql+psycopg://u@db/x?pooler=session&options=-cwork_mem=8MB"},
            "options= does not pass a pooler",
        ),
        ({"DATABASE_URL": "postgresql+psycopg://u:pw@db/x?port=0"}, "a port is a number from"),
        ({"DATABASE_URL": "postgresql+psycopg://u@db/x?host=a,b&port=1,2,3"}, "cannot be read"),
        # redis-py's: a traceback when serve built the limiter, or (an unknown option, a
        # value its connections refuse) every request's counter per process for good.
        ({"RATELIMIT_STORAGE_URL": "redis://r:6379/0?db=x"}, "Invalid value for 'db'"),
        ({"RATELIMIT_STORAGE_URL": "redis://r/0?max_connections=x"}, "'max_connections'"),
        ({"RATELIMIT_STORAGE_URL": "redis+unix:///run/r.sock?db=x"}, "Invalid value for 'db'"),
        ({"RATELIMIT_STORAGE_URL": "redis://r:6379/0?foo=1"}, "redis-py has no option 'foo'$"),
        ({"RATELIMIT_STORAGE_URL": "redis://r:6379/0?protocol=9"}, "protocol must be either"),
        ({"RATELIMIT_STORAGE_URL": "redis+sentinel://s:26379"}, "names its master's service"),
        ({"RATELIMIT_STORAGE_URL": "redis+sentinel://s:26379/"}, "names its master's service"),
    ],
)
def test_bad_values_are_clear_errors(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_hosts_gunicorn_can_bind_are_accepted():
    for host in ("0.0.0.0", "127.0.0.1", "::", "::1", "localhost", "api.news.example."):
        assert Settings.from_env({"HOST": host}).host == host


def test_origins_in_the_form_browsers_send_are_accepted():
    origins = (
        "https://www.news.example,http://localhost:8080,https://[::1]:8443,https://xn--d1a.example"
    )
    assert Settings.from_env({"CORS_ORIGINS": origins}).cors_origins == tuple(origins.split(","))


def test_database_urls_the_driver_reads_are_accepted():
    for url in (
        "postgresql+psycopg://app:p[ss/w@db.internal:5432/comments",  # unencoded, as before
        "postgresql+psycopg://app@[2001:db8::1]:5432/comments?sslmode=require",
        "postgresql+psycopg:///comments?host=/run/postgresql",
        "postgresql://app@db/comments",
        "sqlite:////srv/app@host:data/comments.db",  # a path: no host or port in it
    ):
        assert Settings.from_env({"DATABASE_URL": url}).database_url == url


def test_a_refused_storage_url_is_not_echoed_past_its_scheme():
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"RATELIMIT_STORAGE_URL": "memcached://:pa55word@cache:11211"})
    assert "pa55word" not in str(refused.value)
    for url in (
        "memory://",
        "redis://r:6379/0",
        "rediss://:pw@r:6380/1",
        "redis://r",
        "redis+unix:///s",
        "redis+sentinel://s1:26379,s2:26379/mymaster",
        "redis://r:6379/2?socket_timeout=1",
        "redis+sentinel://s1:26379/mymaster?socket_timeout=0.2&socket_connect_timeout=1",
    ):
        assert Settings.from_env({"RATELIMIT_STORAGE_URL": url}).ratelimit_storage_url == url


# What a deployment puts in the file (the URLs carry passwords); others: a secret-like value.
SECRET_SAMPLES = {
    "database_url": "postgresql+psycopg://app:pa55word@127.0.0.1/comments",
    "ratelimit_storage_url": "redis://:pa55word@127.0.0.1:6379/2",
}


@pytest.mark.parametrize(
    "item", [f for f in fields(Settings) if f.metadata.get("file")], ids=lambda f: f.name
)
def test_secrets_can_come_from_files(tmp_path, item):
    # RATELIMIT_STORAGE_URL among them: a Redis password must not have to sit in a ConfigMap.
    name = item.name.upper()
    value = SECRET_SAMPLES.get(item.name, "pa55word-" + "s" * 32)
    secret = tmp_path / "secret"
    secret.write_text(value + "\n")
    settings = Settings.from_env({f"{name}_FILE": str(secret)})
    assert getattr(settings, item.name) == value
    assert "pa55word" not in repr(settings)
    assert getattr(Settings.from_env({name: value}), item.name) == value
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env({f"{name}_FILE": str(secret), name: value})
    with pytest.raises(SettingsError, match=f"{name}_FILE: cannot read"):
        Settings.from_env({f"{name}_FILE": str(tmp_path / "missing")})
    # An empty mounted secret used to mean "unset": DATABASE_URL_FILE then served from
    # the default SQLite file inside the container.
    secret.write_text(" \n")
    with pytest.raises(SettingsError, match=f"{name}_FILE: {secret} is empty"):
        Settings.from_env({f"{name}_FILE": str(secret)})
    # A binary file, or one in another encoding: a UnicodeDecodeError traceback before.
    secret.write_bytes(b"pa55word-\xff" + value.encode())
    with pytest.raises(SettingsError, match=f"{name}_FILE: {secret} is not UTF-8 text"):
        Settings.from_env({f"{name}_FILE": str(secret)})
    # Set directly with the line break a Secret often keeps: read as from the file.
    assert getattr(Settings.from_env({name: f" {value}\n"}), item.name) == value
    # Saved with a byte order mark (a Windows editor, PowerShell): the mark was kept as
    # the value's first character, an HS256 secret that refused every token.
    secret.write_bytes(b"\xef\xbb\xbf" + value.encode() + b"\r\n")
    assert getattr(Settings.from_env({f"{name}_FILE": str(secret)}), item.name) == value


def test_driver_options_the_drivers_read_are_accepted():
    url = "postgresql+psycopg://u:pw@db/x?sslmode=require&keepalives_idle=120&port=6432"
    assert Settings.from_env({"DATABASE_URL": url}).database_url == url
    multi = "postgresql+psycopg://u@/x?host=a:5432&host=b:5433&target_session_attrs=any"
    assert Settings.from_env({"DATABASE_URL": multi}).database_url == multi
    storage = "redis://r:6379/0?socket_timeout=2&health_check_interval=10&protocol=3"
    assert Settings.from_env({"RATELIMIT_STORAGE_URL": storage}).ratelimit_storage_url == storage
    sentinel = "redis+sentinel://s1:26379,s2:26379/mymaster"
    assert Settings.from_env({"RATELIMIT_STORAGE_URL": sentinel}).ratelimit_storage_url


def test_a_secret_file_path_with_a_line_break_is_refused_in_one_line(tmp_path):
    # A path pasted with its line break made "cannot read /run/secrets/db" and
    # ": [Errno 2] ..." two lines.
    missing = f"{tmp_path}/db\n"
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"DATABASE_URL_FILE": missing})
    assert str(refused.value) == (
        f"DATABASE_URL_FILE: cannot read {missing!r}: No such file or directory"
    )


def test_the_database_urls_file_is_remembered_for_rotations(tmp_path):
    # store/url_file.py reads it again for new connections: a rotated password.
    secret = tmp_path / "database-url"
    secret.write_text(SECRET_SAMPLES["database_url"] + "\n")
    settings = Settings.from_env({"DATABASE_URL_FILE": str(secret)})
    assert settings.database_url_file == str(secret)
    assert settings.database_url == SECRET_SAMPLES["database_url"]
    direct = Settings.from_env({"DATABASE_URL": SECRET_SAMPLES["database_url"]})
    assert direct.database_url_file is None


def test_the_file_settings_are_the_secrets():
    assert {f.name for f in fields(Settings) if f.metadata.get("file")} == {
        "database_url",
        "jwt_hs256_secret",
        "jwt_hs256_previous_secret",
        "client_ip_hash_salt",
        "ratelimit_storage_url",
    }
    assert Settings.from_env({}).ratelimit_storage_url == "memory://"


def test_a_metrics_directory_may_hold_spaces_inside():
    path = "/tmp/comments api/metrics"
    assert Settings.from_env({"PROMETHEUS_MULTIPROC_DIR": path}).prometheus_multiproc_dir == path
