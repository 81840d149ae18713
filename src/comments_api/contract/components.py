"""components.schemas of /openapi.json: generated from the models, plus response shapes."""

from __future__ import annotations

from typing import Any

import msgspec

from ..comments.rules import MAX_ID
from ..settings import Settings
from . import models
from .responses import response_schemas

# Ids as the database stores them (BIGINT): larger numbers name nothing.
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID, "format": "int64"}
EXAMPLE_EMAIL = "alice@example.com"
SCHEMAS = "#/components/schemas/{name}"


def ref(name: str, kind: str = "schemas") -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def clean(schema: Any, parent: str = "") -> Any:
    """msgspec's schema without what OpenAPI readers don't need, with what they expect.

    Drops generated ``title``s (noise in Swagger UI) and ``default: null`` (absent and
    null both mean "not given"; a non-nullable field must not advertise null), and states
    ``type: string`` on an enum of strings (msgspec leaves it implied by the values) in
    the declared order (``models.choice``), a one-value enum as ``const``, and no empty
    ``required``.
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
    if parent == "properties":
        return cleaned
    if models.ENUM_ORDER in cleaned:
        cleaned["enum"] = cleaned.pop(models.ENUM_ORDER)
    enum = cleaned.get("enum")
    if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
        cleaned.setdefault("type", "string")
        if len(enum) == 1:  # a single value is a const
            cleaned["const"] = cleaned.pop("enum")[0]
    if cleaned.get("required") == []:
        del cleaned["required"]
    return cleaned


def value_schema(value: models.Value[Any]) -> dict[str, Any]:
    """The JSON Schema of one value type (a parameter, a path segment)."""
    return clean(value.schema())  # type: ignore[no-any-return]


def _as_refs(schema: Any, named: dict[str, dict[str, Any]]) -> Any:
    """Every inline copy of a named value component replaced by a ``$ref`` to it."""
    if isinstance(schema, list):
        return [_as_refs(item, named) for item in schema]
    if not isinstance(schema, dict):
        return schema
    for name, component in named.items():
        if schema == component:
            return ref(name)
    return {key: _as_refs(value, named) for key, value in schema.items()}


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
    _, generated = msgspec.json.schema_components(bodies, ref_template=SCHEMAS)
    assert set(generated) == {model.__name__ for model in bodies}, generated.keys()
    for model in bodies:
        generated[model.__name__] = {**generated[model.__name__], **model.SCHEMA_EXTRA}
    # ContentId is a component of its own (the legacy body and the paths refer to it).
    named = {"ContentId": value_schema(models.CONTENT_ID)}
    return {**named, **_as_refs(clean(generated), named)}


def schemas(settings: Settings) -> dict[str, Any]:
    """Every component schema: requests and responses, generated from their models."""
    generated = clean(response_schemas())
    generated["LegacyComment"]["properties"]["email"]["description"] = (
        "Depends on `LEGACY_EMAIL`: `masked` (default, `a***@example.com`), `full`, or "
        f"`hidden` (null). This deployment: `{settings.legacy_email}`."
    )
    return {
        **request_schemas(settings.max_comment_length),
        "BanTarget": value_schema(models.BAN_TARGET),
        **generated,
    }
