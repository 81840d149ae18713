"""Moderation and abuse rules: statuses, bans, duplicates, flood limits, banned words.

Plain Python, no Flask and no SQL. Storage gathers the facts (how many recent posts by
this author, is the author banned) in one indexed query; these functions decide.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from ..comments.rules import (
    LISTING_TAG,
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
    decode_cursor,
    key_address,
)
from ..contract.models import (
    BAN_TARGET,
    BULK_ACTIONS,
    BulkModeration,
    NewBan,
    is_valid,
)
from ..contract.requests import validate_edit
from ..identity.credentials import SCOPE_MODERATE, Identity

ACTION_APPROVE = "approve"
ACTION_HIDE = "hide"
ACTION_DELETE = "delete"
# The body rules (actions, limits, patterns) are declared once, in the request models.
assert BULK_ACTIONS == (ACTION_APPROVE, ACTION_HIDE, ACTION_DELETE)

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


@dataclass(frozen=True)
class Transition:
    """What a moderation action does: the statuses it moves a comment out of, and to which."""

    action: str
    from_statuses: tuple[str, ...]
    to_status: str
    # Of from_statuses, those whose comments leave no row when they have no reply: a
    # deleted comment nobody could read (pending, hidden) must not turn into a public
    # tombstone. With replies it stays one: it keeps their thread in place.
    vanish_from: tuple[str, ...] = ()
    # Only comments whose text was not edited after this instant (UTC): the ones the
    # moderator read. None: edited or not.
    unedited_since: datetime | None = None


# Deleting a comment that is not public leaves nothing public behind.
VANISH_ON_DELETE = (STATUS_PENDING, STATUS_HIDDEN)


def transition(
    action: str,
    if_status: Sequence[str] | None = None,
    unedited_since: datetime | None = None,
) -> Transition:
    """The rule for ``action`` (approve, hide, delete), for storage to apply as given;
    with ``if_status``, only out of those of its statuses the moderator saw, and with
    ``unedited_since``, only on comments not edited after it."""
    allowed = TRANSITIONS[action]
    if if_status is not None:
        allowed = tuple(s for s in allowed if s in if_status)
    vanish = tuple(s for s in allowed if s in VANISH_ON_DELETE) if action == ACTION_DELETE else ()
    return Transition(action, allowed, TARGET_STATUS[action], vanish, unedited_since)


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
    # When the oldest of ``recent`` was posted (None: none): when the flood limit frees up.
    oldest_recent: datetime | None = None


def author_key(email: str | None, subject: str | None) -> str | None:
    """Who wrote a comment, for bans and flood checks: the token subject wins over email."""
    if subject:
        return f"sub:{subject}"
    return email_key(email)


def email_key(email: str | None) -> str | None:
    """The author key a ban by email names (``POST /moderation/bans {"email": ...}``)."""
    return f"email:{key_address(email)}" if email else None


def legacy_email_key(email: str | None) -> str | None:
    """The key the release before 0016 gives ``email`` (lower-cased, not composed). Serving
    on the 0016 schema (a rollout, a rollback) it bans under that key after 0016's rewrite
    has run: looked up too, so its ban of an address typed decomposed still stops it."""
    return f"email:{email.strip().lower()}" if email else None


def decomposed_email_key(email: str | None) -> str | None:
    """``email_key`` in Unicode's decomposed form (NFD), the key the release before 0016
    gives ``josé`` typed decomposed (``author_key_forms``)."""
    return f"email:{unicodedata.normalize('NFD', key_address(email))}" if email else None


def email_key_forms(email: str | None) -> tuple[str, ...]:
    """Every key a ban of ``email`` may stand under: composed (``email_key``), decomposed
    and as typed (``legacy_email_key``). A ban the release before 0016 took on its schema
    of ``josé`` typed decomposed stands decomposed: looked up as typed only, it let the
    address typed precomposed (as most keyboards give it) post, and a lift by that address
    found no ban, while the listing showed it."""
    keys = (email_key(email), decomposed_email_key(email), legacy_email_key(email))
    return tuple(dict.fromkeys(key for key in keys if key))


def ban_keys(email: str | None, subject: str | None) -> tuple[str, ...]:
    """Every author key a ban of this author may name: the subject's and the email's (in
    each form, ``email_key_forms``). A signed-in reader's author key is the subject's, so a
    ban by email must be looked up under the email's key too, or the reader it names keeps
    posting."""
    subject_key = author_key(None, subject)
    return (subject_key, *email_key_forms(email)) if subject_key else email_key_forms(email)


def check_activity(activity: AuthorActivity, rules: AbuseRules, now: datetime) -> None:
    if activity.banned:
        raise Banned("this author may not post comments")
    if activity.duplicates:
        raise Duplicate("you already posted this comment here; duplicates are not accepted")
    if activity.recent >= rules.thread_author_max:
        raise TooManyComments(
            f"at most {rules.thread_author_max} comments per author on one content every "
            f"{int(rules.thread_author_window)} seconds; try again later",
            retry_after=_flood_retry_after(activity, rules, now),
        )


def _flood_retry_after(activity: AuthorActivity, rules: AbuseRules, now: datetime) -> int:
    """Whole seconds until the oldest comment in the window leaves it and frees a place
    (rounded up: a client that obeys is not refused again); the whole window when there is
    none (THREAD_AUTHOR_MAX=0)."""
    if activity.oldest_recent is None:
        return math.ceil(rules.thread_author_window)
    leaves = (activity.oldest_recent - now).total_seconds() + rules.thread_author_window
    return max(1, math.ceil(leaves))


@lru_cache(maxsize=8)
def _banned_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    # A phrase's words as a tuple: "bad  phrase" and "bad phrase" are one entry.
    cleaned = sorted(
        {tuple(w.casefold().split()) for w in words if w.strip()},
        key=lambda phrase: len(" ".join(phrase)),
        reverse=True,
    )
    if not cleaned:
        return None
    # Whole words only ("class" must not trip on "ass"); \w is Unicode-aware. Between a
    # phrase's words any run of whitespace: two spaces, a newline or a no-break space
    # must not carry a banned phrase through.
    alternatives = "|".join(r"\s+".join(map(re.escape, phrase)) for phrase in cleaned)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def check_banned_words(text: str, words: tuple[str, ...], field: str = "body") -> None:
    """Reject text containing a configured word; the error never repeats the word."""
    pattern = _banned_pattern(words)
    if pattern is not None and pattern.search(text.casefold()):
        raise InvalidInput(
            [FieldError(field, "contains language this site does not accept; please rephrase")]
        )


@dataclass(frozen=True)
class BulkRequest:
    action: str
    ids: list[int]  # empty when ``author`` names the comments instead
    if_status: tuple[str, ...] | None  # act only on comments found in these
    author: str | None = None  # delete every comment of this author key
    unedited_since: datetime | None = None  # act only on comments not edited after (UTC)


def parse_bulk(payload: object) -> BulkRequest:
    """``{"action": "approve|hide|delete", "ids": [1, 2], "if_status": ["pending"]}``, or
    ``{"action": "delete", "author": "email:..."}``."""
    valid = BulkModeration.parse(payload)
    if valid.author is not None:
        return BulkRequest(valid.action, [], None, _normal_author_key(valid.author))
    if_status = tuple(dict.fromkeys(valid.if_status)) if valid.if_status is not None else None
    since = valid.if_unedited_since
    if since is not None:
        try:
            since = since.astimezone(UTC)
        except OverflowError:  # past year 1 or 9999 in UTC: as early or late as can be
            since = (datetime.min if since.year == 1 else datetime.max).replace(tzinfo=UTC)
    return BulkRequest(
        valid.action, list(dict.fromkeys(valid.ids)), if_status, unedited_since=since
    )


@dataclass(frozen=True)
class BanRequest:
    target: str  # an author key: email:<address> or sub:<subject>
    reason: str | None
    # Every form a ban of this author may already stand in (``email_key_forms``): a ban
    # under any of them is this one, banned again.
    forms: tuple[str, ...] = ()


def parse_ban(payload: object) -> BanRequest:
    """``{"email": ...}`` or ``{"subject": ...}``, plus an optional ``reason``."""
    valid = NewBan.parse(payload)
    target = email_key(valid.email)
    if target is None:
        assert valid.subject is not None
        subject = f"sub:{valid.subject}"
        return BanRequest(target=subject, reason=valid.reason, forms=(subject,))
    return BanRequest(target=target, reason=valid.reason, forms=email_key_forms(valid.email))


def parse_ban_target(raw: str) -> str:
    """A ban target from a URL: ``email:...`` or ``sub:...`` exactly as listed."""
    return parse_author_key(raw, "target")


def parse_author_key(raw: str, field: str = "author") -> str:
    """An author key as a ban names it (``email:<address>`` in any case, or
    ``sub:<subject>``), as stored: the address as ``key_address`` keeps it, the subject
    exactly."""
    if not is_valid(BAN_TARGET, raw):
        raise InvalidInput([FieldError(field, "must look like email:<address> or sub:<id>")])
    return _normal_author_key(raw)


def parse_author_filter(raw: str) -> str:
    """``?author=`` of a listing: an author key as ``parse_author_key`` reads it, minus the
    addresses no comment can have. A ``+`` left unencoded in a query string arrives as a
    space (``email:ann+news@…`` as ``ann news@…``), and a comment's address never holds
    whitespace: such a filter could only list nothing, so it is refused, saying why. Read
    before ``key_address`` trims it: a + first or last (``email:+news@…``) was trimmed
    away and listed another author's comments (``news@…``)."""
    key = parse_author_key(raw)
    kind, _, value = raw.partition(":")
    if kind == "email" and any(c.isspace() for c in value):
        raise InvalidInput(
            [FieldError("author", "an address has no spaces: send a + in it as %2B")]
        )
    return key


