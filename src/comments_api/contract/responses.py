"""Response bodies as models: the schemas /openapi.json publishes for what the API answers.

The handlers still build their bodies as plain dicts (jsonify keeps the bytes clients
already get, and a model per response would cost on every read); these models are the
one description of those bodies, and tests/test_openapi.py validates real responses, on
both databases, against the schemas generated from them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonDict, models_json_schema

from ..comments.rules import STATUSES
from .models import BULK_ACTIONS, BanTarget

EXAMPLE_TIME = "2026-01-15T09:30:00.000Z"
_AUTHOR_REF: JsonDict = {"$ref": "#/components/schemas/Author"}

Timestamp = Annotated[datetime, Field(examples=[EXAMPLE_TIME])]
PlainTimestamp = datetime
Cursor = Annotated[str, Field(min_length=1)]
Status = Literal["published", "pending", "hidden", "deleted"]
assert STATUSES == ("published", "pending", "hidden", "deleted")  # one list of statuses
Action = Literal["approve", "hide", "delete"]
assert BULK_ACTIONS == ("approve", "hide", "delete")


class Closed(BaseModel):
    """A body with exactly these fields (``additionalProperties: false``)."""

    # Our patterns end with a lookahead, which pydantic's default Rust regex engine lacks.
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")


class Open(BaseModel):
    """A body that may grow fields (probes, problems): extra keys are allowed."""

    model_config = ConfigDict(extra="ignore", regex_engine="python-re")


class Author(Closed):
    """Who wrote a comment, as the public may see it: never the email."""

    name: Annotated[str, Field(description="Display name; `anonymous` when none was given.")]
    email_hash: Annotated[
        Annotated[str, Field(pattern="^[0-9a-f]{64}$")] | None,
        Field(
            description="SHA-256 (hex) of the trimmed, lower-cased email, for avatars; null "
            "when no email was given."
        ),
    ]


_TOMBSTONE: JsonDict = {
    "if": {"properties": {"status": {"const": "deleted"}}},
    "then": {
        "required": ["deleted_at"],
        "properties": {"body": {"type": "null"}, "author": {"type": "null"}},
    },
    "else": {
        "not": {"required": ["deleted_at"]},
        "properties": {"body": {"type": "string"}, "author": _AUTHOR_REF},
    },
}


class Comment(Closed):
    """A comment as the public sees it. A deleted comment stays as a tombstone (`status: deleted`, `body` and `author` null, `deleted_at` set) so its replies keep their place in the thread."""  # noqa: E501 - the schema's description, one paragraph

    # A tombstone has no body or author, and only it has deleted_at: JSON Schema says so
    # with if/then/else, which no Python type spells.
    model_config = ConfigDict(
        extra="forbid", regex_engine="python-re", json_schema_extra=_TOMBSTONE
    )

    id: Annotated[int, Field(ge=1, examples=[42])]
    content_id: str
    parent_id: Annotated[
        Annotated[int, Field(ge=1)] | None,
        Field(description="The comment this one replies to, or null."),
    ]
    status: Annotated[
        Status,
        Field(
            description="`published` (public), `pending` (awaiting moderation), `hidden` "
            "(by a moderator), `deleted` (tombstone)."
        ),
    ]
    created_at: Timestamp
    updated_at: Timestamp
    body: str | None
    author: Author | None
    deleted_at: Timestamp = None  # type: ignore[assignment]  # absent unless deleted


class ModeratorComment(Comment):
    """A comment as moderators see it: the public view plus the author."""

    author_email: str | None
    author_subject: Annotated[
        str | None, Field(description="The identity provider's subject when posted with a JWT.")
    ]


class CommentPage(Closed):
    content_id: str
    order: Literal["oldest", "newest"]
    items: list[Comment]
    next_cursor: Annotated[
        Cursor | None,
        Field(description="Pass as `cursor` to get the next page; null on the last page."),
    ]


class Counts(Closed):
    counts: Annotated[
        dict[str, Annotated[int, Field(ge=0)]],
        Field(
            description="Published comments per requested content id (0 when none), keyed "
            "by content id."
        ),
    ]


class LegacyCreated(Closed):
    status: Literal["SUCCESS"]
    message: str


class LegacyComment(Closed):
    # The description depends on LEGACY_EMAIL: components.py fills it in per deployment.
    email: str | None
    comment: str


class LegacyError(Closed):
    """The original API's error shape."""

    status: Annotated[
        str,
        Field(
            pattern="^[A-Z'-]+$",
            description="The HTTP status phrase, upper case, dashes for spaces (e.g. "
            "`BAD-REQUEST`, `NOT-FOUND`).",
        ),
    ]
    message: str


class FieldError(Closed):
    field: str
    message: str


class Problem(Open):
    """RFC 9457 problem details. `type` links to its explanation on /docs; `errors` is present for validation errors. `instance` (the request path, percent-encoded) is absent only when the HTTP server refused the request before the application saw it (408, 414, 417, 431, 501, malformed requests)."""  # noqa: E501 - the schema's description, one paragraph

    type: Annotated[
        str,
        Field(pattern="^/docs#problem-[a-z0-9-]+$", json_schema_extra={"format": "uri-reference"}),
    ]
    title: str
    status: Annotated[int, Field(ge=400, le=599)]
    detail: str
    instance: Annotated[str, Field(json_schema_extra={"format": "uri-reference"})] = None  # type: ignore[assignment]
    errors: Annotated[list[FieldError], Field(min_length=1)] = None  # type: ignore[assignment]


class BulkResult(Closed):
    action: Action
    changed: list[int]
    unchanged: Annotated[list[int], Field(description="Missing, or already in the target state.")]


class BanResult(Closed):
    target: BanTarget
    created: Annotated[bool, Field(description="false: was already banned.")]


class Ban(Closed):
    target: BanTarget
    reason: str | None
    created_by: Annotated[str, Field(description="The moderator's identity.")]
    created_at: PlainTimestamp


class BanList(Closed):
    items: list[Ban]


class AuditEntry(Closed):
    id: int
    actor: Annotated[str, Field(description="Who did it (key or subject).")]
    action: Annotated[str, Field(examples=["approve", "ban", "edit"])]
    target: str | None
    comment_ids: list[int]
    details: dict[str, Any] | None
    created_at: PlainTimestamp


class AuditPage(Closed):
    items: list[AuditEntry]
    next_cursor: Cursor | None


class ModeratorPage(Closed):
    items: list[ModeratorComment]
    next_cursor: Cursor | None


class Health(Open):
    status: Literal["ok"]
    version: str


class Ready(Open):
    status: Literal["ready"]
    schema_revision: str


class NotReady(Open):
    status: Literal["unavailable"]
    reason: str


RESPONSES: tuple[type[BaseModel], ...] = (
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
    Health,
    Ready,
    NotReady,
)


def response_schemas() -> dict[str, Any]:
    """The generated schemas of every response body, keyed by component name."""
    _, generated = models_json_schema(
        [(model, "validation") for model in RESPONSES],
        ref_template="#/components/schemas/{model}",
    )
    return dict(generated.get("$defs", {}))
