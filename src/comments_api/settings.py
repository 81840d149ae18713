"""Typed settings, read once from the environment (12-factor).

Every secret can also be given as ``NAME_FILE`` pointing at a file (Kubernetes/Docker
secrets); nothing secret has a default here.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from limits import RateLimitItem

DEFAULT_SQLITE_URL = "sqlite:///./data/comments.db"
# Below this, answers as large as the docs bundle (1.7 MB) could never wait for a client.
WAITING_ANSWERS_MIN_BYTES = 1024 * 1024


class SettingsError(ValueError):
    """Raised when an environment variable holds a value we cannot use."""


# The rate-limit storages whose driver the lock installs (redis-py): limits knows more
# schemes (memcached, mongodb, async+...), which would fail at the first request instead.
RATELIMIT_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel")


# limits' documented notation ("Rate limit string notation"): limits separated by , ; or |,
# each "amount / [multiple] unit" or "amount per [multiple] unit". Ours, not limits.util's
# regexes, which are no public API. Its parser reads a multiple of 0 as 1, so that is read
# here from the text ("per" is in no unit's name).
_LIMIT_SEPARATORS = re.compile(r"[,;|]")
_WINDOW_MULTIPLE = re.compile(r"(?:/|per)\s*([0-9]+)", re.IGNORECASE)


def parse_rate_limits(name: str, value: str) -> list[RateLimitItem]:
    """``10/minute;100/hour`` as limits items, shortest window first. A typo must refuse to
    start, never silently mean "no limit"."""
    # Imported here: limits loads asyncio and more (~55 ms), which `healthcheck` skips.
    from limits import parse, parse_many

    try:
        items = parse_many(value)
        if not items:
            raise ValueError("empty")
    except ValueError:
        raise SettingsError(f"{name} must look like '10/minute;100/hour', got {value!r}") from None
    # parse_many accepted the whole string: each part between separators is one limit.
    for written in _LIMIT_SEPARATORS.split(value):
        if parse(written).amount == 0:
            # Taken literally, it refused every request: never a way to switch limits off.
            raise SettingsError(
                f"{name}: {written.strip()!r} allows no request at all; a limit's amount is "
                "at least 1 (to turn rate limits off, set RATELIMIT_ENABLED=false)"
            )
        multiple = _WINDOW_MULTIPLE.search(written)
        if multiple is not None and int(multiple.group(1)) == 0:
            # limits reads a window of 0 units as 1 unit: '10/0 hours' limited per hour.
            raise SettingsError(
                f"{name}: {written.strip()!r} has a window of 0; write e.g. '10/hour' or "
                "'10/2 hours'"
            )
    for item in items:
        # Redis refuses an EXPIRE this long: every hit would fail over to per-process
        # limits for good, and leave a counter without an expiry behind.
        if item.get_expiry() > SECONDS_MAX:
            raise SettingsError(f"{name}: a window is at most ten years, got {item}")
    # By window length: limits' own order compares the unit only ("3/90 minutes" before
    # "2/hour").
    return sorted(items, key=lambda item: item.get_expiry())


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


# What SQLite and PostgreSQL store as an integer; larger counts reach neither.
INT_MAX = 2**63 - 1


def _int(name: str, raw: str, minimum: int = 0, maximum: int = INT_MAX) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    if value > maximum:
        raise SettingsError(f"{name} must be <= {maximum}, got {value}")
    return value


# Every float setting is a number of seconds. Ten years is past any sensible window or
# timeout, and well inside what timers and date arithmetic take (1e12 s before "now" is
# before year 1: every create would fail).
SECONDS_MAX = 315_576_000


# PostgreSQL's statement_timeout and SQLite's busy timeout count milliseconds in 32 bits:
# past this PostgreSQL refused every connection, and SQLite did not wait at all.
STATEMENT_TIMEOUT_MAX = 2_147_483.647


def _float(name: str, raw: str, minimum: float = 0.0) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        # float() reads 'nan' and 'inf': a timeout that never ends or compares false.
        raise SettingsError(f"{name} must be a finite number, got {raw.strip()!r}")
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    if value > SECONDS_MAX:
        raise SettingsError(f"{name} must be at most {SECONDS_MAX} seconds (ten years)")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _doc(text: str, *, default: str | None = None, file: bool = False) -> dict[str, object]:
    """Field metadata for docs/configuration.md (``make docs``): the one description.

    ``default`` overrides how the default is shown (for computed ones); ``file`` marks the
    settings that also accept ``NAME_FILE`` (a path to a file holding the value).
    """
    meta: dict[str, object] = {"doc": text, "file": file}
    if default is not None:
        meta["default"] = default
    return meta


# Said instead of the URL itself, which may hold a password.
UNREADABLE_HOST = (
    "the host and port cannot be read (a port is a number from 1 to 65535; an IPv6 "
    "address goes in brackets; reserved characters in a password are percent-encoded)"
)


# The host and port as SQLAlchemy reads them (sqlalchemy.engine.url._parse_url, not imported
# here: `healthcheck` reads the settings without SQLAlchemy): its password ends at the first
# '@'.
_SQLALCHEMY_HOST_AND_PORT = re.compile(
    r"[\w+]+://(?:[^:/]*(?::[^@]*)?@)?(?:(?:\[[^/?]+\]|(?P<host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?"
)


def _host_and_port_readable(url: str) -> bool:
    # Only what follows the credentials: a password may hold '[' or '/' unencoded, which
    # urlsplit refuses and SQLAlchemy's URL parser accepts.
    host_and_port = url.partition("://")[2].rpartition("@")[2]
    host_and_port = re.split(r"[/?#]", host_and_port, maxsplit=1)[0]
    # A second '@' left unencoded in the password: SQLAlchemy took the rest of the password
    # for the host (or port), which the connection error then printed ("failed to resolve
    # host 'TAIL@db'", "invalid literal for int(): 'TAIL@db:5432'").
    read = _SQLALCHEMY_HOST_AND_PORT.match(url)
    if read is None or "@" in (read["host"] or "") + (read["port"] or ""):
        return False
    try:
        # Port 0 is no port to connect to: libpq took it for its default, 5432.
        return urlsplit(f"//{host_and_port}").port != 0
    except ValueError:
        return False


# DATABASE_URL's ``?pooler=session|transaction``: the URL reaches PostgreSQL through a
# pooler such as PgBouncer in that pool mode (docs/deployment.md, "Behind PgBouncer").
# Read by make_engine, which leaves it out of the URL libpq sees.
POOLER_OPTION = "pooler"
POOLER_MODES = ("session", "transaction")


def _database_query_problem(url: str) -> str | None:
    """What the driver refuses in a PostgreSQL URL's query, said without the URL: SQLAlchemy
    reads ``?host=``/``?port=`` when an engine is made, libpq the option names at the first
    connection. Each ended migrate, serve, keys and export in a traceback."""
    # Imported here: `healthcheck` loads neither (Settings.from_env(drivers=False)).
    from psycopg import pq
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        _, params = PGDialect_psycopg().create_connect_args(parsed)
        ports = [int(port) for port in str(params.get("port") or "").split(",") if port]
    except (ArgumentError, ValueError):
        return UNREADABLE_HOST
    if not all(1 <= port <= 65535 for port in ports):
        return UNREADABLE_HOST
    pooler = parsed.query.get(POOLER_OPTION)
    # make_url drops an empty value: `?pooler=` read as no pooler at all.
    blank = POOLER_OPTION in parse_qs(url.partition("?")[2], keep_blank_values=True)
    if (pooler is None and blank) or (pooler is not None and pooler not in POOLER_MODES):
        return f"?{POOLER_OPTION}= takes one of {', '.join(POOLER_MODES)} (the pooler's pool mode)"
    if pooler is not None and "options" in parsed.query:
        # PgBouncer refuses the startup parameter: every connection failed, none at start.
        return (
            f"?options= does not pass a pooler (?{POOLER_OPTION}=): PgBouncer refuses it; set "
            "those server settings on the role instead (ALTER ROLE ... SET)"
        )
    known = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
    known.add(POOLER_OPTION)  # ours (make_engine), not libpq's
    # The names only: a value may be a password (?password=).
    unknown = sorted(set(parsed.query) - known)
    if unknown:
        return (
            f"libpq has no connection option {', '.join(map(repr, unknown))} (its options: "
            "https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS)"
        )
    return None


def _redis_query_problem(url: str) -> str | None:
    """What redis-py refuses in a redis://, rediss:// or redis+unix:// URL's query, as it
    reads it (the limiter passes it on): a value it cannot parse (?db=x) ended serve in a
    traceback, and an option it does not know (?foo=1), or a value its connections refuse
    (?protocol=9), failed every request over to per-process limits for good."""
    # Imported here: `healthcheck` does not load redis-py (Settings.from_env(drivers=False)).
    from redis import ConnectionPool
    from redis.exceptions import RedisError

    try:
        # limits reads redis+unix:// as redis-py's unix://. A connection is made, not
        # connected: that happens at its first command.
        pool = ConnectionPool.from_url(url.replace("redis+unix://", "unix://", 1))
        pool.make_connection()
    except TypeError as exc:
        # The option's name only ("... unexpected keyword argument 'foo'"), never its value.
        name = re.search(r"argument '([^']*)'", str(exc))
        return f"redis-py has no option {name.group(1) if name else 'given'!r}"
    except (ValueError, RedisError) as exc:
        # redis-py's own words name the option ("Invalid value for 'db' in connection URL.").
        return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return None


# A host name (RFC 1123 labels; a trailing dot for a fully qualified one).
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _is_bind_host(host: str) -> bool:
    # gunicorn's bind, the liveness listener and `healthcheck` each put HOST before
    # ':PORT' themselves: 'localhost:99' bound port 99 and whitespace or '[::1]' ended
    # `healthcheck` in a traceback.
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return len(host) <= 253 and _HOST_NAME.fullmatch(host) is not None
    return True


# An origin as browsers serialize it in the Origin header (RFC 6454 section 6.1): http or
# https, a lowercase host (IDNs in punycode, IPv6 in brackets), a port only when it is not
# the scheme's default.
_ORIGIN = re.compile(r"(https?)://([a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(?::(\d{1,5}))?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _is_serialized_origin(origin: str) -> bool:
    match = _ORIGIN.fullmatch(origin)
    if match is None:
        return False
    port = match.group(3)
    return port is None or (
        not port.startswith("0")
        and 1 <= int(port) <= 65535
        and int(port) != _DEFAULT_PORTS[match.group(1)]
    )


@dataclass(frozen=True)
class Settings:
    # Each field is read from the environment variable of its name in capitals; its
    # description (metadata "doc") is the configuration reference's (docs/configuration.md).
    # --- server -------------------------------------------------------------------
    host: str = field(
        default="127.0.0.1",
        metadata=_doc(
            "IP address or host name to bind, without a port (`0.0.0.0` in the container image)."
        ),
    )
    port: int = field(default=8000, metadata=_doc("Port to bind."))
    liveness_port: int = field(
        default=0,
        metadata=_doc(
            "Port on which the gunicorn master itself answers `GET /healthz` (on `HOST`); "
            "`0` = none. Unlike `/healthz` on `PORT`, it never waits behind the requests "
            "queued at the workers: the Kubernetes liveness probe uses it (`8081` in "
            "`deploy/k8s`). 200 while the master's loop, which replaces dead and hung "
            "workers, turns; 503 if it is stuck."
        ),
    )
    workers: int = field(
        default_factory=_default_workers,
        metadata=_doc("gunicorn worker processes.", default="max(2, CPUs)"),
    )
    # 1 = our buffered sync worker: one request at a time per process, connections kept
    # alive in its main loop. gthread (>1) runs requests in threads; in bench/ it serves
    # ~40 % fewer lists than the sync worker, with more CPU per request (bench/README.md).
    threads: int = field(
        default=1,
        metadata=_doc(
            "Threads per worker; `1` is one request at a time per process, `>1` selects "
            "gunicorn's `gthread` worker (a thread pool; see `docs/server.md` for why the "
            "single-threaded worker is the default). Both keep connections alive "
            "(`KEEPALIVE_TIMEOUT`)."
        ),
    )
    debug: bool = field(
        default=False,
        metadata=_doc("Flask debug flag; never enables a debugger or reloader under gunicorn."),
    )
    log_level: str = field(
        default="info",
        metadata=_doc(
            "`debug`, `info`, `warning`, `error` or `critical`, for every log line "
            "(request lines are `info`: `warning` turns them off)."
        ),
    )
    shutdown_delay: float = field(
        default=0.0,
        metadata=_doc(
            "Seconds `/readyz` reports 503 on SIGTERM before draining starts, while requests "
            "are still served (set `5` behind a load balancer)."
        ),
    )
    graceful_timeout: int = field(
        default=25,
        metadata=_doc(
            "Seconds the drain may take: counted from the end of `SHUTDOWN_DELAY` (so a "
            "pod needs a grace period above both), the master then kills the workers left; "
            "workers finish "
            "a fifth of it (at most 0.5 s) earlier, answering requests still being read "
            "with 503 (docs/server.md)."
        ),
    )
    # Longer than the proxy's own idle timeout for its upstream connections, or the proxy
    # may send a request on a connection we are closing: nginx then answers 502 to a POST
    # (it does not retry non-idempotent requests). Idle connections cost a descriptor, and
    # a full worker closes its oldest idle one to accept a new one.
    keepalive_timeout: int = field(
        default=75,
        metadata=_doc(
            "Seconds an idle kept-alive connection stays open; `0` closes every connection "
            "after its response. Keep it above your proxy's upstream idle timeout "
            "(ingress-nginx `upstream-keepalive-timeout` and AWS ALB: 60 s)."
        ),
    )
    # Totals from accept to the end of the headers, then to the end of the body: a client
    # trickling bytes cannot extend them (comments_api.worker buffers requests meanwhile).
    request_header_timeout: float = field(
        default=10.0,
        metadata=_doc(
            "Seconds from accepting a connection (or its previous response) to the end of "
            "the request headers, in total; 408 after it."
        ),
    )
    request_body_timeout: float = field(
        default=15.0,
        metadata=_doc(
            "Seconds from the end of the headers to the end of the body, in total; 408 after it."
        ),
    )
    # Progress, not a total: a slow but reading client (a weak mobile link) still gets a
    # large answer; one that stops reading is cut off (comments_api.worker sends the rest
    # of an answer from its main loop, so the wait never holds a worker).
    response_send_timeout: float = field(
        default=30.0,
        metadata=_doc(
            "Seconds a client may take none of its response's bytes before its connection "
            "is closed (the rest waits in the worker's loop, never in a worker)."
        ),
    )
    # Overload, THREADS > 1 only: a request that waited this long for a free thread is
    # answered 503 + Retry-After instead of being served late. Without it, a database
    # slowed to DB_STATEMENT_TIMEOUT held every thread and a read waited 10-15 s in the
    # queue (measured), for an answer its proxy or browser had often given up on.
    queue_timeout: float = field(
        default=10.0,
        metadata=_doc(
            "With `THREADS>1`: seconds a complete request may wait for a free thread; past "
            "it the worker answers `503` with `Retry-After` (JSON) without running it; `0` "
            "= wait for good. The sync worker (`THREADS=1`) cannot see how long a request "
            'waited in the listen backlog (docs/server.md, "Overload").'
        ),
    )
    # Memory, not time: answers a client takes slower than they come wait in the worker's
    # loop; past this many bytes in one worker, a further such client is cut off, so
    # clients that stop reading cannot grow a worker past its container's limit.
    waiting_answers_max_bytes: int = field(
        default=32 * 1024 * 1024,
        metadata=_doc(
            "Bytes of answers one worker holds for clients that take them slowly; past it, "
            "a further client that does not take its answer at once is disconnected "
            '(`comments_api_server_refusals_total{reason="waiting-answers-full"}`). '
            "At least 1 MiB."
        ),
    )
    # gunicorn restarts a worker silent for this long (one request stuck in the app).
    worker_timeout: int = field(
        default=30,
        metadata=_doc(
            "gunicorn restarts a worker stuck in one request for this long (the request "
            "gets a JSON 500)."
        ),
    )
    # --- storage ------------------------------------------------------------------
    database_url: str = field(
        default=DEFAULT_SQLITE_URL,
        repr=False,  # may carry the database password
        metadata=_doc(
            "`sqlite:///PATH` (created on first run; no query parameters) or "
            "`postgresql+psycopg://USER:PASS@HOST:5432/DB`; through PgBouncer, add "
            "`?pooler=session` or `?pooler=transaction` (its pool mode: see "
            "[deployment.md](deployment.md#behind-pgbouncer)). From `DATABASE_URL_FILE`, "
            "PostgreSQL's new connections use the user and password the file holds at the "
            "time: a rotated password needs no restart (other changes do).",
            file=True,
        ),
    )
    # Not a setting of its own: where database_url was read from, when it came from a file.
    database_url_file: str | None = field(default=None, metadata={"path_of": "database_url"})
    db_pool_size: int = field(
        default=5,
        metadata=_doc(
            "Connections per worker (PostgreSQL may open as many again on bursts). Outside "
            "the pool each worker thread has one more for the read cache's change markers, "
            "and on a SQLite file each worker one for inserting comments."
        ),
    )
    db_pool_timeout: float = field(
        default=5.0, metadata=_doc("Seconds to wait for a pooled connection.")
    )
    # Seconds one statement may run (PostgreSQL statement_timeout) or wait for a lock
    # (SQLite busy timeout) before the request answers 503: a held lock or a slow database
    # must not pin a worker.
    db_statement_timeout: float = field(
        default=5.0,
        metadata=_doc(
            "Seconds a statement may run (PostgreSQL `statement_timeout`) or wait for the "
            "write lock (SQLite busy timeout) before the request answers `503` + "
            "`Retry-After`; also how long `/readyz` and `/metrics` wait for the readiness "
            "check (past it: not ready, `database not answering`); must be positive, and "
            "at most `2147483.647` (24.8 days)."
        ),
    )
    idempotency_ttl: float = field(
        default=86400.0,
        metadata=_doc(
            "Seconds an `Idempotency-Key` on a v1 create is remembered: a retry within it "
            "gets the first answer (once the comment is deleted, its tombstone: without "
            "its text and author)."
        ),
    )
    migrate_on_start: bool = field(
        default=True,
        metadata=_doc(
            "`serve` upgrades the schema before forking workers (PostgreSQL: under an "
            "advisory lock, so replicas starting together are safe); set `false` to run "
            "`comments-api migrate` as a separate step."
        ),
    )
    # --- API limits ---------------------------------------------------------------
    max_comment_length: int = field(
        default=5000, metadata=_doc("Characters (not bytes) per comment.")
    )
    max_body_bytes: int = field(
        default=64 * 1024,
        metadata=_doc("Request body limit in bytes (413 above it); at least 256."),
    )
    legacy_list_max: int = field(default=1000, metadata=_doc("Safety cap of the legacy list."))
    legacy_email: str = field(
        default="masked",
        metadata=_doc("`masked`, `full` or `hidden`: what the legacy list shows for `email`."),
    )
    # --- read cache and HTTP caching (docs/caching.md) ------------------------------
    read_cache_entries: int = field(
        default=1000,
        metadata=_doc(
            "Pages each worker keeps of the legacy list, v1 list pages and counts, "
            "revalidated on every request against the content's change marker (never "
            "stale); `0` turns the per-worker cache off (`ETag` and `304` stay)."
        ),
    )
    read_cache_bytes: int = field(
        default=32 * 1024 * 1024,
        metadata=_doc("Upper bound of the body bytes each worker's read cache holds."),
    )
    # private: a shared cache (CDN, proxy) must not store lists unless the operator says
    # so; browsers may keep a copy and revalidate it with If-None-Match (304, no body).
    read_cache_control: str = field(
        default="private, no-cache",
        metadata=_doc(
            "`Cache-Control` of the legacy list, v1 list pages and counts. The default "
            "forbids shared caches; behind a CDN use e.g. `public, no-cache` (the CDN "
            "revalidates every hit with `If-None-Match`) or add `s-maxage=N` to accept N "
            "seconds of staleness (see docs/caching.md)."
        ),
    )
    # --- auth (issue #3) ----------------------------------------------------------
    auth_mode: str = field(
        default="open",
        metadata=_doc(
            "`open` (anonymous writes allowed) or `required` (writes need an API key or a "
            "JWT); moderation and admin always need a credential."
        ),
    )
    moderation_mode: str = field(
        default="post",
        metadata=_doc("`post` (publish at once) or `pre` (pending until a moderator approves)."),
    )
    jwt_issuer: str | None = field(
        default=None,
        metadata=_doc("Required `iss` of reader tokens; mandatory once any JWT key source is set."),
    )
    jwt_audience: str | None = field(
        default=None,
        metadata=_doc("Required `aud` of reader tokens; mandatory once any JWT key source is set."),
    )
    jwt_jwks_url: str | None = field(
        default=None,
        metadata=_doc("The identity provider's JWKS (RS256/ES256), fetched with a 5 s timeout."),
    )
    jwt_jwks_file: str | None = field(
        default=None,
        metadata=_doc("A local JWKS document or PEM public key (RS256/ES256)."),
    )
    jwt_hs256_secret: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "Shared HS256 secret, at least 32 bytes. To rotate it without refusing the "
            "tokens already issued, see `JWT_HS256_PREVIOUS_SECRET`.",
            file=True,
        ),
    )
    # One value, read as the current one is: a list would need a separator a secret may
    # hold, and a rotation ends (the previous secret removed) before the next begins.
    jwt_hs256_previous_secret: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "The HS256 secret being rotated out: tokens signed with it are still accepted "
            "(never issued: the service only verifies tokens). Only beside "
            "`JWT_HS256_SECRET`, different from it, at least 32 bytes; removed once the "
            "last token signed with it has expired. The procedure: "
            "[security.md](security.md#rotating-the-hs256-secret).",
            file=True,
        ),
    )
    jwt_leeway: float = field(
        default=30.0, metadata=_doc("Seconds of clock skew allowed on `exp`/`nbf`.")
    )
    edit_window: float = field(
        default=900.0,
        metadata=_doc("Seconds after posting during which the author may edit."),
    )
    # --- abuse protection ---------------------------------------------------------
    ratelimit_storage_url: str = field(
        default="memory://",
        repr=False,  # may carry Redis's password
        metadata=_doc(
            "`memory://` (per process) or `redis://host:6379/0` (shared by workers and "
            "replicas; use it in production; also `rediss://`, `redis+unix://`, "
            "`redis+sentinel://`); with a password, "
            "`redis://:PASSWORD@host:6379/0` from `RATELIMIT_STORAGE_URL_FILE`. Redis gets "
            "0.5 s to connect and to answer (`?socket_timeout=`, `?socket_connect_timeout=` "
            "in the URL override it); unreachable, each process limits on its own meanwhile.",
            file=True,
        ),
    )
    # Per address: offices, schools and mobile carriers put many readers behind one IP,
    # so the hourly cap is generous; duplicate and per-thread checks stop single spammers.
    ratelimit_anonymous_write: str = field(
        default="10/minute;100/hour",
        metadata=_doc(
            "Anonymous comment writes per client address; generous because offices and "
            "mobile carriers share addresses."
        ),
    )
    ratelimit_authenticated_write: str = field(
        default="30/minute;300/hour",
        metadata=_doc("Authenticated writes per API key or reader."),
    )
    ratelimit_read: str = field(
        default="600/minute",
        metadata=_doc(
            "Everything else, per client address (put a CDN in front for hot articles); "
            "health probes and metrics are never limited."
        ),
    )
    ratelimit_enabled: bool = field(
        default=True, metadata=_doc("Switch all rate limits off (benchmarks, tests).")
    )
    trusted_proxies: int = field(
        default=0,
        metadata=_doc("Number of proxies in front of the app that append to `X-Forwarded-For`."),
    )
    duplicate_window: float = field(
        default=600.0,
        metadata=_doc(
            "Seconds within which the same author posting the same text on the same "
            "content is a duplicate (409); `0` turns duplicate detection off."
        ),
    )
    thread_author_max: int = field(
        default=20,
        metadata=_doc("Comments one author may post on one content per `THREAD_AUTHOR_WINDOW`."),
    )
    thread_author_window: float = field(
        default=3600.0, metadata=_doc("Seconds: the window of `THREAD_AUTHOR_MAX`.")
    )
    banned_words: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "Comma-separated words or phrases a comment's body or author name may not contain."
        ),
    )
    cors_origins: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "Comma-separated origins allowed to call the API from a browser, written as "
            "browsers send them (`scheme://host[:port]`, no trailing slash), e.g. "
            "`https://www.news.example,https://m.news.example` (never `*`)."
        ),
    )
    # --- observability (issue #4) -------------------------------------------------
    metrics_enabled: bool = field(
        default=True, metadata=_doc("Serve `/metrics`; `false` removes it.")
    )
    prometheus_multiproc_dir: str | None = field(
        default=None,
        metadata=_doc(
            "Directory where each gunicorn worker writes its metric samples, of its own: "
            "`serve` empties it at start and refuses one that holds other files. Unset: a "
            "private directory under `$TMPDIR`. Must be writable (a tmpfs with a read-only "
            "root filesystem)."
        ),
    )
    log_format: str = field(
        default="json",
        metadata=_doc(
            "`json` (one object per line) or `text` (for a terminal: `TIME LEVEL [pid] logger: "
            'message`, then the other fields as `key=value`; a value with a space, `=`, `"`, '
            "a control character, a line separator or a bidi control is quoted as a JSON "
            "string, those characters escaped)."
        ),
    )
    client_ip_hash_salt: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "Salt of the HMAC-SHA256 that turns client IPs into the logs' `client_ip_hash`; "
            "unset: a random salt per start (hashes then stable only until a restart).",
            file=True,
        ),
    )
    git_revision: str = field(
        default="unknown",
        metadata=_doc("Shown as `revision` on the `comments_api_build_info` metric."),
    )

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        rate_limits: bool = True,
        drivers: bool = True,
    ) -> Settings:
        """The settings from the environment, validated. ``rate_limits=False`` leaves the
        three limits' notation unread, for commands that never limit (`healthcheck`);
        ``drivers=False`` leaves the URLs' options unread by their drivers (redis-py,
        SQLAlchemy and libpq), which `healthcheck` never loads."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        def secret(name: str) -> str | None:
            # Stripped as the file's content is: a URL pasted into a Secret with its line
            # break named another SQLite file ('comments.db\n') or PostgreSQL database.
            direct = (get(name) or "").strip() or None
            path = get(f"{name}_FILE")
            if direct and path:
                raise SettingsError(f"set either {name} or {name}_FILE, not both")
            if path:
                try:
                    # utf-8-sig: a byte order mark (a file saved by a Windows editor or
                    # PowerShell) was kept as the secret's first character: an HS256
                    # secret that refused every token, a URL refused as no URL.
                    value = Path(path).read_text(encoding="utf-8-sig").strip()
                except OSError as exc:
                    # The path quoted: a line break pasted with it made the message two lines.
                    raise SettingsError(
                        f"{name}_FILE: cannot read {path!r}: {exc.strerror or exc}"
                    ) from None
                except UnicodeDecodeError as exc:
                    # A binary file or another encoding: a traceback before this.
                    raise SettingsError(
                        f"{name}_FILE: {path} is not UTF-8 text (byte {exc.start})"
                    ) from None
                if not value:
                    # An empty mounted secret is a broken one: falling back to the default
                    # would serve from a throwaway SQLite file, or without the secret.
                    raise SettingsError(f"{name}_FILE: {path} is empty")
                return value
            return direct

        kwargs: dict[str, object] = {}
        simple = {
            "HOST": ("host", str),
            "JWT_ISSUER": ("jwt_issuer", str),
            "JWT_AUDIENCE": ("jwt_audience", str),
            "JWT_JWKS_URL": ("jwt_jwks_url", str),
            "JWT_JWKS_FILE": ("jwt_jwks_file", str),
            "RATELIMIT_ANONYMOUS_WRITE": ("ratelimit_anonymous_write", str),
            "RATELIMIT_AUTHENTICATED_WRITE": ("ratelimit_authenticated_write", str),
            "RATELIMIT_READ": ("ratelimit_read", str),
            "PROMETHEUS_MULTIPROC_DIR": ("prometheus_multiproc_dir", str),
            "GIT_REVISION": ("git_revision", str),
            "READ_CACHE_CONTROL": ("read_cache_control", str),
        }
        for var, (attr, _) in simple.items():
            if (value := get(var)) is not None:
                kwargs[attr] = value
        # Upper bounds where a larger value fails later: in bind(), in the comment model, in
        # a SQL LIMIT, or in memory that every request may claim.
        ints = {
            "PORT": ("port", 1, 65535),
            "LIVENESS_PORT": ("liveness_port", 0, 65535),
            "WORKERS": ("workers", 1, 256),
            "THREADS": ("threads", 1, 1024),
            "DB_POOL_SIZE": ("db_pool_size", 1, 10_000),
            "MAX_COMMENT_LENGTH": ("max_comment_length", 1, 1_000_000),
            "MAX_BODY_BYTES": ("max_body_bytes", 256, 64 * 1024 * 1024),
            "LEGACY_LIST_MAX": ("legacy_list_max", 1, 1_000_000),
            "TRUSTED_PROXIES": ("trusted_proxies", 0, 100),
            "THREAD_AUTHOR_MAX": ("thread_author_max", 1, INT_MAX),
            "GRACEFUL_TIMEOUT": ("graceful_timeout", 1, SECONDS_MAX),
            "KEEPALIVE_TIMEOUT": ("keepalive_timeout", 0, SECONDS_MAX),
            "WORKER_TIMEOUT": ("worker_timeout", 1, SECONDS_MAX),
            "READ_CACHE_ENTRIES": ("read_cache_entries", 0, INT_MAX),
            "READ_CACHE_BYTES": ("read_cache_bytes", 0, INT_MAX),
            "WAITING_ANSWERS_MAX_BYTES": (
                "waiting_answers_max_bytes",
                WAITING_ANSWERS_MIN_BYTES,
                INT_MAX,
            ),
        }
        for var, (attr, minimum, maximum) in ints.items():
            if (value := get(var)) is not None:
                kwargs[attr] = _int(var, value, minimum, maximum)
        floats = {
            "SHUTDOWN_DELAY": "shutdown_delay",
            "REQUEST_HEADER_TIMEOUT": "request_header_timeout",
            "REQUEST_BODY_TIMEOUT": "request_body_timeout",
            "RESPONSE_SEND_TIMEOUT": "response_send_timeout",
            "QUEUE_TIMEOUT": "queue_timeout",
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
        # The fields documented as taking NAME_FILE (metadata "file") are the ones read
        # through secret(): the reference and the reader cannot disagree.
        for item in fields(cls):
            if item.metadata.get("file") and (value := secret(item.name.upper())) is not None:
                kwargs[item.name] = value
            if (of := item.metadata.get("path_of")) and (path := get(f"{of.upper()}_FILE")):
                kwargs[item.name] = path
        settings = cls(**kwargs)  # type: ignore[arg-type]
        settings.validate(rate_limits=rate_limits, drivers=drivers)
        return settings

    def validate(self, *, rate_limits: bool = True, drivers: bool = True) -> None:
        for name in (
            "db_statement_timeout",
            "db_pool_timeout",
            "request_header_timeout",
            "request_body_timeout",
            "response_send_timeout",
        ):
            # 0 would refuse every wait at once (a 408, a 503 or a dropped answer).
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name.upper()} must be a positive number of seconds")
        if not _is_bind_host(self.host):
            raise SettingsError(
                "HOST must be an IP address (IPv6 without brackets) or a host name, "
                f"without a port; got {self.host!r}"
            )
        if self.db_statement_timeout > STATEMENT_TIMEOUT_MAX:
            raise SettingsError(
                f"DB_STATEMENT_TIMEOUT must be at most {STATEMENT_TIMEOUT_MAX} seconds "
                "(milliseconds in 32 bits, as PostgreSQL and SQLite take them)"
            )
        if self.liveness_port == self.port:
            raise SettingsError("LIVENESS_PORT must differ from PORT (or be 0: none)")
        if "*" in self.cors_origins:
            raise SettingsError("CORS_ORIGINS must list origins explicitly; '*' is not allowed")
        for origin in self.cors_origins:
            # Matched byte for byte against the browser's Origin header, so an entry in
            # another form (a trailing slash, a path, capitals, :443) would never match.
            if not _is_serialized_origin(origin):
                raise SettingsError(
                    f"CORS_ORIGINS: {origin!r} is not an origin as browsers send it: "
                    "scheme://host[:port], lowercase, without a path, a trailing slash or "
                    "the scheme's default port (e.g. https://www.news.example)"
                )
        metrics_dir = self.prometheus_multiproc_dir
        if metrics_dir is not None and (
            not metrics_dir.strip() or metrics_dir != metrics_dir.strip()
        ):
            # A path, refused blank like the *_FILE paths: ' ' made (and emptied at every
            # start) a directory named ' ' in the working directory.
            raise SettingsError(
                "PROMETHEUS_MULTIPROC_DIR must be a directory path without surrounding "
                f"whitespace, or unset (a private directory under $TMPDIR); got {metrics_dir!r}"
            )
        if not all(" " <= ch <= "~" for ch in self.read_cache_control):
            # It is sent as a header: printable ASCII only, never a line break.
            raise SettingsError("READ_CACHE_CONTROL must be printable ASCII on one line")
        limits = ("ratelimit_read", "ratelimit_anonymous_write", "ratelimit_authenticated_write")
        for name in limits if rate_limits else ():
            parse_rate_limits(name.upper(), getattr(self, name))
        scheme, separator, _ = self.ratelimit_storage_url.partition("://")
        if not separator or scheme.lower() not in RATELIMIT_STORAGE_SCHEMES:
            # The scheme only: the rest of the URL may hold Redis's password.
            raise SettingsError(
                "RATELIMIT_STORAGE_URL must start with one of "
                f"{', '.join(s + '://' for s in RATELIMIT_STORAGE_SCHEMES)}; got "
                + (f"{scheme}://" if separator else "no scheme")
            )
        try:
            storage_query = parse_qs(urlsplit(self.ratelimit_storage_url).query)
        except ValueError:
            raise SettingsError(f"RATELIMIT_STORAGE_URL: {UNREADABLE_HOST}") from None
        for name in ("socket_timeout", "socket_connect_timeout"):
            # Read as numbers of seconds by redis-py, and by the limiter for sentinel URLs.
            for given in storage_query.get(name, ()):
                try:
                    valid = 0 < float(given) < float("inf")
                except ValueError:
                    valid = False
                if not valid:
                    raise SettingsError(
                        f"RATELIMIT_STORAGE_URL: {name} must be a positive number of seconds"
                    )
        if scheme.lower() in ("redis", "rediss"):  # one host (sentinel URLs list several)
            # Read as redis-py reads it (urllib.parse, the whole URL): a password with
            # reserved characters must be percent-encoded there.
            try:
                parts = urlsplit(self.ratelimit_storage_url)
                if parts.port == 0:  # redis-py, too, took it for its default (6379)
                    raise ValueError(parts.port)
            except ValueError:
                raise SettingsError(f"RATELIMIT_STORAGE_URL: {UNREADABLE_HOST}") from None
            if not re.fullmatch(r"/?\d*", parts.path):
                raise SettingsError("RATELIMIT_STORAGE_URL: the path is a database number: /0")
        if scheme.lower() == "redis+sentinel":
            # Read as limits reads it (limits._storage_scheme.parse_storage_uri): sentinels
            # after the first '@', each host:port. Its error for one it cannot read quoted
            # the whole URL, password included, in the traceback that stopped `serve`.
            netloc = urlsplit(self.ratelimit_storage_url).netloc
            for location in netloc[netloc.find("@") + 1 :].split(","):
                try:
                    sentinel = urlsplit(f"//{location.strip()}")
                    readable = sentinel.hostname is not None and sentinel.port not in (None, 0)
                except ValueError:
                    readable = False
                if not readable:
                    raise SettingsError(f"RATELIMIT_STORAGE_URL: {UNREADABLE_HOST}")
        storage_problem = (
            _redis_query_problem(self.ratelimit_storage_url)
            if drivers and scheme.lower() in ("redis", "rediss", "redis+unix")
            else None
        )
        if storage_problem is not None:
            raise SettingsError(f"RATELIMIT_STORAGE_URL: {storage_problem}")
        if scheme.lower() == "redis+sentinel" and not urlsplit(
            self.ratelimit_storage_url
        ).path.strip("/"):
            # limits reads the master's service name from the path; without one, serve
            # ended in a ConfigurationError traceback.
            raise SettingsError(
                "RATELIMIT_STORAGE_URL: a sentinel URL names its master's service after the "
                "hosts: redis+sentinel://HOST:26379,HOST:26379/SERVICE"
            )
        database_scheme = self.database_url.partition("://")[0]
        if not (
            self.database_url.startswith("sqlite:///")
            or database_scheme in ("postgresql", "postgresql+psycopg")
        ):
            # Named drivers other than psycopg (psycopg2, asyncpg, ...) are not installed.
            raise SettingsError(
                "DATABASE_URL must be sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
            )
        is_sqlite = self.database_url.startswith("sqlite:///")
        # A SQLite URL is a path (it may hold '@' and ':'); no host or port to read.
        if not is_sqlite and not _host_and_port_readable(self.database_url):
            raise SettingsError(f"DATABASE_URL: {UNREADABLE_HOST}")
        database_problem = (
            _database_query_problem(self.database_url) if drivers and not is_sqlite else None
        )
        if database_problem is not None:
            raise SettingsError(f"DATABASE_URL: {database_problem}")
        sqlite_path, _, sqlite_query = self.database_url.removeprefix("sqlite:///").partition("?")
        if is_sqlite and (
            sqlite_path in ("", ":memory:")
            or sqlite_path.startswith("file::memory:")
            # SQLAlchemy reads these as in memory too (a pool without a timeout, which
            # create_engine refused with a TypeError traceback).
            or "memory" in parse_qs(sqlite_query).get("mode", ())
        ):
            # In memory: one database per connection and per worker, gone at restart.
            raise SettingsError("DATABASE_URL sqlite:/// needs a file path: sqlite:///PATH")
        if is_sqlite and sqlite_path.startswith("~"):
            # No shell expands it here, and SQLite would open a directory named "~".
            raise SettingsError(
                "DATABASE_URL: SQLite does not expand '~'; give the path in full, e.g. "
                "sqlite:////home/USER/comments.db"
            )
        sqlite_parameters = sorted(parse_qs(sqlite_query, keep_blank_values=True))
        if is_sqlite and sqlite_parameters:
            # Without uri=true SQLite never sees them (?mode=ro opened the file read-write);
            # with it the path becomes 'file:...', which the service's own uses of the path
            # (its directory, backups, the writers' lock) do not read; timeout and
            # isolation_level are set by the service itself.
            raise SettingsError(
                "DATABASE_URL: a SQLite URL takes no query parameters (got "
                f"{', '.join(sqlite_parameters)}); the service opens sqlite:///PATH "
                "read-write and waits DB_STATEMENT_TIMEOUT for the write lock"
            )
