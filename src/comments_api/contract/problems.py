"""The one registry of problem types: every ``type`` an error body can carry.

web/errors.py builds its bodies with :func:`problem_type_uri` and the constants below; the
spec publishes :func:`problem_types` as ``x-problem-types`` and /docs renders an anchor per
entry. tests/test_problems.py checks that everything the code can emit is registered.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from ..settings import Settings

# Error bodies under this prefix keep the original API's {"status", "message"} shape.
LEGACY_PREFIX = "/api/comment/"
PROBLEM_JSON = "application/problem+json"
DOCS_PROBLEM_PREFIX = "/docs#problem-"


def problem_type_uri(slug: str) -> str:
    """The ``type`` of a problem body: a link to its entry on /docs."""
    return f"{DOCS_PROBLEM_PREFIX}{slug}"


def slug_for_title(title: str) -> str:
    """The slug of a problem named by its title (an HTTP status phrase, usually)."""
    return title.lower().replace(" ", "-").replace("'", "")


# RFC 9110's names where Python's phrases differ (and vary by version).
_RFC9110_TITLES = {413: "Content Too Large", 414: "URI Too Long"}


# The detail of a 413, whether the application or the server process answers it.
BODY_TOO_LARGE = "the request body is larger than this API accepts"
# The detail of a write's 507 (app.py), which the OpenAPI document's examples show.
DISK_FULL = "the server has no storage space left; nothing was stored, retry later"


def status_title(status: int) -> str:
    """The title of an error answered by status alone: RFC 9110's reason phrase."""
    if status in _RFC9110_TITLES:
        return _RFC9110_TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def status_slug(status: int) -> str:
    """The slug of an error answered by status alone (web/errors.py, worker.py)."""
    return slug_for_title(status_title(status))


