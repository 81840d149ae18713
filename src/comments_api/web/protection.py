"""Abuse protection at the HTTP edge: client address, rate limits, CORS.

Rate limits (fixed windows, per process for memory:// or on ``limits``' shared storage such
as Redis, from RATELIMIT_STORAGE_URL):
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, urlsplit

from flask import Flask, Request, Response, g, request
from limits import RateLimitItem
from limits.storage import RedisStorage, Storage, storage_from_string
from werkzeug.exceptions import Forbidden, TooManyRequests
from werkzeug.middleware.proxy_fix import ProxyFix

from ..contract.headers import OPS_ROUTES
from ..identity import guards as web_auth
from ..settings import Settings, parse_rate_limits
from ..telemetry.metrics import count_ratelimit_storage_failure

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Blueprints whose writes are comment writes (moderation calls have their own scopes).
COMMENT_BLUEPRINTS = frozenset({"legacy", "v1"})
# Probes and scrapes must never be throttled: a limited kubelet restarts healthy pods.
EXEMPT_PATHS = frozenset(OPS_ROUTES)

CORS_ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
# Every request header the API reads (browsers preflight anything not safelisted) and
# every response header a script may need beyond the safelisted ones.
CORS_ALLOW_HEADERS = (
    "Authorization, Content-Type, Idempotency-Key, If-Match, If-None-Match, X-Request-ID"
)
CORS_EXPOSE_HEADERS = (
    "Location, Link, ETag, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, "
    "X-RateLimit-Reset, X-Comments-Truncated, Idempotent-Replayed, X-Request-ID"
)
CORS_MAX_AGE = "600"


def client_address(req: Request) -> str:
    """The caller's address as the limiter keys it: an IPv6 caller owns a whole /64."""
    return _normalise_address(req.remote_addr or "unknown")


@lru_cache(maxsize=4096)
def _normalise_address(raw: str) -> str:
    # Cached: parsing the address was a visible share of the limiter's cost per request.
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        # Some proxies append the client's port to X-Forwarded-For ("203.0.113.7:51234",
        # "[2001:db8::1]:443"): a new source port must not be a new client.
        host = raw[1:].partition("]")[0] if raw.startswith("[") else raw.partition(":")[0]
        if host == raw or (not raw.startswith("[") and raw.count(":") != 1):
            return raw
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return raw
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class Counters(Protocol):
    """What the limiter asks of storage: limits' ``Storage`` (Redis) or ProcessCounters."""

    def incr(self, key: str, expiry: int) -> int: ...

    def get(self, key: str) -> int: ...

    def get_expiry(self, key: str) -> float: ...


class ProcessCounters:
    """``memory://``, and the fallback while shared storage is down: fixed windows kept in
    this process, with limits' MemoryStorage semantics (a window opens at its first hit,
    lasts ``expiry`` seconds, and the next hit after it opens a new one).

    Not limits' MemoryStorage itself: it restarted a sweep timer thread on every hit
    (Thread.start() waits for the new thread to get the GIL, which cut throughput by more
    than half), and its error-wrapping decorators and lock made one hit cost ~5 us, a
    visible share of the limiter's cost on a cached read (bench/README.md). A window that
    ends restarts on its next hit; the ones nobody hits again are swept every 30 s.
    """

    SWEEP_SECONDS = 30.0

    def __init__(self) -> None:
        self._windows: dict[str, list[float]] = {}  # key -> [reset at (epoch s), count]
        self._lock = threading.Lock()  # gthread workers share one limiter
        self._next_sweep = time.time() + self.SWEEP_SECONDS

    def incr(self, key: str, expiry: int) -> int:
        now = time.time()
        with self._lock:
            if now >= self._next_sweep:
                self._next_sweep = now + self.SWEEP_SECONDS
                self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
            window = self._windows.get(key)
            if window is None or window[0] <= now:
                self._windows[key] = [now + expiry, 1]
                return 1
            window[1] += 1
            return int(window[1])

    def get(self, key: str) -> int:
        """The count of ``key``'s current window, without counting a hit (0: none open)."""
        window = self._windows.get(key)
        return int(window[1]) if window is not None and window[0] > time.time() else 0

    def get_expiry(self, key: str) -> float:
        window = self._windows.get(key)
        return window[0] if window is not None else time.time()


