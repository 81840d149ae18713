"""Typed settings, read once from the environment (12-factor).

Every secret can also be given as ``NAME_FILE`` pointing at a file (Kubernetes/Docker
secrets); nothing secret has a default here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SQLITE_URL = "sqlite:///./data/comments.db"


class SettingsError(ValueError):
    """Raised when an environment variable holds a value we cannot use."""


def _default_workers() -> int:
    # gunicorn's classic (2 x cores) + 1 is tuned for I/O-heavy apps; ours is CPU-bound
    # on small pods, so one worker per core (at least 2, so one slow request never
    # blocks the pod) keeps memory and context switches low.
    return max(2, os.cpu_count() or 1)


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name} must be a boolean (true/false), got {raw!r}")


def _int(name: str, raw: str, minimum: int = 0) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(name: str, raw: str, minimum: float = 0.0) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    # --- server -------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = field(default_factory=_default_workers)
    # 1 = sync workers: each request is accepted anew, so load spreads over the workers.
    # gthread (>1) keeps connections alive but a worker keeps every connection it accepts:
    # in bench/ one worker sometimes took all 16 and throughput fell to a third; balanced,
    # it was only ~7% ahead of sync, with a worse p99.
    threads: int = 1
    debug: bool = False
    log_level: str = "info"
    shutdown_delay: float = 0.0  # seconds readiness reports 503 before draining starts
    graceful_timeout: int = 25
    # Totals from accept to the end of the headers, then to the end of the body: a client
    # trickling bytes cannot extend them (comments_api.worker buffers requests meanwhile).
    request_header_timeout: float = 10.0
    request_body_timeout: float = 15.0
    # gunicorn restarts a worker silent for this long (one request stuck in the app).
    worker_timeout: int = 30
    # --- storage ------------------------------------------------------------------
    database_url: str = DEFAULT_SQLITE_URL
    db_pool_size: int = 5
    db_pool_timeout: float = 5.0
    # Seconds one statement may run (PostgreSQL statement_timeout) or wait for a lock
    # (SQLite busy timeout) before the request answers 503: a held lock or a slow database
    # must not pin a worker.
    db_statement_timeout: float = 5.0
    # Seconds an Idempotency-Key is remembered: a retry within it gets the first answer.
    idempotency_ttl: float = 86400.0
    migrate_on_start: bool = True  # `serve` upgrades the schema before forking workers
    # --- API limits ---------------------------------------------------------------
    max_comment_length: int = 5000
    max_body_bytes: int = 64 * 1024
    legacy_list_max: int = 1000
    legacy_email: str = "masked"  # masked | full | hidden
    # --- auth (issue #3) ----------------------------------------------------------
    auth_mode: str = "open"  # open | required
    moderation_mode: str = "post"  # post (publish at once) | pre (pending until approved)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks_url: str | None = None
    jwt_jwks_file: str | None = None
    jwt_hs256_secret: str | None = field(default=None, repr=False)
    jwt_leeway: float = 30.0
    edit_window: float = 900.0
    # --- abuse protection ---------------------------------------------------------
    ratelimit_storage_url: str = "memory://"
    # Per address: offices, schools and mobile carriers put many readers behind one IP,
    # so the hourly cap is generous; duplicate and per-thread checks stop single spammers.
    ratelimit_anonymous_write: str = "10/minute;100/hour"
    ratelimit_authenticated_write: str = "30/minute;300/hour"
    ratelimit_read: str = "600/minute"
    ratelimit_enabled: bool = True
    trusted_proxies: int = 0
    duplicate_window: float = 600.0
    thread_author_max: int = 20
    thread_author_window: float = 3600.0
    banned_words: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    # --- observability (issue #4) -------------------------------------------------
    metrics_enabled: bool = True
    prometheus_multiproc_dir: str | None = None
    log_format: str = "json"  # json | text
    client_ip_hash_salt: str | None = field(default=None, repr=False)
    git_revision: str = "unknown"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        def secret(name: str) -> str | None:
            direct = get(name)
            path = get(f"{name}_FILE")
            if direct and path:
                raise SettingsError(f"set either {name} or {name}_FILE, not both")
            if path:
                try:
                    return Path(path).read_text(encoding="utf-8").strip() or None
                except OSError as exc:
                    raise SettingsError(f"{name}_FILE: cannot read {path}: {exc}") from None
            return direct

        kwargs: dict[str, object] = {}
        simple = {
            "HOST": ("host", str),
            "JWT_ISSUER": ("jwt_issuer", str),
            "JWT_AUDIENCE": ("jwt_audience", str),
            "JWT_JWKS_URL": ("jwt_jwks_url", str),
            "JWT_JWKS_FILE": ("jwt_jwks_file", str),
            "RATELIMIT_STORAGE_URL": ("ratelimit_storage_url", str),
            "RATELIMIT_ANONYMOUS_WRITE": ("ratelimit_anonymous_write", str),
            "RATELIMIT_AUTHENTICATED_WRITE": ("ratelimit_authenticated_write", str),
            "RATELIMIT_READ": ("ratelimit_read", str),
            "PROMETHEUS_MULTIPROC_DIR": ("prometheus_multiproc_dir", str),
            "GIT_REVISION": ("git_revision", str),
        }
        for var, (attr, _) in simple.items():
            if (value := get(var)) is not None:
                kwargs[attr] = value
        ints = {
            "PORT": ("port", 1),
            "WORKERS": ("workers", 1),
            "THREADS": ("threads", 1),
            "DB_POOL_SIZE": ("db_pool_size", 1),
            "MAX_COMMENT_LENGTH": ("max_comment_length", 1),
            "MAX_BODY_BYTES": ("max_body_bytes", 256),
            "LEGACY_LIST_MAX": ("legacy_list_max", 1),
            "TRUSTED_PROXIES": ("trusted_proxies", 0),
            "THREAD_AUTHOR_MAX": ("thread_author_max", 1),
            "GRACEFUL_TIMEOUT": ("graceful_timeout", 1),
            "WORKER_TIMEOUT": ("worker_timeout", 1),
        }
        for var, (attr, minimum) in ints.items():
            if (value := get(var)) is not None:
                kwargs[attr] = _int(var, value, minimum)
        floats = {
            "SHUTDOWN_DELAY": "shutdown_delay",
            "REQUEST_HEADER_TIMEOUT": "request_header_timeout",
            "REQUEST_BODY_TIMEOUT": "request_body_timeout",
            "DB_POOL_TIMEOUT": "db_pool_timeout",
            "DB_STATEMENT_TIMEOUT": "db_statement_timeout",
            "IDEMPOTENCY_TTL": "idempotency_ttl",
            "JWT_LEEWAY": "jwt_leeway",
            "EDIT_WINDOW": "edit_window",
            "DUPLICATE_WINDOW": "duplicate_window",
            "THREAD_AUTHOR_WINDOW": "thread_author_window",
        }
        for var, attr in floats.items():
            if (value := get(var)) is not None:
                kwargs[attr] = _float(var, value)
        bools = {
            "DEBUG": "debug",
            "MIGRATE_ON_START": "migrate_on_start",
            "METRICS_ENABLED": "metrics_enabled",
            "RATELIMIT_ENABLED": "ratelimit_enabled",
        }
        for var, attr in bools.items():
            if (value := get(var)) is not None:
                kwargs[attr] = _bool(var, value)
        choices = {
            "LOG_LEVEL": ("log_level", ("debug", "info", "warning", "error", "critical")),
            "LEGACY_EMAIL": ("legacy_email", ("masked", "full", "hidden")),
            "AUTH_MODE": ("auth_mode", ("open", "required")),
            "MODERATION_MODE": ("moderation_mode", ("post", "pre")),
            "LOG_FORMAT": ("log_format", ("json", "text")),
        }
        for var, (attr, allowed) in choices.items():
            if (value := get(var)) is not None:
                kwargs[attr] = _choice(var, value, allowed)
        for var, attr in {"BANNED_WORDS": "banned_words", "CORS_ORIGINS": "cors_origins"}.items():
            if (value := get(var)) is not None:
                kwargs[attr] = _list(value)
        kwargs["jwt_hs256_secret"] = secret("JWT_HS256_SECRET")
        kwargs["client_ip_hash_salt"] = secret("CLIENT_IP_HASH_SALT")
        if (db_secret := secret("DATABASE_URL")) is not None:
            kwargs["database_url"] = db_secret
        settings = cls(**kwargs)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.db_statement_timeout <= 0:
            raise SettingsError("DB_STATEMENT_TIMEOUT must be a positive number of seconds")
        if "*" in self.cors_origins:
            raise SettingsError("CORS_ORIGINS must list origins explicitly; '*' is not allowed")
        if not (
            self.database_url.startswith("sqlite:///") or self.database_url.startswith("postgresql")
        ):
            raise SettingsError(
                "DATABASE_URL must be sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
            )
