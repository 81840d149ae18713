"""Response headers of /openapi.json: every header the server sends on a documented answer,
declared on that answer, ``required`` exactly where it is always sent.

Two kinds:
- what one operation's answer carries (``Location``, ``Link``, ``ETag``, a read's
  ``Cache-Control``): paths.py declares it on that response with :func:`header`;
- what follows from a rule that spans operations (an id on every answer, the rate-limit
  budget, a status's challenge or wait, the moderation routes' ``no-store``, the HTTP
  server's own refusals): :func:`with_common_headers` adds it to every response the rule
  covers, so each rule is written here once.

Out of scope, described once as a whole instead: the CORS headers (``Vary: Origin``,
``Access-Control-*``, docs/security.md "CORS") and the browser security headers
(``Content-Security-Policy``, ``X-Content-Type-Options``, ``X-Frame-Options``,
``Referrer-Policy``, ``Cross-Origin-*-Policy``, docs/security.md "Security headers"):
directives to browsers, the same on every answer or per page, which no API client reads.
"""

from __future__ import annotations

from typing import Any

from ..settings import Settings

# Probe and scrape routes: excluded from the SLOs in deploy/monitoring (not user traffic)
# and from rate limiting (web/protection.py), so their answers carry no X-RateLimit-*.
# The one list of them.
OPS_ROUTES = ("/metrics", "/healthz", "/readyz", "/healthcheck")

# Statuses the HTTP server (comments_api.worker) also answers itself, before or without the
# app: a malformed request (400: a field that must be sent once sent twice, as a create's
# Idempotency-Key, no Host, a bare LF), a chunked body over MAX_BODY_BYTES (413), a request
# line over its limit (414), a request still being read when the worker stops (503), and
# under `default` a slow client (408), headers too large (431), an aborted request (500).
# Those answers carry `Cache-Control: no-store` and `X-Request-ID` but no rate-limit headers
# (the limiter never saw the request); the 503 carries `Retry-After`
# (worker.STOPPING_RETRY_AFTER), as the app's 503s do.
SERVER_ANSWERED = frozenset({"400", "413", "414", "503", "default"})

# An incoming X-Request-ID (an ingress's) that the app and the worker adopt rather than
# replace with a new random one (32 hex digits, which it matches too).
REQUEST_ID_PATTERN = "[A-Za-z0-9._-]{1,128}"

_INTEGER = {"type": "integer", "minimum": 0}

# The media type every request body is read as, named in each 415's Accept (web/common.py).
ACCEPTED_BODY_TYPE = "application/json"
# A PATCH body's media types, in its 415's Accept-Patch (RFC 5789, section 2.2): an edit's
# fields replace the comment's, which is what a JSON merge patch (RFC 7396) of it means.
ACCEPTED_PATCH_TYPES = "application/json, application/merge-patch+json"


def header(
    description: str, schema: dict[str, Any] | None = None, *, required: bool = False
) -> dict[str, Any]:
    """One response header object: ``required`` when every such answer carries it."""
    declared: dict[str, Any] = {"description": description}
    if required:
        declared["required"] = True
    declared["schema"] = schema or {"type": "string"}
    return declared


def _rate_limit(required: bool) -> dict[str, dict[str, Any]]:
    also = (
        ""
        if required
        else " Absent when the HTTP server answered itself (see `Cache-Control: no-store`)."
    )
    return {
        "X-RateLimit-Limit": header(
            "Requests this client's budget allows in the window that holds it back: of the "
            "windows it has used up, the one that ends last; else the one with the fewest "
            "requests left." + also,
            _INTEGER,
            required=required,
        ),
        "X-RateLimit-Remaining": header(
            "Requests left in that window." + also, _INTEGER, required=required
        ),
        "X-RateLimit-Reset": header(
            "When that window ends (Unix time, seconds; never before the answer)." + also,
            _INTEGER,
            required=required,
        ),
    }


RETRY_AFTER = header("Seconds to wait before retrying.", _INTEGER, required=True)
_CHALLENGE = (
    'The scheme to use and, for a rejected credential, why (RFC 6750): `Bearer realm="'
    'comments-api"` with `error="invalid_token"` (a bad credential), `"invalid_request"` '
    '(a token in the URL) or `"insufficient_scope"` and the `scope` needed.'
)
NO_STORE = header("`no-store`.", required=True)

