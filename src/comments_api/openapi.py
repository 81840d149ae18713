"""OpenAPI 3.1 description of the HTTP API (web/docs.py serves it and the /docs page).

The document is plain data, built from the deployment's settings (limits, auth mode,
moderation mode) so what it promises is what this instance enforces. It is checked by
tests/test_openapi.py: every Flask route must be documented with its methods, real
responses must match the documented schemas, and every problem ``type`` the code can
emit must have an anchor on /docs.

How to add a path (one dict entry per path):
1. Add an entry to the dict in ``_paths()``: ``"/api/v1/things/{thing_id}": {"get": ...}``
   (OpenAPI writes path parameters as ``{name}`` where Flask writes ``<name>``).
2. Build each operation with ``_op(tag, operation_id, summary, description, responses, ...)``.
   Reuse ``_param(...)`` / the ``#/components/parameters`` refs for parameters,
   ``_ok(...)`` for success responses and ``_errors(path, 400, 404, ...)`` /
   ``_error(path, status, ...)`` for errors: they pick the legacy shape under
   /api/comment/ and problem+json elsewhere, like web/errors.py does. Writes take
   ``security=_write_security(settings)``; moderation/admin take ``MODERATOR_SECURITY``.
3. New body shapes go in ``_schemas()``; a new problem ``type`` slug (``problem_type=``
   or a DomainError ``code``) goes in ``_problem_types()``, which renders its anchor.
"""

from __future__ import annotations

import json
import re
import shlex
from http import HTTPStatus
from typing import Any

from . import __version__
from .comments.rules import (
    CONTENT_ID_PATTERN,
    DEFAULT_PAGE_SIZE,
    EMAIL_PATTERN,
    LINE_PATTERN,
    MAX_AUTHOR_NAME_LENGTH,
    MAX_CONTENT_ID_INT,
    MAX_CONTENT_ID_LENGTH,
    MAX_COUNT_IDS,
    MAX_EMAIL_LENGTH,
    MAX_ID,
    MAX_PAGE_SIZE,
    MIN_CONTENT_ID_INT,
    NAME_PATTERN,
    OPTIONAL_TEXT_PATTERN,
    STATUSES,
    TEXT_PATTERN,
    cursor_pattern,
    email_hash,
)
from .moderation.rules import (
    BAN_EMAIL_PATTERN,
    BAN_TARGET_PATTERN,
    BULK_ACTIONS,
    MAX_BULK_IDS,
    MAX_REASON_LENGTH,
    MAX_SUBJECT_LENGTH,
)
from .settings import Settings

Spec = dict[str, Any]

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
LEGACY_PREFIX = "/api/comment/"
DOCS_PROBLEM_PREFIX = "/docs#problem-"

# Either credential works; which one a caller uses depends on who it is.
CREDENTIALS: list[dict[str, list[str]]] = [{"bearerApiKey": []}, {"bearerJwt": []}]
# Moderation/admin: a credential in every auth mode (the scope is checked on top).
MODERATOR_SECURITY = CREDENTIALS

# Ids as the database stores them (BIGINT): larger numbers name nothing.
_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID, "format": "int64"}

_EXAMPLE_EMAIL = "alice@example.com"
_EXAMPLE_TIME = "2026-01-15T09:30:00.000Z"


def _ref(name: str, kind: str = "schemas") -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


# --- problem types ----------------------------------------------------------------