@dataclass(frozen=True)
class Budget:
    """One shared budget: its limits (smallest window first) and what a refusal says."""

    scope: str
    items: list[RateLimitItem]
    message: str

    def __post_init__(self) -> None:
        # A limit written twice ("10/minute;10 per minute") has one storage key: counted
        # twice per request, it refused at half its amount. Ordered by the window's length:
        # limits sorts by unit only, putting "1/90 minutes" before "5/hour".
        distinct = dict.fromkeys(self.items)
        object.__setattr__(self, "items", sorted(distinct, key=RateLimitItem.get_expiry))


# When a window ends, in ms from now (-2: no counter). limits sets a counter's expiry only
# on its window's first hit, so one found without (an operator's PERSIST, a restore) would
# refuse its client for good: it gets a whole window from now. Run only where the limiter
# asks storage anyway (a refusal, a window this worker has not seen): no extra round trip.
WINDOW_END_SCRIPT = """
local ttl = redis.call("pttl", KEYS[1])
if ttl == -1 then
    redis.call("pexpire", KEYS[1], ARGV[1])
    return tonumber(ARGV[1])
end
return ttl
"""


@dataclass
class _Hit:
    item: RateLimitItem
    key: str
    count: int
    reset: float | None  # known without asking storage: this hit opened the window


