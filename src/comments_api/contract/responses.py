"""Response bodies as models: the schemas /openapi.json publishes for what the API answers.

The handlers still build their bodies as plain dicts (jsonify keeps the bytes clients
already get, and a model per response would cost on every read); these models are the
one description of those bodies, and tests/test_openapi.py validates real responses, on
both databases, against the schemas generated from them.
"""

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from ..comments.rules import STATUSES
from .models import BULK_ACTIONS, ORDERS, BanTarget, choice

EXAMPLE_TIME = "2026-01-15T09:30:00.000Z"
# Seconds browsers and CDNs may keep the answers that are the same for everyone: the
# widget's and the docs' files (their URLs carry no version, so a fix must reach readers
# within minutes; then they revalidate with the ETag) and the client configuration.
ASSET_MAX_AGE = 300
CONFIG_MAX_AGE = 300
JsonDict = dict[str, Any]
_AUTHOR_REF: JsonDict = {"$ref": "#/components/schemas/Author"}

# tz=True: the API's times carry their offset (RFC 3339 "date-time", which msgspec
# publishes only for timezone-aware datetimes).
PlainTimestamp = Annotated[datetime, Meta(tz=True)]
Timestamp = Annotated[PlainTimestamp, Meta(examples=[EXAMPLE_TIME])]
Cursor = Annotated[str, Meta(min_length=1)]
Status = choice(*STATUSES)
assert STATUSES == ("published", "pending", "hidden", "deleted")  # one list of statuses
Action = choice(*BULK_ACTIONS)
assert BULK_ACTIONS == ("approve", "hide", "delete")


