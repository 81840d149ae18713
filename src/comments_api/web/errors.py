"""Every error leaves as JSON: the legacy shape under /api/comment/, RFC 9457 elsewhere."""

from __future__ import annotations

import logging
from urllib.parse import quote, unquote_to_bytes

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError

from ..comments.rules import Conflict, DomainError, InvalidInput, NotFound
from ..contract.problems import (
    BODY_TOO_LARGE,
    LEGACY_PREFIX,
    PROBLEM_JSON,
    problem_type_uri,
    slug_for_title,
    status_title,
)
from ..events import COMMENT_WRITE_ENDPOINTS, comment_rejected
from ..telemetry.http_hooks import UNMATCHED_ROUTE, route_label
from ..telemetry.metrics import METHODS, OTHER
from .common import emit

log = logging.getLogger(__name__)

__all__ = ["LEGACY_PREFIX", "PROBLEM_JSON", "error_response", "register", "request_instance"]

_DOMAIN_STATUS = {InvalidInput: 400, NotFound: 404, Conflict: 409}
# RFC 3986 characters a path may carry unescaped; everything else is percent-encoded so
# `instance` is always a valid URI reference, whatever the caller put in the path.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def request_instance() -> str:
    """The request path as a URI reference (percent-encoded), for problem `instance`: the
    bytes the client sent, so `%FF` stays `%FF` (``request.path`` has decoded it to U+FFFD)."""
    raw = request.environ.get("SCRIPT_NAME", "") + request.environ.get("PATH_INFO", "")
    # WSGI gives the path's bytes as a latin-1 str (PEP 3333); anything else is replaced.
    return quote(raw.encode("latin-1", "replace"), safe=_PATH_SAFE)


def error_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    problem_type: str | None = None,
    extra: dict[str, object] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A JSON error in the shape the caller's API uses."""
    title = title or status_title(status)
    slug = problem_type or slug_for_title(title)
    if request.endpoint in COMMENT_WRITE_ENDPOINTS and 400 <= status < 500:
        emit(comment_rejected, reason=slug)
    if request.path.startswith(LEGACY_PREFIX):
        # The original's key order (sorted), as on every legacy answer.
        body: dict[str, object] = {"message": detail, "status": title.upper().replace(" ", "-")}
        response = jsonify(body)
    else:
        body = {
            "type": problem_type_uri(slug),
            "title": title,
            "status": status,
            "detail": detail,
            "instance": request_instance(),
        }
        if extra:
            body.update(extra)
        response = jsonify(body)
        response.mimetype = PROBLEM_JSON
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _handle_http(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status >= 500:
        return _handle_unexpected(exc)
    detail = exc.description or status_title(status)
    if status == 404 and not request.path.startswith(LEGACY_PREFIX):
        # The path is in `instance`; the detail never repeats what the caller sent.
        detail = "no such route; see /openapi.json for the API"
    headers = {}
    if status == 405 and getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(sorted(exc.valid_methods))  # type: ignore[attr-defined]
        # A HEAD answer is GET's without its body (RFC 9110, section 9.3.2): the same
        # detail, so the same Content-Length ("HEAD is not allowed" was a byte longer).
        method = "GET" if request.method == "HEAD" else request.method
        detail = f"{method} is not allowed here; use {headers['Allow']}"
    title = None
    if status == 413:
        detail = BODY_TOO_LARGE
        # RFC 9110's name; Python's phrase for 413 differs between versions.
        title = "Content Too Large"
    response = error_response(status, detail, title=title, headers=headers)
    for key, value in exc.get_headers():
        if key.lower() not in ("content-type", "content-length"):
            response.headers.setdefault(key, value)
    return response


def _handle_domain(exc: DomainError) -> Response:
    # Rules outside comments/rules.py (bans, flood limits) carry their own status and headers.
    default = getattr(exc, "http_status", 400)
    status = next((s for cls, s in _DOMAIN_STATUS.items() if isinstance(exc, cls)), default)
    extra: dict[str, object] | None = None
    if isinstance(exc, InvalidInput):
        extra = {"errors": [{"field": e.field, "message": e.message} for e in exc.errors]}
    return error_response(
        status,
        exc.message,
        problem_type=exc.code,
        extra=extra,
        headers=getattr(exc, "headers", None),
    )


def _handle_unexpected(exc: Exception) -> Response:
    # Log the trace for operators; the caller learns only that it was our fault.
    if not isinstance(exc, HTTPException) or isinstance(exc, InternalServerError):
        # The access line's method and route fields (the route template, never the raw
        # path: it is client input), so one search on the route finds both lines.
        rule = request.url_rule
        log.exception(
            "unhandled error",
            extra={
                "method": request.method if request.method in METHODS else OTHER,
                "route": route_label(rule.rule) if rule is not None else UNMATCHED_ROUTE,
            },
        )
    status = exc.code if isinstance(exc, HTTPException) and exc.code else 500
    return error_response(status, "an internal error occurred; it has been logged")


def _reject_undecodable_url() -> Response | None:
    """400 when the path or query is not UTF-8 once percent-decoded.

    Werkzeug would turn each invalid byte of the path into U+FFFD (so ``%FE`` and ``%FF``
    name the same content) but keep an invalid query escape literally (so a count for
    ``%FF`` would look up the text "%FF"): refuse both, the same way everywhere.
    """
    environ = request._get_current_object().environ  # type: ignore[attr-defined]
    try:
        # PATH_INFO is already percent-decoded, carried as latin-1 (PEP 3333).
        environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
        unquote_to_bytes(environ.get("QUERY_STRING", "").encode("latin-1")).decode("utf-8")
    except UnicodeError:
        return error_response(
            400, "the URL is not valid UTF-8 once percent-decoded", title="Bad Request"
        )
    return None


def register(app: Flask) -> None:
    app.before_request(_reject_undecodable_url)
    app.register_error_handler(HTTPException, _handle_http)
    app.register_error_handler(DomainError, _handle_domain)
    app.register_error_handler(Exception, _handle_unexpected)
