"""Domain rules for comments: validation, identities shown to the public, pagination.

Plain Python, no Flask and no SQL: the HTTP layer translates requests into these
calls and the storage layer persists what they return.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MAX_CONTENT_ID_LENGTH = 128
MAX_EMAIL_LENGTH = 254
MAX_AUTHOR_NAME_LENGTH = 80
# The width of an author key's columns (comments.author_key, bans.target: store/repository.py).
MAX_AUTHOR_KEY_LENGTH = 300
DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
MAX_COUNT_IDS = 100
# Ids are SQL BIGINT: a larger number names no row and must never reach the database
# (SQLite raises OverflowError, PostgreSQL "bigint out of range").
MAX_ID = 2**63 - 1
# A legacy integer content_id is stored as its decimal text, which has the same length
# limit as any content id.
MAX_CONTENT_ID_INT = 10**MAX_CONTENT_ID_LENGTH - 1
MIN_CONTENT_ID_INT = -(10 ** (MAX_CONTENT_ID_LENGTH - 1) - 1)
# The URL path's dot segments, which no content id may be (CONTENT_ID_PATTERN).
DOT_SEGMENTS = frozenset({".", ".."})

STATUS_PUBLISHED = "published"
STATUS_PENDING = "pending"
STATUS_HIDDEN = "hidden"
STATUS_DELETED = "deleted"
STATUSES = (STATUS_PUBLISHED, STATUS_PENDING, STATUS_HIDDEN, STATUS_DELETED)

# The patterns below are the single source of the rules the validators apply and
# /openapi.json publishes. They are valid in both ECMA-262 (what OpenAPI clients use) and
# Python. They end with a lookahead instead of "$": in Python "$" also matches before a
# final newline, so "a@b.com\n" would pass.
_END = r"(?![\s\S])"
# Control characters: Unicode category Cc (C0, DEL, C1).
_CC = r"\x00-\x1f\x7f-\x9f"
# Cc minus tab, newline and carriage return, which free text may contain.
_CC_TEXT = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
# Content ids: not "." or ".." (a URL path's dot segments, which browsers resolve away: no
# page could reach /contents/../comments), no surrounding whitespace, no control characters.
CONTENT_ID_PATTERN = rf"^(?!\.\.?{_END})[^\s{_CC}](?:[^{_CC}]*[^\s{_CC}])?{_END}"
# Characters that print nothing: soft hyphen, combining grapheme joiner, Arabic letter mark,
# Hangul fillers, Khmer and Mongolian invisibles and variation selectors, zero-width
# space/joiners and bidi marks, word joiner, invisible operators and bidi isolates, the blank
# braille pattern, variation selectors, BOM. Text of only these and whitespace looks empty,
# so it is blank.
_INVISIBLE = (
    r"\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    r"\u2060-\u2064\u2066-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0"
)
# Comment bodies: at least one visible character, no control characters but \t \n \r.
TEXT_PATTERN = rf"^[^{_CC_TEXT}]*[^\s{_CC}{_INVISIBLE}][^{_CC_TEXT}]*{_END}"
# Free text that may be blank (a ban reason).
OPTIONAL_TEXT_PATTERN = rf"^[^{_CC_TEXT}]*{_END}"
# Display names: at least one visible character, no control characters at all.
NAME_PATTERN = rf"^[^{_CC}]*[^\s{_CC}{_INVISIBLE}][^{_CC}]*{_END}"
# A single line of anything printable (ban subjects).
LINE_PATTERN = rf"^[^{_CC}]+{_END}"
# Deliberately pragmatic: one "@", no whitespace, control or invisible characters, a dotted
# domain. Full RFC 5322 parsing accepts addresses no mail system delivers to; an invisible
# character would make an address that looks like another author's, and is not theirs.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^[^@\s{_CC}{_INVISIBLE}]{{1,64}}@{_LABEL}(?:\.{_LABEL})+{_END}"
# Text that prints nothing: empty, whitespace and invisible characters only. Content ids
# must not match it (their schema says so with "not", beside CONTENT_ID_PATTERN).
BLANK_PATTERN = rf"^[\s{_INVISIBLE}]*{_END}"
# Plane 14 prints nothing too: tag characters (U+E0001, U+E0020-U+E007F), the variation
# selectors supplement (U+E0100-U+E01EF), the rest reserved as default-ignorable. A pattern
# valid in ECMA-262 without the u flag cannot name characters outside the BMP in a class, so
# the published patterns leave these out and the API's own checks add them (is_blank,
# has_invisible_astral): stricter than the schema, never looser.
INVISIBLE_ASTRAL = "\U000e0000-\U000e0fff"
_BLANK = re.compile(rf"^[\s{_INVISIBLE}{INVISIBLE_ASTRAL}]*{_END}")
_ASTRAL_INVISIBLE = re.compile(f"[{INVISIBLE_ASTRAL}]")


def iso_timestamp(value: datetime | None) -> str | None:
    """UTC timestamps on the wire: ``2026-11-29T20:07:08.790Z``."""
    if value is None:
        return None
    # PostgreSQL answers in the session's TimeZone (the server's, a database's
    # ``SET timezone``, PGTZ): the same instant must read the same as from SQLite.
    # Stored times are UTC: a naive one (SQLite's) is UTC already.
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_blank(text: str) -> bool:
    """Empty, or only whitespace and characters that print nothing (what the patterns'
    "at least one visible character" refuses)."""
    return _BLANK.match(text) is not None


def has_invisible_astral(text: str) -> bool:
    """Holds a plane-14 character, which prints nothing and the published patterns cannot
    name (an email with one looks like another author's address)."""
    return _ASTRAL_INVISIBLE.search(text) is not None


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class DomainError(Exception):
    """Base for errors that are the caller's fault or a business rule, never a bug."""

    code = "bad-request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError):
    code = "validation-error"

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))


