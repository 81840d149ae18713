"""Typed settings from the environment."""

from __future__ import annotations

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
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL"),
    ],
)
def test_bad_values_are_clear_errors(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_secrets_can_come_from_files(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value\n")
    settings = Settings.from_env({"JWT_HS256_SECRET_FILE": str(secret)})
    assert settings.jwt_hs256_secret == "s3cr3t-value"
    assert "s3cr3t" not in repr(settings)
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env({"JWT_HS256_SECRET_FILE": str(secret), "JWT_HS256_SECRET": "x"})
    with pytest.raises(SettingsError, match="cannot read"):
        Settings.from_env({"JWT_HS256_SECRET_FILE": str(tmp_path / "missing")})
    url_file = tmp_path / "db-url"
    url_file.write_text("postgresql+psycopg://app:pw@127.0.0.1/comments")
    assert Settings.from_env({"DATABASE_URL_FILE": str(url_file)}).database_url.endswith(
        "/comments"
    )


def test_ratelimit_storage_url_can_come_from_a_file(tmp_path):
    # A Redis URL with a password is a secret: it must not have to sit in a ConfigMap.
    url_file = tmp_path / "ratelimit-url"
    url_file.write_text("redis://:pa55word@127.0.0.1:6379/2\n")
    settings = Settings.from_env({"RATELIMIT_STORAGE_URL_FILE": str(url_file)})
    assert settings.ratelimit_storage_url == "redis://:pa55word@127.0.0.1:6379/2"
    assert "pa55word" not in repr(settings)
    plain = Settings.from_env({"RATELIMIT_STORAGE_URL": "redis://127.0.0.1:6379/0"})
    assert plain.ratelimit_storage_url == "redis://127.0.0.1:6379/0"
    assert Settings.from_env({}).ratelimit_storage_url == "memory://"
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env(
            {"RATELIMIT_STORAGE_URL_FILE": str(url_file), "RATELIMIT_STORAGE_URL": "memory://"}
        )
    with pytest.raises(SettingsError, match="RATELIMIT_STORAGE_URL_FILE: cannot read"):
        Settings.from_env({"RATELIMIT_STORAGE_URL_FILE": str(tmp_path / "missing")})
