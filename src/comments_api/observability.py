"""Metrics, structured logs and request ids (issue #4).

Metrics use prometheus_client's multiprocess mode whenever ``PROMETHEUS_MULTIPROC_DIR``
is set (``comments-api serve`` sets it before the app is created), so ``/metrics`` from
any gunicorn worker reports the totals of all workers. prometheus_client is imported
lazily: it decides between single- and multi-process storage when first imported.

Label values never come from user input as such: routes are URL rule *templates*,
methods and business labels come from fixed allowlists, anything else is "other".
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import json
import logging
import logging.config
import os
import re
import secrets
import shutil
import uuid
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, g, has_request_context, request
from gunicorn import glogging

from . import __version__
from .comments.rules import STATUSES
from .events import comment_created, comment_rejected, moderation_action

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Requests no URL rule matched (404, 405): one fixed label, never the raw path.
UNMATCHED_ROUTE = "<unmatched>"
# Probe and scrape routes: excluded from the SLOs in deploy/monitoring (not user traffic).
OPS_ROUTES = ("/metrics", "/healthz", "/readyz", "/healthcheck")

# Fixed allowlists: any other value is counted as "other", so a client can never mint
# a new time series (cardinality) or smuggle data into a label.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CREATED_APIS = ("legacy", "v1")
REJECT_REASONS = (
    "bad-request",
    "validation-error",
    "not-found",
    "conflict",
    "unsupported-media-type",
    "content-too-large",
    "content-too-large",
    "payload-too-large",
    "too-many-requests",
    "rate-limited",
    "unauthorized",
    "forbidden",
    "duplicate",
    "author-banned",
    "too-many-comments",
    "banned-words",
    "thread-author-limit",
    "unprocessable-entity",
    "gone",
)
MODERATION_ACTIONS = ("approve", "hide", "delete", "ban", "unban", "edit")
OTHER = "other"

# A fast API: most requests take a few ms; the tail up to the 2.5 s we would page for.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

access_log = logging.getLogger("comments_api.access")
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- logging


_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


_second: tuple[int, str] = (-1, "")


def _iso(created: float) -> str:
    # One line per request: format the date part once per second, not per line.
    global _second
    whole = int(created)
    if _second[0] != whole:
        _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int((created - whole) * 1000):03d}Z"


# json.dumps() with options builds a new encoder per call; reuse one.
_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    extra = {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}
    if "request_id" not in extra and has_request_context():
        # Application logs inside a request carry its id, so they join the access line.
        extra["request_id"] = g.get("request_id")
    return extra


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, then any extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return _encode(out)


class TextFormatter(logging.Formatter):
    """LOG_FORMAT=text, for humans at a terminal: the same fields as key=value pairs."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return f"{line} {extras}" if extras else line


def logging_config(settings: Settings) -> dict[str, Any]:
    """dictConfig for the CLI and for gunicorn (``logconfig_dict``): one format everywhere."""
    level = settings.log_level.upper()
    formatter = JsonFormatter if settings.log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level, "handlers": ["stdout"]},
        # gunicorn's loggers propagate to root, so they share its JSON handler.
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": level, "handlers": [], "propagate": True},
        },
    }


class GunicornLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger without its access log: the app writes one JSON line per request
    (with the route template, not the raw path), so gunicorn's would duplicate it and leak
    paths; skipping it also saves building the access-log atoms on every request."""

    def _compute_access_log_enabled(self) -> bool:
        return False


def configure_logging(settings: Settings) -> None:
    logging.config.dictConfig(logging_config(settings))
    # Python warnings would otherwise reach stderr as unstructured text.
    logging.captureWarnings(True)


# --------------------------------------------------------------------------- metrics


def prepare_multiproc_dir(configured: str | None, runtime_dir: str) -> str:
    """Create (or empty) the multiprocess directory and export it; call before forking.

    Files left by a previous run would be summed into this run's counters, so the
    directory is wiped at every start. Its contents only, not the directory itself:
    containers mount a tmpfs there.
    """
    path = Path(configured or os.path.join(runtime_dir, "prometheus"))
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return str(path)


def multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def mark_worker_dead(pid: int) -> None:
    """gunicorn ``child_exit``: drop a dead worker's live gauges (in-flight, pool)."""
    if multiproc_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class _Metrics:
    """All metric objects, built once per process (the module is shared by every app)."""

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            disable_created_metrics,
            values,
        )

        if multiproc_dir() and not getattr(values.ValueClass, "_multiprocess", False):
            # prometheus_client was imported before the directory was set: switch its
            # storage now, before the first metric exists, or workers would not add up.
            values.ValueClass = values.get_value_class()
        # `*_created` timestamps double the series and multiprocess mode lacks them anyway.
        disable_created_metrics()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "comments_api_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "comments_api_http_request_duration_seconds",
            "Time from the request reaching Flask to the response, by method and route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "comments_api_http_requests_in_flight",
            "Requests being handled right now (all live workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.workers = Gauge(
            "comments_api_workers",
            "Live worker processes.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.worker_slots = Gauge(
            "comments_api_worker_slots",
            "Requests the live workers can handle at once (workers x threads).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.created = Counter(
            "comments_api_comments_created",
            "Comments stored, by API and resulting status.",
            ["api", "status"],
            registry=r,
        )
        self.rejected = Counter(
            "comments_api_comments_rejected",
            "Comment submissions refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.moderation = Counter(
            "comments_api_moderation_actions",
            "Moderation actions applied, by action (counts comments affected).",
            ["action"],
            registry=r,
        )
        self.db_duration = Histogram(
            "comments_api_db_query_duration_seconds",
            "Database statement execution time, by SQL verb.",
            ["operation"],
            buckets=DB_BUCKETS,
            registry=r,
        )
        self.pool_checked_out = Gauge(
            "comments_api_db_pool_checked_out",
            "Database connections checked out of the pools (all live workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_size = Gauge(
            "comments_api_db_pool_size",
            "Configured pool size summed over live workers (overflow may exceed it).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ready = Gauge(
            "comments_api_ready",
            "1 if the readiness check passed when /metrics was last scraped, else 0.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.build_info = Gauge(
            "comments_api_build_info",
            "Always 1; the labels say which build is running.",
            ["version", "revision"],
            registry=r,
            multiprocess_mode="max",
        )
        # Zero-valued series from the start: rate() and "no comments created" alerts
        # need the series to exist before the first event.
        for api in CREATED_APIS:
            for status in STATUSES:
                self.created.labels(api, status)
        for reason in (*REJECT_REASONS, OTHER):
            self.rejected.labels(reason)
        for action in MODERATION_ACTIONS:
            self.moderation.labels(action)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._db_children = {op: self.db_duration.labels(op) for op in _SQL_VERBS.values()}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:  # cached: labels() locks and stringifies on every call
            children = (
                self.requests.labels(method, route, str(status)),
                self.duration.labels(method, route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_query(self, statement: str, seconds: float) -> None:
        head = statement.lstrip()[:8].split(None, 1)
        verb = _SQL_VERBS.get(head[0].lower(), OTHER) if head else OTHER
        self._db_children[verb].observe(seconds)


_SQL_VERBS = {
    "select": "select",
    "insert": "insert",
    "update": "update",
    "delete": "delete",
    "with": "select",
    OTHER: OTHER,
}

_metrics: _Metrics | None = None


def metrics() -> _Metrics:
    global _metrics  # one set of metric objects per process
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


def worker_started(app: Flask, threads: int) -> None:
    """gunicorn ``post_fork``: per-worker live gauges (the master serves no requests)."""
    from .web.common import EXTENSION_KEY

    if not app.extensions[EXTENSION_KEY].settings.metrics_enabled:
        return
    m = metrics()
    m.workers.set(1)
    m.worker_slots.set(threads)
    m.pool_size.set(_pool_size(app.extensions[EXTENSION_KEY].repo.engine))


def _pool_size(engine: Engine) -> int:
    size = getattr(engine.pool, "size", None)
    return int(size()) if callable(size) else 0


# Blinker receivers: module-level functions, so connecting again (another app in the
# same process, e.g. tests) is a no-op instead of double counting.
def _on_created(sender: object, **kw: Any) -> None:
    api = kw.get("api")
    status = kw.get("status")
    metrics().created.labels(
        api if api in CREATED_APIS else OTHER, status if status in STATUSES else OTHER
    ).inc()


def _on_rejected(sender: object, **kw: Any) -> None:
    reason = kw.get("reason")
    metrics().rejected.labels(reason if reason in REJECT_REASONS else OTHER).inc()


def _on_moderation(sender: object, **kw: Any) -> None:
    action = kw.get("action")
    count = kw.get("count", 1)
    # count = comments affected; a bulk action that changed nothing adds nothing.
    amount = count if isinstance(count, int) and count >= 0 else 1
    if amount:
        metrics().moderation.labels(action if action in MODERATION_ACTIONS else OTHER).inc(amount)


# SQLAlchemy listeners. Statements on one connection run one at a time, so a single
# start time per connection is enough (and cannot leak when a statement fails).
def _before_cursor(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    conn.info["obs_query_start"] = perf_counter()


def _after_cursor(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    start = conn.info.pop("obs_query_start", None)
    if start is not None:
        metrics().observe_query(statement, perf_counter() - start)


def _checkout(*args: Any) -> None:
    metrics().pool_checked_out.inc()


def _checkin(*args: Any) -> None:
    metrics().pool_checked_out.dec()


def instrument_engine(engine: Engine) -> None:
    from sqlalchemy import event

    if event.contains(engine, "before_cursor_execute", _before_cursor):
        return
    event.listen(engine, "before_cursor_execute", _before_cursor)
    event.listen(engine, "after_cursor_execute", _after_cursor)
    # Pool events survive engine.dispose() (post_fork): the new pool keeps the dispatch.
    event.listen(engine, "checkout", _checkout)
    event.listen(engine, "checkin", _checkin)
    # A detached connection (the read cache's marker reader, store/versions.py) leaves the
    # pool for good without a checkin.
    event.listen(engine, "detach", _checkin)


class _WorkerFilesCollector:
    """prometheus_client's multiprocess collector, minus files of workers still booting.

    A worker creates its metrics file and sizes it a moment later; a scrape between the two
    read an empty file and answered 500. A file shorter than its 8-byte header holds no
    sample yet, so skipping it loses nothing. Uses the public ``MultiProcessCollector.merge``
    (prometheus_client 0.26); tests/test_metrics.py scrapes while workers boot.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Any:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = []
        for path in glob.glob(os.path.join(self.directory, "*.db")):
            try:
                if os.path.getsize(path) >= 8:
                    files.append(path)
            except FileNotFoundError:  # a dead worker's live gauge, removed meanwhile
                continue
        return MultiProcessCollector.merge(files, accumulate=True)


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


# --------------------------------------------------------------------------- requests


def _ip_hasher(salt: str | None) -> Any:
    # No configured salt: a random one per process start. Hashes then stay stable while
    # the service runs (the master makes it before forking) but change on restart.
    key = salt.encode() if salt else secrets.token_bytes(32)

    @lru_cache(maxsize=4096)
    def hash_ip(ip: str) -> str:
        return hmac.new(key, ip.encode(), hashlib.sha256).hexdigest()[:16]

    return hash_ip


def init_app(app: Flask) -> None:
    """Request ids, one JSON access line per request, and (if enabled) /metrics."""
    from .web.common import EXTENSION_KEY

    svc = app.extensions[EXTENSION_KEY]
    settings: Settings = svc.settings
    m = metrics() if settings.metrics_enabled else None
    hash_ip = _ip_hasher(settings.client_ip_hash_salt)

    if m is not None:
        m.build_info.labels(__version__, settings.git_revision).set(1)
        if not multiproc_dir():  # one process serves everything (tests, flask run)
            m.workers.set(1)
            m.worker_slots.set(settings.threads)
            m.pool_size.set(_pool_size(svc.repo.engine))
        instrument_engine(svc.repo.engine)
        comment_created.connect(_on_created, weak=False)
        comment_rejected.connect(_on_rejected, weak=False)
        moderation_action.connect(_on_moderation, weak=False)
        app.add_url_rule("/metrics", "metrics", _metrics_view, methods=["GET"])

    def start() -> None:
        g.obs_start = perf_counter()
        rid = request.headers.get(REQUEST_ID_HEADER)
        g.request_id = rid if rid and _REQUEST_ID_RE.fullmatch(rid) else uuid.uuid4().hex
        if m is not None:
            m.in_flight.inc()

    def stamp(response: Response) -> Response:
        g.obs_status = response.status_code
        rid = g.get("request_id")
        if rid:
            response.headers[REQUEST_ID_HEADER] = rid
        return response

    def finish(exc: BaseException | None) -> None:
        start_time = g.pop("obs_start", None)
        if start_time is None:  # start() never ran for this request
            return
        seconds = perf_counter() - start_time
        status = g.get("obs_status", 500)
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED_ROUTE
        method = request.method if request.method in METHODS else OTHER
        if m is not None:
            m.in_flight.dec()
            m.observe_request(method, route, status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            identity = getattr(g, "identity", None)
            access_log.info(
                "request",
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "request_id": g.get("request_id"),
                    "client_ip_hash": hash_ip(request.remote_addr or ""),
                    "identity_id": getattr(identity, "id", None),
                },
            )

    # First before_request and last after_request, whatever registers later (rate
    # limiting, auth): every request is timed and counted, even ones they refuse.
    app.before_request_funcs.setdefault(None, []).insert(0, start)
    app.after_request_funcs.setdefault(None, []).insert(0, stamp)
    app.teardown_request(finish)