class NotFound(DomainError):
    code = "not-found"


class Conflict(DomainError):
    code = "conflict"


@dataclass(frozen=True)
class Limits:
    max_comment_length: int = 5000


@dataclass(frozen=True)
class NewComment:
    content_id: str
    body: str
    email: str | None = None
    author_name: str | None = None
    author_subject: str | None = None
    parent_id: int | None = None
    status: str = STATUS_PUBLISHED


@dataclass(frozen=True)
class Comment:
    id: int
    content_id: str
    body: str | None
    status: str
    created_at: datetime
    updated_at: datetime
    parent_id: int | None = None
    email: str | None = None
    author_name: str | None = None
    author_subject: str | None = None
    deleted_at: datetime | None = None
    # When its author last changed the text (None: never); moderation does not move it.
    edited_at: datetime | None = None


@dataclass(frozen=True)
class Page:
    items: list[Comment]
    next_cursor: str | None
    read_at: datetime | None = None  # a moderation listing's: see Repository.moderation_page


def _has_control_chars(text: str, allow_newlines: bool = False) -> bool:
    allowed = {"\n", "\r", "\t"} if allow_newlines else set()
    return any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in text)


def has_unpaired_surrogate(text: str) -> bool:
    """True for text no UTF-8 encoder can write (a lone ``\\ud800`` escape in JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def is_single_line_text(text: str) -> bool:
    """No control characters and nothing a UTF-8 encoder refuses: safe to store and show."""
    return not has_unpaired_surrogate(text) and not _has_control_chars(text)


def as_integer(value: object) -> int | None:
    """``value`` as an int when JSON Schema calls it an integer (``1`` or ``1.0``), else None.

    JSON does not distinguish 1 from 1.0 and neither does JSON Schema's ``integer``; booleans
    are not integers.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def as_id(value: object) -> int | None:
    """A positive id that fits the database (1 .. MAX_ID), or None."""
    number = as_integer(value)
    return number if number is not None and 1 <= number <= MAX_ID else None


def content_id_problem(value: object) -> str | None:
    """Why ``value`` is not a usable content id, or None when it is."""
    number = None if isinstance(value, str) else as_integer(value)
    if number is None and not isinstance(value, str):
        return "must be a string or an integer"
    if number is not None and not MIN_CONTENT_ID_INT <= number <= MAX_CONTENT_ID_INT:
        return f"must be at most {MAX_CONTENT_ID_LENGTH} characters"
    text = str(number) if number is not None else str(value)
    if not text.strip():
        return "must not be empty"
    if is_blank(text):
        # As blank as an empty id: "\u200b" would name a content nobody can see or type.
        return "must not consist only of characters that print nothing"
    if len(text) > MAX_CONTENT_ID_LENGTH:
        return f"must be at most {MAX_CONTENT_ID_LENGTH} characters"
    if text != text.strip():
        return "must not start or end with whitespace"
    if _has_control_chars(text):
        return "must not contain control characters"
    if text in DOT_SEGMENTS:
        # /api/v1/contents/../comments (or %2e%2e) is resolved away by the WHATWG URL
        # parser before it is sent: neither the widget nor a badge could reach the thread.
        return 'must not be "." or ".." (a URL path resolves them away)'
    return None


def check_reply(parent: Comment | None, new: NewComment) -> None:
    """A reply must point at an existing, visible comment of the same content.

    Visible means published: a pending comment is a 404 to the public like a hidden one,
    so answering otherwise would reveal held comments to anyone walking the ids.
    """
    if new.parent_id is None:
        return
    if parent is None or parent.status != STATUS_PUBLISHED:
        raise InvalidInput([FieldError("parent_id", "no such comment to reply to")])
    if parent.content_id != new.content_id:
        raise InvalidInput(
            [FieldError("parent_id", "the parent comment belongs to another content_id")]
        )