class Closed(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A body with exactly these fields (``additionalProperties: false``)."""

    # Merged into the generated schema: what no Python type spells (components.py).
    SCHEMA_EXTRA: ClassVar[JsonDict] = {}


class Open(msgspec.Struct, kw_only=True):
    """A body that may grow fields (probes, problems): extra keys are allowed."""

    SCHEMA_EXTRA: ClassVar[JsonDict] = {}


class Author(Closed, kw_only=True):
    """Who wrote a comment, as the public may see it: never the email."""

    name: Annotated[str, Meta(description="Display name; `anonymous` when none was given.")]
    email_hash: Annotated[
        Annotated[str, Meta(pattern="^[0-9a-f]{64}$")] | None,
        Meta(
            description="SHA-256 (hex) of the trimmed, lower-cased email, for avatars; null "
            "when no email was given."
        ),
    ]


_TOMBSTONE: JsonDict = {
    "if": {"properties": {"status": {"const": "deleted"}}},
    "then": {
        "required": ["deleted_at"],
        "properties": {
            "body": {"type": "null"},
            "author": {"type": "null"},
            "edited_at": {"type": "null"},
        },
    },
    "else": {
        "not": {"required": ["deleted_at"]},
        "properties": {"body": {"type": "string"}, "author": _AUTHOR_REF},
    },
}


class Comment(Closed, kw_only=True):
    """A comment as the public sees it. A deleted comment stays as a tombstone (`status: deleted`, `body` and `author` null, `deleted_at` set) so its replies keep their place in the thread."""  # noqa: E501 - the schema's description, one paragraph

    # A tombstone has no body or author, and only it has deleted_at: JSON Schema says so
    # with if/then/else, which no Python type spells.
    SCHEMA_EXTRA = _TOMBSTONE

    id: Annotated[int, Meta(ge=1, examples=[42])]
    content_id: str
    parent_id: Annotated[
        Annotated[int, Meta(ge=1)] | None,
        Meta(description="The comment this one replies to, or null."),
    ]
    status: Annotated[
        Status,  # type: ignore[valid-type]  # Literal of STATUSES
        Meta(
            description="`published` (public), `pending` (awaiting moderation), `hidden` "
            "(by a moderator), `deleted` (tombstone)."
        ),
    ]
    created_at: Timestamp
    updated_at: Annotated[
        PlainTimestamp,
        Meta(
            examples=[EXAMPLE_TIME],
            description="When the comment last changed: `created_at` until its author "
            "edits it, a moderator approves or hides it, or it is deleted. It alone does "
            "not tell an edit from a moderator's decision: `edited_at` does.",
        ),
    ]
    edited_at: Annotated[
        PlainTimestamp | None,
        Meta(
            examples=[None, EXAMPLE_TIME],
            description="When its author last changed the text; null if never. A "
            "moderator's approve or hide does not move it (`updated_at` does), so a "
            'client may show "(edited)" when it is set. Null on a tombstone, whose text '
            "is gone. Comments edited before this field existed have it from the audit "
            "log; an edit made by an older server during an upgrade may leave it null.",
        ),
    ]
    body: str | None
    author: Author | None
    deleted_at: Timestamp = None  # type: ignore[assignment]  # absent unless deleted


class ModeratorComment(Comment, kw_only=True):
    """A comment as moderators see it: the public view plus the author."""

    author_email: str | None
    author_subject: Annotated[
        str | None, Meta(description="The identity provider's subject when posted with a JWT.")
    ]


class CommentPage(Closed, kw_only=True):
    content_id: str
    order: choice(*ORDERS)  # type: ignore[valid-type]
    items: list[Comment]
    next_cursor: Annotated[
        Cursor | None,
        Meta(description="Pass as `cursor` to get the next page; null on the last page."),
    ]


class Counts(Closed, kw_only=True):
    counts: Annotated[
        dict[str, Annotated[int, Meta(ge=0)]],
        Meta(
            description="Published comments per requested content id (0 when none), keyed "
            "by content id."
        ),
    ]


class LegacyCreated(Closed, kw_only=True):
    # Fields in the order the answer has them (the original's, sorted).
    message: str
    status: Literal["SUCCESS"]


class LegacyComment(Closed, kw_only=True):
    comment: str
    # The description depends on LEGACY_EMAIL: components.py fills it in per deployment.
    email: str | None


class LegacyError(Closed, kw_only=True):
    """The original API's error shape."""

    message: str
    status: Annotated[
        str,
        Meta(
            pattern="^[A-Z'-]+$",
            description="The HTTP status phrase, upper case, dashes for spaces (e.g. "
            "`BAD-REQUEST`, `NOT-FOUND`).",
        ),
    ]


class FieldError(Closed, kw_only=True):
    field: str
    message: str


class Problem(Open, kw_only=True):
    """RFC 9457 problem details. `type` links to its explanation on /docs; `errors` is present for validation errors. `instance` (the request path, percent-encoded) is absent only when the HTTP server refused the request before the application saw it (405 to CONNECT, 408, 414, 417, 431, 501, malformed requests)."""  # noqa: E501 - the schema's description, one paragraph

    type: Annotated[
        str,
        Meta(pattern="^/docs#problem-[a-z0-9-]+$", extra_json_schema={"format": "uri-reference"}),
    ]
    title: str
    status: Annotated[int, Meta(ge=400, le=599)]
    detail: str
    instance: Annotated[str, Meta(extra_json_schema={"format": "uri-reference"})] = None  # type: ignore[assignment]
    errors: Annotated[list[FieldError], Meta(min_length=1)] = None  # type: ignore[assignment]


class BulkResult(Closed, kw_only=True):
    action: Action  # type: ignore[valid-type]  # Literal of BULK_ACTIONS
    changed: list[int]
    unchanged: Annotated[list[int], Meta(description="Missing, or already in the target state.")]
    more: Annotated[
        bool,
        Meta(
            description="Only in the answer to a delete by `author`: true when that author "
            "has comments left beyond this call's limit; call again."
        ),
    ] = None  # type: ignore[assignment]


class BanResult(Closed, kw_only=True):
    target: BanTarget
    created: Annotated[bool, Meta(description="false: was already banned.")]


class Ban(Closed, kw_only=True):
    target: BanTarget
    reason: str | None
    created_by: Annotated[str, Meta(description="The moderator's identity.")]
    created_at: PlainTimestamp


class BanList(Closed, kw_only=True):
    items: Annotated[list[Ban], Meta(description="One page of bans, newest first.")]
    next_cursor: Annotated[
        Cursor | None,
        Meta(
            description="Pass as `cursor` to get the next page; null on the last page. A "
            "client that reads `items` alone gets the first page only."
        ),
    ]


class AuditEntry(Closed, kw_only=True):
    id: int
    actor: Annotated[str, Meta(description="Who did it (key or subject).")]
    action: Annotated[str, Meta(examples=["approve", "ban", "edit"])]
    target: str | None
    comment_ids: list[int]
    details: dict[str, Any] | None
    created_at: PlainTimestamp


class AuditPage(Closed, kw_only=True):
    items: list[AuditEntry]
    next_cursor: Cursor | None


class ModeratorPage(Closed, kw_only=True):
    items: list[ModeratorComment]
    next_cursor: Cursor | None
    read_at: Annotated[
        PlainTimestamp,
        Meta(
            description="When these rows were read, once no edit was in flight: an edit "
            "they miss has a later `edited_at`. Send it as an approve's "
            "`if_unedited_since` (not the answer's `Date`, stamped after the read)."
        ),
    ]


class ClientConfig(Open, kw_only=True):
    """What a client needs to know of this server's settings before a reader types."""

    auth_mode: Annotated[
        Literal["open", "required"],
        Meta(description="`required`: writes need a credential (a reader's JWT)."),
    ]
    moderation_mode: Annotated[
        Literal["post", "pre"],
        Meta(description="`pre`: new comments wait for a moderator (v1 create answers 202)."),
    ]
    max_comment_length: Annotated[int, Meta(ge=1, description="Characters per comment.")]
    max_author_name_length: Annotated[int, Meta(ge=1)]
    max_email_length: Annotated[int, Meta(ge=1)]
    edit_window_seconds: Annotated[
        float, Meta(ge=0, description="How long after posting an author may edit.")
    ]


class Health(Open, kw_only=True):
    status: Literal["ok"]
    version: str


class Ready(Open, kw_only=True):
    status: Literal["ready"]
    schema_revision: str


class NotReady(Open, kw_only=True):
    status: Literal["unavailable"]
    reason: str


RESPONSES: tuple[type[Closed | Open], ...] = (
    Author,
    Comment,
    ModeratorComment,
    CommentPage,
    Counts,
    LegacyCreated,
    LegacyComment,
    LegacyError,
    FieldError,
    Problem,
    BulkResult,
    BanResult,
    Ban,
    BanList,
    AuditEntry,
    AuditPage,
    ModeratorPage,
    ClientConfig,
    Health,
    Ready,
    NotReady,
)


def response_schemas() -> dict[str, Any]:
    """The generated schemas of every response body, keyed by component name."""
    _, generated = msgspec.json.schema_components(
        RESPONSES, ref_template="#/components/schemas/{name}"
    )
    for model in RESPONSES:
        generated[model.__name__].update(model.SCHEMA_EXTRA)
    return generated