def author_key_forms(key: str) -> tuple[str, ...]:
    """The keys an author's comments may stand under: ``key``, and for an address its
    decomposed form (NFD), which the release before 0016 gave an address posted decomposed
    while serving on 0016's schema (a rollout, a rollback). An erasure or a listing by
    author looks under both, or it would leave those comments behind."""
    kind, _, value = key.partition(":")
    if kind != "email":
        return (key,)
    return tuple(dict.fromkeys((key, f"email:{unicodedata.normalize('NFD', value)}")))


def ban_target_forms(raw: str) -> tuple[str, ...]:
    """A valid ban target (``parse_ban_target`` passed it) in every form a ban of it may
    stand in (``email_key_forms``): a lift finds the ban in any of them, as the ban stops
    the address in any of them, and a ban listed in the release before 0016's form is
    liftable as listed."""
    kind, _, value = raw.partition(":")
    return (raw,) if kind == "sub" else email_key_forms(value)


def _normal_author_key(valid: str) -> str:
    kind, _, value = valid.partition(":")
    return valid if kind == "sub" else f"email:{key_address(value)}"


def author_digest(key: str) -> str:
    """What the audit log keeps of an erased author: SHA-256 of the key, never the key
    (an erasure must not leave the address it erased behind). Whoever holds the key can
    still find the entry, as the comments' public ``email_hash`` lets avatars be found."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


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
    if new.author_name is not None:
        # Shown beside the comment as much as its body is.
        check_banned_words(new.author_name, banned_words, "author_name")
    if identity is not None and identity.is_reader:
        new = replace(
            new, email=identity.email, author_name=identity.name, author_subject=identity.id
        )
    if pre_moderation and not (identity is not None and identity.has(SCOPE_MODERATE)):
        new = replace(new, status=STATUS_PENDING)
    return new


def parse_edit(payload: object, limits: Limits) -> str:
    """An author's edit: ``{"body": "..."}`` and nothing else."""
    return validate_edit(payload, limits)