def email_hash(email: str | None) -> str | None:
    """SHA-256 of the normalised address: lets sites show avatars without the address."""
    if not email:
        return None
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def key_address(email: str) -> str:
    """An address as author keys and bans hold it: trimmed, lower-cased, then in Unicode's
    composed form (NFC). ``josé`` typed decomposed (``e`` and U+0301, as some keyboards and
    copies from file names give it) is the same mailbox as ``josé`` precomposed (RFC 6532),
    yet was another key: a ban by one form let the other post, and an erasure by one left
    the other's comments."""
    return unicodedata.normalize("NFC", email.strip().lower())


def email_key_fits(email: str) -> bool:
    """Whether the author key of ``email`` (``email:`` and ``key_address``, as
    moderation/rules.py's ``email_key`` writes it) fits its columns. Lower-casing can make
    an address longer: "\u0130" becomes "i\u0307", so 254 characters can need 513."""
    return len("email:") + len(key_address(email)) <= MAX_AUTHOR_KEY_LENGTH


def mask_email(email: str) -> str:
    """``alice@example.com`` -> ``a***@example.com``: recognisable to its owner only."""
    # The domain follows the last "@": a quoted local part may hold one too (a token's
    # '"alice@corp.example"@relay.example'), which must not show as part of the domain.
    local, at, domain = email.rpartition("@")
    if not at:  # no "@" at all (a row stored before addresses were checked): no domain
        local, domain = email, ""
    return f"{local[:1]}***@{domain}"


def legacy_email_view(email: str | None, mode: str) -> str | None:
    if email is None or mode == "hidden":
        return None
    return email if mode == "full" else mask_email(email)


def display_name(comment: Comment) -> str:
    return comment.author_name or "anonymous"


# The list a cursor belongs to, and the letter its position is written after: a comment
# list, oldest or newest first (a moderation listing's cursor is an oldest-first one and a
# tag of its filter, moderation/rules.py), or the audit log. The audit log is newest first
# by id too, and until its cursors had a letter of their own (`n` before) each list took
# the other's cursor as a position in a list it never walked.
AUDIT_LOG = "audit-log"
_CURSOR_LETTER = {"oldest": "o", "newest": "n", AUDIT_LOG: "l"}
_COMMENT_ORDERS = frozenset("on")


def encode_cursor(last_id: int, order: str) -> str:
    """The cursor of a page whose last item is ``last_id``, in the list ``order`` names."""
    raw = f"{_CURSOR_LETTER[order]}{last_id}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


_CURSOR_ALPHABET_RE = re.compile(r"[A-Za-z0-9_-]{2,27}")
_CURSOR_RAW_RE = re.compile(rb"[onl][0-9]{1,19}")


def cursor_pattern(prefix: str = "[zj]", suffix: str = "") -> str:
    """A regular expression for exactly the cursors ``encode_cursor`` can produce.

    Unpadded base64url of ``o``, ``n`` or ``l`` and 1 to 19 ASCII digits, spelled out per
    base64 quantum so a schema can say which strings are cursors. ``prefix`` is ``z`` for
    oldest first, ``j`` for newest first, ``D`` for the audit log (each letter's low two
    bits and a digit's high nibble; the three share the first character, ``b``); ``suffix``
    is a pattern for what may follow (the moderation listings' filter tag). Checked against
    encode_cursor by tests/test_properties.py.
    """
    digit3 = r"[AEIMQUYcgk]"  # low nibble of a digit, then two zero bits
    digit4 = r"[w-z0-5]"  # a whole digit in the last 6 bits
    lead = r"(?:[MN][DTjz]|O[DT])"  # a digit's first 6 bits, and the top of its low nibble
    tail1 = r"(?:[MN][AQgw]|O[AQ])"  # one digit left over
    tail2 = rf"{lead}{digit3}"  # two digits left over
    quantum = rf"{lead}{digit3}{digit4}"
    return rf"^b{prefix}{digit3}(?:{digit4}(?:{quantum}){{0,5}}(?:{tail1}|{tail2})?)?{suffix}{_END}"


# A moderation listing's cursor ends in '.' and this tag of the filter it was read with
# (moderation/rules.py).
LISTING_TAG = r"[A-Za-z0-9_-]{8}"


def listing_cursor_pattern() -> str:
    """Every cursor a moderation listing takes: a list cursor bound to its filter by a tag."""
    return cursor_pattern("z", suffix=rf"\.{LISTING_TAG}")


def audit_log_cursor_pattern() -> str:
    """Every cursor the audit log takes."""
    return cursor_pattern("D")


_ANOTHER_LIST = "belongs to another list; restart without a cursor"
_NOT_ISSUED = "is not a cursor this API issued"
_LISTING_CURSOR_RE = re.compile(listing_cursor_pattern())