# components.headers: what the rules below add, referred to rather than repeated on each of
# the document's responses. A $ref cannot change `required`, so a header that some answers
# of a status lack has a component of its own (`...IfSent`).
_COMPONENTS: dict[str, dict[str, Any]] = {
    "RequestId": header(
        "The caller's own `X-Request-ID` when it sent one of 1-128 characters "
        "`A-Z a-z 0-9 . _ -`, else a new random id. The access log line carries it too: "
        "quote it when reporting a problem.",
        {"type": "string", "pattern": f"^{REQUEST_ID_PATTERN}$"},
        required=True,
    ),
    **{
        name.replace("X-", "").replace("-", "") + ("" if required else "IfSent"): declared
        for required in (True, False)
        for name, declared in _rate_limit(required).items()
    },
    "RetryAfter": RETRY_AFTER,
    "RetryAfterUnavailable": header(
        "Seconds to wait before retrying: from the app, 2 (the database unreachable) or 5 "
        "(the identity provider unreachable, not ready); 1 from a worker that is stopping "
        "and answers a request it was still reading (another worker or replica takes the "
        "retry).",
        _INTEGER,
        required=True,
    ),
    "Challenge": header(_CHALLENGE, required=True),
    "ChallengeIfSent": header(
        _CHALLENGE + " On a 400, only when the token was sent in the URL; on a 403, only "
        "for a missing scope."
    ),
    "ModerationNoStore": header(
        "`no-store`: authors' addresses, bans and the audit log belong in no cache, a "
        "browser's disk included.",
        required=True,
    ),
    "NoStoreIfServerAnswered": header(
        "`no-store`: present when the HTTP server answered itself, before the app (a "
        "malformed request, a body or request line over its limit, a slow client, a worker "
        "stopping), and on a moderation route's answers but its 405."
    ),
    "Allow": header("On a 405: the methods this path takes."),
}
_RATE_LIMIT = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def header_components() -> dict[str, Any]:
    return {name: dict(declared) for name, declared in _COMPONENTS.items()}


def _ref(name: str) -> dict[str, str]:
    assert name in _COMPONENTS, name
    return {"$ref": f"#/components/headers/{name}"}


def with_common_headers(paths: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Every response of ``paths`` with the headers the server's cross-cutting rules add
    (web/protection.py, identity/guards.py, telemetry/http_hooks.py, moderation/views.py,
    comments_api.worker), declared once each."""
    for path, item in paths.items():
        limited = settings.ratelimit_enabled and path not in OPS_ROUTES
        moderation = path.startswith(("/api/v1/moderation/", "/api/v1/admin/"))
        for op in item.values():
            for status, response in op["responses"].items():
                common: dict[str, Any] = {"X-Request-ID": _ref("RequestId")}
                if limited:
                    # Every answer to a rate-limited request, whatever its status.
                    suffix = "IfSent" if status in SERVER_ANSWERED else ""
                    for name in _RATE_LIMIT:
                        common[name] = _ref(name.replace("X-", "").replace("-", "") + suffix)
                if status in ("429", "507"):
                    common["Retry-After"] = _ref("RetryAfter")
                elif status == "503":
                    common["Retry-After"] = _ref("RetryAfterUnavailable")
                if status == "401":
                    common["WWW-Authenticate"] = _ref("Challenge")
                elif status in ("400", "403", "default"):
                    # A token in the URL (400), a missing scope (403: always that on the
                    # moderation routes), a 403 an operation does not list (default).
                    always = status == "403" and moderation
                    common["WWW-Authenticate"] = _ref("Challenge" if always else "ChallengeIfSent")
                if moderation and status != "default":
                    # moderation/views.py's after_request, on every answer of its routes
                    # (a 405 matches no route, so it has none).
                    common["Cache-Control"] = _ref("ModerationNoStore")
                elif status in SERVER_ANSWERED:
                    common["Cache-Control"] = _ref("NoStoreIfServerAnswered")
                if status == "default":
                    common["Allow"] = _ref("Allow")
                # What the operation declares itself is more precise: it wins.
                response["headers"] = {**common, **response.get("headers", {})}
    return paths