class RateLimiter:
    """Fixed-window rate limits on ``limits``' public storage API, one budget per request.

    Replaces Flask-Limiter (bench/README.md, "Leaner layers"): it evaluated all three
    budgets on every request (exemption callbacks, key functions, limit parsing) and made
    three storage calls per limit (hit, then get and get_expiry for the headers). Here the
    request's one budget is picked by two comparisons, each limit costs one ``incr``, and
    the window's reset time is asked of storage only when this worker has not seen it yet,
    or for a 429's Retry-After (a refusal also reads, uncounted, the longer windows it did
    not charge: ``_holding_back``).

    If shared storage (Redis) fails or takes longer than ``STORAGE_TIMEOUT_SECONDS``, limits
    are kept per process in memory and one request tries storage again after
    ``RETRY_SECONDS``; limiting never fails a request.
    """

    RETRY_SECONDS = 5.0
    # Redis answers a hit in well under a millisecond; one that takes longer is stalled
    # (paused, swapping, a slow command) or unreachable, and redis-py's default (5 s) held
    # every request in flight for that long, again after each RETRY_SECONDS.
    STORAGE_TIMEOUT_SECONDS = 0.5
    KEY_PREFIX = "comments-api"
    _CACHE_MAX = 10_000

    def __init__(self, settings: Settings) -> None:
        self.read = Budget(
            "read",
            parse_rate_limits("RATELIMIT_READ", settings.ratelimit_read),
            "too many requests from this address; slow down",
        )
        self.anonymous = Budget(
            "anonymous-write",
            parse_rate_limits("RATELIMIT_ANONYMOUS_WRITE", settings.ratelimit_anonymous_write),
            "too many comments from this address; wait before posting again",
        )
        self.authenticated = Budget(
            "authenticated-write",
            parse_rate_limits(
                "RATELIMIT_AUTHENTICATED_WRITE", settings.ratelimit_authenticated_write
            ),
            "too many comments from this account; wait before posting again",
        )
        url = settings.ratelimit_storage_url
        self.shared = not url.startswith("memory://")
        # Synchronous URIs only (redis...): the async ones start with "async+".
        self.primary: Counters = (
            cast(Storage, storage_from_string(url, **self._storage_options(url)))
            if self.shared
            else ProcessCounters()
        )
        self.fallback: Counters = ProcessCounters()
        # Registering computes the script's digest only; it is sent at its first use.
        self._window_end = (
            cast(RedisStorage, self.primary)
            .get_connection()
            .register_script(WINDOW_END_SCRIPT.encode())
            if self.shared
            else None
        )
        self._primary_down_until = 0.0
        self._probe_lock = threading.Lock()
        # key -> window reset (epoch seconds), learnt from the hit that opened the window
        # or from one get_expiry per window per worker.
        self._resets: dict[str, float] = {}
        self._keys: dict[tuple[str, str], list[tuple[RateLimitItem, str, int]]] = {}

    @classmethod
    def _storage_options(cls, url: str) -> dict[str, Any]:
        """The storage's timeouts. For redis:// the URL's own socket_timeout /
        socket_connect_timeout query parameters win over these (redis-py's from_url). A
        sentinel URL's query is not read by limits, and its Sentinel clients get no timeout
        (and redis-py's retries) unless given ``sentinel_kwargs``: a stalled or unreachable
        sentinel held the request that asks it for the master (on every reconnect) until
        the worker timed out, and each replaced worker asked again."""
        timeouts = {
            "socket_timeout": cls.STORAGE_TIMEOUT_SECONDS,
            "socket_connect_timeout": cls.STORAGE_TIMEOUT_SECONDS,
        }
        parts = urlsplit(url)
        if not parts.scheme.endswith("+sentinel"):
            return timeouts
        query = parse_qs(parts.query)
        for name in timeouts:
            if query.get(name):
                timeouts[name] = float(query[name][-1])
        from redis.backoff import NoBackoff  # redis-py: imported only with Redis in use
        from redis.retry import Retry

        # redis-py's clients retry 3 times with backoff (1, 2, 4 s) by default: each
        # sentinel is asked once, as the master is.
        sentinel = {**timeouts, "retry": Retry(NoBackoff(), 0)}
        return {**timeouts, "sentinel_kwargs": sentinel}

    def budget(self, req: Request, ctx_g: Any) -> tuple[Budget, str] | None:
        """The budget this request draws on and its key; None when exempt."""
        method = req.method
        # CORS preflights are answered before this (never charged); a plain OPTIONS is a
        # read: it still checks the caller's credentials, which must not be free of limits.
        if req.path in EXEMPT_PATHS:
            return None
        if method in WRITE_METHODS and req.blueprint in COMMENT_BLUEPRINTS:
            identity = ctx_g.get("identity")
            if identity is None:
                return self.anonymous, client_address(req)
            return self.authenticated, identity.actor
        return self.read, client_address(req)

    def _storage(self) -> Counters:
        if not self._primary_down_until:
            return self.primary
        with self._probe_lock:
            now = time.monotonic()
            if now < self._primary_down_until:
                return self.fallback
            # This request tries shared storage again; the others stay on the fallback
            # until it has answered, so storage that still stalls holds one request.
            self._primary_down_until = now + self.RETRY_SECONDS
        return self.primary

    def _storage_keys(self, budget: Budget, key: str) -> list[tuple[RateLimitItem, str, int]]:
        # Built once per client and budget (key_for joins and escapes six parts per call).
        cached = self._keys.get((budget.scope, key))
        if cached is None:
            if len(self._keys) >= self._CACHE_MAX:
                self._keys.clear()
            cached = [
                (item, item.key_for(self.KEY_PREFIX, key, budget.scope), item.get_expiry())
                for item in budget.items
            ]
            self._keys[(budget.scope, key)] = cached
        return cached

    def _hit(self, storage: Counters, budget: Budget, key: str) -> list[_Hit]:
        hits = []
        for item, storage_key, expiry in self._storage_keys(budget, key):
            count = storage.incr(storage_key, expiry)
            hits.append(
                _Hit(item, storage_key, count, time.time() + expiry if count == 1 else None)
            )
            if count > item.amount:
                # Refused: a request nobody served does not draw on the longer windows
                # (a client retrying through a minute's 429s kept its hour's budget).
                break
        return hits

    def check(self) -> None:
        """before_request: count this request; 429 when a limit of its budget is exceeded."""
        # The request and g proxies resolved once: each use of one is a context lookup.
        ctx_g = g._get_current_object()  # type: ignore[attr-defined]
        chosen = self.budget(request._get_current_object(), ctx_g)  # type: ignore[attr-defined]
        if chosen is None:
            return
        budget, key = chosen
        storage = self._storage()
        try:
            hits = self._hit(storage, budget, key)
        except Exception:
            if not self.shared or storage is self.fallback:
                log.warning("rate-limit storage failed; request not limited", exc_info=True)
                return
            log.warning(
                "rate-limit storage unreachable; limiting per process in memory for %.0f s",
                self.RETRY_SECONDS,
                exc_info=True,
            )
            self._primary_down_until = time.monotonic() + self.RETRY_SECONDS
            count_ratelimit_storage_failure()
            storage = self.fallback
            hits = self._hit(storage, budget, key)
        else:
            if storage is self.primary and self._primary_down_until:
                self._primary_down_until = 0.0
                log.warning("rate-limit storage reachable again; limits shared again")
        last = hits[-1]
        # The headers (after_request) describe the window that holds the client back.
        ctx_g.ratelimit = (storage, hits, self._storage_keys(budget, key))
        if last.count > last.item.amount:  # _hit stops at the breached limit
            raise TooManyRequests(budget.message)

    def reset_at(self, hit: _Hit, storage: Counters) -> float:
        if storage is self.fallback:
            # Its windows are not Redis's: kept out of the cache the two would share.
            return hit.reset if hit.reset is not None else storage.get_expiry(hit.key)
        if hit.reset is not None:
            self._remember(hit.key, hit.reset)
            return hit.reset
        known = self._resets.get(hit.key)
        now = time.time()
        # A refusal asks storage: its Retry-After must hold even if Redis was flushed or
        # restarted and another worker opened the window this one remembers otherwise.
        if known is not None and known > now and hit.count <= hit.item.amount:
            return known
        if self._window_end is None:
            reset = storage.get_expiry(hit.key)
        else:
            redis_key = cast(RedisStorage, storage).prefixed_key(hit.key)
            window_ms = hit.item.get_expiry() * 1000
            reset = time.time() + max(0, int(self._window_end([redis_key], [window_ms]))) / 1000
        self._remember(hit.key, reset)
        return reset

    def _reset_or_bound(self, hit: _Hit, storage: Counters) -> float:
        """``reset_at``; if storage fails after counting the hit (Redis stalled or gone
        meanwhile), the latest the window can end: one window length from now. Without it
        the answer lost X-RateLimit-*, which the OpenAPI document says it carries."""
        try:
            return self.reset_at(hit, storage)
        except Exception:
            log.warning("could not read the rate-limit window's end", exc_info=True)
            return time.time() + hit.item.get_expiry()

    def _used_up_longer(
        self, uncounted: list[tuple[RateLimitItem, str, int]], storage: Counters
    ) -> list[_Hit]:
        """Of the longer windows a refused request was not charged to, those already used
        up: a retry once the refusing window ends would be refused by them. Read only on a
        refusal (one read per longer window), never counted."""
        found = []
        try:
            for item, storage_key, _expiry in uncounted:
                count = storage.get(storage_key)
                if count >= item.amount:
                    found.append(_Hit(item, storage_key, count, None))
        except Exception:
            log.warning("could not read the longer rate-limit windows", exc_info=True)
        return found

    def _holding_back(
        self,
        hits: list[_Hit],
        uncounted: list[tuple[RateLimitItem, str, int]],
        storage: Counters,
    ) -> tuple[_Hit, float]:
        """The window the headers describe, and when it ends: of the windows this client
        has used up (a refused request's included), the one that ends last, so that neither
        X-RateLimit-Reset nor Retry-After sends a client back before the limiter lets it
        in; with none used up, the one with the fewest requests left (the longer on a
        tie), so X-RateLimit-Remaining never promises a request another window refuses.
        The smallest window alone (Flask-Limiter's choice) said "7 left" while the hour
        had none, and a 429 of the minute "retry in 1 s" while the hour was used up."""
        used_up = [hit for hit in hits if hit.count >= hit.item.amount]
        if hits[-1].count > hits[-1].item.amount:
            used_up += self._used_up_longer(uncounted, storage)
        if used_up:
            ends = [(self._reset_or_bound(hit, storage), hit) for hit in used_up]
            reset, hit = max(ends, key=lambda end: end[0])
            return hit, reset
        fewest = min(hit.item.amount - hit.count for hit in hits)
        hit = [hit for hit in hits if hit.item.amount - hit.count == fewest][-1]
        return hit, self._reset_or_bound(hit, storage)

    def _remember(self, key: str, reset: float) -> None:
        if len(self._resets) >= self._CACHE_MAX:
            self._resets.clear()  # bounded; losing it costs one get_expiry per key
        self._resets[key] = reset

    def headers(self, response: Response) -> Response:
        """after_request: X-RateLimit-* on every limited response, Retry-After on a 429."""
        current = g.get("ratelimit")
        if current is None:
            return response
        storage, hits, keys = current
        try:
            last = hits[-1]
            refused_here = last.count > last.item.amount
            others_refusal = response.status_code == 429 and not refused_here
            hit, reset = self._holding_back(hits, keys[len(hits) :], storage)
            now = time.time()
            # Never in the past: a window that ended while the request was served (a slow
            # write, a 503 after DB_STATEMENT_TIMEOUT) has ended by the answer.
            reset_at = int(max(reset, now) + 1)
            # Only this hook writes them: add, not set (set scans every header for the name).
            add = response.headers.add
            add("X-RateLimit-Limit", str(hit.item.amount))
            add("X-RateLimit-Remaining", str(max(0, hit.item.amount - hit.count)))
            add("X-RateLimit-Reset", str(reset_at))
            if refused_here:
                response.headers["Retry-After"] = str(max(1, int(reset_at - now)))
            elif others_refusal and hit.count >= hit.item.amount:
                # Another guard's 429 (the flood guard's, a view's) that used up a window:
                # its Retry-After stays unless the limiter would refuse the retry (a client
                # that obeyed it was refused again, by the limiter).
                wait = max(1, int(reset_at - now))
                given = response.headers.get("Retry-After", "")
                if not given or (given.isdigit() and int(given) < wait):  # a date: kept
                    response.headers["Retry-After"] = str(wait)
        except Exception:  # headers are advisory; never fail the request for them
            log.warning("could not compute rate-limit headers", exc_info=True)
            if response.status_code == 429:
                response.headers.setdefault("Retry-After", "60")
        return response