def check_listing_filter(status: str, content_id: str | None, author: str | None) -> None:
    """Published comments are listed for one content or one author only: every content's
    would be the whole table, and the indexes that serve the listings are (content_id,
    status, id) and (author_key, status, id)."""
    if status == STATUS_PUBLISHED and content_id is None and author is None:
        raise InvalidInput(
            [FieldError("content_id", "is required with status=published, unless author is given")]
        )


# --- the listings' cursors, bound to their filter ---------------------------------------
# A listing's cursor is a comment list cursor (the id of the page's last comment, oldest
# first) and a tag of the filter it was issued for: "." and 8 base64url characters of a
# hash of (status, content_id), or of (status, content_id, author) when an author filters
# it (without one, the tag is what it was before the author filter existed). Replayed with
# another filter it would be taken as a position in a list it never walked, and page 2
# would silently skip every comment of that list before it. A cursor without a tag (as
# releases issued them before cursors carried one, 8febdfb) names no listing, so it is
# refused the same way: taken as a position in any listing, it could skip just as silently.
_FILTER_TAG_RE = re.compile(LISTING_TAG)


def _filter_tag(status: str, content_id: str | None, author: str | None = None) -> str:
    filtered: tuple[str | None, ...] = (status, content_id)
    if author is not None:
        filtered += (author,)
    digest = hashlib.blake2b(repr(filtered).encode(), digest_size=6).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def encode_listing_cursor(
    cursor: str | None, status: str, content_id: str | None, author: str | None = None
) -> str | None:
    """The list ``cursor`` of a listing's page, bound to the filter it was read with."""
    if cursor is None:
        return None
    return f"{cursor}.{_filter_tag(status, content_id, author)}"


def decode_listing_cursor(
    raw: str | None, status: str, content_id: str | None, author: str | None = None
) -> int | None:
    """The id after which the next page starts; a cursor of another filter is a 400."""
    if raw is None:
        return None
    cursor, dot, tag = raw.partition(".")
    if dot and not _FILTER_TAG_RE.fullmatch(tag):
        raise InvalidInput([FieldError("cursor", "is not a cursor this API issued")])
    after_id = decode_cursor(cursor, "oldest")
    if not dot:
        raise InvalidInput(
            [
                FieldError(
                    "cursor",
                    "names no listing (a cursor from before cursors were bound to their "
                    "filter); restart without a cursor",
                )
            ]
        )
    if tag != _filter_tag(status, content_id, author):
        raise InvalidInput(
            [
                FieldError(
                    "cursor",
                    "belongs to a listing with another status, content_id or author; "
                    "restart without a cursor",
                )
            ]
        )
    return after_id
