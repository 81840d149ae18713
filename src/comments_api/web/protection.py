"""Abuse protection at the HTTP edge: client address, rate limits, CORS.

Rate limits (Flask-Limiter, storage from RATELIMIT_STORAGE_URL):
- anonymous comment writes: per client address (RATELIMIT_ANONYMOUS_WRITE);
- authenticated comment writes: per credential (RATELIMIT_AUTHENTICATED_WRITE);
- everything else except probes and metrics: per client address (RATELIMIT_READ).
Each budget is shared by all routes of its kind, so legacy and v1 cannot be combined
to double it.

CORS is a short hand-written hook instead of flask-cors: the policy is a fixed
allowlist with no per-route variation, and one fewer dependency to keep patched.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import ClassVar

from flask import Flask, Response, g, request
from flask_limiter import Limit, Limiter
from limits import parse_many
from limits.storage import MemoryStorage
from werkzeug.exceptions import Forbidden
from werkzeug.middleware.proxy_fix import ProxyFix

from ..settings import Settings, SettingsError
from ..telemetry.http_hooks import OPS_ROUTES
from . import auth as web_auth

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Blueprints whose writes are comment writes (moderation calls have their own scopes).
COMMENT_BLUEPRINTS = frozenset({"legacy", "v1"})
# Probes and scrapes must never be throttled: a limited kubelet restarts healthy pods.
EXEMPT_PATHS = frozenset(OPS_ROUTES)

CORS_ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
CORS_ALLOW_HEADERS = "Authorization, Content-Type"
CORS_EXPOSE_HEADERS = (
    "Location, Link, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, "
    "X-RateLimit-Reset, X-Comments-Truncated"
)
CORS_MAX_AGE = "600"


def client_address() -> str:
    """The caller's address as the limiter keys it: an IPv6 caller owns a whole /64."""
    raw = request.remote_addr or "unknown"
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _is_comment_write() -> bool:
    return request.method in WRITE_METHODS and request.blueprint in COMMENT_BLUEPRINTS


def _exempt() -> bool:
    return request.path in EXEMPT_PATHS or request.method == "OPTIONS"


def _identity_key() -> str:
    identity = g.get("identity")
    return identity.actor if identity is not None else client_address()


class _LeanMemoryStorage(MemoryStorage):
    """``memory://`` without a new timer thread every 10 ms.

    limits' MemoryStorage sweeps expired counters from a threading.Timer restarted on
    every hit once the previous one has fired; Thread.start() waits for the new thread to
    get the GIL, which cut request throughput by more than half. Fixed-window counters
    already expire lazily when read, so sweeping the rest inline every 30 s is enough.
    """

    STORAGE_SCHEME: ClassVar[list[str]] = ["comments-memory"]  # type: ignore[misc]
    SWEEP_SECONDS = 30.0
    _next_sweep = 0.0

    # Name-mangled hook of the parent class, called on every hit. limits has no public way
    # to turn the timer off (checked against limits 5.8.0); the two tests
    # test_memory_storage_* fail if a new version renames or stops calling it.
    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_SECONDS
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


def _storage_uri(settings: Settings) -> str:
    url = settings.ratelimit_storage_url
    if url.startswith("memory://"):
        return "comments-memory://"
    return url


def _check_limit_strings(settings: Settings) -> None:
    # Flask-Limiter parses limits per request and, with swallow_errors, a typo would
    # silently mean "no limit": refuse to start instead.
    for name, value in (
        ("RATELIMIT_READ", settings.ratelimit_read),
        ("RATELIMIT_ANONYMOUS_WRITE", settings.ratelimit_anonymous_write),
        ("RATELIMIT_AUTHENTICATED_WRITE", settings.ratelimit_authenticated_write),
    ):
        try:
            if not parse_many(value):
                raise ValueError("empty")
        except ValueError:
            raise SettingsError(
                f"{name} must look like '10/minute;100/hour', got {value!r}"
            ) from None


def build_limiter(settings: Settings) -> Limiter:
    _check_limit_strings(settings)

    def anonymous() -> bool:
        return g.get("identity") is None

    limits = [
        Limit(
            settings.ratelimit_read,
            key_function=client_address,
            scope="read",
            shared=True,
            exempt_when=lambda: _exempt() or _is_comment_write(),
            error_message="too many requests from this address; slow down",
        ),
        Limit(
            settings.ratelimit_anonymous_write,
            key_function=client_address,
            scope="anonymous-write",
            shared=True,
            exempt_when=lambda: not _is_comment_write() or not anonymous(),
            error_message="too many comments from this address; wait before posting again",
        ),
        Limit(
            settings.ratelimit_authenticated_write,
            key_function=_identity_key,
            scope="authenticated-write",
            shared=True,
            exempt_when=lambda: not _is_comment_write() or anonymous(),
            error_message="too many comments from this account; wait before posting again",
        ),
    ]
    shared_storage = not settings.ratelimit_storage_url.startswith("memory://")
    return Limiter(
        client_address,
        default_limits=limits,  # type: ignore[arg-type]
        storage_uri=_storage_uri(settings),
        # Cheapest strategy; its window starts at a key's first hit, not on the clock.
        strategy="fixed-window",
        # We write the headers ourselves: Flask-Limiter would put Retry-After on every
        # response and stretch our own 503 Retry-After to the limit's reset time.
        headers_enabled=False,
        key_prefix="comments-api",
        # If Redis is down, limit per process rather than fail every request.
        in_memory_fallback_enabled=shared_storage,
        swallow_errors=True,
    )


def _ratelimit_headers(limiter: Limiter) -> Callable[[Response], Response]:
    def add(response: Response) -> Response:
        current = limiter.current_limit
        if current is None:
            return response
        try:
            reset_at = current.reset_at
            response.headers["X-RateLimit-Limit"] = str(current.limit.amount)
            response.headers["X-RateLimit-Remaining"] = str(max(0, current.remaining))
            response.headers["X-RateLimit-Reset"] = str(reset_at)
            if response.status_code == 429:
                response.headers["Retry-After"] = str(max(1, int(reset_at - time.time())))
        except Exception:  # headers are advisory; never fail the request for them
            log.warning("could not compute rate-limit headers", exc_info=True)
            if response.status_code == 429:
                response.headers.setdefault("Retry-After", "60")
        return response

    return add


def _cors(
    settings: Settings,
) -> tuple[Callable[[], Response | None], Callable[[Response], Response]]:
    allowed = frozenset(settings.cors_origins)

    def preflight() -> Response | None:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        origin = request.headers.get("Origin")
        if origin not in allowed:
            raise Forbidden("this origin may not call the API from a browser")
        response = Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = CORS_ALLOW_METHODS
        response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
        return response

    def headers(response: Response) -> Response:
        if not allowed:
            return response
        response.vary.add("Origin")
        origin = request.headers.get("Origin")
        if origin in allowed:
            # The exact origin, never "*": browsers send credentials only to it.
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
        return response

    return preflight, headers


def install(app: Flask, settings: Settings) -> None:
    """Order matters: preflight, identify, rate limit, then reject bad credentials."""
    if settings.trusted_proxies:
        # Only the last N X-Forwarded-For hops were written by our proxies; anything
        # further left is whatever the client claimed.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    preflight, cors_headers = _cors(settings)
    app.before_request(preflight)
    app.after_request(cors_headers)
    web_auth.install_identify(app)
    if settings.ratelimit_enabled:
        limiter = build_limiter(settings)
        limiter.init_app(app)
        app.after_request(_ratelimit_headers(limiter))
        app.extensions["comments_api_limiter"] = limiter
    web_auth.install_reject(app)
