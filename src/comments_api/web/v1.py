"""v1 REST API for new clients; documented in /openapi.json."""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request, url_for
from werkzeug.exceptions import Forbidden

from ..auth import SCOPE_MODERATE, edit_window_open, is_author, may_delete
from ..domain import (
    STATUS_DELETED,
    STATUS_PENDING,
    STATUS_PUBLISHED,
    Comment,
    NotFound,
    check_reply,
    decode_cursor,
    display_name,
    email_hash,
    parse_comment_id,
    parse_content_id,
    parse_count_ids,
    parse_limit,
    parse_order,
    validate_v1_create,
)
from ..events import comment_created, moderation_action
from ..moderation import (
    ACTION_DELETE,
    Banned,
    author_key,
    check_banned_words,
    parse_edit,
    prepare_comment,
    without_body_identity,
)
from ..storage import utcnow
from .auth import require_identity, require_write
from .common import emit, iso_timestamp, read_json, services
from .idempotency import idempotent_request, renderer, to_response

bp = Blueprint("v1", __name__, url_prefix="/api/v1")

# What the public sees in a thread: live comments and the tombstones that keep replies
# attached to their place.
PUBLIC_STATUSES = (STATUS_PUBLISHED, STATUS_DELETED)


def comment_view(comment: Comment) -> dict[str, object]:
    """The public representation: never the raw email address."""
    view: dict[str, object] = {
        "id": comment.id,
        "content_id": comment.content_id,
        "parent_id": comment.parent_id,
        "status": comment.status,
        "created_at": iso_timestamp(comment.created_at),
        "updated_at": iso_timestamp(comment.updated_at),
    }
    if comment.status == STATUS_DELETED:
        view.update(body=None, author=None, deleted_at=iso_timestamp(comment.deleted_at))
    else:
        view.update(
            body=comment.body,
            author={"name": display_name(comment), "email_hash": email_hash(comment.email)},
        )
    return view


def _visible(comment: Comment | None) -> Comment:
    if comment is None or comment.status not in PUBLIC_STATUSES:
        raise NotFound("comment not found")
    return comment


@bp.post("/contents/<content_id>/comments")
def create_comment(content_id: str) -> Response | tuple[Response, int, dict[str, str]]:
    svc = services()
    identity = require_write()
    payload = read_json()
    if identity is not None and identity.is_reader:
        payload = without_body_identity(payload)
    new = validate_v1_create(payload, parse_content_id(content_id), svc.limits)
    new = prepare_comment(
        new,
        identity,
        pre_moderation=svc.settings.moderation_mode == "pre",
        banned_words=svc.settings.banned_words,
    )
    if new.parent_id is not None:
        check_reply(svc.repo.get(new.parent_id), new)
    keyed = idempotent_request(identity, new.content_id, payload, svc.settings.idempotency_ttl)
    if keyed is not None:
        render = renderer(comment_view, _location)
        stored = svc.repo.create_idempotent(new, svc.abuse, keyed, render)
        if not stored.replayed:
            emit(
                comment_created,
                api="v1",
                status=STATUS_PENDING if stored.status == 202 else STATUS_PUBLISHED,
            )
        return to_response(stored)
    comment = svc.repo.create(new, svc.abuse)
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


@bp.get("/contents/<content_id>/comments")
def list_comments(content_id: str) -> Response:
    svc = services()
    content_id = parse_content_id(content_id)
    limit = parse_limit(request.args.get("limit"))
    order = parse_order(request.args.get("order"))
    after_id = decode_cursor(request.args.get("cursor"), order)
    page = svc.repo.list_page(
        content_id, limit=limit, order=order, after_id=after_id, statuses=PUBLIC_STATUSES
    )
    body: dict[str, object] = {
        "content_id": content_id,
        "order": order,
        "items": [comment_view(c) for c in page.items],
        "next_cursor": page.next_cursor,
    }
    response = jsonify(body)
    if page.next_cursor:
        path = f"/api/v1/contents/{quote(content_id, safe='')}/comments"
        response.headers["Link"] = (
            f'<{path}?limit={limit}&order={order}&cursor={page.next_cursor}>; rel="next"'
        )
    return response


@bp.get("/comments/<comment_id>")
def get_comment(comment_id: str) -> Response:
    comment = _visible(services().repo.get(parse_comment_id(comment_id)))
    return jsonify(comment_view(comment))


@bp.delete("/comments/<comment_id>")
def delete_comment(comment_id: str) -> tuple[str, int]:
    """The author (token subject) or a moderator; recorded in the audit log."""
    svc = services()
    identity = require_identity()
    comment = _visible(svc.repo.get(parse_comment_id(comment_id)))
    if not may_delete(identity, comment):
        raise Forbidden("only the comment's author or a moderator may delete it")
    if svc.repo.moderate([comment.id], ACTION_DELETE, identity.actor):
        emit(moderation_action, action=ACTION_DELETE, count=1)
    return "", 204


@bp.patch("/comments/<comment_id>")
def edit_comment(comment_id: str) -> Response:
    """The author may change the text within EDIT_WINDOW seconds of posting."""
    svc = services()
    identity = require_identity()
    comment = _visible(svc.repo.get(parse_comment_id(comment_id)))
    if comment.status == STATUS_DELETED:
        raise NotFound("comment not found")
    if not is_author(identity, comment):
        raise Forbidden("only the comment's author may edit it")
    if not edit_window_open(comment, utcnow(), svc.settings.edit_window):
        raise Forbidden(
            f"comments can be edited for {int(svc.settings.edit_window)} seconds after "
            "posting; this one can no longer be changed"
        )
    if svc.repo.is_banned(author_key(comment.email, comment.author_subject)):
        raise Banned("this author may not change comments")
    body = parse_edit(read_json(), svc.limits)
    check_banned_words(body, svc.settings.banned_words)
    status = comment.status
    if svc.settings.moderation_mode == "pre" and not identity.has(SCOPE_MODERATE):
        status = STATUS_PENDING  # changed text is new text: it waits for a moderator again
    updated = svc.repo.edit_body(comment.id, body, status, identity.actor)
    emit(moderation_action, action="edit", count=1)
    return jsonify(comment_view(updated or comment))


@bp.get("/counts")
def counts() -> Response:
    ids = parse_count_ids(request.args.getlist("content_id"))
    return jsonify({"counts": services().repo.counts(ids)})
