"""The OpenAPI document and a human-readable docs page rendered from it."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..openapi import build_spec, render_docs_html
from .common import services

bp = Blueprint("docs", __name__)


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(build_spec(services().settings))


@bp.get("/docs")
def docs_page() -> Response:
    response = Response(render_docs_html(build_spec(services().settings)), mimetype="text/html")
    # The page is static HTML with inline styles only: nothing else may load.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    )
    return response
