"""Per-request hooks: request ids, one access line per request, request metrics, /metrics."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from functools import cache, lru_cache
from time import perf_counter
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, g, request

from .. import __version__
from ..contract.headers import OPS_ROUTES, REQUEST_ID_PATTERN
from ..events import comment_created, comment_rejected, moderation_action
from .log_format import ACCESS_LOGGER, Fields, direct_handler
from .metrics import (
    EXTENSION_KEY,
    METHODS,
    OTHER,
    _on_created,
    _on_moderation,
    _on_rejected,
    _pool_size,
    _WorkerFilesCollector,
    instrument_engine,
    metrics,
    multiproc_dir,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..settings import Settings
    from ..store.driver_sql import StatementObserver

REQUEST_ID_HEADER = "X-Request-ID"
# Where WSGI carries that header (PEP 3333: HTTP_ and the name upper-cased, "-" as "_").
REQUEST_ID_ENVIRON_KEY = "HTTP_X_REQUEST_ID"
# Where the request's id is left for the server (worker.py), whose own answer to a request
# the app did not finish (a WORKER_TIMEOUT abort) must carry the id its log lines carry.
REQUEST_ID_ENVIRON = "comments_api.request_id"
# An incoming X-Request-ID (an ingress's) that is adopted rather than replaced; the
# worker's own answers (worker.py) adopt it by this same rule.
REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)
# Where the request's access record is left for the threaded worker (worker.py), which
# answers a request its thread still holds at WORKER_TIMEOUT and then exits without the
# thread: ``record_abort`` writes that request's line and count in the thread's place.
ACCESS_RECORD_ENVIRON = "comments_api.access_record"
# Requests no URL rule matched (404, 405): one fixed label, never the raw path.
UNMATCHED_ROUTE = "<unmatched>"

# "<converter:name>" in a URL rule.
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


@cache
def route_label(rule: str) -> str:
    """A URL rule as metric labels and access lines show it: the parameters' names
    without their converters (``<content_id>``, ``<target>``), as OpenAPI names them."""
    return _CONVERTER.sub(r"<\1>", rule)


access_log = logging.getLogger(ACCESS_LOGGER)
log = logging.getLogger(__name__)


def _metrics_view() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    m = metrics()
    m.ready.set(1 if _ready() else 0)
    directory = multiproc_dir()
    if directory:
        registry = CollectorRegistry()
        registry.register(_WorkerFilesCollector(directory))
    else:
        registry = m.registry
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _ready() -> bool:
    # The same check /readyz answers, once per scrape, so Prometheus can alert on it
    # without a prober. A failure here must not break the scrape itself.
    view = current_app.view_functions.get("ops.readyz")
    if view is None:
        return True
    try:
        result = view()
    except Exception:  # the check itself failed: not ready
        log.warning("readiness check raised during /metrics", exc_info=True)
        return False
    status = result[1] if isinstance(result, tuple) else getattr(result, "status_code", 200)
    return bool(status == 200)


def _ip_hasher(salt: str | None) -> Any:
    # No configured salt: a random one per process start. Hashes then stay stable while
    # the service runs (the master makes it before forking) but change on restart.
    key = salt.encode() if salt else secrets.token_bytes(32)

    @lru_cache(maxsize=4096)
    def hash_ip(ip: str) -> str:
        return hmac.new(key, ip.encode(), hashlib.sha256).hexdigest()[:16]

    return hash_ip


def statement_observer(settings: Settings) -> StatementObserver | None:
    """For the statements the store runs on the driver itself, which SQLAlchemy's events
    (``instrument_engine``) do not see: they feed the same DB latency histogram."""
    return metrics().observe_query if settings.metrics_enabled else None


def count_errors_from_zero(app: Flask) -> None:
    """Each route's 5xx series of comments_api_http_requests_total at 0 from the start (call
    once the routes are registered). A series born with its first error is scraped already
    counting it, and rate() starts from a series' first sample: a route's first 500 or 503
    in a pod's life never reached the SLO rules, so sporadic errors were under-counted."""
    if EXTENSION_KEY not in app.extensions:  # metrics disabled
        return
    m = metrics()
    for rule in app.url_map.iter_rules():
        route = route_label(rule.rule)
        if route in OPS_ROUTES:  # outside the SLOs
            continue
        for method in (rule.methods or set()) & METHODS - {"HEAD", "OPTIONS"}:
            writes = method in ("POST", "PUT", "PATCH", "DELETE")
            for status in ("500", "503", "507") if writes else ("500", "503"):
                m.requests.labels(method, route, status)