# --- the ban list's cursors ---------------------------------------------------------------
# Bans have no id: they are listed newest first by (created_at, target), the primary key
# breaking ties, and a cursor is that position of the page's last ban: unpadded base64url of
# "b", its created_at in microseconds since 0001-01-01 UTC, "." and its target (UTF-8). A
# position, not a snapshot: a ban added or lifted between pages moves no other. Its first
# two characters ("Yj": "b" and a digit's high nibble) are no other list's.
_TIME_ORIGIN = datetime(1, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_BAN_CURSOR_RAW_RE = re.compile(r"b([0-9]{1,18})\.(.+)", re.DOTALL)
# The longest a cursor of a stored ban can be: 300 characters of up to 4 bytes in UTF-8.
MAX_BAN_CURSOR_LENGTH = -(-(1 + 18 + 1 + 4 * MAX_AUTHOR_KEY_LENGTH) * 4 // 3)


def ban_cursor_pattern() -> str:
    """What a ban list cursor looks like (published; opaque: the decoder checks the rest)."""
    return rf"^Yj[A-Za-z0-9_-]+{_END}"


_BAN_CURSOR_RE = re.compile(ban_cursor_pattern())


def encode_ban_cursor(created_at: datetime, target: str) -> str:
    """The cursor of a ban list page whose last ban is this one."""
    if created_at.tzinfo is None:  # SQLite's: UTC already
        created_at = created_at.replace(tzinfo=UTC)
    micros = (created_at - _TIME_ORIGIN) // _MICROSECOND
    raw = f"b{micros}.{target}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _canonical_base64(cursor: str) -> bytes | None:
    """The bytes of unpadded base64url written exactly as the API writes it, else None."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        return None
    if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != cursor:
        return None
    return raw


def _ban_position(cursor: str) -> tuple[datetime, str] | None:
    if len(cursor) > MAX_BAN_CURSOR_LENGTH or not _BAN_CURSOR_RE.match(cursor):
        return None
    raw = _canonical_base64(cursor)
    try:
        text = raw.decode("utf-8") if raw is not None else ""
    except UnicodeDecodeError:
        return None
    found = _BAN_CURSOR_RAW_RE.fullmatch(text)
    # No stored target holds a NUL (PostgreSQL's text cannot): it must not reach SQL either.
    if found is None or "\x00" in found[2]:
        return None
    try:
        created_at = _TIME_ORIGIN + int(found[1]) * _MICROSECOND
    except OverflowError:  # past year 9999
        return None
    return created_at, found[2]


def decode_ban_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """The (created_at, target) after which the ban list's next page starts, newest first;
    another list's cursor, or anything the API did not issue, is a 400."""
    if cursor is None:
        return None
    position = _ban_position(cursor)
    if position is not None:
        return position
    if _LISTING_CURSOR_RE.search(cursor) or _list_cursor_bytes(cursor) is not None:
        raise InvalidInput([FieldError("cursor", _ANOTHER_LIST)])
    raise InvalidInput([FieldError("cursor", _NOT_ISSUED)])


def _list_cursor_bytes(cursor: str) -> bytes | None:
    """The bytes of a comment list's or the audit log's cursor, else None."""
    raw = _canonical_base64(cursor) if _CURSOR_ALPHABET_RE.fullmatch(cursor) else None
    return raw if raw is not None and _CURSOR_RAW_RE.fullmatch(raw) else None


def decode_cursor(cursor: str | None, order: str) -> int | None:
    """The id after which the next page starts; the cursor is bound to its list (``order``:
    ``oldest`` or ``newest`` for a comment list, ``AUDIT_LOG``) and a comment list's to its
    order."""
    if cursor is None:
        return None
    if _LISTING_CURSOR_RE.search(cursor):  # a moderation listing's, as it issues them
        raise InvalidInput([FieldError("cursor", _ANOTHER_LIST)])
    # Only the exact text encode_cursor writes: b64decode alone ignores stray characters.
    raw = _list_cursor_bytes(cursor)
    if raw is None:
        if _ban_position(cursor) is not None:  # the ban list's
            raise InvalidInput([FieldError("cursor", _ANOTHER_LIST)])
        raise InvalidInput([FieldError("cursor", _NOT_ISSUED)])
    letter, expected = raw[:1].decode("ascii"), _CURSOR_LETTER[order]
    if letter != expected and {letter, expected} <= _COMMENT_ORDERS:
        raise InvalidInput(
            [FieldError("cursor", "belongs to a different order; restart without a cursor")]
        )
    if letter != expected:
        raise InvalidInput([FieldError("cursor", _ANOTHER_LIST)])
    # A position past every possible id is still a position; it must not reach SQL as is.
    return min(int(raw[1:]), MAX_ID)
