"""OpenAPI 3.1 description of the HTTP API (placeholder until the full spec lands)."""

from __future__ import annotations

import html
from typing import Any

from . import __version__


def build_spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "comments-api", "version": __version__},
        "paths": {},
    }


def render_docs_html(spec: dict[str, Any]) -> str:
    return f"<!doctype html><title>{html.escape(spec['info']['title'])}</title>"
