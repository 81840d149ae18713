"""components.schemas of /openapi.json: generated from the models, plus response shapes."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from ..domain import MAX_ID, STATUSES
from ..settings import Settings
from . import models
from .models import BULK_ACTIONS

# Ids as the database stores them (BIGINT): larger numbers name nothing.
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID, "format": "int64"}
EXAMPLE_EMAIL = "alice@example.com"
EXAMPLE_TIME = "2026-01-15T09:30:00.000Z"


def ref(name: str, kind: str = "schemas") -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def clean(schema: Any, parent: str = "") -> Any:
    """pydantic's schema without what OpenAPI readers don't need.

    Drops generated ``title``s (noise in Swagger UI) and ``default: null`` (absent and
    null both mean "not given"; a non-nullable field must not advertise null).
    """
    if isinstance(schema, list):
        return [clean(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    cleaned = {}
    for key, value in schema.items():
        # Under "properties" the keys are field names ("title" may be one): keep them.
        if parent != "properties" and (key == "title" or (key == "default" and value is None)):
            continue
        cleaned[key] = clean(value, key)
    return cleaned


def adapter_schema(adapter: TypeAdapter[Any]) -> dict[str, Any]:
    """The JSON Schema of one value type (a parameter, a path segment)."""
    return clean(adapter.json_schema(ref_template="#/components/schemas/{model}"))  # type: ignore[no-any-return]


def request_schemas(max_comment_length: int) -> dict[str, Any]:
    """The request bodies' schemas, generated from the models that validate them."""
    comments = models.comment_models(max_comment_length)
    bodies: list[type[models.Body]] = [
        comments.new,
        comments.edit,
        comments.legacy,
        models.BulkModeration,
        models.NewBan,
    ]
    _, generated = models_json_schema(
        [(model, "validation") for model in bodies],
        ref_template="#/components/schemas/{model}",
    )
    found = clean(generated.get("$defs", {}))
    assert set(found) == {model.__name__ for model in bodies}, found.keys()
    return {"ContentId": adapter_schema(models.CONTENT_ID), **found}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def schemas(settings: Settings) -> dict[str, Any]:
    schemas = {**request_schemas(settings.max_comment_length), **_base_schemas(settings)}
    schemas["ModeratorComment"] = _moderator_comment_schema(schemas["Comment"])
    return schemas


def _base_schemas(settings: Settings) -> dict[str, Any]:
    timestamp = {"type": "string", "format": "date-time", "examples": [EXAMPLE_TIME]}
    return {
        "Author": {
            "type": "object",
            "description": "Who wrote a comment, as the public may see it: never the email.",
            "required": ["name", "email_hash"],
            "additionalProperties": False,
            "properties": {
                "name": {
                    "type": "string",
                    "description": "Display name; `anonymous` when none was given.",
                },
                "email_hash": {
                    **_nullable({"type": "string", "pattern": "^[0-9a-f]{64}$"}),
                    "description": "SHA-256 (hex) of the trimmed, lower-cased email, for "
                    "avatars; null when no email was given.",
                },
            },
        },
        "Comment": {
            "type": "object",
            "description": "A comment as the public sees it. A deleted comment stays as a "
            "tombstone (`status: deleted`, `body` and `author` null, `deleted_at` set) so "
            "its replies keep their place in the thread.",
            "required": [
                "id",
                "content_id",
                "parent_id",
                "status",
                "created_at",
                "updated_at",
                "body",
                "author",
            ],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "integer", "minimum": 1, "examples": [42]},
                "content_id": {"type": "string"},
                "parent_id": {
                    **_nullable({"type": "integer", "minimum": 1}),
                    "description": "The comment this one replies to, or null.",
                },
                "status": {
                    "type": "string",
                    "enum": list(STATUSES),
                    "description": "`published` (public), `pending` (awaiting moderation), "
                    "`hidden` (by a moderator), `deleted` (tombstone).",
                },
                "created_at": timestamp,
                "updated_at": timestamp,
                "body": _nullable({"type": "string"}),
                "author": _nullable(ref("Author")),
                "deleted_at": timestamp,
            },
            "if": {"properties": {"status": {"const": "deleted"}}},
            "then": {
                "required": ["deleted_at"],
                "properties": {"body": {"type": "null"}, "author": {"type": "null"}},
            },
            "else": {
                "not": {"required": ["deleted_at"]},
                "properties": {"body": {"type": "string"}, "author": ref("Author")},
            },
        },
        "CommentPage": {
            "type": "object",
            "required": ["content_id", "order", "items", "next_cursor"],
            "additionalProperties": False,
            "properties": {
                "content_id": {"type": "string"},
                "order": {"type": "string", "enum": ["oldest", "newest"]},
                "items": {"type": "array", "items": ref("Comment")},
                "next_cursor": {
                    **_nullable({"type": "string", "minLength": 1}),
                    "description": "Pass as `cursor` to get the next page; null on the last page.",
                },
            },
        },
        "Counts": {
            "type": "object",
            "required": ["counts"],
            "additionalProperties": False,
            "properties": {
                "counts": {
                    "type": "object",
                    "description": "Published comments per requested content id (0 when "
                    "none), keyed by content id.",
                    "additionalProperties": {"type": "integer", "minimum": 0},
                }
            },
        },
        "LegacyCreated": {
            "type": "object",
            "required": ["status", "message"],
            "additionalProperties": False,
            "properties": {
                "status": {"const": "SUCCESS"},
                "message": {"type": "string"},
            },
        },
        "LegacyComment": {
            "type": "object",
            "required": ["email", "comment"],
            "additionalProperties": False,
            "properties": {
                "email": {
                    **_nullable({"type": "string"}),
                    "description": "Depends on `LEGACY_EMAIL`: `masked` (default, "
                    "`a***@example.com`), `full`, or `hidden` (null). "
                    f"This deployment: `{settings.legacy_email}`.",
                },
                "comment": {"type": "string"},
            },
        },
        "LegacyError": {
            "type": "object",
            "description": "The original API's error shape.",
            "required": ["status", "message"],
            "additionalProperties": False,
            "properties": {
                "status": {
                    "type": "string",
                    "pattern": "^[A-Z'-]+$",
                    "description": "The HTTP status phrase, upper case, dashes for spaces "
                    "(e.g. `BAD-REQUEST`, `NOT-FOUND`).",
                },
                "message": {"type": "string"},
            },
        },
        "FieldError": {
            "type": "object",
            "required": ["field", "message"],
            "additionalProperties": False,
            "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
        },
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details. `type` links to its explanation on "
            "/docs; `errors` is present for validation errors. `instance` (the request "
            "path, percent-encoded) is absent only when the HTTP server refused the "
            "request before the application saw it (408, 414, 417, 431, 501, malformed "
            "requests).",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {
                    "type": "string",
                    "format": "uri-reference",
                    "pattern": "^/docs#problem-[a-z0-9-]+$",
                },
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
                "instance": {"type": "string", "format": "uri-reference"},
                "errors": {"type": "array", "minItems": 1, "items": ref("FieldError")},
            },
        },
        **_moderation_schemas(),
        "Health": {
            "type": "object",
            "required": ["status", "version"],
            "properties": {"status": {"const": "ok"}, "version": {"type": "string"}},
        },
        "Ready": {
            "type": "object",
            "required": ["status", "schema_revision"],
            "properties": {
                "status": {"const": "ready"},
                "schema_revision": {"type": "string"},
            },
        },
        "NotReady": {
            "type": "object",
            "required": ["status", "reason"],
            "properties": {"status": {"const": "unavailable"}, "reason": {"type": "string"}},
        },
    }


