"""paths and components.parameters of /openapi.json: the hand-written prose per operation.

How to add a path (one dict entry per path):
1. Add an entry to the dict in ``paths()``: ``"/api/v1/things/{thing_id}": {"get": ...}``
   (OpenAPI writes path parameters as ``{name}`` where Flask writes ``<name>``).
2. Build each operation with ``_op(tag, operation_id, summary, description, responses, ...)``.
   Reuse the ``#/components/parameters`` refs for parameters, ``_ok(...)`` for success
   responses and ``_errors(path, 400, 404, ...)`` / ``_error(path, status, ...)`` for errors:
   they pick the legacy shape under /api/comment/ and problem+json elsewhere, like
   web/errors.py does. Writes take ``security=_write_security(settings)``; moderation/admin
   take ``MODERATOR_SECURITY``; what only a comment's author may do, ``AUTHOR_SECURITY``.
3. New body shapes are models in ``models.py`` (request bodies) or entries in
   ``components.py`` (responses); a new problem ``type`` slug goes in ``problems.py``.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from ..comments.rules import (
    DEFAULT_PAGE_SIZE,
    MAX_BAN_CURSOR_LENGTH,
    MAX_COUNT_IDS,
    audit_log_cursor_pattern,
    ban_cursor_pattern,
    cursor_pattern,
    email_hash,
    listing_cursor_pattern,
)
from ..settings import Settings
from . import models
from .components import EXAMPLE_EMAIL, ref, value_schema
from .headers import ACCEPTED_BODY_TYPE, ACCEPTED_PATCH_TYPES, NO_STORE, OPS_ROUTES, header
from .models import MAX_AUTHOR_DELETE, MAX_BULK_IDS
from .problems import (
    BODY_TOO_LARGE,
    DISK_FULL,
    DOCS_PROBLEM_PREFIX,
    LEGACY_PREFIX,
    PROBLEM_JSON,
    status_slug,
    status_title,
)
from .responses import ASSET_MAX_AGE, CONFIG_MAX_AGE, EXAMPLE_TIME

JSON = "application/json"
# Either credential works; which one a caller uses depends on who it is.
CREDENTIALS: list[dict[str, list[str]]] = [{"bearerApiKey": []}, {"bearerJwt": []}]
# Moderation/admin: a credential in every auth mode (the scope is checked on top).
MODERATOR_SECURITY = CREDENTIALS
# An author's edit: only a reader's JWT proves authorship (identity.credentials.is_author);
# an API key, whatever its scopes, is never a comment's author.
AUTHOR_SECURITY: list[dict[str, list[str]]] = [{"bearerJwt": []}]


def _example_comment(**overrides: Any) -> dict[str, Any]:
    comment: dict[str, Any] = {
        "id": 42,
        "content_id": "1",
        "parent_id": None,
        "status": "published",
        "created_at": EXAMPLE_TIME,
        "updated_at": EXAMPLE_TIME,
        "edited_at": None,
        "body": "Great reporting — thanks! 👏",
        "author": {"name": "Alice", "email_hash": email_hash(EXAMPLE_EMAIL)},
    }
    comment.update(overrides)
    return comment


# --- responses --------------------------------------------------------------------


REPLAYED_HEADER = header(
    "`true` when this is the stored answer to an earlier request with the same "
    "`Idempotency-Key` (nothing new was stored); absent otherwise.",
    {"type": "string", "enum": ["true"]},
)


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


def _read_cache_control(settings: Settings) -> dict[str, Any]:
    return header(f"`READ_CACHE_CONTROL` (`{settings.read_cache_control}` here).", required=True)


def _cacheable(ok: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The 200 and 304 of a read served from the never-stale cache (docs/caching.md)."""
    # One expression in parentheses: a string on the next line alone was a statement of its
    # own, and the document said "the same ... for the " and stopped.
    etag = (
        "Strong validator of this answer, a hash of its bytes: the same from every worker "
        "and instance for the same bytes; send it back in `If-None-Match`."
    )
    tag = {"type": "string", "pattern": '^"[0-9a-f]+"$'}
    cache_control = _read_cache_control(settings)
    return {
        "200": {
            **ok,
            "headers": {
                **ok.get("headers", {}),
                "ETag": header(etag, tag, required=True),
                "Cache-Control": cache_control,
            },
        },
        "304": {
            "description": "Not Modified: `If-None-Match` names the current `ETag`. No body.",
            "headers": {"ETag": header(etag, tag, required=True), "Cache-Control": cache_control},
        },
    }


def _write_412(path: str, why_no_tag: str) -> dict[str, Any]:
    """The 412 of a write to a target that exists, judged against no ETag
    (comments/conditional.py ``require_no_tag``)."""
    return _error(
        path,
        412,
        slugs=("if-match-failed", "if-none-match-failed"),
        description=f"A precondition failed and nothing changed: `If-Match` names a tag "
        f"({why_no_tag}: only `*` holds; `/docs#problem-if-match-failed`), or "
        "`If-None-Match: *` asks to act only if the target does not exist yet, and it does "
        "(`/docs#problem-if-none-match-failed`). `Cache-Control: no-store`.",
    )


