"""A JSON object that names a key twice is a 400 on every route that reads a body.

The last key used to win: ``{"body": "hello", "body": "<other>"}`` stored "<other>" while a
proxy, WAF or moderation tool in front that keeps the first key saw "hello". Every body
goes through ``web.common.read_json``; the tests here send a duplicate to each route that
takes one (the inventory test fails when a new one appears untested) and check that the
answer names the key and that nothing changed. Legacy and v1 creates: test_legacy_api.py,
test_v1_api.py; over real gunicorn: test_client_input.py.
"""

from __future__ import annotations

import pytest
from flask import Flask
from werkzeug.exceptions import BadRequest

from comments_api.identity.credentials import SCOPE_MODERATE
from comments_api.web.common import read_json

from .authkit import AUDIENCE, ISSUER, api_key, bearer, hs_signer

BODY_METHODS = {"POST", "PUT", "PATCH"}
MESSAGE = (
    'the request body has the key "{}" more than once in one object; send each key once '
    "(parsers disagree on which value counts)"
)


# --- the reader itself (no database) --------------------------------------------------------


def _read(text: str) -> object:
    app = Flask(__name__)
    with app.test_request_context(
        "/", method="POST", data=text.encode(), content_type="application/json"
    ):
        return read_json()


def _refused(text: str) -> str:
    with pytest.raises(BadRequest) as info:
        _read(text)
    return str(info.value.description)


@pytest.mark.unit
@pytest.mark.parametrize(
    "text",
    [
        '{"a": {"a": {"a": 1}}}',  # nested objects have keys of their own
        '[{"a": 1}, {"a": 2}]',  # so do sibling objects
        '{"a": 1, "A": 2, "a ": 3, "\\u00e9": 4, "e\\u0301": 5}',  # different strings
        "{}",
        '{"": 1}',
    ],
)
def test_the_same_key_in_different_objects_or_spellings_of_different_keys_are_read(text):
    assert _read(text) is not None


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('{"a": 1, "a": 1}', "a"),  # the same value too: still two keys
        ('{"a": 1, "b": 1, "b": 2, "a": 2}', "b"),  # the first key met again is named
        ('{"a": 1, "a": 2, "a": 3}', "a"),
        ('{"": 1, "": 2}', ""),
        ('{"x": [1, {"y": [{"z": 1, "z": null}]}]}', "z"),  # at any depth
        ('[0, {"k": 1, "k": 2}]', "k"),
        ('{"\\u0061": 1, "a": 2}', "a"),  # an escape spells the same key
    ],
)
def test_a_key_twice_in_one_object_is_refused_and_named(text, key):
    assert _refused(text) == MESSAGE.format(key)


@pytest.mark.unit
def test_a_duplicate_below_a_syntax_error_or_deep_nesting_is_still_a_400():
    # The object never closes, so the parser's own error is what the client hears.
    assert _refused('{"a": 1, "a": 2').startswith("the request body is not valid JSON: ")
    deep = '{"a":' * 5000 + '{"b": 1, "b": 2}' + "}" * 5000
    assert _refused(deep) == "the request body is not valid JSON: nested too deeply"


# --- every route that reads a body ------------------------------------------------------------


@pytest.fixture
def signer():
    return hs_signer()


@pytest.fixture
def app(make_app, signer) -> Flask:
    return make_app(jwt_hs256_secret=signer.key, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)


def _send(client, method: str, url: str, body: str, headers=None):
    return client.open(
        url, method=method, data=body.encode(), content_type="application/json", headers=headers
    )


def _assert_refused(response, key: str) -> None:
    assert response.status_code == 400, response.data
    detail = response.json.get("detail", response.json.get("message"))
    assert detail == MESSAGE.format(key)


def test_every_route_that_takes_a_body_is_covered_here(app):
    taking = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) & BODY_METHODS
    }
    assert taking == {
        ("POST", "/api/comment/new"),
        ("POST", "/api/v1/contents/<content_id:content_id>/comments"),
        ("PATCH", "/api/v1/comments/<comment_id>"),
        ("POST", "/api/v1/moderation/comments"),
        ("POST", "/api/v1/moderation/bans"),
    }, "a new route reads a body: send it a duplicate key below too"


def test_creates_on_both_apis(app):
    client = app.test_client()
    legacy = _send(
        client,
        "POST",
        "/api/comment/new",
        '{"email": "a@example.com", "comment": "x", "content_id": "d", "content_id": "e"}',
    )
    assert legacy.json["status"] == "BAD-REQUEST"
    _assert_refused(legacy, "content_id")
    v1 = _send(client, "POST", "/api/v1/contents/d/comments", '{"body": "a", "body": "b"}')
    _assert_refused(v1, "body")
    for content in ("d", "e"):
        assert client.get(f"/api/v1/contents/{content}/comments").json["items"] == []


def test_an_authors_edit(app, signer):
    client = app.test_client()
    alice = bearer(signer.token("alice"))
    created = client.post("/api/v1/contents/d/comments", json={"body": "kept"}, headers=alice)
    url = f"/api/v1/comments/{created.json['id']}"
    edit = _send(client, "PATCH", url, '{"body": "first", "body": "second"}', alice)
    _assert_refused(edit, "body")
    assert client.get(url).json["body"] == "kept"


def test_bulk_moderation_and_bans(app):
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    created = client.post("/api/v1/contents/d/comments", json={"body": "stays"}).json["id"]
    bulk = "/api/v1/moderation/comments"
    for body, key in [
        (f'{{"action": "approve", "action": "hide", "ids": [{created}]}}', "action"),
        (f'{{"action": "hide", "ids": [{created + 1}], "ids": [{created}]}}', "ids"),
    ]:
        _assert_refused(_send(client, "POST", bulk, body, mod), key)
    assert [c["id"] for c in client.get("/api/v1/contents/d/comments").json["items"]] == [created]
    ban = _send(
        client,
        "POST",
        "/api/v1/moderation/bans",
        '{"email": "a@example.com", "email": "b@example.com"}',
        mod,
    )
    _assert_refused(ban, "email")
    assert client.get("/api/v1/moderation/bans", headers=mod).json["items"] == []
