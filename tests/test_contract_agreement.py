"""The published schemas and the validators agree, case by case (issues 8 and 10).

The schemas are generated from the request models that validate (comments_api.contract),
so they cannot drift apart silently; these tables pin the verdicts. Each row is checked
against the JSON Schema served at /openapi.json and against the running app over HTTP
(on SQLite and PostgreSQL); the unit tests at the end check every row against the
generated schemas and the models directly. Both must give the expected verdict;
tests/test_properties.py then checks the same agreement on generated input.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from comments_api.comments.rules import (
    AUDIT_LOG,
    InvalidInput,
    Limits,
    NotFound,
    decode_cursor,
    encode_cursor,
)
from comments_api.contract.requests import (
    parse_comment_id,
    parse_limit,
    parse_order,
    validate_legacy_create,
    validate_v1_create,
)
from comments_api.contract.spec import build_spec
from comments_api.identity.credentials import SCOPE_ADMIN
from comments_api.moderation.rules import parse_ban, parse_bulk
from comments_api.settings import Settings

from .authkit import api_key, bearer

SPEC_URI = "urn:comments-api:openapi"
ACCEPT, REJECT = True, False
MAX_ID = 2**63 - 1  # SQL BIGINT


def schema_accepts(spec: dict[str, Any], schema: dict[str, Any], instance: Any) -> bool:
    registry = Registry().with_resource(SPEC_URI, Resource(spec, DRAFT202012))
    rooted = json.loads(json.dumps(schema).replace('"#/', f'"{SPEC_URI}#/'))
    validator = Draft202012Validator(
        rooted, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return validator.is_valid(instance)


def query_value(raw: str) -> Any:
    """How an integer query parameter reads: ASCII decimal digits, else the raw string."""
    return int(raw) if re.fullmatch(r"-?[0-9]+", raw) else raw


LONG = "x" * 5001
NEW_COMMENT = [
    ({"body": "hello"}, ACCEPT),
    ({"body": "two\nlines\ttabbed\r\n"}, ACCEPT),
    ({"body": "  padded  "}, ACCEPT),
    ({"body": "   "}, REJECT),
    ({"body": "\n\t"}, REJECT),
    ({"body": "\u3000"}, REJECT),  # ideographic space is whitespace too
    ({"body": "\x07"}, REJECT),
    ({"body": "bell\x07"}, REJECT),
    ({"body": "nul\x00"}, REJECT),
    ({"body": "c1\x85"}, REJECT),
    ({"body": ""}, REJECT),
    ({"body": LONG}, REJECT),
    ({"body": None}, REJECT),
    ({"body": 5}, REJECT),
    ({}, REJECT),
    ({"body": "x", "extra": 1}, REJECT),
    ({"body": "x", "email": "a@b.co"}, ACCEPT),
    ({"body": "x", "email": None}, ACCEPT),
    ({"body": "x", "email": ""}, REJECT),
    ({"body": "x", "email": "a@b"}, REJECT),
    ({"body": "x", "email": "a b@c.com"}, REJECT),
    ({"body": "x", "email": "a@b.com\n"}, REJECT),
    ({"body": "x", "email": "\x80a@b.com"}, REJECT),
    ({"body": "x", "author_name": "Alice"}, ACCEPT),
    ({"body": "x", "author_name": None}, ACCEPT),
    ({"body": "x", "author_name": " "}, REJECT),
    ({"body": "x", "author_name": ""}, REJECT),
    ({"body": "x", "author_name": "a\x1bb"}, REJECT),
    ({"body": "x", "author_name": "n" * 81}, REJECT),
    ({"body": "x", "parent_id": "PARENT"}, ACCEPT),
    ({"body": "x", "parent_id": "PARENT.0"}, ACCEPT),  # 1.0 is the integer 1
    ({"body": "x", "parent_id": 1.5}, REJECT),
    ({"body": "x", "parent_id": 0}, REJECT),
    ({"body": "x", "parent_id": True}, REJECT),
    ({"body": "x", "parent_id": "1"}, REJECT),
    ({"body": "x", "parent_id": 2**63}, REJECT),
    ({"body": "x", "parent_id": None}, ACCEPT),
]

LEGACY = [
    ({"email": "a@b.co", "comment": "hi", "content_id": 1}, ACCEPT),
    ({"email": "a@b.co", "comment": "hi", "content_id": "1"}, ACCEPT),
    ({"email": "a@b.co", "comment": "hi", "content_id": 1.0}, ACCEPT),
    ({"email": "a@b.co", "comment": "hi", "content_id": -7}, ACCEPT),
    ({"email": "a@b.co", "comment": "hi", "content_id": 10**128}, REJECT),
    ({"email": "a@b.co", "comment": "hi", "content_id": 1.5}, REJECT),
    ({"email": "a@b.co", "comment": "hi", "content_id": True}, REJECT),
    ({"email": "a@b.co", "comment": "hi", "content_id": " 1"}, REJECT),
    ({"email": "a@b.co", "comment": "hi", "content_id": "a\nb"}, REJECT),
    ({"email": "a@b.co", "comment": "hi", "content_id": "tab\t"}, REJECT),
    ({"email": "a@b.co", "comment": "hi", "content_id": "1\n"}, REJECT),
    ({"email": "a@b.co", "comment": "hi", "content_id": "c1\x9f"}, REJECT),
    ({"email": "a@b.co", "comment": "hi", "content_id": "."}, REJECT),  # a dot segment
    ({"email": "a@b.co", "comment": "hi", "content_id": ".."}, REJECT),
    ({"email": "a@b.co", "comment": "hi", "content_id": "..."}, ACCEPT),
    ({"email": "a@b.co", "comment": "hi", "content_id": ".a"}, ACCEPT),
    ({"email": "", "comment": "hi", "content_id": 1}, REJECT),
    ({"email": None, "comment": "hi", "content_id": 1}, REJECT),
    ({"email": "a@b.co", "comment": " ", "content_id": 1}, REJECT),
    ({"email": "a@b.co", "comment": "\x07", "content_id": 1}, REJECT),
    ({"comment": "hi", "content_id": 1}, REJECT),
]

NEW_BAN = [
    ({"email": "troll@example.com"}, ACCEPT),
    ({"email": "Troll@Example.com", "reason": "spam\nagain"}, ACCEPT),
    ({"subject": "idp|123"}, ACCEPT),
    ({"subject": "s", "reason": None}, ACCEPT),
    ({"subject": None}, REJECT),
    ({"email": "a@b.co", "subject": None}, REJECT),
    ({"email": None}, REJECT),
    ({"email": ""}, REJECT),
    ({"email": "no-at-sign"}, REJECT),
    ({"email": "a\x00@b.co"}, REJECT),
    ({"subject": ""}, REJECT),
    ({"subject": "a\x00b"}, REJECT),
    ({"subject": "line\n"}, REJECT),
    ({"subject": "s", "reason": "bell\x07"}, REJECT),
    ({"subject": "s", "reason": 3}, REJECT),
    ({}, REJECT),
    ({"email": "a@b.co", "subject": "s"}, REJECT),
]

BULK = [
    ({"action": "hide", "ids": ["PARENT"]}, ACCEPT),
    ({"action": "hide", "ids": ["PARENT.0"]}, ACCEPT),
    ({"action": "hide", "ids": [MAX_ID]}, ACCEPT),
    ({"action": "hide", "ids": [2**63]}, REJECT),
    ({"action": "hide", "ids": [18446744073709551617]}, REJECT),
    ({"action": "hide", "ids": [1.5]}, REJECT),
    ({"action": "hide", "ids": [0]}, REJECT),
    ({"action": "hide", "ids": [True]}, REJECT),
    ({"action": "hide", "ids": []}, REJECT),
    ({"action": "hide", "ids": list(range(1, 102))}, REJECT),
    ({"action": "erase", "ids": [1]}, REJECT),
    ({"action": "hide", "ids": [1], "if_status": ["pending"]}, ACCEPT),
    ({"action": "hide", "ids": [1], "if_status": ["published", "pending", "hidden"]}, ACCEPT),
    ({"action": "hide", "ids": [1], "if_status": []}, REJECT),
    ({"action": "hide", "ids": [1], "if_status": ["deleted"]}, REJECT),
    ({"action": "hide", "ids": [1], "if_status": "pending"}, REJECT),
    ({"action": "hide", "ids": [1], "if_status": None}, REJECT),
    ({"action": "hide", "ids": [1], "if_status": ["pending"] * 4}, REJECT),
    ({"action": "approve", "ids": [1], "if_unedited_since": "2026-12-07T10:00:00Z"}, ACCEPT),
    ({"action": "approve", "ids": [1], "if_unedited_since": "2026-12-07T10:00:00.5+14:00"}, ACCEPT),
    ({"action": "approve", "ids": [1], "if_unedited_since": "0001-01-01T00:00:00+14:00"}, ACCEPT),
    ({"action": "approve", "ids": [1], "if_unedited_since": "2026-12-07T10:00:00"}, REJECT),
    ({"action": "approve", "ids": [1], "if_unedited_since": "2026-13-07T10:00:00Z"}, REJECT),
    ({"action": "approve", "ids": [1], "if_unedited_since": "yesterday"}, REJECT),
    ({"action": "approve", "ids": [1], "if_unedited_since": 1765101600}, REJECT),
    ({"action": "approve", "ids": [1], "if_unedited_since": None}, REJECT),
    (
        {"action": "delete", "author": "email:a@b.co", "if_unedited_since": "2026-12-07T10:00:00Z"},
        REJECT,
    ),
    ({"action": "delete", "author": "email:a@b.co"}, ACCEPT),
    ({"action": "hide", "author": "email:a@b.co"}, REJECT),
    ({"action": "delete"}, REJECT),
    # Exactly one of ids or author, whatever the action (the schema took both with
    # approve/hide, where its author branch could not match).
    ({"action": "hide", "ids": [1], "author": "email:a@b.co"}, REJECT),
    ({"action": "approve", "ids": [1], "author": "sub:x"}, REJECT),
    ({"action": "delete", "ids": [1], "author": "email:a@b.co"}, REJECT),
]

LIST_QUERY = [
    ({"limit": "5"}, ACCEPT),
    ({"limit": "100"}, ACCEPT),
    ({"limit": "0"}, REJECT),
    ({"limit": "101"}, REJECT),
    ({"limit": "\u0663"}, REJECT),  # Arabic-Indic three
    ({"limit": "\u00b2"}, REJECT),  # superscript two
    ({"limit": "1_0"}, REJECT),
    ({"limit": " 5"}, REJECT),
    ({"cursor": encode_cursor(1, "oldest")}, ACCEPT),
    ({"cursor": encode_cursor(MAX_ID, "oldest")}, ACCEPT),
    ({"cursor": "0"}, REJECT),
    ({"cursor": ""}, REJECT),
    ({"cursor": "bzE"}, ACCEPT),  # o1
    ({"cursor": "bzF"}, REJECT),  # non-canonical base64 of the same bytes
    ({"cursor": "b!zE"}, REJECT),
    ({"cursor": "bzE\n"}, REJECT),
    ({"order": "newest", "cursor": encode_cursor(3, "newest")}, ACCEPT),
    ({"order": "newest", "cursor": encode_cursor(3, AUDIT_LOG)}, REJECT),  # the audit log's
    ({"cursor": encode_cursor(3, AUDIT_LOG)}, REJECT),
]


@pytest.fixture
def spec(client) -> dict[str, Any]:
    return client.get("/openapi.json").json


@pytest.fixture
def parent(client) -> int:
    created = client.post("/api/v1/contents/agree/comments", json={"body": "parent"})
    assert created.status_code == 201
    return int(created.json["id"])


def with_parent(payload: dict[str, Any], parent: int) -> dict[str, Any]:
    """Put the real parent id where the table says PARENT (PARENT.0: as a float)."""

    def fill(value: Any) -> Any:
        if value == "PARENT":
            return parent
        if value == "PARENT.0":
            return float(parent)
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    return {k: fill(v) for k, v in payload.items()}


def verdict(response) -> bool:
    assert response.status_code < 500, response.data
    if response.status_code < 300:
        return ACCEPT
    assert response.status_code == 400, response.data
    return REJECT


def disagreements(rows, schema_verdict, http_verdict) -> list[str]:
    """Every row where the schema or the app gives another verdict than the table."""
    wrong = []
    for case, expected in rows:
        by_schema, by_http = schema_verdict(case), http_verdict(case)
        if (by_schema, by_http) != (expected, expected):
            wrong.append(f"{case!r}: expected {expected}, schema {by_schema}, HTTP {by_http}")
    return wrong


# One app per database for a whole table: each row is one request, and a fresh database
# per row would cost a migration each.


def test_new_comment(client, spec, parent):
    schema = spec["components"]["schemas"]["NewComment"]
    assert not disagreements(
        [(with_parent(p, parent), e) for p, e in NEW_COMMENT],
        lambda p: schema_accepts(spec, schema, p),
        lambda p: verdict(client.post("/api/v1/contents/agree/comments", json=p)),
    )


def test_legacy_new_comment(client, spec):
    schema = spec["components"]["schemas"]["LegacyNewComment"]
    # Distinct texts: the same author posting "hi" twice is a duplicate (409), not a row.
    rows = [({**p, "comment": f"hi {i}"} if p.get("comment") == "hi" else p, e)
            for i, (p, e) in enumerate(LEGACY)]  # fmt: skip
    assert not disagreements(
        rows,
        lambda p: schema_accepts(spec, schema, p),
        lambda p: verdict(client.post("/api/comment/new", json=p)),
    )


def test_new_ban(client, spec):
    schema = spec["components"]["schemas"]["NewBan"]
    headers = bearer(api_key(client.application, SCOPE_ADMIN))

    def ban(payload: dict[str, Any]) -> bool:
        verdict_ = verdict(client.post("/api/v1/moderation/bans", json=payload, headers=headers))
        for target in client.get("/api/v1/moderation/bans", headers=headers).json["items"]:
            # Lift it again: the next row must not find "already banned".
            client.delete(f"/api/v1/moderation/bans/{target['target']}", headers=headers)
        return verdict_

    assert not disagreements(NEW_BAN, lambda p: schema_accepts(spec, schema, p), ban)


def test_bulk_moderation(client, spec, parent):
    schema = spec["components"]["schemas"]["BulkModeration"]
    headers = bearer(api_key(client.application, SCOPE_ADMIN))
    assert not disagreements(
        [(with_parent(p, parent), e) for p, e in BULK],
        lambda p: schema_accepts(spec, schema, p),
        lambda p: verdict(client.post("/api/v1/moderation/comments", json=p, headers=headers)),
    )


def test_list_query_parameters(client, spec):
    components = spec["components"]["parameters"]
    # The list's cursor schema takes either order's cursors (the pending queue and the
    # audit log have one list each: OldestCursor, NewestCursor, whose cursors this one refuses).
    schemas = {name: components[ref]["schema"] for name, ref in
               (("limit", "Limit"), ("cursor", "Cursor"), ("order", "Order"))}  # fmt: skip

    def by_schema(query: dict[str, str]) -> bool:
        values = {n: query_value(v) if n == "limit" else v for n, v in query.items()}
        return all(schema_accepts(spec, schemas[n], v) for n, v in values.items())

    assert not disagreements(
        LIST_QUERY,
        by_schema,
        lambda q: verdict(client.get("/api/v1/contents/agree/comments", query_string=q)),
    )


COMMENT_IDS = [("999999", ACCEPT), (str(MAX_ID), ACCEPT), ("0", REJECT), (str(2**63), REJECT),
               ("\u0663", REJECT), ("\u00b2", REJECT), ("1.0", REJECT), ("+1", REJECT),
               ("1e3", REJECT)]  # fmt: skip


def test_comment_id_path(client, spec, parent):
    schema = spec["components"]["parameters"]["CommentIdPath"]["schema"]
    for segment, expected in COMMENT_IDS:
        assert schema_accepts(spec, schema, query_value(segment)) is expected, segment
        # Valid ids that name no comment and invalid ones both answer 404 ("Anything else
        # answers 404"), and none may reach the database as a number it cannot hold.
        response = client.get(f"/api/v1/comments/{segment}")
        assert response.status_code == 404, (segment, response.data)
    assert client.get(f"/api/v1/comments/{parent}").status_code == 200


def test_a_cursor_of_the_other_order_is_the_one_documented_400(client, spec):
    """The list's cursor schema cannot see `order`: this 400 is documented, not a conflict."""
    schema = spec["components"]["parameters"]["Cursor"]["schema"]
    cursor = encode_cursor(3, "newest")
    assert schema_accepts(spec, schema, cursor)
    response = client.get("/api/v1/contents/agree/comments", query_string={"cursor": cursor})
    assert response.status_code == 400
    assert "different order" in response.json["detail"]


