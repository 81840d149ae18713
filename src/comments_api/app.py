"""The app factory: the only place where settings, storage and blueprints meet."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, Response
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.datastructures import Headers

from . import __version__
from .clock import Clock, utcnow
from .comments import legacy_views, v1_views, widget_views
from .comments.cache import ReadCache
from .comments.rules import Limits
from .comments.service import CommentService
from .contract.problems import DISK_FULL
from .health import HealthService
from .identity.credentials import JwtVerifier
from .identity.service import IdentityService
from .moderation import views as moderation_views
from .moderation.rules import AbuseRules
from .moderation.service import ModerationService
from .settings import Settings
from .store.driver_sql import StorageRefused
from .store.repository import (
    AbortedWrite,
    Repository,
    is_disk_full,
    lost_at_commit,
    make_engine,
    shipped_revisions,
)
from .store.versions import ChangeMarkers
from .telemetry import http_hooks
from .telemetry.metrics import count_database_error
from .web import docs, errors, ops, protection
from .web.common import EXTENSION_KEY, BanTargetConverter, ContentIdConverter, Services
from .web.common import services as current_services
from .web.json_provider import MsgspecJSONProvider

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

log = logging.getLogger(__name__)

# Set by `comments-api serve` in the master before forking; its existence means "draining".
DRAIN_FILE_ENV = "COMMENTS_API_DRAIN_FILE"


# Headers werkzeug's get_wsgi_headers rewrites: only a response carrying one of these (or
# lacking a Content-Length) needs its copy.
_REWRITTEN = frozenset(("location", "content-location"))


class CommentsResponse(Response):
    """Flask's response, minus a copy: werkzeug's ``get_wsgi_headers`` copies every header
    (validating each value again) so that it can fix up Location, Content-Location and
    Content-Length for the status. Most of our answers need none of that - a complete
    2xx-5xx body with its length set - and then the headers go out as they are: ~5 us of
    the ~100 a cached list costs in process (bench/README.md). Anything else is werkzeug's.
    """

    def get_wsgi_headers(self, environ: WSGIEnvironment) -> Headers:
        status = self.status_code
        if status == 204:
            headers = super().get_wsgi_headers(environ)
            # No content, so no type: not Flask's default text/html on an API's answer.
            headers.remove("Content-Type")
            return headers
        if status < 200 or status == 304:
            return super().get_wsgi_headers(environ)
        has_length = False
        for name, _ in self.headers:
            lowered = name.lower()
            if lowered == "content-length":
                has_length = True
            elif lowered in _REWRITTEN:
                return super().get_wsgi_headers(environ)
        return self.headers if has_length else super().get_wsgi_headers(environ)


class CommentsApp(Flask):
    """Flask, minus a question it asks about ten times per request: before calling each
    hook and the view, ``ensure_sync`` inspects whether it is an ``async def``. None of
    ours is, and ``create_app`` checks that once, at startup (``_no_coroutines``)."""

    response_class = CommentsResponse

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        return func

    def make_default_options_response(self) -> Response:
        # A plain OPTIONS (not a CORS preflight): 200, Allow, Content-Length: 0, as RFC 9110
        # asks; without Flask's text/html, since there is no body to have a type. Allow is
        # sorted, as in web/errors.py's 405 for the same route (Flask lists it unordered).
        response = super().make_default_options_response()
        response.headers.remove("Content-Type")
        response.headers["Allow"] = ", ".join(sorted(response.allow))
        return response


def _no_coroutines(app: Flask) -> None:
    hooks = [
        *app.view_functions.values(),
        *(f for funcs in app.before_request_funcs.values() for f in funcs),
        *(f for funcs in app.after_request_funcs.values() for f in funcs),
        *(f for funcs in app.teardown_request_funcs.values() for f in funcs),
        *(
            f
            for handlers in app.error_handler_spec.values()
            for by_code in handlers.values()
            for f in by_code.values()
        ),
    ]
    async_ones = [
        getattr(f, "__qualname__", repr(f)) for f in hooks if inspect.iscoroutinefunction(f)
    ]
    if async_ones:
        raise RuntimeError(f"async views or hooks need Flask's ensure_sync: {async_ones}")


def create_app(settings: Settings | None = None, clock: Clock = utcnow) -> Flask:
    """The WSGI app. ``clock`` is the services' time (tests pass one they can move)."""
    settings = settings or Settings.from_env()
    # static/ is served by comments/widget_views.py with its own headers; no generic /static route.
    app = CommentsApp(__name__, static_folder=None)
    # Content ids may hold slashes (ContentIdConverter). werkzeug would merge "//" in a path
    # with a redirect: an HTML 308 that sends a POST for content "/a" to content "a".
    app.url_map.merge_slashes = False
    app.url_map.converters["content_id"] = ContentIdConverter
    app.url_map.converters["ban_target"] = BanTargetConverter
    app.config.update(
        DEBUG=settings.debug,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
    )
    # Exact UTF-8 on the wire (accents, emoji, RTL) instead of \u escapes, keys in the
    # order the views build them, encoded by msgspec.
    app.json = MsgspecJSONProvider(app)

    engine = make_engine(
        settings.database_url,
        settings.db_pool_size,
        settings.db_pool_timeout,
        settings.db_statement_timeout,
        url_file=settings.database_url_file,
    )
    repo = Repository(
        engine,
        lock_wait=settings.db_statement_timeout,
        observe_statement=http_hooks.statement_observer(settings),
    )
    head, older_revisions = shipped_revisions()
    abuse = AbuseRules(
        duplicate_window=settings.duplicate_window,
        thread_author_max=settings.thread_author_max,
        thread_author_window=settings.thread_author_window,
    )
    app.extensions[EXTENSION_KEY] = Services(
        settings=settings,
        repo=repo,
        limits=Limits(max_comment_length=settings.max_comment_length),
        comments=CommentService(repo, settings, abuse, clock, _read_cache(engine, settings)),
        moderation=ModerationService(repo, clock),
        identity=IdentityService(repo, _jwt_verifier(settings), clock),
        health=HealthService(
            repo,
            head,
            os.environ.get(DRAIN_FILE_ENV),
            older_revisions=older_revisions,
            timeout=settings.db_statement_timeout,
        ),
    )
    # Before the other hooks: every request gets an id, a log line and (if enabled) metrics.
    http_hooks.init_app(app, settings, engine)

    # Client address, CORS, credentials and rate limits, before any view runs.
    protection.install(app, settings)

    errors.register(app)
    for db_error in (OperationalError, InterfaceError, PoolTimeout):
        app.register_error_handler(db_error, _database_unavailable)
    for blueprint in (
        ops.bp,
        legacy_views.bp,
        v1_views.bp,
        moderation_views.bp,
        docs.bp,
        widget_views.bp,
    ):
        app.register_blueprint(blueprint)
    http_hooks.count_errors_from_zero(app)
    app.after_request(_security_headers)
    _no_coroutines(app)
    return app


