"""The original API, byte-compatible with existing clients (see README, "Legacy API")."""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, jsonify

from ..contract.requests import parse_content_id, validate_legacy_create
from ..events import comment_created
from ..identity.guards import require_write
from ..moderation.rules import without_body_identity
from ..web.common import emit, mounted_path, read_json, services
from ..web.errors import error_response
from .cache import Rendered
from .conditional import Preconditions, rendered, respond
from .rules import legacy_email_view

bp = Blueprint("legacy", __name__, url_prefix="/api/comment")


@bp.post("/new")
def create() -> Response:
    svc = services()
    identity = require_write()
    payload = read_json()
    reader = identity is not None and identity.is_reader
    if reader:
        payload = without_body_identity(payload)
    new = validate_legacy_create(payload, svc.limits, email_required=not reader)
    new = svc.comments.prepare(new, identity, body_field="comment")
    # Old clients only know SUCCESS; under pre-moderation the comment waits as pending.
    comment = svc.comments.create(new)
    emit(comment_created, api="legacy", status=comment.status)
    # Keys in the original's order (its Flask sorted them): the same bytes for old clients.
    return jsonify(
        {
            "message": f"comment created and associated with content_id {new.content_id}",
            "status": "SUCCESS",
        }
    )


@bp.get("/list/<content_id:content_id>")
def list_comments(content_id: str) -> Response:
    svc = services()
    content_id = parse_content_id(content_id)
    mode = svc.settings.legacy_email

    def render(rows: list[tuple[str | None, str]], truncated: bool) -> Rendered:
        response = jsonify([{"comment": c, "email": legacy_email_view(e, mode)} for e, c in rows])
        if truncated:
            # The array stays a bare array for old clients; the cap is announced in headers.
            response.headers["X-Comments-Truncated"] = "true"
            v1_list = mounted_path(f"/api/v1/contents/{quote(content_id, safe='')}/comments")
            response.headers["Link"] = f'<{v1_list}>; rel="alternate"'
        return rendered(response, "X-Comments-Truncated", "Link")

    conditions = Preconditions()
    read = svc.comments.read_legacy_list(content_id, render, conditions.not_modified)
    if read.value is None and not read.not_modified:
        # "No comments yet", the usual state of a new article, on a route CDNs are told to
        # cache: without its own Cache-Control a 404 is heuristically cacheable (RFC 9111
        # 4.2.2), and CDNs keep one for their default TTL (seconds to an hour), hiding the
        # first comments. It says what the 200 says. No ETag: a 304 never stands in for it.
        # Nor a 412: preconditions are ignored on a 404 (RFC 9110, section 13.2.1).
        return error_response(
            404,
            f"content_id {content_id} not found",
            title="Not Found",
            headers={"Cache-Control": svc.settings.read_cache_control},
        )
    return respond(read, svc.settings, conditions)
