"""components.schemas of /openapi.json: generated from the models, plus response shapes."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from ..comments.rules import MAX_ID
from ..settings import Settings
from . import models
from .responses import response_schemas

# Ids as the database stores them (BIGINT): larger numbers name nothing.
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID, "format": "int64"}
EXAMPLE_EMAIL = "alice@example.com"


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


def schemas(settings: Settings) -> dict[str, Any]:
    """Every component schema: requests and responses, generated from their models."""
    generated = clean(response_schemas())
    generated["LegacyComment"]["properties"]["email"]["description"] = (
        "Depends on `LEGACY_EMAIL`: `masked` (default, `a***@example.com`), `full`, or "
        f"`hidden` (null). This deployment: `{settings.legacy_email}`."
    )
    return {
        **request_schemas(settings.max_comment_length),
        "BanTarget": adapter_schema(models.BAN_TARGET),
        **generated,
    }
