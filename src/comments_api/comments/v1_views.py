"""v1 REST API for new clients; documented in /openapi.json."""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request, url_for

from ..contract.requests import (
    parse_comment_id,
    parse_content_id,
    parse_count_ids,
    parse_limit,
    parse_order,
    validate_v1_create,
)
from ..contract.responses import CONFIG_MAX_AGE
from ..events import comment_created, moderation_action
from ..identity.guards import require_identity, require_write
from ..moderation.rules import ACTION_DELETE, parse_edit, without_body_identity
from ..web.common import emit, mounted_path, read_json, services
from ..web.errors import error_response
from .cache import Rendered
from .conditional import (
    Preconditions,
    precondition_failed,
    rendered,
    require_create_preconditions,
    require_no_tag,
    respond,
)
from .idempotency import idempotent_request, renderer, to_response
from .render import comment_view
from .rules import (
    MAX_AUTHOR_NAME_LENGTH,
    MAX_EMAIL_LENGTH,
    STATUS_PENDING,
    STATUS_PUBLISHED,
    Comment,
    NotFound,
    Page,
    decode_cursor,
)

bp = Blueprint("v1", __name__, url_prefix="/api/v1")


@bp.post("/contents/<content_id:content_id>/comments")
def create_comment(content_id: str) -> Response | tuple[Response, int, dict[str, str]]:
    svc = services()
    identity = require_write()
    payload = read_json()
    if identity is not None and identity.is_reader:
        payload = without_body_identity(payload)
    new = validate_v1_create(payload, parse_content_id(content_id), svc.limits)
    new = svc.comments.prepare(new, identity)
    keyed = idempotent_request(identity, new.content_id, payload, svc.settings.idempotency_ttl)
    # Once the request is known good, before anything is stored: a 412 is no key's first
    # answer, so a retry without the failing header is created (and then replayed).
    require_create_preconditions()
    if keyed is not None:
        render = renderer(comment_view, _location)
        stored = svc.comments.create_idempotent(new, keyed, render)
        if not stored.replayed:
            emit(
                comment_created,
                api="v1",
                status=STATUS_PENDING if stored.status == 202 else STATUS_PUBLISHED,
            )
        return to_response(stored)
    comment = svc.comments.create(new)
    emit(comment_created, api="v1", status=comment.status)
    if comment.status == STATUS_PENDING:
        # Accepted, not yet public: there is nothing at a Location to GET until approved.
        return jsonify(comment_view(comment)), 202, {}
    location = url_for("v1.get_comment", comment_id=comment.id)
    return jsonify(comment_view(comment)), 201, {"Location": location}


def _location(comment: Comment) -> str | None:
    if comment.status == STATUS_PENDING:
        return None  # not public yet: nothing at a Location to GET
    return url_for("v1.get_comment", comment_id=comment.id)


@bp.get("/contents/<content_id:content_id>/comments")
def list_comments(content_id: str) -> Response:
    svc = services()
    content_id = parse_content_id(content_id)
    limit = parse_limit(request.args.get("limit"))
    order = parse_order(request.args.get("order"))
    after_id = decode_cursor(request.args.get("cursor"), order)

    def render(page: Page) -> Rendered:
        body: dict[str, object] = {
            "content_id": content_id,
            "order": order,
            "items": [comment_view(c) for c in page.items],
            "next_cursor": page.next_cursor,
        }
        response = jsonify(body)
        if page.next_cursor:
            path = mounted_path(f"/api/v1/contents/{quote(content_id, safe='')}/comments")
            response.headers["Link"] = (
                f'<{path}?limit={limit}&order={order}&cursor={page.next_cursor}>; rel="next"'
            )
        return rendered(response, "Link")

    conditions = Preconditions()
    read = svc.comments.read_page(
        content_id,
        limit=limit,
        order=order,
        after_id=after_id,
        render=render,
        not_modified=conditions.not_modified,
    )
    return respond(read, svc.settings, conditions)


@bp.get("/comments/<comment_id>")
def get_comment(comment_id: str) -> Response:
    svc = services()
    # The lists' Cache-Control on the comment and on its 404: without one, both are
    # heuristically cacheable (RFC 9111 4.2.2), and a CDN would keep serving a comment a
    # moderator hid, or a 404 for one approved since, for its default TTL.
    cache_control = {"Cache-Control": svc.settings.read_cache_control}
    try:
        comment = svc.comments.get_public(parse_comment_id(comment_id))
    except NotFound as exc:
        return error_response(404, exc.message, problem_type=exc.code, headers=cache_control)
    # It has no ETag (not served from the read cache): only `If-Match: *` holds; a 404
    # above ignores If-Match (RFC 9110, section 13.2.1).
    if not Preconditions().if_match_holds(None):
        return precondition_failed()
    response = jsonify(comment_view(comment))
    response.headers.update(cache_control)
    return response


@bp.delete("/comments/<comment_id>")
def delete_comment(comment_id: str) -> tuple[str, int]:
    """The author (token subject) or a moderator; recorded in the audit log."""
    svc = services()
    identity = require_identity()
    if svc.comments.delete(identity, parse_comment_id(comment_id), require_no_tag):
        emit(moderation_action, action=ACTION_DELETE, count=1)
    return "", 204


@bp.patch("/comments/<comment_id>")
def edit_comment(comment_id: str) -> Response:
    """The author may change the text within EDIT_WINDOW seconds of posting."""
    svc = services()
    identity = require_identity()

    def read_body() -> str:
        # Called once the author may edit: a 4xx about the request wins over a 412.
        body = parse_edit(read_json(), svc.limits)
        require_no_tag()
        return body

    updated = svc.comments.edit(identity, parse_comment_id(comment_id), read_body)
    emit(moderation_action, action="edit", count=1)
    return jsonify(comment_view(updated))


@bp.get("/config")
def client_config() -> Response:
    """Settings a client adapts to (the widget: its sign-in gate and field limits)."""
    svc = services()
    response = jsonify(
        auth_mode=svc.settings.auth_mode,
        moderation_mode=svc.settings.moderation_mode,
        max_comment_length=svc.limits.max_comment_length,
        max_author_name_length=MAX_AUTHOR_NAME_LENGTH,
        max_email_length=MAX_EMAIL_LENGTH,
        edit_window_seconds=svc.settings.edit_window,
    )
    # Settings change only with a deployment: browsers and CDNs may keep it a while.
    response.cache_control.public = True
    response.cache_control.max_age = CONFIG_MAX_AGE
    return response


@bp.get("/counts")
def counts() -> Response:
    svc = services()
    ids = parse_count_ids(request.args.getlist("content_id"))

    def render(counts: dict[str, int]) -> Rendered:
        return rendered(jsonify({"counts": counts}))

    conditions = Preconditions()
    read = svc.comments.read_counts(ids, render, conditions.not_modified)
    return respond(read, svc.settings, conditions)
