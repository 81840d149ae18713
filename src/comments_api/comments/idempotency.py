"""``Idempotency-Key`` on v1 creates: a retried POST gets the first answer, stores nothing.

The key and the first answer live in the database (``idempotency_keys``), written in the
comment's own transaction, so a retry that lands on another worker or replica is
recognised too. Keys are scoped per caller and forgotten after ``IDEMPOTENCY_TTL``.
Deleting the comment erases its text and author from that answer in the delete's own
transaction (store/repository.py, ``moderate``): a retry then gets the tombstone, with the
first answer's status and ``Location``, and the comment is never created again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from flask import Response, current_app, request

from ..identity.credentials import Identity
from ..store.repository import IdempotentRequest, StoredResponse
from .rules import Comment, FieldError, InvalidInput

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def idempotent_request(
    identity: Identity | None, content_id: str, payload: object, ttl: float
) -> IdempotentRequest | None:
    """The request's key and fingerprint, or None when it sent no key."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    # Printable ASCII (a UUID is the usual choice); anything else is a client mistake.
    if not 1 <= len(key) <= MAX_KEY_LENGTH or any(not " " <= ch <= "~" for ch in key):
        raise InvalidInput(
            [FieldError(HEADER, f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")]
        )
    # The fingerprint is of what was asked, independent of key order and whitespace.
    canonical = json.dumps([content_id, payload], sort_keys=True, separators=(",", ":"))
    return IdempotentRequest(
        scope=identity.actor if identity is not None else "anonymous",
        key=key,
        request_hash=hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest(),
        ttl=ttl,
    )


def renderer(
    view: Callable[[Comment], dict[str, object]], location: Callable[[Comment], str | None]
) -> Callable[[Comment], tuple[int, str, str | None]]:
    """What the first answer is: 201 with a Location, or 202 while pending."""

    def render(comment: Comment) -> tuple[int, str, str | None]:
        where = location(comment)
        body = current_app.json.dumps(view(comment))
        return (201 if where is not None else 202), body, where

    return render


def to_response(stored: StoredResponse) -> Response:
    body = stored.body
    if stored.replayed and '"edited_at"' not in body:
        body = _with_edited_at(body)
    response = current_app.response_class(
        body + "\n", status=stored.status, mimetype="application/json"
    )
    if stored.location is not None:
        response.headers["Location"] = stored.location
    if stored.replayed:
        # As in the IETF idempotency-key draft's examples and Stripe: says it is a replay.
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _with_edited_at(body: str) -> str:
    """An answer stored before migration 0008 (up to IDEMPOTENCY_TTL earlier) lacks the
    ``edited_at`` the contract requires: a created comment was not edited, so it is null,
    placed after ``updated_at`` as fresh answers have it."""
    try:
        answer = json.loads(body)
    except ValueError:
        return body
    if not isinstance(answer, dict) or "updated_at" not in answer:
        return body
    completed: dict[str, object] = {}
    for name, value in answer.items():
        completed[name] = value
        if name == "updated_at":
            completed["edited_at"] = None
    return json.dumps(completed, ensure_ascii=False, separators=(",", ":"))