def _problem_types(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every ``type`` an error can carry: slug -> status, heading, explanation.

    Slugs come from web/errors.py (the HTTP status phrase, except 413 which is pinned
    to RFC 9110's "Content Too Large"), DomainError ``code``s in domain.py, and
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
            "are not JSON either, nor nesting deeper than the parser holds), not valid "
            "UTF-8 (an unpaired surrogate escape such as `\\ud800` included), or its "
            "chunked framing is broken; or the URL is not UTF-8 once percent-decoded.",
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
            "methods it accepts.",
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
            "Bodies must be JSON: send `Content-Type: application/json`.",
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
            f"({settings.thread_author_window:g} seconds here). Retry after `Retry-After`.",
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
            "The database is temporarily unreachable or the instance is shutting down. "
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


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _schemas(settings: Settings) -> dict[str, Any]:
    schemas = _base_schemas(settings)
    schemas["ModeratorComment"] = _moderator_comment_schema(schemas["Comment"])
    return schemas


def _base_schemas(settings: Settings) -> dict[str, Any]:
    max_len = settings.max_comment_length
    content_id = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_CONTENT_ID_LENGTH,
        "pattern": CONTENT_ID_PATTERN,
        "description": "The article (or other content) the comments belong to. Opaque to "
        "this API; no surrounding whitespace, no control characters.",
        "examples": ["1", "politics/2026/budget-vote"],
    }
    timestamp = {"type": "string", "format": "date-time", "examples": [_EXAMPLE_TIME]}
    comment_body = {
        "type": "string",
        "minLength": 1,
        "maxLength": max_len,
        "pattern": TEXT_PATTERN,
        "description": f"The comment text: not empty or whitespace only, at most {max_len} "
        "characters (`MAX_COMMENT_LENGTH`), newlines and tabs allowed, no other control "
        "characters. Stored and returned exactly (accents, emoji, RTL).",
    }
    email = {
        "type": "string",
        "format": "email",
        "maxLength": MAX_EMAIL_LENGTH,
        # The format alone is an annotation most validators skip; the pattern is the rule
        # the API applies: one "@", no spaces or control characters, a dotted domain.
        "pattern": EMAIL_PATTERN,
        "examples": [_EXAMPLE_EMAIL],
    }
    return {
        "ContentId": content_id,
        "Author": {
            "type": "object",
            "description": "Who wrote a comment, as the public may see it: never the email.",
            "required": ["name", "email_hash"],
            "additionalProperties": False,
            "properties": {
                "name": {
                    "type": "string",
                    "description": "Display name; `anonymous` when none was given.",
                },
                "email_hash": {
                    **_nullable({"type": "string", "pattern": "^[0-9a-f]{64}$"}),
                    "description": "SHA-256 (hex) of the trimmed, lower-cased email, for "
                    "avatars; null when no email was given.",
                },
            },
        },
        "Comment": {
            "type": "object",
            "description": "A comment as the public sees it. A deleted comment stays as a "
            "tombstone (`status: deleted`, `body` and `author` null, `deleted_at` set) so "
            "its replies keep their place in the thread.",
            "required": [
                "id",
                "content_id",
                "parent_id",
                "status",
                "created_at",
                "updated_at",
                "body",
                "author",
            ],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "integer", "minimum": 1, "examples": [42]},
                "content_id": {"type": "string"},
                "parent_id": {
                    **_nullable({"type": "integer", "minimum": 1}),
                    "description": "The comment this one replies to, or null.",
                },
                "status": {
                    "type": "string",
                    "enum": list(STATUSES),
                    "description": "`published` (public), `pending` (awaiting moderation), "
                    "`hidden` (by a moderator), `deleted` (tombstone).",
                },
                "created_at": timestamp,
                "updated_at": timestamp,
                "body": _nullable({"type": "string"}),
                "author": _nullable(_ref("Author")),
                "deleted_at": timestamp,
            },
            "if": {"properties": {"status": {"const": "deleted"}}},
            "then": {
                "required": ["deleted_at"],
                "properties": {"body": {"type": "null"}, "author": {"type": "null"}},
            },
            "else": {
                "not": {"required": ["deleted_at"]},
                "properties": {"body": {"type": "string"}, "author": _ref("Author")},
            },
        },
        "CommentPage": {
            "type": "object",
            "required": ["content_id", "order", "items", "next_cursor"],
            "additionalProperties": False,
            "properties": {
                "content_id": {"type": "string"},
                "order": {"type": "string", "enum": ["oldest", "newest"]},
                "items": {"type": "array", "items": _ref("Comment")},
                "next_cursor": {
                    **_nullable({"type": "string", "minLength": 1}),
                    "description": "Pass as `cursor` to get the next page; null on the last page.",
                },
            },
        },
        "Counts": {
            "type": "object",
            "required": ["counts"],
            "additionalProperties": False,
            "properties": {
                "counts": {
                    "type": "object",
                    "description": "Published comments per requested content id (0 when "
                    "none), keyed by content id.",
                    "additionalProperties": {"type": "integer", "minimum": 0},
                }
            },
        },
        "NewComment": {
            "type": "object",
            "required": ["body"],
            "additionalProperties": False,
            "properties": {
                "body": comment_body,
                "email": {
                    **_nullable(email),
                    "description": "Optional; never shown, only its hash. Ignored when the "
                    "caller is authenticated (the identity comes from the credential).",
                },
                "author_name": {
                    **_nullable(
                        {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_AUTHOR_NAME_LENGTH,
                            "pattern": NAME_PATTERN,
                        }
                    ),
                    "description": "Display name; ignored when the caller is authenticated.",
                },
                "parent_id": {
                    **_nullable(_ID),
                    "description": "Reply to this comment; it must be visible and belong "
                    "to the same content.",
                },
            },
        },
        "CommentEdit": {
            "type": "object",
            "required": ["body"],
            "additionalProperties": False,
            "properties": {"body": comment_body},
        },
        "LegacyNewComment": {
            "type": "object",
            "required": ["email", "comment", "content_id"],
            "additionalProperties": False,
            "properties": {
                "email": {
                    **email,
                    "description": "The author's address (shown masked or not at all, per "
                    "`LEGACY_EMAIL`). When a sign-in JWT is sent, the token supplies the "
                    "author and this field is ignored.",
                },
                "comment": comment_body,
                "content_id": {
                    "description": 'A number or a string; `1` and `"1"` are the same content.',
                    "anyOf": [
                        {
                            "type": "integer",
                            "minimum": MIN_CONTENT_ID_INT,
                            "maximum": MAX_CONTENT_ID_INT,
                        },
                        _ref("ContentId"),
                    ],
                },
            },
        },
        "LegacyCreated": {
            "type": "object",
            "required": ["status", "message"],
            "additionalProperties": False,
            "properties": {
                "status": {"const": "SUCCESS"},
                "message": {"type": "string"},
            },
        },
        "LegacyComment": {
            "type": "object",
            "required": ["email", "comment"],
            "additionalProperties": False,
            "properties": {
                "email": {
                    **_nullable({"type": "string"}),
                    "description": "Depends on `LEGACY_EMAIL`: `masked` (default, "
                    "`a***@example.com`), `full`, or `hidden` (null). "
                    f"This deployment: `{settings.legacy_email}`.",
                },
                "comment": {"type": "string"},
            },
        },
        "LegacyError": {
            "type": "object",
            "description": "The original API's error shape.",
            "required": ["status", "message"],
            "additionalProperties": False,
            "properties": {
                "status": {
                    "type": "string",
                    "pattern": "^[A-Z'-]+$",
                    "description": "The HTTP status phrase, upper case, dashes for spaces "
                    "(e.g. `BAD-REQUEST`, `NOT-FOUND`).",
                },
                "message": {"type": "string"},
            },
        },
        "FieldError": {
            "type": "object",
            "required": ["field", "message"],
            "additionalProperties": False,
            "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
        },
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details. `type` links to its explanation on "
            "/docs; `errors` is present for validation errors. `instance` (the request "
            "path, percent-encoded) is absent only when the HTTP server refused the "
            "request before the application saw it (408, 414, 417, 431, 501, malformed "
            "requests).",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {
                    "type": "string",
                    "format": "uri-reference",
                    "pattern": "^/docs#problem-[a-z0-9-]+$",
                },
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
                "instance": {"type": "string", "format": "uri-reference"},
                "errors": {"type": "array", "minItems": 1, "items": _ref("FieldError")},
            },
        },
        **_moderation_schemas(),
        "Health": {
            "type": "object",
            "required": ["status", "version"],
            "properties": {"status": {"const": "ok"}, "version": {"type": "string"}},
        },
        "Ready": {
            "type": "object",
            "required": ["status", "schema_revision"],
            "properties": {
                "status": {"const": "ready"},
                "schema_revision": {"type": "string"},
            },
        },
        "NotReady": {
            "type": "object",
            "required": ["status", "reason"],
            "properties": {"status": {"const": "unavailable"}, "reason": {"type": "string"}},
        },
    }


def _moderator_comment_schema(public: dict[str, Any]) -> dict[str, Any]:
    """The public Comment plus who wrote it: moderators must see whom they ban."""
    schema = json.loads(json.dumps(public))
    schema["description"] = "A comment as moderators see it: the public view plus the author."
    schema["required"] = [*schema["required"], "author_email", "author_subject"]
    schema["properties"]["author_email"] = _nullable({"type": "string"})
    schema["properties"]["author_subject"] = {
        **_nullable({"type": "string"}),
        "description": "The identity provider's subject when posted with a JWT.",
    }
    return schema


def _page_of(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "additionalProperties": False,
        "properties": {
            "items": {"type": "array", "items": item},
            "next_cursor": _nullable({"type": "string", "minLength": 1}),
        },
    }


