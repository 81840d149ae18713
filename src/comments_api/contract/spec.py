"""The assembled OpenAPI 3.1 document (web/docs.py builds it once per app and serves it).

The document is plain data, built from the deployment's settings (limits, auth mode,
moderation mode) so what it promises is what this instance enforces. It is checked by
tests/test_openapi.py: every Flask route must be documented with its methods, real
responses must match the documented schemas, and every problem ``type`` the code can
emit must have an anchor on /docs. Request-body schemas are generated from the models
(models.py) that validate those bodies, so the two cannot disagree.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from .. import __version__
from ..settings import Settings
from . import paths as _paths
from .components import schemas
from .headers import header_components, with_common_headers
from .paths import (
    JSON,
    moderation_paths,
    parameters,
    ui_paths,
    with_credential_errors,
    with_rate_limit_errors,
)
from .problems import problem_types

Spec = dict[str, Any]


def build_spec(settings: Settings | None = None) -> Spec:
    """The OpenAPI 3.1 document for a deployment with these settings (defaults if None)."""
    settings = settings or Settings()
    paths = with_common_headers(
        with_credential_errors(
            with_rate_limit_errors({**_paths.paths(settings), **moderation_paths(), **ui_paths()})
        ),
        settings,
    )
    problems = problem_types(settings)
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
                "`X-RateLimit-Remaining` and `X-RateLimit-Reset` on every answer to a "
                "rate-limited request, whatever its status, not only on a 429): "
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
                "Every response carries `X-Request-ID`: the caller's own when it sent one "
                "of 1-128 characters `A-Z a-z 0-9 . _ -`, else a new random id. The access "
                "log line carries it too, so quote it when reporting a problem.\n\n"
                "Each response declares the headers it carries beyond the standard ones, "
                "marked required where it always carries them, except two sets that are "
                "the same for every answer and meant for browsers: the CORS headers "
                "(`Vary: Origin`, `Access-Control-*`, with an allowlist set) and the "
                "security headers (`Content-Security-Policy`, `X-Content-Type-Options`, "
                "`X-Frame-Options`, `Referrer-Policy`, and on the pages and widget "
                "scripts `Cross-Origin-Opener-Policy` or `Cross-Origin-Resource-Policy`).\n\n"
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
            "schemas": schemas(settings),
            "parameters": parameters(),
            "headers": header_components(),
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
            example_path = _paths.example_path(path)
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
