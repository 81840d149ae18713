"""/openapi.json and /docs: the OpenAPI document and an interactive reference built from it.

/docs is Swagger UI (the files shipped in the ``flask-swagger-ui`` wheel; we use its
``dist/`` files only, not its blueprint, whose page has an inline script) started by our
own ``static/docs.js``, so the page's CSP allows scripts from this origin and nothing
inline. Under the reference, a plain HTML "Problem types" section carries the
``id="problem-<slug>"`` anchors that every error body's ``type`` links to
(``/docs#problem-<slug>``): they resolve even without JavaScript.

Both responses are built once per app, on first use, and kept in ``app.extensions``:
building the spec and the page took ~16 ms per request before.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from ..contract.problems import DOCS_PROBLEM_PREFIX
from ..contract.responses import ASSET_MAX_AGE
from ..contract.spec import build_spec
from .common import revalidated, services

bp = Blueprint("docs", __name__)

_BUILT_KEY = "comments_api.docs"

# Scripts and styles from this origin only (Swagger UI and docs.js), never inline; the
# stylesheet's icons are data: URIs; try-it-out calls this origin (connect-src 'self').
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# For the files themselves: nothing may run in their name.
ASSET_CSP = "default-src 'none'; frame-ancestors 'none'"

JS = "text/javascript"
CSS = "text/css"
# URL name -> (package, directory, file name, media type).
_ASSETS = {
    "swagger-ui-bundle.js": ("flask_swagger_ui", "dist", "swagger-ui-bundle.js", JS),
    "swagger-ui.css": ("flask_swagger_ui", "dist", "swagger-ui.css", CSS),
    "docs.js": ("comments_api", "static", "docs.js", JS),
    "docs.css": ("comments_api", "static", "docs.css", CSS),
}


@dataclass(frozen=True)
class _Built:
    spec_json: bytes
    page: bytes


def _built() -> _Built:
    """The spec's JSON and the page for this app, built on first use."""
    built: _Built | None = current_app.extensions.get(_BUILT_KEY)
    if built is None:
        spec = build_spec(services().settings)
        # jsonify once: the same bytes (key order, separators) as answering it each time.
        built = _Built(jsonify(spec).get_data(), render_docs_page(spec).encode())
        # Two threads may race here; both build the same thing, the first one stays.
        built = current_app.extensions.setdefault(_BUILT_KEY, built)
    return built


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return Response(_built().spec_json, mimetype="application/json")


@bp.get("/docs")
def docs_page() -> Response:
    response = Response(_built().page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"  # as the other pages
    return response


@dataclass(frozen=True)
class _Asset:
    data: bytes
    etag: str
    mimetype: str


@cache
def _asset(name: str) -> _Asset:
    package, folder, filename, mimetype = _ASSETS[name]
    # importlib.resources: works from a wheel, an editable install and the image alike.
    data = (resources.files(package) / folder / filename).read_bytes()
    return _Asset(data, hashlib.sha256(data).hexdigest()[:32], mimetype)


def _serve(name: str) -> Response:
    asset = _asset(name)
    response = Response(asset.data, mimetype=asset.mimetype)
    response.set_etag(asset.etag)
    response.cache_control.public = True
    response.cache_control.max_age = ASSET_MAX_AGE
    response.headers["Content-Security-Policy"] = ASSET_CSP
    return revalidated(response, asset.etag)  # 304 when the browser's copy is current


@bp.get("/docs/swagger-ui-bundle.js")
def swagger_ui_script() -> Response:
    return _serve("swagger-ui-bundle.js")


@bp.get("/docs/swagger-ui.css")
def swagger_ui_stylesheet() -> Response:
    return _serve("swagger-ui.css")


@bp.get("/docs/docs.js")
def docs_script() -> Response:
    return _serve("docs.js")


@bp.get("/docs/docs.css")
def docs_stylesheet() -> Response:
    return _serve("docs.css")


# --- the page -----------------------------------------------------------------------


def _inline(value: str) -> str:
    """Escape, then render `code` spans; problem types link to their entry."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(value))
    return re.sub(
        r"<code>/docs#problem-([a-z0-9-]+)</code>",
        r'<a href="#problem-\1"><code>/docs#problem-\1</code></a>',
        text,
    )


def render_docs_page(spec: dict[str, Any]) -> str:
    """The /docs page: Swagger UI's mount point, then the problem types as plain HTML."""
    title = html.escape(spec["info"]["title"])
    problems = "".join(
        f'<article id="problem-{html.escape(p["slug"])}"><h3>{html.escape(p["title"])} '
        f"<small>{p['status']} &middot; <code>{DOCS_PROBLEM_PREFIX}{html.escape(p['slug'])}"
        f"</code></small></h3><p>{_inline(p['description'])}</p></article>"
        for p in spec.get("x-problem-types", [])
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{title} API reference</title>"
        '<link rel=stylesheet href="/docs/swagger-ui.css">'
        '<link rel=stylesheet href="/docs/docs.css">'
        # No icon: otherwise the browser asks for /favicon.ico, a 404 in its console.
        '<link rel=icon href="data:,"></head><body>'
        '<main><div id="swagger-ui" data-spec-url="/openapi.json">'
        f"<h1>{title} API reference</h1><p>The interactive reference needs JavaScript. "
        'The OpenAPI document is at <a href="/openapi.json">/openapi.json</a>.</p></div>'
        '<section id="problems" class="problems"><h2>Problem types</h2>'
        "<p>Every v1 and ops error is <code>application/problem+json</code> (RFC 9457) whose "
        "<code>type</code> links to one of these entries; validation errors add "
        "<code>errors</code>, a list of <code>{field, message}</code>. Under "
        "<code>/api/comment/</code> the same errors use the legacy "
        '<code>{"status", "message"}</code> shape.</p>'
        f"{problems}</section></main>"
        '<script src="/docs/swagger-ui-bundle.js"></script>'
        '<script src="/docs/docs.js"></script></body></html>'
    )