# --- the same tables without HTTP: generated schemas against the models (unit tier) -----
# The schemas above are generated from these models (comments_api.contract); here each row
# is checked against both directly, in milliseconds. tests/test_properties.py does the same
# on generated input, in both directions.

UNIT_SPEC = build_spec(Settings())
UNIT_LIMITS = Limits(max_comment_length=Settings().max_comment_length)


def model_accepts(check, *args: Any) -> bool:
    try:
        check(*args)
    except (InvalidInput, NotFound):
        return False
    return True


MODEL_TABLES = {
    "NewComment": (NEW_COMMENT, lambda p: validate_v1_create(p, "c", UNIT_LIMITS)),
    "LegacyNewComment": (LEGACY, lambda p: validate_legacy_create(p, UNIT_LIMITS)),
    "NewBan": (NEW_BAN, parse_ban),
    "BulkModeration": (BULK, parse_bulk),
}


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(MODEL_TABLES))
def test_generated_schema_and_model_agree_on_every_row(name):
    rows, check = MODEL_TABLES[name]
    schema = UNIT_SPEC["components"]["schemas"][name]
    assert not disagreements(
        [(with_parent(p, 7), e) for p, e in rows],
        lambda p: schema_accepts(UNIT_SPEC, schema, p),
        lambda p: model_accepts(check, p),
    )


@pytest.mark.unit
def test_generated_parameter_schemas_and_parsers_agree_on_every_row():
    params = UNIT_SPEC["components"]["parameters"]

    def by_schema(query: dict[str, str]) -> bool:
        return all(
            schema_accepts(UNIT_SPEC, params[ref]["schema"], query_value(v) if n == "limit" else v)
            for n, v in query.items()
            for ref in [{"limit": "Limit", "cursor": "Cursor", "order": "Order"}[n]]
        )

    def by_parsers(query: dict[str, str]) -> bool:
        def parse() -> None:
            parse_limit(query.get("limit"))
            # The one documented disagreement (a cursor of the other order) is not a row.
            decode_cursor(query.get("cursor"), parse_order(query.get("order")))

        return model_accepts(parse)

    assert not disagreements(LIST_QUERY, by_schema, by_parsers)
    schema = params["CommentIdPath"]["schema"]
    assert not disagreements(
        COMMENT_IDS,
        lambda s: schema_accepts(UNIT_SPEC, schema, query_value(s)),
        lambda s: model_accepts(parse_comment_id, s),
    )