def _read_cache(engine: Engine, settings: Settings) -> ReadCache:
    # One per app, so one per worker after the fork; empty until the worker serves reads.
    return ReadCache(
        ChangeMarkers(engine, http_hooks.statement_observer(settings)),
        max_entries=settings.read_cache_entries,
        max_bytes=settings.read_cache_bytes,
        # What else shapes a cached body: the code, and the settings the views render with.
        fingerprint=(
            f"{__version__}|{settings.git_revision}|{settings.legacy_email}|"
            f"{settings.legacy_list_max}"
        ),
    )


def _jwt_verifier(settings: Settings) -> JwtVerifier | None:
    verifier = JwtVerifier(settings)  # raises SettingsError on an unusable JWT setup
    return verifier if verifier.enabled else None


# How the log names a write whose connection was lost at its COMMIT, with the outcome unknown
# (a write asks the database first: Repository._stored_after_all). The soak counts them.
COMMIT_LOST = "database connection lost at a write's COMMIT"


def _database_unavailable(exc: Exception) -> Response:
    # A lost, locked, slow or full database is our problem, but temporary: say so, don't 500.
    if isinstance(exc, AbortedWrite) or current_services().repo.in_aborted_request():
        # The server has answered this request 500 at WORKER_TIMEOUT, counted it and
        # logged why, then rolled its write back or shut its connection down: the
        # database is fine. Nobody reads this answer (the client's socket is gone).
        return errors.error_response(500, "the request took too long and was aborted")
    if is_disk_full(exc):
        # Distinct from an outage: the operator must free space, waiting will not help.
        log.error(
            "database disk full: writes are refused until space is freed on the database volume"
        )
        count_database_error("disk_full")
        current_services().repo.release_space()
        return errors.error_response(
            507,
            DISK_FULL,
            title="Insufficient Storage",
            problem_type="insufficient-storage",
            headers={"Retry-After": "30"},
        )
    orig = getattr(exc, "orig", None)
    cause = orig.__class__.__name__ if orig is not None else exc.__class__.__name__
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(exc, PoolTimeout):
        # Not the database's fault: every connection of this process's pool was in use.
        settings = current_services().settings
        log.error(
            "database pool exhausted: no connection free within DB_POOL_TIMEOUT (%gs), "
            "every one of DB_POOL_SIZE=%d (and the overflow) in use; answered 503",
            settings.db_pool_timeout,
            settings.db_pool_size,
        )
        count_database_error("pool_exhausted")
    elif sqlstate in ("57014", "55P03") or "locked" in str(orig or ""):
        # QueryCanceled (statement_timeout), LockNotAvailable (a URL's lock_timeout) or
        # SQLite's busy timeout.
        log.error("database timeout: %s after DB_STATEMENT_TIMEOUT; answered 503", cause)
        count_database_error("timeout")
    elif isinstance(exc, StorageRefused):
        log.error("database refuses the write: %s (read-only, or see above); answered 503", cause)
        count_database_error("refused")
    elif lost_at_commit(exc):
        # The database could not say whether it committed (Repository._stored_after_all):
        # the client is told to retry, and the operator that a comment may be stored twice
        # if it does so without an Idempotency-Key.
        log.error("%s: %s; it may have been stored; answered 503", COMMIT_LOST, cause)
        count_database_error("unavailable")
    else:
        diag = getattr(orig, "diag", None)
        if sqlstate and sqlstate.startswith("08") and diag and diag.message_primary:
            # A connection exception (class 08) carries no row data, and its text tells a
            # pooler's refusal (PgBouncer: "server login has been failing, try again later
            # (server_login_retry)") from a lost server.
            cause = f"{cause} ({diag.message_primary})"
        log.error("database unavailable: %s", cause)
        count_database_error("unavailable")
    return errors.error_response(
        503, "the database is temporarily unavailable; retry shortly", headers={"Retry-After": "2"}
    )


SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
)
_SECURITY_NAMES = frozenset(name.lower() for name, _ in SECURITY_HEADERS)


def _security_headers(response: Response) -> Response:
    # Each header unless the view set its own (the docs and widget pages set their CSP):
    # one pass over the response's headers instead of one setdefault() scan per header.
    headers = response.headers
    own = {name.lower() for name, _ in headers.items() if name.lower() in _SECURITY_NAMES}
    for name, value in SECURITY_HEADERS:
        if name.lower() not in own:
            headers.add(name, value)
    return response