def _moderation_schemas() -> dict[str, Any]:
    timestamp = {"type": "string", "format": "date-time"}
    ban_target = {
        "type": "string",
        "pattern": BAN_TARGET_PATTERN,
        "description": "`email:<address>` (lower-cased) or `sub:<JWT subject>`.",
        "examples": ["email:troll@example.com"],
    }
    return {
        "BulkModeration": {
            "type": "object",
            "required": ["action", "ids"],
            "additionalProperties": False,
            "properties": {
                "action": {
                    "type": "string",
                    "enum": list(BULK_ACTIONS),
                    "description": "`approve` (pending/hidden -> published), `hide` "
                    "(published/pending -> hidden), `delete` (-> tombstone).",
                },
                "ids": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BULK_IDS,
                    "items": _ID,
                    "description": "Duplicates are applied once.",
                },
            },
        },
        "BulkResult": {
            "type": "object",
            "required": ["action", "changed", "unchanged"],
            "additionalProperties": False,
            "properties": {
                "action": {"type": "string", "enum": list(BULK_ACTIONS)},
                "changed": {"type": "array", "items": {"type": "integer"}},
                "unchanged": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "Missing, or already in the target state.",
                },
            },
        },
        "BanTarget": ban_target,
        "NewBan": {
            "type": "object",
            "description": "Exactly one of `email` or `subject`.",
            "additionalProperties": False,
            "properties": {
                "email": {
                    "type": "string",
                    "maxLength": MAX_EMAIL_LENGTH,
                    "pattern": BAN_EMAIL_PATTERN,
                },
                "subject": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_SUBJECT_LENGTH,
                    "pattern": LINE_PATTERN,
                },
                "reason": _nullable(
                    {
                        "type": "string",
                        "maxLength": MAX_REASON_LENGTH,
                        "pattern": OPTIONAL_TEXT_PATTERN,
                    }
                ),
            },
            "oneOf": [{"required": ["email"]}, {"required": ["subject"]}],
        },
        "BanResult": {
            "type": "object",
            "required": ["target", "created"],
            "additionalProperties": False,
            "properties": {
                "target": ban_target,
                "created": {"type": "boolean", "description": "false: was already banned."},
            },
        },
        "Ban": {
            "type": "object",
            "required": ["target", "reason", "created_by", "created_at"],
            "additionalProperties": False,
            "properties": {
                "target": ban_target,
                "reason": _nullable({"type": "string"}),
                "created_by": {"type": "string", "description": "The moderator's identity."},
                "created_at": timestamp,
            },
        },
        "BanList": {
            "type": "object",
            "required": ["items"],
            "additionalProperties": False,
            "properties": {"items": {"type": "array", "items": _ref("Ban")}},
        },
        "AuditEntry": {
            "type": "object",
            "required": [
                "id",
                "actor",
                "action",
                "target",
                "comment_ids",
                "details",
                "created_at",
            ],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "integer"},
                "actor": {"type": "string", "description": "Who did it (key or subject)."},
                "action": {"type": "string", "examples": ["approve", "ban", "edit"]},
                "target": _nullable({"type": "string"}),
                "comment_ids": {"type": "array", "items": {"type": "integer"}},
                "details": _nullable({"type": "object"}),
                "created_at": timestamp,
            },
        },
        "AuditPage": _page_of(_ref("AuditEntry")),
        "ModeratorPage": _page_of(_ref("ModeratorComment")),
    }


def _example_comment(**overrides: Any) -> dict[str, Any]:
    comment: dict[str, Any] = {
        "id": 42,
        "content_id": "1",
        "parent_id": None,
        "status": "published",
        "created_at": _EXAMPLE_TIME,
        "updated_at": _EXAMPLE_TIME,
        "body": "Great reporting — thanks! 👏",
        "author": {"name": "Alice", "email_hash": email_hash(_EXAMPLE_EMAIL)},
    }
    comment.update(overrides)
    return comment


# --- responses --------------------------------------------------------------------


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


