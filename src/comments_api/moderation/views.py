"""Moderator and admin endpoints. Every call needs a credential with the right scope."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from flask import Blueprint, Response, jsonify, request

from ..comments.conditional import IfNoneMatchFailed, Preconditions, precondition_failed
from ..comments.render import moderator_view
from ..comments.rules import (
    AUDIT_LOG,
    STATUS_PENDING,
    NotFound,
    decode_ban_cursor,
    decode_cursor,
    encode_cursor,
    iso_timestamp,
)
from ..contract.requests import parse_content_filter, parse_limit, parse_moderation_status
from ..events import moderation_action
from ..identity.credentials import SCOPE_ADMIN, SCOPE_MODERATE
from ..identity.guards import require_scope
from ..web.common import emit, mounted_path, read_json, services
from .rules import (
    ban_target_forms,
    decode_listing_cursor,
    parse_author_filter,
    parse_ban,
    parse_ban_target,
    parse_bulk,
)
from .service import NOT_BANNED

bp = Blueprint("moderation", __name__, url_prefix="/api/v1")


@bp.after_request
def _never_stored(response: Response) -> Response:
    # Authors' emails and subjects, bans, the audit log: not for a browser's cache or disk
    # either (shared caches already pass on an Authorization request).
    response.headers["Cache-Control"] = "no-store"
    return response


def _if_match_fails() -> bool:
    """No moderation resource has an ETag, so only ``If-Match: *`` holds (RFC 9110,
    section 13.1.1): a console naming a tag it saw must not act on a state that may have
    moved since. Asked once the request is otherwise valid, as a 4xx wins over a 412."""
    return not Preconditions().if_match_holds(None)


def _if_none_match_fails() -> bool:
    """A write's ``If-None-Match: *`` ("only if it does not exist yet", RFC 9110, section
    13.1.2) on a target that exists: the queue, the ban list, or the ban being lifted."""
    return not Preconditions().if_none_match_holds_on_write()


@bp.get("/moderation/pending")
def pending_queue() -> Response:
    """The queue: the same listing as ``/moderation/comments?status=pending``."""
    require_scope(SCOPE_MODERATE)
    return _listing(STATUS_PENDING, "/api/v1/moderation/pending", {})


@bp.get("/moderation/comments")
def moderation_listing() -> Response:
    require_scope(SCOPE_MODERATE)  # before any parameter is judged: 401/403 come first
    status = parse_moderation_status(request.args.get("status"))
    return _listing(status, "/api/v1/moderation/comments", {"status": status})


def _listing(status: str, path: str, query: dict[str, str]) -> Response:
    limit = parse_limit(request.args.get("limit"))
    content_id = parse_content_filter(request.args.get("content_id"))
    raw_author = request.args.get("author")
    author = None if raw_author is None else parse_author_filter(raw_author)
    after_id = decode_listing_cursor(request.args.get("cursor"), status, content_id, author)
    if _if_match_fails():
        return precondition_failed()
    page = services().moderation.listing(
        status, content_id=content_id, limit=limit, after_id=after_id, author=author
    )
    response = jsonify(
        items=[moderator_view(c) for c in page.items],
        next_cursor=page.next_cursor,
        read_at=iso_timestamp(page.read_at),  # milliseconds, cut down: never after the read
    )
    if page.next_cursor:
        if content_id is not None:
            query["content_id"] = content_id
        if author is not None:
            query["author"] = author
        _link_next(response, path, {**query, "limit": str(limit), "cursor": page.next_cursor})
    return response


def _link_next(response: Response, path: str, query: dict[str, str]) -> None:
    """The next page's URL in a ``Link: rel="next"`` header, as every listing says it."""
    response.headers["Link"] = f'<{mounted_path(path)}?{urlencode(query)}>; rel="next"'


@bp.post("/moderation/comments")
def bulk_moderate() -> Response:
    """``{"action": "approve|hide|delete", "ids": [...], "if_status": [...]}`` or
    ``{"action": "delete", "author": "email:..."}``: one transaction, one audit row."""
    identity = require_scope(SCOPE_MODERATE)
    bulk = parse_bulk(read_json())
    if _if_match_fails():
        return precondition_failed()
    if _if_none_match_fails():
        raise IfNoneMatchFailed()
    if bulk.author is not None:
        erased, more = services().moderation.delete_author(bulk.author, identity.actor)
        emit(moderation_action, action=bulk.action, count=len(erased))
        # ``unchanged`` lists ids the caller named; by author it named none.
        return jsonify(action=bulk.action, changed=erased, unchanged=[], more=more)
    changed = services().moderation.bulk(
        bulk.action, bulk.ids, identity.actor, bulk.if_status, bulk.unedited_since
    )
    emit(moderation_action, action=bulk.action, count=len(changed))
    done = set(changed)
    unchanged = [i for i in bulk.ids if i not in done]
    return jsonify(action=bulk.action, changed=changed, unchanged=unchanged)


