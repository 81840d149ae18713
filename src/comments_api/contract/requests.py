"""Requests parsed into domain values: the entry points views and services call.

Each delegates to the request models in ``contract.models`` (they validate and generate the
schemas) and raises the domain's ``InvalidInput``/``NotFound`` with the service's messages.
"""

from __future__ import annotations

import re
from typing import Any

from ..comments.rules import (
    DEFAULT_PAGE_SIZE,
    MAX_COUNT_IDS,
    MAX_PAGE_SIZE,
    FieldError,
    InvalidInput,
    Limits,
    NewComment,
    NotFound,
    content_id_problem,
)
from . import models as _models

_ASCII_INT_RE = re.compile(r"-?[0-9]+")


def parse_content_id(value: object, field_name: str = "content_id") -> str:
    """Normalise a content id: ``1``, ``1.0`` and ``"1"`` name the same content."""
    try:
        return str(_models.LEGACY_CONTENT_ID.validate(value))
    except _models.ValidationError:
        problem = content_id_problem(value) or "must be a string or an integer"
        raise InvalidInput([FieldError(field_name, problem)]) from None


def validate_legacy_create(
    payload: object, limits: Limits, email_required: bool = True
) -> NewComment:
    """The original ``POST /api/comment/new`` body: email, comment, content_id.

    ``email_required=False`` when a sign-in token supplies the author instead.
    """
    models = _models.comment_models(limits.max_comment_length)
    model = models.legacy if email_required else models.legacy_signed_in
    valid: Any = model.parse(payload)
    return NewComment(content_id=valid.content_id, body=valid.comment, email=valid.email)


def validate_v1_create(payload: object, content_id: str, limits: Limits) -> NewComment:
    """v1 create body: ``body`` plus optional author fields and ``parent_id``."""
    valid: Any = _models.comment_models(limits.max_comment_length).new.parse(payload)
    return NewComment(
        content_id=content_id,
        body=valid.body,
        email=valid.email,
        author_name=valid.author_name,
        parent_id=valid.parent_id,
    )


def validate_edit(payload: object, limits: Limits) -> str:
    """An author's edit: ``{"body": "..."}`` and nothing else; returns the new text."""
    valid: Any = _models.comment_models(limits.max_comment_length).edit.parse(payload)
    return str(valid.body)


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    try:
        return int(_models.LIMIT.validate(raw))
    except _models.ValidationError:
        # ASCII digits only: int() also takes "\u0663", " 3" and "1_0".
        if not _ASCII_INT_RE.fullmatch(raw):
            raise InvalidInput([FieldError("limit", "must be an integer")]) from None
        raise InvalidInput(
            [FieldError("limit", f"must be between 1 and {MAX_PAGE_SIZE}")]
        ) from None


def parse_order(raw: str | None) -> str:
    # An empty value means the default, as it always has.
    try:
        return str(_models.ORDER.validate(raw or "oldest"))
    except _models.ValidationError:
        raise InvalidInput([FieldError("order", "must be 'oldest' or 'newest'")]) from None


def parse_moderation_status(raw: str | None) -> str:
    if raw is None:
        return _models.MODERATION_STATUSES[0]
    try:
        return str(_models.MODERATION_STATUS.validate(raw))
    except _models.ValidationError:
        raise InvalidInput([FieldError("status", _models.MODERATION_STATUS_ERROR)]) from None


def parse_content_filter(raw: str | None) -> str | None:
    """An optional ``content_id`` query parameter: absent means every content."""
    return None if raw is None else parse_content_id(raw)


def parse_count_ids(values: list[str]) -> list[str]:
    try:
        valid = _models.COUNT_CONTENT_IDS.validate(values)
    except _models.ValidationError:
        if not values:
            raise InvalidInput([FieldError("content_id", "give at least one content_id")]) from None
        if len(values) > MAX_COUNT_IDS:
            raise InvalidInput(
                [FieldError("content_id", f"at most {MAX_COUNT_IDS} content ids per call")]
            ) from None
        for value in values:
            parse_content_id(value)  # raises with the first bad id's problem
        raise
    return list(dict.fromkeys(valid))


def parse_comment_id(raw: str) -> int:
    """A comment id from a URL: ASCII digits only ("\u0663" and "\u00b2" are not ids)."""
    try:
        return int(_models.PATH_COMMENT_ID.validate(raw))
    except _models.ValidationError:
        # Never echo the raw path segment: it is the caller's, not ours, to show.
        raise NotFound("comment not found") from None