# status -> (problem slugs it can carry, example detail, extra headers); the headers every
# answer of a status carries (401's WWW-Authenticate, 429's Retry-After, ...) are declared
# by headers.with_common_headers.
_ERROR_DEFAULTS: dict[int, tuple[tuple[str, ...], str, dict[str, Any]]] = {
    400: (
        ("bad-request", "validation-error"),
        "the request body is not valid JSON: Expecting value: line 1 column 1 (char 0)",
        {},
    ),
    401: (
        ("unauthorized",),
        "this operation needs a credential: send 'Authorization: Bearer <API key or JWT>'",
        {},
    ),
    403: (("forbidden", "author-banned"), "this credential lacks the scope comments:moderate", {}),
    404: (("not-found",), "comment not found", {}),
    409: (
        ("duplicate", "conflict"),
        "you already posted this comment here; duplicates are not accepted",
        {},
    ),
    412: (
        ("if-match-failed",),
        "If-Match names no current ETag of this resource (compared strongly: a weak W/ tag "
        "never matches); fetch it again without If-Match for its current ETag",
        {
            "Cache-Control": header(
                "`no-store`: it answers this request's `If-Match` only.", required=True
            )
        },
    ),
    413: (
        ("content-too-large",),
        BODY_TOO_LARGE,
        {},
    ),
    415: (
        ("unsupported-media-type",),
        "send the body as JSON with the header 'Content-Type: application/json'",
        {
            "Accept": header(
                f"`{ACCEPTED_BODY_TYPE}`: the media type to send the body as (a "
                "`+json` type such as `application/merge-patch+json` is read as JSON too).",
                required=True,
            ),
            # web/common.py _UnsupportedCoding (RFC 9110, section 12.5.3).
            "Accept-Encoding": header(
                "`identity`: present when the body was refused for its `Content-Encoding` "
                "(a compressed body): the one coding taken is none."
            ),
        },
    ),
    429: (
        ("too-many-requests", "too-many-comments"),
        "too many requests: 5 per 1 minute",
        {},
    ),
    503: (
        ("service-unavailable",),
        "the database is temporarily unavailable; retry shortly",
        {},
    ),
    507: (
        ("insufficient-storage",),
        DISK_FULL,
        {},
    ),
}