@bp.get("/moderation/bans")
def list_bans() -> Response:
    """The bans, newest first, a page at a time (``limit``, ``cursor``), as the audit log."""
    require_scope(SCOPE_MODERATE)
    limit = parse_limit(request.args.get("limit"))
    before = decode_ban_cursor(request.args.get("cursor"))
    if _if_match_fails():
        return precondition_failed()
    bans, next_cursor = services().moderation.bans(limit=limit, before=before)
    response = jsonify(
        items=[_ban_view(b) for b in bans],
        next_cursor=next_cursor,
    )
    if next_cursor:
        _link_next(
            response, "/api/v1/moderation/bans", {"limit": str(limit), "cursor": next_cursor}
        )
    return response


def _ban_view(ban: dict[str, Any]) -> dict[str, Any]:
    """A ban as the list's items and the one-ban lookup answer it."""
    return {**ban, "created_at": iso_timestamp(ban["created_at"])}


def _target_forms(target: str) -> tuple[str, tuple[str, ...]]:
    """A ban target from the URL, as stored, and the other forms a ban of it may stand in
    (the release before 0016's, taken on 0016's schema): each is looked up when the
    author posts."""
    author = parse_ban_target(target)
    return author, tuple(form for form in ban_target_forms(target) if form != author)


@bp.get("/moderation/bans/<ban_target:target>")
def get_ban(target: str) -> Response:
    """One ban, found under any form of its target; 404 when the author is not banned."""
    require_scope(SCOPE_MODERATE)
    author, others = _target_forms(target)
    ban = services().moderation.ban_of(author, *others)  # the 404 wins over a 412
    if _if_match_fails():
        return precondition_failed()
    return jsonify(_ban_view(ban))


@bp.post("/moderation/bans")
def ban_author() -> tuple[Response, int, dict[str, str]] | Response:
    identity = require_scope(SCOPE_MODERATE)
    ban = parse_ban(read_json())
    if _if_match_fails():
        return precondition_failed()
    if _if_none_match_fails():
        raise IfNoneMatchFailed()
    others = tuple(form for form in ban.forms if form != ban.target)
    created = services().moderation.ban(ban.target, ban.reason, identity.actor, *others)
    if created:
        emit(moderation_action, action="ban", count=1)
    location = f"/api/v1/moderation/bans/{quote(ban.target, safe=':@')}"
    return (
        jsonify(target=ban.target, created=created),
        201 if created else 200,
        {"Location": location},
    )


@bp.delete("/moderation/bans/<ban_target:target>")
def unban_author(target: str) -> tuple[str, int] | Response:
    identity = require_scope(SCOPE_MODERATE)
    author, others = _target_forms(target)
    if _if_match_fails() or _if_none_match_fails():
        if not services().moderation.is_banned(author, *others):
            raise NotFound(NOT_BANNED)  # the 404 it would have been wins
        if _if_match_fails():
            return precondition_failed()
        raise IfNoneMatchFailed()
    services().moderation.unban(author, identity.actor, *others)
    emit(moderation_action, action="unban", count=1)
    return "", 204


@bp.get("/admin/audit-log")
def audit_log() -> Response:
    require_scope(SCOPE_ADMIN)
    limit = parse_limit(request.args.get("limit"))
    before_id = decode_cursor(request.args.get("cursor"), AUDIT_LOG)
    if _if_match_fails():
        return precondition_failed()
    entries, last_id = services().moderation.audit(limit=limit, before_id=before_id)
    next_cursor = encode_cursor(last_id, AUDIT_LOG) if last_id is not None else None
    response = jsonify(
        items=[
            {
                "id": e.id,
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "comment_ids": e.comment_ids,
                "details": e.details,
                "created_at": iso_timestamp(e.created_at),
            }
            for e in entries
        ],
        next_cursor=next_cursor,
    )
    if next_cursor:
        _link_next(
            response, "/api/v1/admin/audit-log", {"limit": str(limit), "cursor": next_cursor}
        )
    return response