def init_app(app: Flask, settings: Settings, engine: Engine) -> None:
    """Request ids, one JSON access line per request, and (if enabled) /metrics."""
    m = metrics() if settings.metrics_enabled else None
    hash_ip = _ip_hasher(settings.client_ip_hash_salt)

    if m is not None:
        m.build_info.labels(__version__, settings.git_revision).set(1)
        if not multiproc_dir():  # one process serves everything (tests, flask run)
            m.workers.set(1)
            m.worker_slots.set(settings.threads)
            m.pool_size.set(_pool_size(engine))
        instrument_engine(engine)
        app.extensions[EXTENSION_KEY] = engine  # for worker_started (post_fork)
        comment_created.connect(_on_created, weak=False)
        comment_rejected.connect(_on_rejected, weak=False)
        moderation_action.connect(_on_moderation, weak=False)
        app.add_url_rule("/metrics", "metrics", _metrics_view, methods=["GET"])

    # Each hook resolves the request and g proxies once: every proxy access is a
    # context-variable lookup, and these hooks run on every request.
    def start() -> None:
        ctx_g = g._get_current_object()  # type: ignore[attr-defined]
        ctx_g.obs_start = perf_counter()
        environ = request.environ
        # request.headers.get(REQUEST_ID_HEADER), without its KeyError when it is absent.
        rid = environ.get(REQUEST_ID_ENVIRON_KEY)
        # 32 random hex digits, as uuid4().hex was, at a quarter of its cost.
        ctx_g.request_id = rid if rid and REQUEST_ID_RE.fullmatch(rid) else secrets.token_hex(16)
        environ[REQUEST_ID_ENVIRON] = ctx_g.request_id
        environ[ACCESS_RECORD_ENVIRON] = (record, ctx_g)
        if m is not None:
            m.in_flight.inc()

    def stamp(response: Response) -> Response:
        ctx_g = g._get_current_object()  # type: ignore[attr-defined]
        ctx_g.obs_status = response.status_code
        rid = ctx_g.get("request_id")
        if rid:
            response.headers.add(REQUEST_ID_HEADER, rid)  # only this hook sets it
        return response

    def finish(exc: BaseException | None) -> None:
        record(
            g._get_current_object(),  # type: ignore[attr-defined]
            request._get_current_object(),  # type: ignore[attr-defined]
            None,
        )

    def record(ctx_g: Any, req: Any, status: int | None) -> None:
        # Once per request: whoever pops the start time (the app's teardown, or the
        # threaded worker's abort in the main loop, record_abort) writes the line.
        start_time = ctx_g.pop("obs_start", None)
        if start_time is None:  # start() never ran, or the line is written already
            return
        seconds = perf_counter() - start_time
        if status is None:
            status = ctx_g.get("obs_status", 500)
        rule = req.url_rule
        route = route_label(rule.rule) if rule is not None else UNMATCHED_ROUTE
        method = req.method if req.method in METHODS else OTHER
        if m is not None:
            m.in_flight.dec()
            m.observe_request(method, route, status, seconds)
        # A 5xx is our failure: its line is an error, found by "level":"error" and kept
        # under LOG_LEVEL=warning, whatever did (or did not) log it on the way.
        level = logging.ERROR if status >= 500 else logging.INFO
        if access_log.isEnabledFor(level):
            identity = ctx_g.get("identity")
            # Fields, not extra=: the same line, without setting and re-scanning seven
            # record attributes (bench/README.md, "Leaner layers").
            fields = Fields(
                method=method,
                route=route,
                status=status,
                duration_ms=round(seconds * 1000, 3),
                request_id=ctx_g.get("request_id"),
                client_ip_hash=hash_ip(req.remote_addr or ""),
                identity_id=getattr(identity, "id", None),
            )
            handler = direct_handler(access_log) if level == logging.INFO else None
            if handler is not None:
                handler.write_info(access_log.name, "request", fields)
            else:
                # What access_log.info() does, minus findCaller()'s walk up the stack for
                # a file and line the line never shows.
                access_log.handle(
                    access_log.makeRecord(access_log.name, level, "", 0, "request", (fields,), None)
                )

    # First before_request and last after_request, whatever registers later (rate
    # limiting, auth): every request is timed and counted, even ones they refuse.
    app.before_request_funcs.setdefault(None, []).insert(0, start)
    app.after_request_funcs.setdefault(None, []).insert(0, stamp)
    app.teardown_request(finish)


def record_abort(environ: dict[str, Any], status: int = 500) -> None:
    """The access line and request count of a request answered ``status`` by the server
    while the app still holds it (the threaded worker's WORKER_TIMEOUT abort), as the
    app's teardown writes them after the sync worker's abort; nothing if the app has
    written them already (its teardown ran first), and the teardown then writes none."""
    entry = environ.get(ACCESS_RECORD_ENVIRON)
    req = environ.get("werkzeug.request")  # the app's request object for this environ
    if entry is None or req is None:
        return
    record, ctx_g = entry
    record(ctx_g, req, status)
