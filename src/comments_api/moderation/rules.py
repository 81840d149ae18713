"""Moderation and abuse rules: statuses, bans, duplicates, flood limits, banned words.

Plain Python, no Flask and no SQL. Storage gathers the facts (how many recent posts by
this author, is the author banned) in one indexed query; these functions decide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

from ..comments.rules import (
    LINE_PATTERN,
    MAX_EMAIL_LENGTH,
    MAX_ID,
    OPTIONAL_TEXT_PATTERN,
    STATUS_DELETED,
    STATUS_HIDDEN,
    STATUS_PENDING,
    STATUS_PUBLISHED,
    Conflict,
    DomainError,
    FieldError,
    InvalidInput,
    Limits,
    NewComment,
    as_id,
    validate_v1_create,
)
from ..identity.credentials import SCOPE_MODERATE, Identity

ACTION_APPROVE = "approve"
ACTION_HIDE = "hide"
ACTION_DELETE = "delete"
BULK_ACTIONS = (ACTION_APPROVE, ACTION_HIDE, ACTION_DELETE)
MAX_BULK_IDS = 100
MAX_SUBJECT_LENGTH = 200
MAX_REASON_LENGTH = 500
# Ban emails are matched against stored authors, so anything with an "@" and no control
# characters may be banned (a JWT may carry an address our comment form would refuse).
BAN_EMAIL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f@]*@[^\x00-\x1f\x7f-\x9f]*(?![\s\S])"
BAN_TARGET_PATTERN = r"^(?:email|sub):[^\x00-\x1f\x7f-\x9f]+(?![\s\S])"
_BAN_EMAIL_RE = re.compile(BAN_EMAIL_PATTERN)
_LINE_RE = re.compile(LINE_PATTERN)
_OPTIONAL_TEXT_RE = re.compile(OPTIONAL_TEXT_PATTERN)
_BAN_TARGET_RE = re.compile(BAN_TARGET_PATTERN)

# Which statuses each action may move a comment out of; anything else is left alone
# (approving a deleted comment must not resurrect it).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    ACTION_APPROVE: (STATUS_PENDING, STATUS_HIDDEN),
    ACTION_HIDE: (STATUS_PUBLISHED, STATUS_PENDING),
    ACTION_DELETE: (STATUS_PUBLISHED, STATUS_PENDING, STATUS_HIDDEN),
}
TARGET_STATUS = {
    ACTION_APPROVE: STATUS_PUBLISHED,
    ACTION_HIDE: STATUS_HIDDEN,
    ACTION_DELETE: STATUS_DELETED,
}


class Banned(DomainError):
    code = "author-banned"
    http_status = 403


class TooManyComments(DomainError):
    code = "too-many-comments"
    http_status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, retry_after))}


class Duplicate(Conflict):
    # Its own problem type, so metrics count it as reason="duplicate" (README, Metrics).
    code = "duplicate"


@dataclass(frozen=True)
class AbuseRules:
    duplicate_window: float = 600.0
    thread_author_max: int = 20
    thread_author_window: float = 3600.0


@dataclass(frozen=True)
class AuthorActivity:
    """What storage found about this author on this content, inside the windows."""

    recent: int  # comments in the thread-author window
    duplicates: int  # same text in the duplicate window
    banned: bool


def author_key(email: str | None, subject: str | None) -> str | None:
    """Who wrote a comment, for bans and flood checks: the token subject wins over email."""
    if subject:
        return f"sub:{subject}"
    if email:
        return f"email:{email.strip().lower()}"
    return None


def check_activity(activity: AuthorActivity, rules: AbuseRules) -> None:
    if activity.banned:
        raise Banned("this author may not post comments")
    if activity.duplicates:
        raise Duplicate("you already posted this comment here; duplicates are not accepted")
    if activity.recent >= rules.thread_author_max:
        raise TooManyComments(
            f"at most {rules.thread_author_max} comments per author on one content every "
            f"{int(rules.thread_author_window)} seconds; try again later",
            retry_after=int(rules.thread_author_window),
        )


@lru_cache(maxsize=8)
def _banned_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    cleaned = sorted({w.strip().casefold() for w in words if w.strip()}, key=len, reverse=True)
    if not cleaned:
        return None
    # Whole words only ("class" must not trip on "ass"); \w is Unicode-aware.
    alternatives = "|".join(re.escape(w) for w in cleaned)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def check_banned_words(text: str, words: tuple[str, ...], field: str = "body") -> None:
    """Reject text containing a configured word; the error never repeats the word."""
    pattern = _banned_pattern(words)
    if pattern is not None and pattern.search(text.casefold()):
        raise InvalidInput(
            [FieldError(field, "contains language this site does not accept; please rephrase")]
        )


def parse_bulk(payload: object) -> tuple[str, list[int]]:
    """``{"action": "approve|hide|delete", "ids": [1, 2]}``."""
    if not isinstance(payload, dict):
        raise InvalidInput([FieldError("body", "must be a JSON object")])
    errors: list[FieldError] = []
    for key in sorted(set(payload) - {"action", "ids"}):
        errors.append(FieldError(key, "is not an accepted field"))
    action = payload.get("action")
    if action not in BULK_ACTIONS:
        errors.append(FieldError("action", f"must be one of {', '.join(BULK_ACTIONS)}"))
    raw_ids = payload.get("ids")
    ids = [as_id(i) for i in raw_ids] if isinstance(raw_ids, list) else []
    if not ids or len(ids) > MAX_BULK_IDS or None in ids:
        errors.append(
            FieldError("ids", f"must be a list of 1 to {MAX_BULK_IDS} comment ids (1 to {MAX_ID})")
        )
    if errors:
        raise InvalidInput(errors)
    assert isinstance(action, str)
    return action, [i for i in dict.fromkeys(ids) if i is not None]


@dataclass(frozen=True)
class BanRequest:
    target: str  # an author key: email:<address> or sub:<subject>
    reason: str | None


def parse_ban(payload: object) -> BanRequest:
    """``{"email": ...}`` or ``{"subject": ...}``, plus an optional ``reason``."""
    if not isinstance(payload, dict):
        raise InvalidInput([FieldError("body", "must be a JSON object")])
    errors: list[FieldError] = []
    for key in sorted(set(payload) - {"email", "subject", "reason"}):
        errors.append(FieldError(key, "is not an accepted field"))
    email, subject = payload.get("email"), payload.get("subject")
    target: str | None = None
    # Present-but-null counts as given (and invalid), as the schema's oneOf says.
    if ("email" in payload) == ("subject" in payload):
        errors.append(FieldError("email", "give exactly one of email or subject"))
    elif "email" in payload:
        if (
            not isinstance(email, str)
            or len(email) > MAX_EMAIL_LENGTH
            or not _BAN_EMAIL_RE.search(email)
        ):
            errors.append(FieldError("email", "must be an email address"))
        else:
            target = author_key(email, None)
    elif (
        not isinstance(subject, str)
        or len(subject) > MAX_SUBJECT_LENGTH
        or not _LINE_RE.search(subject)
    ):
        errors.append(
            FieldError(
                "subject", f"must be 1 to {MAX_SUBJECT_LENGTH} characters, no control characters"
            )
        )
    else:
        target = author_key(None, subject)
    reason = payload.get("reason")
    if reason is not None and (
        not isinstance(reason, str)
        or len(reason) > MAX_REASON_LENGTH
        or not _OPTIONAL_TEXT_RE.search(reason)
    ):
        errors.append(
            FieldError(
                "reason",
                f"must be a string of at most {MAX_REASON_LENGTH}, no control characters "
                "but tab and newline",
            )
        )
    if errors:
        raise InvalidInput(errors)
    assert target is not None
    return BanRequest(target=target, reason=reason)


def parse_ban_target(raw: str) -> str:
    """A ban target from a URL: ``email:...`` or ``sub:...`` exactly as listed."""
    kind, _, value = raw.partition(":")
    if not _BAN_TARGET_RE.search(raw):
        raise InvalidInput([FieldError("target", "must look like email:<address> or sub:<id>")])
    return raw if kind == "sub" else f"email:{value.strip().lower()}"


@dataclass(frozen=True)
class AuditEntry:
    id: int
    actor: str
    action: str
    target: str | None
    comment_ids: list[int]
    details: dict[str, Any]
    created_at: datetime


# Fields through which a body could claim an identity; dropped when a token proves one.
BODY_IDENTITY_FIELDS = frozenset({"email", "author_name"})


def without_body_identity(payload: object) -> object:
    """A logged-in reader's body minus any identity it claims: the token decides."""
    if isinstance(payload, dict):
        return {k: v for k, v in payload.items() if k not in BODY_IDENTITY_FIELDS}
    return payload


def prepare_comment(
    new: NewComment,
    identity: Identity | None,
    *,
    pre_moderation: bool,
    banned_words: tuple[str, ...],
    body_field: str = "body",
) -> NewComment:
    """Apply the write rules that need no database: words, author identity, moderation."""
    check_banned_words(new.body, banned_words, body_field)
    if identity is not None and identity.is_reader:
        new = replace(
            new, email=identity.email, author_name=identity.name, author_subject=identity.id
        )
    if pre_moderation and not (identity is not None and identity.has(SCOPE_MODERATE)):
        new = replace(new, status=STATUS_PENDING)
    return new


def parse_edit(payload: object, limits: Limits) -> str:
    """An author's edit: ``{"body": "..."}`` and nothing else."""
    if not isinstance(payload, dict):
        raise InvalidInput([FieldError("body", "must be a JSON object")])
    extra = sorted(set(payload) - {"body"})
    if extra:
        raise InvalidInput([FieldError(k, "cannot be edited; only body can") for k in extra])
    return validate_v1_create({"body": payload.get("body")}, "edit", limits).body
