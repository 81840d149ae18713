"""Flask glue for credentials: who is calling (``g.identity``) and may they do this?

``Authorization: Bearer cak_...`` is an API key, any other bearer token a JWT; a token in
the URL is refused. Requests without the header cost nothing here: no token parsing, no
database.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request
from werkzeug.exceptions import Forbidden, Unauthorized

from ..web.common import services
from ..web.errors import error_response
from .credentials import (
    SCOPE_WRITE,
    AuthError,
    AuthUnavailable,
    Identity,
)

log = logging.getLogger(__name__)

REALM = "comments-api"
# RFC 6750's URI query parameter for a bearer token (section 2.3), which we never accept.
_URL_PARAM = "access_token"


def _challenge(description: str | None, error: str | None, scope: str | None = None) -> str:
    """A ``WWW-Authenticate`` value: how to authenticate, and what was wrong (RFC 6750)."""
    challenge = f'Bearer realm="{REALM}"'
    if error and description:
        # Header values must be ASCII-safe; the text may quote an attacker's "alg".
        safe = description.encode("ascii", "backslashreplace").decode().replace('"', "'")
        challenge += f', error="{error}", error_description="{safe}"'
    if scope:
        challenge += f', scope="{scope}"'
    return challenge


class _Challenge(Unauthorized):
    """401 that tells the client how to authenticate (RFC 6750)."""

    def __init__(self, description: str, error: str | None = None) -> None:
        super().__init__(description)
        self.challenge = _challenge(description, error)

    def get_headers(self, *args: object, **kwargs: object) -> list[tuple[str, str]]:
        return [("WWW-Authenticate", self.challenge)]


class _ScopeRefused(Forbidden):
    """403 for a valid credential without the scope: RFC 6750 (section 3) requires the
    challenge here too, naming the scope, so a client knows which credential to get."""

    def __init__(self, scope: str) -> None:
        description = f"this credential lacks the {scope!r} scope"
        super().__init__(description)
        self.challenge = _challenge(description, "insufficient_scope", scope)

    def get_headers(self, *args: object, **kwargs: object) -> list[tuple[str, str]]:
        return [("WWW-Authenticate", self.challenge)]


def _identify() -> None:
    """before_request: resolve the credential; a bad one is reported after rate limiting."""
    # The request and g proxies resolved once: each access is a context-variable lookup.
    req = request._get_current_object()  # type: ignore[attr-defined]
    ctx_g = g._get_current_object()  # type: ignore[attr-defined]
    ctx_g.identity = None
    ctx_g.auth_error = None
    if req.query_string and _URL_PARAM in req.args:
        # Ignoring it would post as anonymous a reader who thinks they signed in, and the
        # token would sit in every proxy's access log: say where it belongs instead.
        ctx_g.auth_error = _URL_PARAM
        return
    # What request.headers.get("Authorization") reads, without its KeyError when the
    # header is absent (an anonymous request, the usual one).
    header = req.environ.get("HTTP_AUTHORIZATION")
    if header is None:
        return
    # Any whitespace after the scheme: "Bearer<TAB>token" is a token, not anonymous.
    scheme, token = ([*header.split(None, 1), "", ""])[:2]
    if scheme.lower() != "bearer":
        # Not ours (e.g. Basic from a password-protected staging proxy): anonymous.
        return
    token = token.strip()
    if not token:
        ctx_g.auth_error = "send credentials as 'Authorization: Bearer <API key or token>'"
        return
    try:
        identity = services().identity.authenticate(token)
    except AuthError as exc:
        ctx_g.auth_error = exc.message
        return
    except AuthUnavailable as exc:
        log.warning("cannot verify a token: %s", exc)
        ctx_g.auth_error = "unavailable"
        return
    ctx_g.identity = identity


def _reject_bad_credentials() -> Response | None:
    """before_request, after the limiter: a wrong credential is never silently ignored."""
    error = g._get_current_object().get("auth_error")  # type: ignore[attr-defined]
    if error is None:
        return None
    if error == _URL_PARAM:
        description = "send the token as 'Authorization: Bearer <token>', never in the URL"
        return error_response(
            400,
            description,
            headers={"WWW-Authenticate": _challenge(description, "invalid_request")},
        )
    if error == "unavailable":
        return error_response(
            503,
            "the identity provider cannot be reached to verify the token; retry shortly",
            headers={"Retry-After": "5"},
        )
    raise _Challenge(error, "invalid_token" if request.headers.get("Authorization") else None)


def install_identify(app: Flask) -> None:
    app.before_request(_identify)


def install_reject(app: Flask) -> None:
    app.before_request(_reject_bad_credentials)


def current_identity() -> Identity | None:
    return g._get_current_object().get("identity")  # type: ignore[attr-defined,no-any-return]


def require_write() -> Identity | None:
    """The caller of a comment write: anonymous only in AUTH_MODE=open."""
    identity = current_identity()
    if identity is None:
        if services().settings.auth_mode == "required":
            raise _Challenge("this service requires an API key or a sign-in token to post")
        return None
    if not identity.has(SCOPE_WRITE):
        raise _ScopeRefused(SCOPE_WRITE)
    return identity


def require_identity() -> Identity:
    """Any valid credential, whatever the auth mode (authors editing their comments)."""
    identity = current_identity()
    if identity is None:
        raise _Challenge("sign in (Bearer token) or use an API key for this action")
    return identity


def require_scope(scope: str) -> Identity:
    """Moderation and admin calls: always a credential, always the scope."""
    identity = require_identity()
    if not identity.has(scope):
        raise _ScopeRefused(scope)
    return identity