# What a status in _errors(...) means there, when its type alone does not say.
_DEFAULT_CAUSES = {
    503: "The database is temporarily unavailable; retry after `Retry-After` seconds.",
    507: "The database volume is full: nothing was stored (reads keep working); retry after "
    "`Retry-After` seconds.",
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
    slugs = slugs or default_slugs or (status_slug(status),)
    detail = detail or default_detail or HTTPStatus(status).phrase
    # What web/errors.py answers: RFC 9110's names (413 is "Content Too Large", not
    # Python's "Request Entity Too Large"), so the legacy example reads CONTENT-TOO-LARGE.
    title = status_title(status)
    types = ", ".join(f"`{DOCS_PROBLEM_PREFIX}{s}`" for s in slugs)
    all_headers = {**default_headers, **(headers or {})}
    why = f" {_DEFAULT_CAUSES[status]}" if status in _DEFAULT_CAUSES else ""
    if path.startswith(LEGACY_PREFIX):
        return _ok(
            description or f"{title} (legacy error shape; see {types}).{why}",
            ref("LegacyError"),
            {"message": detail, "status": title.upper().replace(" ", "-")},
            headers=all_headers,
        )
    example: dict[str, Any] = {
        "type": f"{DOCS_PROBLEM_PREFIX}{slugs[0]}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": example_path(path),
    }
    if errors:
        example["errors"] = errors
    return _ok(
        description or f"{title}: problem type {types}.{why}",
        ref("Problem"),
        example,
        media=PROBLEM_JSON,
        headers=all_headers,
    )


def _request_line_too_long(path: str) -> dict[str, Any]:
    """The 414 the HTTP server answers itself (worker.py), before the application: its
    problem has no ``instance``."""
    response = _error(
        path,
        414,
        "the request line is too long",
        description="URI Too Long: the request line is longer than the server reads "
        "(`/docs#problem-uri-too-long`), as a hundred long non-ASCII content ids, "
        "percent-encoded, can be: split the call. Answered by the HTTP server itself, "
        "without `instance`.",
        headers={"Cache-Control": NO_STORE},
    )
    del response["content"][PROBLEM_JSON]["example"]["instance"]
    return response


def _invalid(path: str, field: str, message: str) -> dict[str, Any]:
    """A 400 validation error naming the field, as domain.InvalidInput produces."""
    return _error(
        path,
        400,
        f"{field}: {message}",
        # The type a body with `errors` carries (the example showed bad-request).
        slugs=("validation-error", "bad-request"),
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
        description="Any other error in the same shape: 405 for a method this path does "
        "not take (with `Allow`), 500 for a bug on our side. A 403 for a missing scope "
        'carries `WWW-Authenticate: Bearer realm="comments-api", error=...` (RFC 6750).',
        slugs=("internal-server-error", "method-not-allowed"),
    )


# identity/guards.py judges a sent credential before any view, on every path.
_CREDENTIAL_IN_URL = "send the token as 'Authorization: Bearer <token>', never in the URL"
_CREDENTIAL_IN_URL_NOTE = (
    "A token sent in the URL (`access_token`: it belongs in `Authorization`; "
    "`/docs#problem-bad-request`, with `WWW-Authenticate`) is refused here too."
)


_IDENTITY_PROVIDER_DOWN = (
    "a bearer JWT was sent and the identity provider (`JWT_JWKS_URL`) cannot be reached, "
    "or serves no usable key set, to verify it (`/docs#problem-service-unavailable`, "
    "with `Retry-After`)"
)


def _identity_provider_503(path: str, responses: dict[str, Any]) -> None:
    """The 503 of a JWT that cannot be verified, merged into an operation's own 503."""
    unverifiable = _error(
        path,
        503,
        "the identity provider cannot be reached to verify the token; retry shortly",
        description=f"Service Unavailable: {_IDENTITY_PROVIDER_DOWN}.",
    )
    own = responses.get("503")
    if own is None:
        responses["503"] = unverifiable
        return
    own["description"] = f"{own['description']} Or {_IDENTITY_PROVIDER_DOWN}."
    # /readyz's own 503 is not a problem: list the problem's media type beside it.
    own["content"] = {**unverifiable["content"], **own.get("content", {})}


def with_rate_limit_errors(paths: dict[str, Any]) -> dict[str, Any]:
    """A 429 on every operation the limiter covers (web/protection.py: all but OPS_ROUTES,
    on the read budget). The pages, files and the document itself listed none, so their 429
    fell under `default`, which declares no `Retry-After`: sent, but not declared."""
    for path, item in paths.items():
        if path in OPS_ROUTES:
            continue
        for op in item.values():
            responses = op["responses"]
            if "429" not in responses:
                responses["429"] = _error(
                    path,
                    429,
                    "too many requests from this address; slow down",
                    slugs=("too-many-requests",),
                    description="This address used up its read budget (`RATELIMIT_READ`): "
                    "wait for the seconds in `Retry-After`.",
                )
    return paths


def with_credential_errors(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation's 401 and 400 for a credential sent wrongly and 503 for a JWT that
    cannot be verified (identity/guards.py judges a sent credential before any view: a
    public read, a health probe and a script included)."""
    for path, item in paths.items():
        for op in item.values():
            responses = op["responses"]
            _identity_provider_503(path, responses)
            if "401" not in responses:
                responses["401"] = _error(
                    path,
                    401,
                    "the token's signature is invalid",
                    description="An invalid, expired or revoked credential was sent: a "
                    "credential that is sent must be valid, even where none is needed (a "
                    "wrong one is never silently ignored). Send none, or a valid one.",
                )
            if "400" in responses:
                bad = responses["400"]
                bad["description"] = f"{bad['description']} {_CREDENTIAL_IN_URL_NOTE}"
            else:
                responses["400"] = _error(
                    path,
                    400,
                    _CREDENTIAL_IN_URL,
                    slugs=("bad-request",),
                    description=_CREDENTIAL_IN_URL_NOTE.replace(" is refused here too.", "."),
                )
            op["responses"] = dict(
                sorted(responses.items(), key=lambda kv: (kv[0] == "default", kv[0]))
            )
    return paths


def example_path(path: str) -> str:
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
        "content": {JSON: {"schema": ref(schema_name), "example": example}},
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


def _bare(value: Any) -> dict[str, Any]:
    """A value's generated schema without its description (the parameter carries one)."""
    return {k: v for k, v in value_schema(value).items() if k != "description"}


def parameters() -> dict[str, Any]:
    return {
        "ContentIdPath": {
            "name": "content_id",
            "in": "path",
            "required": True,
            "description": "The content (article) id, URL-encoded.",
            "schema": ref("ContentId"),
            "example": "1",
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Makes a retry safe: a repeat of the same request with the same "
            "key within `IDEMPOTENCY_TTL` gets the first answer (status, body, `Location`, "
            "plus `Idempotent-Replayed: true`) and stores nothing new. Once the comment is "
            "deleted, that answer holds its tombstone (`status: deleted`, no body, no "
            "author) instead, with the same status and `Location`; the comment is never "
            "posted again. The same key with a different request is 422. Keys are per "
            "caller; a UUID is a good choice.",
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
            "schema": value_schema(models.PATH_COMMENT_ID),
            "example": 42,
        },
        "Limit": {
            "name": "limit",
            "in": "query",
            "description": "Page size.",
            "schema": {**_bare(models.LIMIT), "default": DEFAULT_PAGE_SIZE},
        },
        "Cursor": {
            "name": "cursor",
            "in": "query",
            "description": "Opaque: the `next_cursor` of the previous page of this list, "
            "with the same `order` (a cursor of the other order, of another content's "
            "list or of another list, answers 400). A position, not a row: one whose "
            "comment is no longer public (hidden, removed) is taken as that position, on "
            "any content's list. Omit for the first page.",
            "schema": {"type": "string", "pattern": cursor_pattern()},
        },
        "OldestCursor": {
            "name": "cursor",
            "in": "query",
            "description": "Opaque: the `next_cursor` of the previous page, read with the "
            "same `status`, `content_id` and `author` (another filter's or another list's "
            "cursor answers 400). Omit for the first page.",
            "schema": {"type": "string", "pattern": listing_cursor_pattern()},
        },
        "NewestCursor": {
            "name": "cursor",
            "in": "query",
            "description": "Opaque: the `next_cursor` of the previous page (another list's "
            "cursor answers 400). Omit for the first page.",
            "schema": {"type": "string", "pattern": audit_log_cursor_pattern()},
        },
        "BanCursor": {
            "name": "cursor",
            "in": "query",
            "description": "Opaque: the `next_cursor` of the previous page of the ban list "
            "(another list's cursor answers 400). A position, not a snapshot: bans added or "
            "lifted between pages repeat or skip no other. Omit for the first page.",
            "schema": {
                "type": "string",
                "pattern": ban_cursor_pattern(),
                "maxLength": MAX_BAN_CURSOR_LENGTH,
            },
        },
        "ContentIdFilter": {
            "name": "content_id",
            "in": "query",
            "required": False,
            "description": "Only this content's comments. Omit for every content.",
            "schema": ref("ContentId"),
            "example": "1",
        },
        "AuthorFilter": {
            "name": "author",
            "in": "query",
            "required": False,
            "description": "Only this author's comments, across contents (or of "
            "`content_id`): an author key as a ban names it, `email:<address>` (any case) or "
            "`sub:<JWT subject>`. A signed-in reader's comments are under `sub:`. Omit for "
            "every author. A `+` in an address is sent as `%2B` (a query string reads `+` "
            "as a space; an address with a space is a 400).",
            "schema": ref("BanTarget"),
            "example": "email:troll@example.com",
        },
        "ModerationStatus": {
            "name": "status",
            "in": "query",
            "description": "`pending` (the queue), `hidden` (hidden by a moderator; "
            "`approve` publishes one again) or `published` (of one `content_id` or `author` "
            "only; with neither it is a 400).",
            "schema": {**_bare(models.MODERATION_STATUS), "default": "pending"},
        },
        "Order": {
            "name": "order",
            "in": "query",
            "description": "`oldest` first (thread order) or `newest` first.",
            "schema": {**_bare(models.ORDER), "default": "oldest"},
        },
        "IfNoneMatch": {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "The `ETag` of the copy you hold: `304 Not Modified`, with no body, "
            "while it is still current (compared weakly; `*` matches whenever there is "
            "something to show: a 404 stays a 404). See docs/caching.md.",
            "schema": {"type": "string"},
            "example": '"5d1c0f3a9b7e2c4d6f8a1b3c"',
        },
        "IfMatch": {
            "name": "If-Match",
            "in": "header",
            "required": False,
            "description": "Read only if the answer is still the one you hold: its `ETag` "
            "(compared strongly: a `W/` tag never matches) or `*` (any). Otherwise `412`, "
            "judged before `If-None-Match`; ignored when the answer would be a 404 (RFC 9110, "
            "section 13.2.1). See docs/caching.md.",
            "schema": {"type": "string"},
            # Swagger UI's "Try it out" sends a parameter's example: a tag here would make
            # every call from the docs page a 412.
            "example": "*",
        },
        "ModerationIfMatch": {
            "name": "If-Match",
            "in": "header",
            "required": False,
            "description": "Moderation resources have no `ETag`: only `*` holds. Any other "
            "value is a `412` and nothing is read or changed (a console acting on a state it "
            "no longer sees).",
            "schema": {"type": "string"},
            "example": "*",
        },
        "CommentIfMatch": {
            "name": "If-Match",
            "in": "header",
            "required": False,
            "description": "One comment has no `ETag`: only `*` holds. Any other value is a "
            "`412` and nothing changes (an edit or delete of a state you may no longer hold); "
            "a 403 or 404 wins over it (RFC 9110, section 13.2.1).",
            "schema": {"type": "string"},
            "example": "*",
        },
        "ModerationIfNoneMatch": {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "The target exists (the queue, the ban list, the ban lifted): `*` "
            '("only if it does not exist yet") is a `412` '
            "(`/docs#problem-if-none-match-failed`) and nothing changes; tags hold (it has no "
            "`ETag` to match). Judged after `If-Match`; a 404 wins over it.",
            "schema": {"type": "string"},
        },
        "CommentIfNoneMatch": {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": 'One comment exists (its tombstone too): `*` ("only if it does '
            'not exist yet") is a `412` (`/docs#problem-if-none-match-failed`) and nothing '
            "changes; tags hold (it has no `ETag` to match). Judged after `If-Match`; a 403 "
            "or 404 wins over it.",
            "schema": {"type": "string"},
        },
        "CreateIfMatch": {
            "name": "If-Match",
            "in": "header",
            "required": False,
            "description": "A create is not conditional on an `ETag` (the list's name its "
            "pages): only `*` holds. Any tag is a `412` (`/docs#problem-if-match-failed`) "
            "and nothing is stored, nor taken as an `Idempotency-Key`'s first answer.",
            "schema": {"type": "string"},
            "example": "*",
        },
        "CreateIfNoneMatch": {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "A content's comment list always exists: `*` is a `412` "
            "(`/docs#problem-if-none-match-failed`) and nothing is stored, nor taken as an "
            "`Idempotency-Key`'s first answer; tags hold. Judged after `If-Match`.",
            "schema": {"type": "string"},
        },
        "AssetIfNoneMatch": {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "The `ETag` of the copy you hold (compared weakly), or `*` (the "
            "file always exists): `304 Not Modified`, with no body, while it is current. "
            "`If-Match` is ignored here.",
            "schema": {"type": "string"},
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
                "items": ref("ContentId"),
            },
            "example": ["1", "2"],
        },
    }


def paths(settings: Settings) -> dict[str, Any]:
    write = _write_security(settings)
    pre = settings.moderation_mode == "pre"
    legacy_new = "/api/comment/new"
    legacy_list = "/api/comment/list/{content_id}"
    thread = "/api/v1/contents/{content_id}/comments"
    one = "/api/v1/comments/{comment_id}"
    counts = "/api/v1/counts"
    read_cache_control = _read_cache_control(settings)
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
                        ref("LegacyCreated"),
                        {
                            "message": "comment created and associated with content_id 1",
                            "status": "SUCCESS",
                        },
                    ),
                    "400": _invalid(legacy_new, "comment", "must not be empty or whitespace only"),
                    **_errors(legacy_new, 401, 403, 409, 413, 415, 429, 503, 507),
                },
                request_body=_json_body(
                    "LegacyNewComment",
                    {"email": EXAMPLE_EMAIL, "comment": "first post!", "content_id": 1},
                    "All three fields are required, except `email` when a reader's sign-in "
                    "JWT is sent (the token names the author); no others are accepted.",
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
                    **_cacheable(
                        _ok(
                            "The comments, in the order they were created.",
                            {"type": "array", "items": ref("LegacyComment"), "minItems": 1},
                            [{"comment": "first post!", "email": "a***@example.com"}],
                            headers={
                                "X-Comments-Truncated": header(
                                    "`true` when the thread was longer than the cap.",
                                    {"const": "true"},
                                ),
                                "Link": header(
                                    "Present when truncated: `</api/v1/contents/ID/comments>; "
                                    'rel="alternate"`.'
                                ),
                            },
                        ),
                        settings,
                    ),
                    "400": _invalid(
                        legacy_list, "content_id", "must not contain control characters"
                    ),
                    **_errors(legacy_list, 412, 429, 503),
                    "404": _error(
                        legacy_list,
                        404,
                        "content_id 1 not found",
                        description="No published comment on this content (yet). Carries "
                        "the 200's `Cache-Control`, so a cache in front keeps it no longer "
                        "than it would keep a list; no `ETag` (a 304 never stands in for it).",
                        headers={"Cache-Control": read_cache_control},
                    ),
                },
                parameters=[
                    ref("ContentIdPath", "parameters"),
                    ref("IfNoneMatch", "parameters"),
                    ref("IfMatch", "parameters"),
                ],
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
                        ref("Comment"),
                        _example_comment(),
                        headers={
                            "Location": header("`/api/v1/comments/{id}`.", required=True),
                            "Idempotent-Replayed": REPLAYED_HEADER,
                        },
                    ),
                    "202": _ok(
                        "Accepted for moderation (`MODERATION_MODE=pre`): the comment is "
                        "`pending` and not public until a moderator approves it, so there "
                        "is no `Location` to fetch yet.",
                        ref("Comment"),
                        _example_comment(status="pending"),
                        headers={"Idempotent-Replayed": REPLAYED_HEADER},
                    ),
                    **_errors(thread, 401, 403, 409, 413, 415, 429, 503, 507),
                    "400": _invalid(thread, "body", "must not be empty or whitespace only"),
                    "412": _write_412(thread, "a create is not conditional on the list's `ETag`s"),
                    "422": _error(
                        thread,
                        422,
                        "this Idempotency-Key was already used with a different request; "
                        "use a new key for a new comment",
                        slugs=("idempotency-key-reused",),
                    ),
                },
                parameters=[
                    ref("ContentIdPath", "parameters"),
                    ref("IdempotencyKey", "parameters"),
                    ref("CreateIfMatch", "parameters"),
                    ref("CreateIfNoneMatch", "parameters"),
                ],
                request_body=_json_body(
                    "NewComment",
                    {
                        "body": "Great reporting — thanks! 👏",
                        "author_name": "Alice",
                        "email": EXAMPLE_EMAIL,
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
                    **_cacheable(
                        _ok(
                            "One page. An unknown content is an empty page, not a 404.",
                            ref("CommentPage"),
                            {
                                "content_id": "1",
                                "order": "oldest",
                                "items": [_example_comment()],
                                "next_cursor": "bzQy",
                            },
                            headers={
                                "Link": header(
                                    "The next page, when there is one: "
                                    '`<...&cursor=...>; rel="next"`.'
                                )
                            },
                        ),
                        settings,
                    ),
                    **_errors(thread, 412, 429, 503),
                    "400": _invalid(thread, "limit", "must be between 1 and 100"),
                },
                parameters=[
                    ref("ContentIdPath", "parameters"),
                    ref("Limit", "parameters"),
                    ref("Cursor", "parameters"),
                    ref("Order", "parameters"),
                    ref("IfNoneMatch", "parameters"),
                    ref("IfMatch", "parameters"),
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
                    "200": _ok(
                        "The comment.",
                        ref("Comment"),
                        _example_comment(),
                        headers={"Cache-Control": read_cache_control},
                    ),
                    **_errors(one, 429, 503),
                    "412": _error(
                        one,
                        412,
                        description="`If-Match` names a tag: one comment carries no `ETag`, "
                        "so only `If-Match: *` holds.",
                    ),
                    "404": _error(
                        one,
                        404,
                        "comment not found",
                        description="No such comment, or not public (pending or hidden). "
                        "Carries the 200's `Cache-Control`, so a cache in front keeps it no "
                        "longer than it would keep the comment.",
                        headers={"Cache-Control": read_cache_control},
                    ),
                },
                parameters=[ref("CommentIdPath", "parameters"), ref("IfMatch", "parameters")],
            ),
            "patch": _op(
                "v1",
                "editComment",
                "Edit your comment",
                "Its author (the JWT subject that posted it) may change the text within "
                f"`EDIT_WINDOW` seconds of posting ({settings.edit_window:g} here); after "
                "that, 403. `edited_at` and `updated_at` become the edit's time. The edit is "
                "recorded in the audit log"
                + (
                    " and, under pre-moderation, the comment waits for approval again."
                    if pre
                    else "; under `MODERATION_MODE=pre` the comment waits for approval again."
                ),
                {
                    "200": _ok(
                        "The edited comment.",
                        ref("Comment"),
                        _example_comment(
                            body="Great reporting, thanks!",
                            created_at="2026-01-15T09:28:10.000Z",
                            edited_at=EXAMPLE_TIME,
                        ),
                    ),
                    "400": _invalid(one, "body", "must not be empty or whitespace only"),
                    **_errors(one, 401, 403, 404, 413, 429, 503, 507),
                    "415": _error(
                        one,
                        415,
                        headers={
                            "Accept-Patch": header(
                                f"`{ACCEPTED_PATCH_TYPES}`: the media types an edit may be "
                                "sent as (RFC 5789).",
                                required=True,
                            )
                        },
                    ),
                    "409": _error(
                        one,
                        409,
                        "the comment changed while it was being edited; send the edit again",
                        slugs=("conflict",),
                        description="Moderators moved the comment again and again while "
                        "the edit was judged (it is judged again each time: approved "
                        "meanwhile, the edit still applies). Nothing changed; sending the "
                        "edit again is safe.",
                    ),
                    "412": _write_412(one, "one comment carries no `ETag`"),
                },
                parameters=[
                    ref("CommentIdPath", "parameters"),
                    ref("CommentIfMatch", "parameters"),
                    ref("CommentIfNoneMatch", "parameters"),
                ],
                request_body=_json_body(
                    "CommentEdit",
                    {"body": "Great reporting, thanks!"},
                    "Only `body` can change.",
                ),
                security=AUTHOR_SECURITY,
            ),
            "delete": _op(
                "v1",
                "deleteComment",
                "Delete a comment (soft)",
                "Leaves a tombstone: the thread keeps the comment's place, its text and "
                "author are gone. Allowed to the comment's author (the JWT subject that "
                "posted it) and to moderators (`comments:moderate`), whatever the comment's "
                "status (pending and hidden ones too), in every auth mode; recorded in the "
                "audit log. Idempotent: deleting a tombstone again is a 204 that changes "
                "nothing. A pending or hidden comment that nothing replies to leaves no "
                "tombstone (nobody could read it): it is removed, and a repeat is a 404. "
                "Others get 403 for a public comment and 404 for one that is not public.",
                {
                    "204": {"description": "Deleted."},
                    **_errors(one, 401, 403, 404, 429, 503, 507),
                    "412": _write_412(one, "one comment carries no `ETag`"),
                },
                parameters=[
                    ref("CommentIdPath", "parameters"),
                    ref("CommentIfMatch", "parameters"),
                    ref("CommentIfNoneMatch", "parameters"),
                ],
                security=CREDENTIALS,
            ),
        },
        "/api/v1/config": {
            "get": _op(
                "v1",
                "getClientConfig",
                "This server's settings that clients adapt to",
                "Whether writes need a reader's credential (`AUTH_MODE`), whether comments "
                "wait for a moderator (`MODERATION_MODE`), the field limits and the edit "
                "window. The widget reads it once per page: it shows its sign-in notice "
                "instead of the form when writes need a credential, and sizes its fields. "
                "Public, cacheable for a few minutes.",
                {
                    "200": _ok(
                        "The settings.",
                        ref("ClientConfig"),
                        {
                            "auth_mode": "open",
                            "moderation_mode": "post",
                            "max_comment_length": 5000,
                            "max_author_name_length": 80,
                            "max_email_length": 254,
                            "edit_window_seconds": 900.0,
                        },
                        headers={
                            "Cache-Control": header(
                                f"`public, max-age={CONFIG_MAX_AGE}`.", required=True
                            )
                        },
                    ),
                    **_errors("/api/v1/config", 429),
                },
            )
        },
        counts: {
            "get": _op(
                "v1",
                "countComments",
                "Count published comments for many contents",
                f'For "N comments" badges on listing pages: up to {MAX_COUNT_IDS} content '
                "ids in one call, e.g. `?content_id=1&content_id=2`.",
                {
                    **_cacheable(
                        _ok(
                            "A count for every requested id.",
                            ref("Counts"),
                            {"counts": {"1": 12, "2": 0}},
                        ),
                        settings,
                    ),
                    **_errors(counts, 412, 429, 503),
                    "400": _invalid(counts, "content_id", "at most 100 content ids per call"),
                    "414": _request_line_too_long(counts),
                },
                parameters=[
                    ref("CountContentIds", "parameters"),
                    ref("IfNoneMatch", "parameters"),
                    ref("IfMatch", "parameters"),
                ],
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
                    "200": _ok("Alive.", ref("Health"), {"status": "ok", "version": "1.0.0"}),
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
                            ref("Ready"),
                            {"status": "ready", "schema_revision": "0001"},
                        ),
                        "503": _ok(
                            "Not ready; `reason` says why.",
                            ref("NotReady"),
                            {"status": "unavailable", "reason": "database unreachable"},
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


# Pages and scripts for people (comments/widget_views.py, web/docs.py): GET only, no parameters but
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


# comments/widget_views.py ``_page``: the console and the demo page, always fetched afresh.
_PAGE_HEADERS = {
    "Cache-Control": header(
        "`no-cache`: the page names the current scripts, so it is revalidated each time.",
        required=True,
    )
}

# web/common.py ``revalidated``: what the scripts and stylesheets answer.
_ASSET_HEADERS = {
    "ETag": header(
        "Strong validator of the file (a hash of its bytes): send it back in `If-None-Match`.",
        {"type": "string", "pattern": '^"[0-9a-f]+"$'},
        required=True,
    ),
    "Cache-Control": header(
        f"`public, max-age={ASSET_MAX_AGE}`: browsers and CDNs may keep the file a few minutes, "
        "then revalidate.",
        required=True,
    ),
}


def _ui_file(path: str, media: str) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """The responses and parameters of one page or file: the scripts and stylesheets carry
    an ETag and revalidate; the HTML pages are ``no-cache`` and never 304."""
    if media == "text/html":
        ok = _ok("The page.", {"type": "string"}, media=media, headers=_PAGE_HEADERS)
        return {"200": ok, "default": _unexpected(path)}, None
    ok = _ok("The file.", {"type": "string"}, media=media, headers=_ASSET_HEADERS)
    not_modified = {
        "description": "Not Modified: `If-None-Match` names the file's `ETag` (or is `*`). "
        "No body.",
        "headers": _ASSET_HEADERS,
    }
    responses = {"200": ok, "304": not_modified, "default": _unexpected(path)}
    return responses, [ref("AssetIfNoneMatch", "parameters")]


def ui_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, operation_id, summary, description, media in _UI_FILES:
        responses, params = _ui_file(path, media)
        paths[path] = {
            "get": _op("ops", operation_id, summary, description, responses, parameters=params)
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
                "200": _ok(
                    "The page.", {"type": "string"}, media="text/html", headers=_PAGE_HEADERS
                ),
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


def moderation_paths() -> dict[str, Any]:
    """Moderator and admin endpoints (moderation/views.py): always a scoped credential."""
    pending = "/api/v1/moderation/pending"
    bulk = "/api/v1/moderation/comments"
    bans = "/api/v1/moderation/bans"
    ban = "/api/v1/moderation/bans/{target}"
    audit = "/api/v1/admin/audit-log"
    moderate_note = " Needs the `comments:moderate` scope (or `admin`)."
    if_match = ref("ModerationIfMatch", "parameters")
    if_none_match = ref("ModerationIfNoneMatch", "parameters")
    ban_target = {
        "name": "target",
        "in": "path",
        "required": True,
        "description": "The ban target as listed, e.g. `email:troll@example.com`.",
        "schema": ref("BanTarget"),
        "example": "email:troll@example.com",
    }
    pending_params = [
        ref("ContentIdFilter", "parameters"),
        ref("AuthorFilter", "parameters"),
        ref("Limit", "parameters"),
        ref("OldestCursor", "parameters"),
        if_match,
    ]
    audit_params = [ref("Limit", "parameters"), ref("NewestCursor", "parameters"), if_match]
    example = {
        **_example_comment(status="pending"),
        "author_email": EXAMPLE_EMAIL,
        "author_subject": None,
    }
    return {
        pending: {
            "get": _op(
                "moderation",
                "listPending",
                "The pending queue",
                "Comments awaiting approval, oldest first, across all contents or of one, "
                "with their authors' email and subject: the same list as "
                "`GET /api/v1/moderation/comments?status=pending`." + moderate_note,
                {
                    "200": _ok(
                        "One page of the queue.",
                        ref("ModeratorPage"),
                        {
                            "items": [example],
                            "next_cursor": None,
                            "read_at": "2026-12-07T10:00:00.000Z",
                        },
                        headers={"Link": header('The next page: `<...>; rel="next"`.')},
                    ),
                    "400": _invalid(pending, "cursor", "is not a cursor this API issued"),
                    **_errors(pending, 401, 403, 412, 429, 503),
                },
                parameters=pending_params,
                security=MODERATOR_SECURITY,
            )
        },
        bulk: {
            "get": _op(
                "moderation",
                "listModeratedComments",
                "Comments in one moderation status",
                "Comments in one moderation status, oldest first, across all contents or of "
                "one, with their authors' email and subject. Hidden comments are found here "
                "to be published again (`approve`) or deleted; published ones of one content "
                "or author, with the authors the public lists never name, to be hidden or "
                "deleted." + moderate_note,
                {
                    "200": _ok(
                        "One page.",
                        ref("ModeratorPage"),
                        {
                            "items": [{**example, "status": "hidden"}],
                            "next_cursor": None,
                            "read_at": "2026-12-07T10:00:00.000Z",
                        },
                        headers={"Link": header('The next page: `<...>; rel="next"`.')},
                    ),
                    "400": _invalid(bulk, "status", models.MODERATION_STATUS_ERROR),
                    **_errors(bulk, 401, 403, 412, 429, 503),
                },
                parameters=[ref("ModerationStatus", "parameters"), *pending_params],
                security=MODERATOR_SECURITY,
            ),
            "post": _op(
                "moderation",
                "moderateComments",
                "Approve, hide or delete several comments",
                "One transaction and one audit-log entry for the whole batch; comments "
                "already in the target state are reported as `unchanged`. `delete` may name "
                "an `author` instead of `ids`: every comment of that author key, in every "
                f"status, at most {MAX_AUTHOR_DELETE} per call (`more: true`: call again); "
                "the audit entry keeps a SHA-256 of the key, not the key." + moderate_note,
                {
                    "200": _ok(
                        "Applied.",
                        ref("BulkResult"),
                        {"action": "approve", "changed": [42, 43], "unchanged": [44]},
                    ),
                    "400": _invalid(bulk, "action", "must be one of approve, hide, delete"),
                    **_errors(bulk, 401, 403, 413, 415, 429, 503, 507),
                    "412": _write_412(bulk, "moderation resources carry no `ETag`"),
                },
                parameters=[if_match, if_none_match],
                request_body=_json_body(
                    "BulkModeration",
                    {"action": "approve", "ids": [42, 43, 44]},
                    f"An action and 1 to {MAX_BULK_IDS} comment ids, or `delete` and an `author`.",
                ),
                security=MODERATOR_SECURITY,
            ),
        },
        bans: {
            "get": _op(
                "moderation",
                "listBans",
                "List banned authors",
                "The bans, newest first (by when they were made), one page at a time: "
                '`next_cursor` (and a `Link: rel="next"` header) leads to the next page '
                "until it is null." + moderate_note,
                {
                    "200": _ok(
                        "One page of bans.",
                        ref("BanList"),
                        {
                            "items": [
                                {
                                    "target": "email:troll@example.com",
                                    "reason": "spam",
                                    "created_by": "api_key:1a2b3c4d5e6f",
                                    "created_at": EXAMPLE_TIME,
                                }
                            ],
                            "next_cursor": None,
                        },
                        headers={"Link": header('The next page: `<...>; rel="next"`.')},
                    ),
                    "400": _invalid(bans, "cursor", "is not a cursor this API issued"),
                    **_errors(bans, 401, 403, 412, 429, 503),
                },
                parameters=[ref("Limit", "parameters"), ref("BanCursor", "parameters"), if_match],
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
                        ref("BanResult"),
                        {"target": "email:troll@example.com", "created": True},
                        headers={"Location": header("The ban's URL, for DELETE.", required=True)},
                    ),
                    "200": _ok(
                        "Was already banned; nothing changed.",
                        ref("BanResult"),
                        {"target": "email:troll@example.com", "created": False},
                        headers={"Location": header("The ban's URL, for DELETE.", required=True)},
                    ),
                    "400": _invalid(bans, "email", "give exactly one of email or subject"),
                    **_errors(bans, 401, 403, 413, 415, 429, 503, 507),
                    "412": _write_412(bans, "moderation resources carry no `ETag`"),
                },
                parameters=[if_match, if_none_match],
                request_body=_json_body(
                    "NewBan",
                    {"email": "troll@example.com", "reason": "spam"},
                    "Exactly one of `email` or `subject`, and an optional `reason`.",
                ),
                security=MODERATOR_SECURITY,
            ),
        },
        ban: {
            "get": _op(
                "moderation",
                "getBan",
                "Look up one ban",
                "Whether this author is banned, and the ban as the list gives it: found under "
                "any Unicode form of an address (`josé` precomposed or decomposed, as a ban "
                "stops it), so the `target` answered may be another form than the one asked "
                "for; 404 when there is none." + moderate_note,
                {
                    "200": _ok(
                        "The ban.",
                        ref("Ban"),
                        {
                            "target": "email:troll@example.com",
                            "reason": "spam",
                            "created_by": "api_key:1a2b3c4d5e6f",
                            "created_at": EXAMPLE_TIME,
                        },
                    ),
                    "400": _invalid(ban, "target", "must look like email:<address> or sub:<id>"),
                    **_errors(ban, 401, 403, 404, 412, 429, 503),
                },
                parameters=[ban_target, if_match],
                security=MODERATOR_SECURITY,
            ),
            "delete": _op(
                "moderation",
                "unbanAuthor",
                "Lift a ban",
                "The author may post again: the ban is lifted in every Unicode form of an "
                "address it stands in." + moderate_note,
                {
                    "204": {"description": "Lifted."},
                    "400": _invalid(ban, "target", "must look like email:<address> or sub:<id>"),
                    **_errors(ban, 401, 403, 404, 429, 503, 507),
                    "412": _write_412(ban, "moderation resources carry no `ETag`"),
                },
                parameters=[ban_target, if_match, if_none_match],
                security=MODERATOR_SECURITY,
            ),
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
                        ref("AuditPage"),
                        {
                            "items": [
                                {
                                    "id": 7,
                                    "actor": "api_key:1a2b3c4d5e6f",
                                    "action": "approve",
                                    "target": None,
                                    "comment_ids": [42, 43],
                                    "details": {"requested": [42, 43, 44]},
                                    "created_at": EXAMPLE_TIME,
                                }
                            ],
                            "next_cursor": None,
                        },
                        headers={"Link": header('The next page: `<...>; rel="next"`.')},
                    ),
                    "400": _invalid(audit, "limit", "must be between 1 and 100"),
                    **_errors(audit, 401, 403, 412, 429, 503),
                },
                parameters=audit_params,
                security=MODERATOR_SECURITY,
            )
        },
    }