def _ok(
    description: str,
    schema: dict[str, Any] | None = None,
    example: Any = None,
    *,
    media: str = JSON,
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if headers:
        response["headers"] = headers
    if schema is not None:
        body: dict[str, Any] = {"schema": schema}
        if example is not None:
            body["example"] = example
        response["content"] = {media: body}
    return response


_RETRY_AFTER = _header("Seconds to wait before retrying.", {"type": "integer", "minimum": 0})
_RATE_LIMIT_HEADERS = {
    "Retry-After": _RETRY_AFTER,
    "X-RateLimit-Limit": _header("Requests allowed in the current window.", {"type": "integer"}),
    "X-RateLimit-Remaining": _header("Requests left in the window.", {"type": "integer"}),
    "X-RateLimit-Reset": _header("When the window resets (Unix time).", {"type": "integer"}),
}

# status -> (problem slugs it can carry, example detail, extra headers)
_ERROR_DEFAULTS: dict[int, tuple[tuple[str, ...], str, dict[str, Any]]] = {
    400: (
        ("bad-request", "validation-error"),
        "the request body is not valid JSON: Expecting value: line 1 column 1 (char 0)",
        {},
    ),
    401: (
        ("unauthorized",),
        "this operation needs a credential: send 'Authorization: Bearer <API key or JWT>'",
        {
            "WWW-Authenticate": _header(
                "The scheme to use and, for a rejected credential, why (RFC 6750)."
            )
        },
    ),
    403: (("forbidden", "author-banned"), "this credential lacks the scope comments:moderate", {}),
    404: (("not-found",), "comment not found", {}),
    409: (
        ("duplicate", "conflict"),
        "you already posted this comment here; duplicates are not accepted",
        {},
    ),
    413: (
        ("content-too-large",),
        "the request body is larger than this API accepts",
        {},
    ),
    415: (
        ("unsupported-media-type",),
        "send the body as JSON with the header 'Content-Type: application/json'",
        {},
    ),
    429: (
        ("too-many-requests", "too-many-comments"),
        "too many requests: 5 per 1 minute",
        _RATE_LIMIT_HEADERS,
    ),
    503: (
        ("service-unavailable",),
        "the database is temporarily unavailable; retry shortly",
        {"Retry-After": _RETRY_AFTER},
    ),
}


def _error(
    path: str,
    status: int,
    detail: str | None = None,
    *,
    slugs: tuple[str, ...] | None = None,
    errors: list[dict[str, str]] | None = None,
    description: str | None = None,
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One documented error response, in the shape web/errors.py uses for ``path``."""
    default_slugs, default_detail, default_headers = _ERROR_DEFAULTS.get(status, ((), "", {}))
    slugs = slugs or default_slugs or (_status_slug(status),)
    detail = detail or default_detail or HTTPStatus(status).phrase
    title = HTTPStatus(status).phrase
    types = ", ".join(f"`{DOCS_PROBLEM_PREFIX}{s}`" for s in slugs)
    all_headers = {**default_headers, **(headers or {})}
    if path.startswith(LEGACY_PREFIX):
        return _ok(
            description or f"{title} (legacy error shape; see {types}).",
            _ref("LegacyError"),
            {"status": title.upper().replace(" ", "-"), "message": detail},
            headers=all_headers,
        )
    example: dict[str, Any] = {
        "type": f"{DOCS_PROBLEM_PREFIX}{slugs[0]}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": _example_path(path),
    }
    if errors:
        example["errors"] = errors
    return _ok(
        description or f"{title}: problem type {types}.",
        _ref("Problem"),
        example,
        media=PROBLEM_JSON,
        headers=all_headers,
    )


def _invalid(path: str, field: str, message: str) -> dict[str, Any]:
    """A 400 validation error naming the field, as domain.InvalidInput produces."""
    return _error(
        path,
        400,
        f"{field}: {message}",
        errors=[{"field": field, "message": message}],
        description=(
            "Invalid input or an unreadable body, in the legacy shape: `message` names "
            "each bad field (`/docs#problem-validation-error`, `/docs#problem-bad-request`)."
            if path.startswith(LEGACY_PREFIX)
            else "Invalid input (`/docs#problem-validation-error`, with `errors`) or an "
            "unreadable body (`/docs#problem-bad-request`)."
        )
        + " Nothing was changed.",
    )


def _errors(path: str, *statuses: int) -> dict[str, Any]:
    """The usual error responses for ``path``, plus ``default`` for anything else."""
    responses = {str(s): _error(path, s) for s in statuses}
    responses["default"] = _unexpected(path)
    return responses


def _unexpected(path: str) -> dict[str, Any]:
    return _error(
        path,
        500,
        "an internal error occurred; it has been logged",
        description="Any other error in the same shape: 401 when an invalid, expired or "
        "revoked credential is sent (even to a public read: a wrong credential is never "
        "silently ignored), 405 for a method this path does not take (with `Allow`), "
        "500 for a bug on our side.",
        slugs=("internal-server-error", "unauthorized", "method-not-allowed"),
    )


def _status_slug(status: int) -> str:
    # Mirrors web/errors.py: the slug of the status phrase.
    return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")


def _example_path(path: str) -> str:
    examples = {"{content_id}": "1", "{comment_id}": "42"}
    for name, value in examples.items():
        path = path.replace(name, value)
    return re.sub(r"\{[^}]+\}", "1", path)


# --- operations -------------------------------------------------------------------


def _op(
    tag: str,
    operation_id: str,
    summary: str,
    description: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    request_body: dict[str, Any] | None = None,
    security: list[dict[str, list[str]]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": [tag],
        "operationId": operation_id,
        "summary": summary,
        "description": description,
    }
    if parameters:
        op["parameters"] = parameters
    if request_body:
        op["requestBody"] = request_body
    # Status order, `default` last, however the caller listed them.
    op["responses"] = dict(sorted(responses.items(), key=lambda kv: (kv[0] == "default", kv[0])))
    if security is not None:
        op["security"] = security
    return op


def _json_body(schema_name: str, example: Any, description: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": description,
        "content": {JSON: {"schema": _ref(schema_name), "example": example}},
    }


def _write_security(settings: Settings) -> list[dict[str, list[str]]]:
    """Anonymous writes (``{}``) are allowed only in ``AUTH_MODE=open``."""
    return list(CREDENTIALS) if settings.auth_mode == "required" else [{}, *CREDENTIALS]


def _auth_note(settings: Settings) -> str:
    return (
        "Anonymous callers may write while `AUTH_MODE=open`; under `AUTH_MODE=required` "
        "a valid API key or JWT is needed (401 otherwise). When a JWT is sent, the author "
        "comes from its claims, not from the body. "
        f"This deployment: `AUTH_MODE={settings.auth_mode}`."
    )


def _parameters() -> dict[str, Any]:
    return {
        "ContentIdPath": {
            "name": "content_id",
            "in": "path",
            "required": True,
            "description": "The content (article) id, URL-encoded.",
            "schema": _ref("ContentId"),
            "example": "1",
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Makes a retry safe: a repeat of the same request with the same "
            "key within `IDEMPOTENCY_TTL` gets the first answer (status, body, `Location`, "
            "plus `Idempotent-Replayed: true`) and stores nothing new; the same key with a "
            "different request is 422. Keys are per caller; a UUID is a good choice.",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": "^[\\x20-\\x7e]+$",
            },
            "example": "5f0c6f4e-8a51-4c43-9f8e-2b6f1c3d9a10",
        },
        "CommentIdPath": {
            "name": "comment_id",
            "in": "path",
            "required": True,
            "description": "The comment id (ASCII digits). Anything else answers 404.",
            "schema": _ID,
            "example": 42,
        },
        "Limit": {
            "name": "limit",
            "in": "query",
            "description": "Page size.",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_PAGE_SIZE,
                "default": DEFAULT_PAGE_SIZE,
            },
        },
        "Cursor": {
            "name": "cursor",
            "in": "query",
            "description": "Opaque: the `next_cursor` of the previous page, with the same "
            "`order` (a cursor of the other order answers 400). Omit for the first page.",
            "schema": {"type": "string", "pattern": cursor_pattern()},
        },
        "OldestCursor": {
            "name": "cursor",
            "in": "query",
            "description": "Opaque: the `next_cursor` of the previous page. Omit for the "
            "first page.",
            "schema": {"type": "string", "pattern": cursor_pattern("z")},
        },
        "NewestCursor": {
            "name": "cursor",
            "in": "query",
            "description": "Opaque: the `next_cursor` of the previous page. Omit for the "
            "first page.",
            "schema": {"type": "string", "pattern": cursor_pattern("j")},
        },
        "Order": {
            "name": "order",
            "in": "query",
            "description": "`oldest` first (thread order) or `newest` first.",
            "schema": {"type": "string", "enum": ["oldest", "newest"], "default": "oldest"},
        },
        "CountContentIds": {
            "name": "content_id",
            "in": "query",
            "required": True,
            "description": f"Repeat for each content id: 1 to {MAX_COUNT_IDS} per call, "
            "duplicates counted once.",
            "style": "form",
            "explode": True,
            "schema": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_COUNT_IDS,
                "items": _ref("ContentId"),
            },
            "example": ["1", "2"],
        },
    }


def _paths(settings: Settings) -> dict[str, Any]:
    write = _write_security(settings)
    pre = settings.moderation_mode == "pre"
    legacy_new = "/api/comment/new"
    legacy_list = "/api/comment/list/{content_id}"
    thread = "/api/v1/contents/{content_id}/comments"
    one = "/api/v1/comments/{comment_id}"
    counts = "/api/v1/counts"
    return {
        legacy_new: {
            "post": _op(
                "legacy",
                "legacyCreateComment",
                "Post a comment (original API)",
                "Kept byte-compatible for existing clients. Answers 200 (not 201) with the "
                "original success message. " + _auth_note(settings),
                {
                    "200": _ok(
                        "Stored.",
                        _ref("LegacyCreated"),
                        {
                            "status": "SUCCESS",
                            "message": "comment created and associated with content_id 1",
                        },
                    ),
                    "400": _invalid(legacy_new, "comment", "must not be empty or whitespace only"),
                    **_errors(legacy_new, 401, 403, 409, 413, 415, 429, 503),
                },
                request_body=_json_body(
                    "LegacyNewComment",
                    {"email": _EXAMPLE_EMAIL, "comment": "first post!", "content_id": 1},
                    "All three fields are required; no others are accepted.",
                ),
                security=write,
            )
        },
        legacy_list: {
            "get": _op(
                "legacy",
                "legacyListComments",
                "List a content's comments (original API)",
                "The whole thread as a bare array, oldest first. Capped at "
                f"`LEGACY_LIST_MAX` comments ({settings.legacy_list_max} here): a longer "
                "thread is cut and the response carries `X-Comments-Truncated: true` and a "
                "`Link` to the paginated v1 list. Emails follow `LEGACY_EMAIL` "
                f"(`{settings.legacy_email}` here). Only published comments are listed.",
                {
                    "200": _ok(
                        "The comments, in the order they were created.",
                        {"type": "array", "items": _ref("LegacyComment"), "minItems": 1},
                        [{"email": "a***@example.com", "comment": "first post!"}],
                        headers={
                            "X-Comments-Truncated": _header(
                                "`true` when the thread was longer than the cap.",
                                {"const": "true"},
                            ),
                            "Link": _header(
                                "Present when truncated: `</api/v1/contents/ID/comments>; "
                                'rel="alternate"`.'
                            ),
                        },
                    ),
                    "400": _invalid(
                        legacy_list, "content_id", "must not contain control characters"
                    ),
                    **_errors(legacy_list, 429, 503),
                    "404": _error(legacy_list, 404, "content_id 1 not found"),
                },
                parameters=[_ref("ContentIdPath", "parameters")],
            )
        },
        thread: {
            "post": _op(
                "v1",
                "createComment",
                "Post a comment or a reply",
                "Creates a comment on the content, or a reply with `parent_id`. "
                + (
                    "This deployment pre-moderates (`MODERATION_MODE=pre`): new comments are "
                    "`pending` and the answer is 202 until a moderator approves them. "
                    if pre
                    else "Comments are published at once (`MODERATION_MODE=post`); under "
                    "`MODERATION_MODE=pre` the answer is 202 with a `pending` comment. "
                )
                + _auth_note(settings),
                {
                    "201": _ok(
                        "Published. `Location` is the comment's URL.",
                        _ref("Comment"),
                        _example_comment(),
                        headers={"Location": _header("`/api/v1/comments/{id}`.")},
                    ),
                    "202": _ok(
                        "Accepted for moderation (`MODERATION_MODE=pre`): the comment is "
                        "`pending` and not public until a moderator approves it, so there "
                        "is no `Location` to fetch yet.",
                        _ref("Comment"),
                        _example_comment(status="pending"),
                    ),
                    **_errors(thread, 401, 403, 409, 413, 415, 429, 503),
                    "400": _invalid(thread, "body", "must not be empty or whitespace only"),
                    "422": _error(
                        thread,
                        422,
                        "this Idempotency-Key was already used with a different request; "
                        "use a new key for a new comment",
                        slugs=("idempotency-key-reused",),
                    ),
                },
                parameters=[
                    _ref("ContentIdPath", "parameters"),
                    _ref("IdempotencyKey", "parameters"),
                ],
                request_body=_json_body(
                    "NewComment",
                    {
                        "body": "Great reporting — thanks! 👏",
                        "author_name": "Alice",
                        "email": _EXAMPLE_EMAIL,
                    },
                    "Only `body` is required. Unknown fields are rejected.",
                ),
                security=write,
            ),
            "get": _op(
                "v1",
                "listComments",
                "List a content's comments, a page at a time",
                "Published comments and tombstones of deleted ones (so replies keep their "
                'place). Follow `next_cursor` (or the `Link: rel="next"` header) for the '
                "next page; the cost of a page does not grow with the thread.",
                {
                    "200": _ok(
                        "One page. An unknown content is an empty page, not a 404.",
                        _ref("CommentPage"),
                        {
                            "content_id": "1",
                            "order": "oldest",
                            "items": [_example_comment()],
                            "next_cursor": "bzQy",
                        },
                        headers={
                            "Link": _header(
                                'The next page, when there is one: `<...&cursor=...>; rel="next"`.'
                            )
                        },
                    ),
                    **_errors(thread, 429, 503),
                    "400": _invalid(thread, "limit", "must be between 1 and 100"),
                },
                parameters=[
                    _ref("ContentIdPath", "parameters"),
                    _ref("Limit", "parameters"),
                    _ref("Cursor", "parameters"),
                    _ref("Order", "parameters"),
                ],
            ),
        },
        one: {
            "get": _op(
                "v1",
                "getComment",
                "Get one comment",
                "A published comment or the tombstone of a deleted one; pending and hidden "
                "comments are not found.",
                {
                    "200": _ok("The comment.", _ref("Comment"), _example_comment()),
                    **_errors(one, 404, 429, 503),
                },
                parameters=[_ref("CommentIdPath", "parameters")],
            ),
            "patch": _op(
                "v1",
                "editComment",
                "Edit your comment",
                "Its author (the JWT subject that posted it) may change the text within "
                f"`EDIT_WINDOW` seconds of posting ({settings.edit_window:g} here); after "
                "that, 403. The edit is recorded in the audit log"
                + (
                    " and, under pre-moderation, the comment waits for approval again."
                    if pre
                    else "; under `MODERATION_MODE=pre` the comment waits for approval again."
                ),
                {
                    "200": _ok(
                        "The edited comment.",
                        _ref("Comment"),
                        _example_comment(body="Great reporting, thanks!"),
                    ),
                    "400": _invalid(one, "body", "must not be empty or whitespace only"),
                    **_errors(one, 401, 403, 404, 413, 415, 429, 503),
                },
                parameters=[_ref("CommentIdPath", "parameters")],
                request_body=_json_body(
                    "CommentEdit",
                    {"body": "Great reporting, thanks!"},
                    "Only `body` can change.",
                ),
                security=CREDENTIALS,
            ),
            "delete": _op(
                "v1",
                "deleteComment",
                "Delete a comment (soft)",
                "Leaves a tombstone: the thread keeps the comment's place, its text and "
                "author are gone. Allowed to the comment's author (the JWT subject that "
                "posted it) and to moderators (`comments:moderate`), in every auth mode; "
                "recorded in the audit log.",
                {
                    "204": {"description": "Deleted."},
                    **_errors(one, 401, 403, 404, 429, 503),
                },
                parameters=[_ref("CommentIdPath", "parameters")],
                security=CREDENTIALS,
            ),
        },
        counts: {
            "get": _op(
                "v1",
                "countComments",
                "Count published comments for many contents",
                f'For "N comments" badges on listing pages: up to {MAX_COUNT_IDS} content '
                "ids in one call, e.g. `?content_id=1&content_id=2`.",
                {
                    "200": _ok(
                        "A count for every requested id.",
                        _ref("Counts"),
                        {"counts": {"1": 12, "2": 0}},
                    ),
                    **_errors(counts, 429, 503),
                    "400": _invalid(counts, "content_id", "at most 100 content ids per call"),
                },
                parameters=[_ref("CountContentIds", "parameters")],
            )
        },
        "/healthz": {
            "get": _op(
                "ops",
                "healthz",
                "Liveness",
                "The process answers. No database call, so a database outage never gets "
                "pods restarted.",
                {
                    "200": _ok("Alive.", _ref("Health"), {"status": "ok", "version": "1.0.0"}),
                    "default": _unexpected("/healthz"),
                },
            )
        },
        **{
            path: {
                "get": _op(
                    "ops",
                    operation_id,
                    summary,
                    "Ready when not draining, the database answers, and its schema is at the "
                    "migration this code expects." + extra,
                    {
                        "200": _ok(
                            "Ready to serve.",
                            _ref("Ready"),
                            {"status": "ready", "schema_revision": "0001"},
                        ),
                        "503": _ok(
                            "Not ready; `reason` says why.",
                            _ref("NotReady"),
                            {"status": "unavailable", "reason": "database unreachable"},
                            headers={"Retry-After": _RETRY_AFTER},
                        ),
                        "default": _unexpected(path),
                    },
                )
            }
            for path, operation_id, summary, extra in (
                ("/readyz", "readyz", "Readiness", ""),
                (
                    "/healthcheck",
                    "healthcheck",
                    "Readiness (original name)",
                    " The name operators were promised; same check as `/readyz`.",
                ),
            )
        },
        **(
            {
                "/metrics": {
                    "get": _op(
                        "ops",
                        "metrics",
                        "Prometheus metrics",
                        "Request rates, latencies, comment events and readiness in the "
                        "Prometheus text format; totals of all gunicorn workers. Present "
                        "while `METRICS_ENABLED=true`.",
                        {
                            "200": _ok(
                                "The metrics.",
                                {"type": "string"},
                                "# TYPE comments_api_build_info gauge\n...",
                                media="text/plain",
                            ),
                            "default": _unexpected("/metrics"),
                        },
                    )
                }
            }
            if settings.metrics_enabled
            else {}
        ),
        "/openapi.json": {
            "get": _op(
                "ops",
                "openapi",
                "This OpenAPI document",
                "Machine-readable description of the API, built from this deployment's settings.",
                {
                    "200": _ok("The OpenAPI 3.1 document.", {"type": "object"}),
                    "default": _unexpected("/openapi.json"),
                },
            )
        },
        "/docs": {
            "get": _op(
                "ops",
                "docs",
                "Interactive API reference",
                "This reference: Swagger UI over /openapi.json, with try-it-out, served from "
                "this origin only, followed by the problem types that error `type`s link to.",
                {
                    "200": _ok("The page.", {"type": "string"}, media="text/html"),
                    "default": _unexpected("/docs"),
                },
            )
        },
    }


# Pages and scripts for people (web/widget.py, web/docs.py): GET only, no parameters but
# the demo's.
_UI_FILES = (
    (
        "/widget/comments.js",
        "widgetScript",
        "Comments widget script",
        "The embeddable reader widget: one `<script>` tag plus a `<comments-thread "
        'content-id="…">` element (see docs/widget.md).',
        "text/javascript",
    ),
    (
        "/widget/count.js",
        "countScript",
        "Comment-count badge script",
        "Fills every `data-comments-count` element of a page with one `/api/v1/counts` call "
        "per 100 contents.",
        "text/javascript",
    ),
    (
        "/widget/page.css",
        "pageStylesheet",
        "Stylesheet of the demo and console pages",
        "Shared by `/widget/demo` and `/moderation`.",
        "text/css",
    ),
    (
        "/docs/swagger-ui-bundle.js",
        "docsSwaggerUiScript",
        "Swagger UI script of /docs",
        "Swagger UI, as shipped in the `flask-swagger-ui` package.",
        "text/javascript",
    ),
    (
        "/docs/swagger-ui.css",
        "docsSwaggerUiStylesheet",
        "Swagger UI stylesheet of /docs",
        "Swagger UI's stylesheet, as shipped in the `flask-swagger-ui` package.",
        "text/css",
    ),
    (
        "/docs/docs.js",
        "docsScript",
        "Script that starts /docs",
        "Starts Swagger UI on /openapi.json (a file, so the page's CSP allows no inline code).",
        "text/javascript",
    ),
    (
        "/docs/docs.css",
        "docsStylesheet",
        "Stylesheet of /docs",
        "Styles the problem types section below the reference.",
        "text/css",
    ),
    (
        "/moderation",
        "moderationConsole",
        "Moderation console",
        "A page for moderators: the pending queue, bulk actions, bans and (for admins) the "
        "audit log, on top of the moderation API. The credential stays in the tab's "
        "sessionStorage.",
        "text/html",
    ),
    (
        "/moderation/console.js",
        "moderationConsoleScript",
        "Moderation console script",
        "The console's ES module.",
        "text/javascript",
    ),
)


def _ui_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
        path: {
            "get": _op(
                "ops",
                operation_id,
                summary,
                description,
                {
                    "200": _ok("The file.", {"type": "string"}, media=media),
                    "default": _unexpected(path),
                },
            )
        }
        for path, operation_id, summary, description, media in _UI_FILES
    }
    demo = "/widget/demo"
    choice: list[tuple[str, str, dict[str, Any], str]] = [
        ("content_id", "The content whose thread is shown.", {"type": "string"}, "demo"),
        ("lang", "Page language.", {"type": "string", "enum": ["en", "pt-BR"]}, "en"),
        ("theme", "Colour theme.", {"type": "string", "enum": ["auto", "light", "dark"]}, "auto"),
    ]
    paths[demo] = {
        "get": _op(
            "ops",
            "widgetDemo",
            "Widget demo page",
            "A page that embeds the widget against this server, for trying it out.",
            {
                "200": _ok("The page.", {"type": "string"}, media="text/html"),
                "400": _error(
                    demo,
                    400,
                    "the request is invalid",
                    slugs=("validation-error",),
                    errors=[{"field": "lang", "message": "must be one of en, pt-BR"}],
                ),
                "default": _unexpected(demo),
            },
            parameters=[
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": description,
                    "schema": {**schema, "default": default},
                }
                for name, description, schema, default in choice
            ],
        )
    }
    return paths


def _moderation_paths() -> dict[str, Any]:
    """Moderator and admin endpoints (web/moderation.py): always a scoped credential."""
    pending = "/api/v1/moderation/pending"
    bulk = "/api/v1/moderation/comments"
    bans = "/api/v1/moderation/bans"
    ban = "/api/v1/moderation/bans/{target}"
    audit = "/api/v1/admin/audit-log"
    moderate_note = " Needs the `comments:moderate` scope (or `admin`)."
    pending_params = [_ref("Limit", "parameters"), _ref("OldestCursor", "parameters")]
    audit_params = [_ref("Limit", "parameters"), _ref("NewestCursor", "parameters")]
    example = {
        **_example_comment(status="pending"),
        "author_email": _EXAMPLE_EMAIL,
        "author_subject": None,
    }
    return {
        pending: {
            "get": _op(
                "moderation",
                "listPending",
                "The pending queue",
                "Comments awaiting approval, oldest first, across all contents, with their "
                "authors' email and subject." + moderate_note,
                {
                    "200": _ok(
                        "One page of the queue.",
                        _ref("ModeratorPage"),
                        {"items": [example], "next_cursor": None},
                        headers={"Link": _header('The next page: `<...>; rel="next"`.')},
                    ),
                    "400": _invalid(pending, "cursor", "is not a cursor this API issued"),
                    **_errors(pending, 401, 403, 429, 503),
                },
                parameters=pending_params,
                security=MODERATOR_SECURITY,
            )
        },
        bulk: {
            "post": _op(
                "moderation",
                "moderateComments",
                "Approve, hide or delete several comments",
                "One transaction and one audit-log entry for the whole batch; comments "
                "already in the target state are reported as `unchanged`." + moderate_note,
                {
                    "200": _ok(
                        "Applied.",
                        _ref("BulkResult"),
                        {"action": "approve", "changed": [42, 43], "unchanged": [44]},
                    ),
                    "400": _invalid(bulk, "action", "must be one of approve, hide, delete"),
                    **_errors(bulk, 401, 403, 413, 415, 429, 503),
                },
                request_body=_json_body(
                    "BulkModeration",
                    {"action": "approve", "ids": [42, 43, 44]},
                    f"An action and 1 to {MAX_BULK_IDS} comment ids.",
                ),
                security=MODERATOR_SECURITY,
            )
        },
        bans: {
            "get": _op(
                "moderation",
                "listBans",
                "List banned authors",
                "Every ban, oldest first." + moderate_note,
                {
                    "200": _ok(
                        "The bans.",
                        _ref("BanList"),
                        {
                            "items": [
                                {
                                    "target": "email:troll@example.com",
                                    "reason": "spam",
                                    "created_by": "key:1a2b3c4d5e6f",
                                    "created_at": _EXAMPLE_TIME,
                                }
                            ]
                        },
                    ),
                    **_errors(bans, 401, 403, 429, 503),
                },
                security=MODERATOR_SECURITY,
            ),
            "post": _op(
                "moderation",
                "banAuthor",
                "Ban an author",
                "New comments from this email or token subject are rejected with "
                "`author-banned`; existing ones are left to the moderator." + moderate_note,
                {
                    "201": _ok(
                        "Banned.",
                        _ref("BanResult"),
                        {"target": "email:troll@example.com", "created": True},
                        headers={"Location": _header("The ban's URL, for DELETE.")},
                    ),
                    "200": _ok(
                        "Was already banned; nothing changed.",
                        _ref("BanResult"),
                        {"target": "email:troll@example.com", "created": False},
                        headers={"Location": _header("The ban's URL, for DELETE.")},
                    ),
                    "400": _invalid(bans, "email", "give exactly one of email or subject"),
                    **_errors(bans, 401, 403, 413, 415, 429, 503),
                },
                request_body=_json_body(
                    "NewBan",
                    {"email": "troll@example.com", "reason": "spam"},
                    "Exactly one of `email` or `subject`, and an optional `reason`.",
                ),
                security=MODERATOR_SECURITY,
            ),
        },
        ban: {
            "delete": _op(
                "moderation",
                "unbanAuthor",
                "Lift a ban",
                "The author may post again." + moderate_note,
                {
                    "204": {"description": "Lifted."},
                    "400": _invalid(ban, "target", "must look like email:<address> or sub:<id>"),
                    **_errors(ban, 401, 403, 404, 429, 503),
                },
                parameters=[
                    {
                        "name": "target",
                        "in": "path",
                        "required": True,
                        "description": "The ban target as listed, e.g. `email:troll@example.com`.",
                        "schema": _ref("BanTarget"),
                        "example": "email:troll@example.com",
                    }
                ],
                security=MODERATOR_SECURITY,
            )
        },
        audit: {
            "get": _op(
                "admin",
                "auditLog",
                "The moderation audit log",
                "Who did what, when: approvals, hides, deletions, edits, bans; newest "
                "first. Needs the `admin` scope.",
                {
                    "200": _ok(
                        "One page of the log.",
                        _ref("AuditPage"),
                        {
                            "items": [
                                {
                                    "id": 7,
                                    "actor": "key:1a2b3c4d5e6f",
                                    "action": "approve",
                                    "target": None,
                                    "comment_ids": [42, 43],
                                    "details": {"requested": [42, 43, 44]},
                                    "created_at": _EXAMPLE_TIME,
                                }
                            ],
                            "next_cursor": None,
                        },
                    ),
                    "400": _invalid(audit, "limit", "must be between 1 and 100"),
                    **_errors(audit, 401, 403, 429, 503),
                },
                parameters=audit_params,
                security=MODERATOR_SECURITY,
            )
        },
    }


def build_spec(settings: Settings | None = None) -> Spec:
    """The OpenAPI 3.1 document for a deployment with these settings (defaults if None)."""
    settings = settings or Settings()
    paths = {**_paths(settings), **_moderation_paths(), **_ui_paths()}
    problems = _problem_types(settings)
    spec: Spec = {
        "openapi": "3.1.0",
        "info": {
            "title": "comments-api",
            "version": __version__,
            "summary": "Comments backend of a news site.",
            "description": (
                "Readers post text comments on a content (an article, identified by a "
                "`content_id`) and read what others wrote.\n\n"
                "Two APIs: the original one under `/api/comment/`, kept byte-compatible "
                "for existing clients, and v1 under `/api/v1/` for new clients "
                "(pagination, replies, tombstones, counts, no raw emails).\n\n"
                "Reads are public. Writes are open to anonymous callers under "
                "`AUTH_MODE=open` and need an API key or a JWT under "
                f"`AUTH_MODE=required` (this deployment: `{settings.auth_mode}`); "
                "moderation and admin always need a credential with the right scope. "
                "A credential that is sent must be valid, even on a read.\n\n"
                "Rate limits (429 with `Retry-After`; `X-RateLimit-Limit`, "
                "`X-RateLimit-Remaining` and `X-RateLimit-Reset` on limited responses): "
                "anonymous comment writes per client address "
                f"(`RATELIMIT_ANONYMOUS_WRITE`, `{settings.ratelimit_anonymous_write}` "
                "here), authenticated writes per credential "
                f"(`RATELIMIT_AUTHENTICATED_WRITE`, `{settings.ratelimit_authenticated_write}`"
                "), everything else per client address "
                f"(`RATELIMIT_READ`, `{settings.ratelimit_read}`); health probes and "
                "metrics are never limited"
                + ("" if settings.ratelimit_enabled else " (rate limiting is off here)")
                + ".\n\n"
                "Browsers may call the API from the origins in `CORS_ORIGINS` only "
                "(exact origins, never `*`); other preflights get 403.\n\n"
                'Errors are JSON, never HTML: the legacy `{"status", "message"}` shape '
                "under `/api/comment/`, `application/problem+json` (RFC 9457) elsewhere, "
                "whose `type` links to its explanation under Problem types."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "legacy", "description": "The original API, unchanged for old clients."},
            {"name": "v1", "description": "The API for new clients."},
            {
                "name": "moderation",
                "description": "For moderators: a credential with `comments:moderate`.",
            },
            {"name": "admin", "description": "For operators: a credential with `admin`."},
            {
                "name": "ops",
                "description": "Health checks, metrics, this documentation, and the reader "
                "widget, demo page and moderation console files.",
            },
        ],
        "paths": paths,
        "components": {
            "schemas": _schemas(settings),
            "parameters": _parameters(),
            "securitySchemes": {
                "bearerApiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key for trusted callers (the site's backend, "
                    "moderators, ops), created with `comments-api keys create --name NAME "
                    "--scope SCOPE` and sent as `Authorization: Bearer <key>`. Scopes: "
                    "`comments:write`, `comments:moderate`, `admin`. Only a hash is stored; "
                    "revoke with `comments-api keys revoke`.",
                },
                "bearerJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT from the site's identity provider, for logged-in "
                    "readers. Signature (RS256/ES256 via JWKS, or HS256), `iss` "
                    "(`JWT_ISSUER`), `aud` (`JWT_AUDIENCE`), `exp`/`nbf` are verified. The "
                    "author (subject, email, name) comes from the claims.",
                },
            },
        },
        "x-problem-types": [{"slug": slug, **info} for slug, info in problems.items()],
    }
    spec["info"]["description"] += _guide(spec)
    return spec


# --- the guide in the document's description --------------------------------------

_METHODS = ("get", "post", "put", "patch", "delete")


def _walkthrough(spec: Spec) -> str:
    """The original README's curl walkthrough, generated from the legacy examples."""
    base = "http://127.0.0.1:8000"
    steps = []
    for path, item in spec["paths"].items():
        for method in _METHODS:
            op = item.get(method)
            if not op or "legacy" not in op.get("tags", []):
                continue
            example_path = _example_path(path)
            if method == "post":
                example = op["requestBody"]["content"][JSON]["example"]
                body = json.dumps(example, ensure_ascii=False)
                command = (
                    f"curl -s -X POST {base}{example_path} \\\n"
                    f"  -H 'Content-Type: application/json' \\\n  -d {shlex.quote(body)}"
                )
            else:
                command = f"curl -s {base}{example_path}"
            ok = next(r for s, r in op["responses"].items() if s.startswith("2"))
            answer = ok.get("content", {}).get(JSON, {}).get("example")
            step = f"{op['summary']}:\n\n```sh\n{command}\n```\n"
            if answer is not None:
                shown = json.dumps(answer, indent=2, ensure_ascii=False)
                step += f"\nanswers\n\n```json\n{shown}\n```\n"
            steps.append(step)
    return "\n".join(steps)


def _guide(spec: Spec) -> str:
    """Authentication, quick start and errors: the prose /docs shows above the operations."""
    auth = "\n\n".join(
        f"**`{name}`** ({scheme['scheme']}"
        + (f", {scheme['bearerFormat']}" if "bearerFormat" in scheme else "")
        + f"): {scheme['description']}"
        for name, scheme in spec["components"]["securitySchemes"].items()
    )
    return (
        "\n\n## Authentication\n\n"
        "Send credentials as `Authorization: Bearer <credential>` (the **Authorize** button "
        "sets it for the calls made from this page).\n\n"
        f"{auth}\n\n"
        "## Quick start (legacy curl walkthrough)\n\n"
        "The original API, as existing clients use it, against a local `make run`:\n\n"
        f"{_walkthrough(spec)}\n"
        "## Errors\n\n"
        "Every v1 and ops error is `application/problem+json` (RFC 9457) whose `type` is a "
        "link (`/docs#problem-<slug>`) to its entry under [Problem types](#problems), below "
        "the operations; validation errors add `errors`, a list of `{field, message}`. Under "
        '`/api/comment/` the same errors use the legacy `{"status", "message"}` shape.'
    )