def problem_types(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every ``type`` an error can carry: slug -> status, heading, explanation.

    Slugs come from web/errors.py (the HTTP status phrase, except 413 which is pinned
    to RFC 9110's "Content Too Large"), DomainError ``code``s in the rules modules, and
    ``problem_type=`` arguments.
    """

    def entry(status: int, title: str, text: str) -> dict[str, Any]:
        return {"status": status, "title": title, "description": text}

    return {
        "validation-error": entry(
            400,
            "Validation error",
            "One or more fields or parameters are invalid. `errors` lists each `field` "
            "with a `message`; nothing was stored. Fix the listed fields and retry.",
        ),
        "bad-request": entry(
            400,
            "Bad request",
            "The request could not be read: the body is not valid JSON (NaN and Infinity "
            "are not JSON either, nor nesting deeper than the parser holds, nor a byte "
            "order mark before it), names a key twice in one object, has a "
            "fraction that would be read as a whole number (send ids as integers or "
            "strings), is not valid UTF-8 (an unpaired surrogate escape such as `\\ud800` "
            "included), or its chunked framing is broken; or the URL is not UTF-8 once "
            "percent-decoded.",
        ),
        "unauthorized": entry(
            401,
            "Unauthorized",
            "A credential is needed (writes under `AUTH_MODE=required`, moderation and "
            "admin always) or the one sent is invalid, expired or revoked. The "
            "`WWW-Authenticate` header says which. Send `Authorization: Bearer <API key "
            "or JWT>`.",
        ),
        "forbidden": entry(
            403,
            "Forbidden",
            "The credential is valid but lacks the scope this operation needs (e.g. "
            "`comments:moderate`), or the author may not change this comment.",
        ),
        "not-found": entry(
            404,
            "Not found",
            "No such route, content or comment. Hidden and pending comments are not "
            "found either; the legacy list answers 404 for a content with no comments.",
        ),
        "method-not-allowed": entry(
            405,
            "Method not allowed",
            "The route exists but not with this method; the `Allow` header lists the "
            "methods it accepts. `CONNECT` is always refused: this is an origin server, "
            "not a proxy.",
        ),
        "author-banned": entry(
            403,
            "Author banned",
            "A moderator banned this author (by email or token subject); their new "
            "comments are rejected.",
        ),
        "conflict": entry(
            409,
            "Conflict",
            "The request conflicts with the current state: most often a duplicate, the "
            "same author posting the same text on the same content within "
            f"`DUPLICATE_WINDOW` ({settings.duplicate_window:g} seconds here).",
        ),
        "duplicate": entry(
            409,
            "Duplicate comment",
            "The same author posted the same text on the same content within "
            f"`DUPLICATE_WINDOW` ({settings.duplicate_window:g} seconds here); nothing was "
            "stored. Checked atomically: of simultaneous identical posts exactly one is kept.",
        ),
        "idempotency-key-reused": entry(
            422,
            "Idempotency key reused",
            "This `Idempotency-Key` was already used by this caller for a different "
            "request within `IDEMPOTENCY_TTL` "
            f"({settings.idempotency_ttl:g} seconds here). Nothing was stored; use a new key "
            "for a new comment.",
        ),
        "insufficient-storage": entry(
            507,
            "Insufficient storage",
            "The database volume is full: nothing was stored. Reads keep working; retry "
            "after `Retry-After` (operators have been alerted by the log and `/readyz`).",
        ),
        # Answered only as this type, never by status alone (as 422 is only
        # "idempotency-key-reused"): 412 answers nothing else here.
        "if-match-failed": entry(
            412,
            "If-Match failed",
            "The request's `If-Match` names none of the target's current `ETag`s "
            "(compared strongly: a `W/` tag never matches; `*` matches anything that "
            "exists): what you hold has changed, and nothing was done. Read it again "
            "without `If-Match` for the current `ETag`. Answered `Cache-Control: no-store`.",
        ),
        "if-none-match-failed": entry(
            412,
            "If-None-Match failed",
            "The request's `If-None-Match: *` asks to write only if the target does not "
            "exist yet, and it exists (one comment, its tombstone included; a content's "
            "comment list always does): nothing was done (RFC 9110, section 13.1.2). Send "
            "the write without `If-None-Match` to act on what exists. Answered "
            "`Cache-Control: no-store`.",
        ),
        "content-too-large": entry(
            413,
            "Content too large",
            f"The request body is larger than this deployment accepts "
            f"(`MAX_BODY_BYTES`, {settings.max_body_bytes} bytes here), whether declared in "
            "`Content-Length` or streamed in chunks. Nothing was stored.",
        ),
        "unsupported-media-type": entry(
            415,
            "Unsupported media type",
            "Bodies must be JSON: send `Content-Type: application/json`, uncompressed "
            "(a body with a `Content-Encoding` such as gzip is refused, and the answer's "
            "`Accept-Encoding: identity` says so). The answer's `Accept` names the type "
            "to send; an edit's (`PATCH`) adds `Accept-Patch`.",
        ),
        "too-many-requests": entry(
            429,
            "Too many requests",
            "A rate limit was hit. Wait for the seconds in `Retry-After` before retrying; "
            "the `X-RateLimit-*` headers describe the limit.",
        ),
        "too-many-comments": entry(
            429,
            "Too many comments on this content",
            f"An author may post at most `THREAD_AUTHOR_MAX` ({settings.thread_author_max} "
            "here) comments on one content per `THREAD_AUTHOR_WINDOW` "
            f"({settings.thread_author_window:g} seconds here). `Retry-After` is the seconds "
            "until the oldest of them leaves the window; retry after it.",
        ),
        "internal-server-error": entry(
            500,
            "Internal server error",
            "Our fault, not yours: the error was logged with its request id. Retrying "
            "later may help; please report it if it persists.",
        ),
        "service-unavailable": entry(
            503,
            "Service unavailable",
            "The database is temporarily unreachable, the instance is shutting down, or a "
            "JWT was sent and the identity provider cannot be reached to verify it. "
            "Retry after the seconds in `Retry-After`.",
        ),
        # Answered by the HTTP server itself (comments_api/worker.py) before the request
        # reaches the application: these problems carry no `instance`.
        "request-timeout": entry(
            408,
            "Request timeout",
            "The request line, headers or body did not arrive in time "
            "(`REQUEST_HEADER_TIMEOUT`, `REQUEST_BODY_TIMEOUT`). Nothing was stored.",
        ),
        "uri-too-long": entry(
            414,
            "URI too long",
            "The request line is longer than the server reads (48 KiB). Send fewer "
            "content ids per `/api/v1/counts` call.",
        ),
        "expectation-failed": entry(
            417,
            "Expectation failed",
            "Only `Expect: 100-continue` is supported.",
        ),
        "request-header-fields-too-large": entry(
            431,
            "Request header fields too large",
            "Too many header fields, or one too large.",
        ),
        "not-implemented": entry(
            501,
            "Not implemented",
            "The request uses a transfer coding this server does not support (only `chunked` is).",
        ),
    }


# --- schemas ----------------------------------------------------------------------


# The registry's slugs (they do not depend on settings, only the descriptions do).
SLUGS = frozenset(problem_types(Settings()))