_VARY_ORIGIN = ("Vary", "Origin")


def cors_headers(origin: str | None, allowed: frozenset[str]) -> list[tuple[str, str]]:
    """The CORS headers of an answer to a request whose Origin field is ``origin`` (None:
    it had none), ``allowed`` being CORS_ORIGINS: none while CORS is off; else
    ``Vary: Origin``, and for an allowed origin what lets its page read the answer. Both
    the app's answers (``_cors``) and those the worker writes itself (worker.py) carry
    them."""
    if not allowed:
        return []
    if origin not in allowed:
        return [_VARY_ORIGIN]
    return [
        _VARY_ORIGIN,
        # The exact origin, never "*": browsers send credentials only to it.
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS),
    ]


def _cors(
    settings: Settings,
) -> tuple[Callable[[], Response | None], Callable[[Response], Response]]:
    allowed = frozenset(settings.cors_origins)

    def preflight() -> Response | None:
        req = request._get_current_object()  # type: ignore[attr-defined]  # one lookup
        if req.method != "OPTIONS" or "Access-Control-Request-Method" not in req.headers:
            return None
        origin = req.headers.get("Origin")
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
        for name, value in cors_headers(request.headers.get("Origin"), allowed):
            if name == "Vary":
                response.vary.add(value)  # joined to the Vary values already there
            else:
                response.headers[name] = value
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
        limiter = RateLimiter(settings)
        app.before_request(limiter.check)
        app.after_request(limiter.headers)
        app.extensions["comments_api_limiter"] = limiter
    web_auth.install_reject(app)