def _moderator_comment_schema(public: dict[str, Any]) -> dict[str, Any]:
    """The public Comment plus who wrote it: moderators must see whom they ban."""
    schema = json.loads(json.dumps(public))
    schema["description"] = "A comment as moderators see it: the public view plus the author."
    schema["required"] = [*schema["required"], "author_email", "author_subject"]
    schema["properties"]["author_email"] = _nullable({"type": "string"})
    schema["properties"]["author_subject"] = {
        **_nullable({"type": "string"}),
        "description": "The identity provider's subject when posted with a JWT.",
    }
    return schema


def _page_of(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "additionalProperties": False,
        "properties": {
            "items": {"type": "array", "items": item},
            "next_cursor": _nullable({"type": "string", "minLength": 1}),
        },
    }


def _moderation_schemas() -> dict[str, Any]:
    timestamp = {"type": "string", "format": "date-time"}
    ban_target = adapter_schema(models.BAN_TARGET)
    return {
        "BulkResult": {
            "type": "object",
            "required": ["action", "changed", "unchanged"],
            "additionalProperties": False,
            "properties": {
                "action": {"type": "string", "enum": list(BULK_ACTIONS)},
                "changed": {"type": "array", "items": {"type": "integer"}},
                "unchanged": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "Missing, or already in the target state.",
                },
            },
        },
        "BanTarget": ban_target,
        "BanResult": {
            "type": "object",
            "required": ["target", "created"],
            "additionalProperties": False,
            "properties": {
                "target": ban_target,
                "created": {"type": "boolean", "description": "false: was already banned."},
            },
        },
        "Ban": {
            "type": "object",
            "required": ["target", "reason", "created_by", "created_at"],
            "additionalProperties": False,
            "properties": {
                "target": ban_target,
                "reason": _nullable({"type": "string"}),
                "created_by": {"type": "string", "description": "The moderator's identity."},
                "created_at": timestamp,
            },
        },
        "BanList": {
            "type": "object",
            "required": ["items"],
            "additionalProperties": False,
            "properties": {"items": {"type": "array", "items": ref("Ban")}},
        },
        "AuditEntry": {
            "type": "object",
            "required": [
                "id",
                "actor",
                "action",
                "target",
                "comment_ids",
                "details",
                "created_at",
            ],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "integer"},
                "actor": {"type": "string", "description": "Who did it (key or subject)."},
                "action": {"type": "string", "examples": ["approve", "ban", "edit"]},
                "target": _nullable({"type": "string"}),
                "comment_ids": {"type": "array", "items": {"type": "integer"}},
                "details": _nullable({"type": "object"}),
                "created_at": timestamp,
            },
        },
        "AuditPage": _page_of(ref("AuditEntry")),
        "ModeratorPage": _page_of(ref("ModeratorComment")),
    }
