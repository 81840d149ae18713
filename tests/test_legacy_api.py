"""The original API, as existing clients use it; on SQLite and on PostgreSQL."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from .authkit import bearer

NEW = "/api/comment/new"
ORIGINAL_APP = Path(__file__).resolve().parents[1] / "bench" / "baseline_app.py"


def post(client, payload, **kwargs):
    return client.post(NEW, json=payload, **kwargs)


def listing(client, content_id):
    return client.get(f"/api/comment/list/{content_id}")


def original_app():
    """The original in-memory app (bench/baseline_app.py), a fresh dict per call."""
    spec = importlib.util.spec_from_file_location("original_comments_app", ORIGINAL_APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def test_answers_are_the_original_apps_bytes(make_app):
    """Byte-compatible, as docs/api.md says: with raw emails (LEGACY_EMAIL=full; masking is
    a documented difference) every answer of the walkthrough is the original app's, byte
    for byte: keys in the same order (the original's Flask sorted them), same separators,
    same trailing newline, same status and media type. The other documented difference:
    non-ASCII text is UTF-8 where the original wrote \\u escapes (the same JSON)."""
    ours = make_app(legacy_email="full").test_client()
    original = original_app().test_client()
    calls = [
        ("post", NEW, {"email": "alice@example.com", "comment": "first post!", "content_id": 1}),
        ("post", NEW, {"email": "bob@example.com", "comment": 's\u00e9cond "!"', "content_id": 1}),
        ("post", NEW, {"email": "carol@example.com", "comment": "other", "content_id": "a-b"}),
        ("get", "/api/comment/list/1", None),
        ("get", "/api/comment/list/a-b", None),
        (
            "post",
            NEW,
            {
                "email": "dan@example.com",
                "comment": "two\nlines\tand \u00ff\U0001f600",
                "content_id": "caf\u00e9",
            },
        ),
        ("get", "/api/comment/list/caf%C3%A9", None),
        ("get", "/api/comment/list/404", None),
        ("get", "/api/comment/list/na%C3%AFve", None),
    ]
    for method, path, body in calls:
        mine = getattr(ours, method)(path, json=body)
        theirs = getattr(original, method)(path, json=body)
        assert (mine.status_code, mine.mimetype) == (theirs.status_code, theirs.mimetype), path
        same_json = json.dumps(json.loads(theirs.data), ensure_ascii=False, separators=(",", ":"))
        assert mine.data == same_json.encode() + b"\n", (path, mine.data, theirs.data)
        if theirs.data.isascii() and b"\\u" not in theirs.data:
            assert mine.data == theirs.data, path


def test_walkthrough_create_then_list_in_creation_order(client):
    first = post(client, {"email": "alice@example.com", "comment": "first post!", "content_id": 1})
    assert first.status_code == 200
    assert first.json == {
        "status": "SUCCESS",
        "message": "comment created and associated with content_id 1",
    }
    post(client, {"email": "bob@example.com", "comment": "second!", "content_id": 1})
    post(client, {"email": "carol@example.com", "comment": "other article", "content_id": 2})

    response = listing(client, 1)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert [c["comment"] for c in response.json] == ["first post!", "second!"]
    assert all(set(c) == {"email", "comment"} for c in response.json)


def test_unknown_content_is_404_in_legacy_shape(client):
    response = listing(client, 42)
    assert response.status_code == 404
    assert response.json == {"status": "NOT-FOUND", "message": "content_id 42 not found"}


def test_number_and_string_content_ids_are_the_same_content(client):
    post(client, {"email": "a@example.com", "comment": "as number", "content_id": 7})
    post(client, {"email": "b@example.com", "comment": "as string", "content_id": "7"})
    assert [c["comment"] for c in listing(client, "7").json] == ["as number", "as string"]
    message = post(client, {"email": "c@example.com", "comment": "x", "content_id": "7"}).json
    assert message["message"] == "comment created and associated with content_id 7"


@pytest.mark.parametrize(
    ("number", "content_id"),
    [
        ("1e23", "100000000000000000000000"),  # the float is 99999999999999991611392
        ("12345678901234567890.0", "12345678901234567890"),  # float: ...67168
        ("9007199254740993.0", "9007199254740993"),  # 2**53 + 1; float: 2**53
        ("1.0", "1"),
        ("1E+2", "100"),
        # Zero whatever its exponent; Decimal cannot round exponents this large, and the
        # 400 said "not a whole number".
        ("0e99999999999999999999", "0"),
        ("-0.0E-99999999999999999999", "0"),
    ],
)
def test_whole_numbers_with_a_fraction_or_exponent_name_exactly_that_content(
    client, number, content_id
):
    # A binary float would file these under a neighbouring content.
    body = f'{{"email": "a@example.com", "comment": "x", "content_id": {number}}}'
    response = client.post(NEW, data=body, content_type="application/json")
    assert (
        response.json["message"] == f"comment created and associated with content_id {content_id}"
    )
    assert listing(client, content_id).status_code == 200


@pytest.mark.parametrize("number", ["1e-400", "1.0000000000000000001", "0.99999999999999999999"])
def test_fractions_that_a_float_would_make_whole_are_400_not_another_content(client, number):
    # As floats these are 0.0, 1.0 and 1.0: they were taken as the content ids "0" and "1".
    body = f'{{"email": "a@example.com", "comment": "x", "content_id": {number}}}'
    response = client.post(NEW, data=body, content_type="application/json")
    _assert_legacy_error(response, 400, "BAD-REQUEST")
    assert "not a whole number" in response.json["message"]
    assert listing(client, 0).status_code == 404
    assert listing(client, 1).status_code == 404


def test_string_content_ids_are_kept_verbatim(client):
    post(client, {"email": "a@example.com", "comment": "slug", "content_id": "politics-2026-x"})
    assert listing(client, "politics-2026-x").json[0]["comment"] == "slug"
    assert listing(client, "Politics-2026-X").status_code == 404


@pytest.mark.parametrize(
    "text",
    [
        "Olá, ação é ótima — café!",
        "emoji 🎉🇧🇷👩🏽‍💻",
        "مرحبا بالعالم",
        "שלום עולם",
        "e\u0301 combining",
        "line one\nline two\ttabbed",
    ],
)
def test_unicode_round_trips_exactly(client, text):
    assert (
        post(client, {"email": "u@example.com", "comment": text, "content_id": "u"}).status_code
        == 200
    )
    response = listing(client, "u")
    assert response.json[-1]["comment"] == text
    # Sent as UTF-8, not as \u escapes.
    assert json.dumps(text, ensure_ascii=False).encode("utf-8") in response.data


def test_emails_are_masked_by_default(client):
    post(client, {"email": "alice@example.com", "comment": "hi", "content_id": 1})
    assert listing(client, 1).json == [{"email": "a***@example.com", "comment": "hi"}]


def test_a_quoted_local_part_with_an_at_sign_is_masked_whole(build, signer):
    """A token may carry an address whose quoted local part holds an "@": the domain is
    what follows the last one. Cut at the first, the list showed most of the local part
    ('"***@corp.example"@relay.example')."""
    client = build().test_client()
    token = signer.token("reader-q", email='"alice@corp.example"@relay.example')
    posted = post(client, {"comment": "hi", "content_id": "q"}, headers=bearer(token))
    assert posted.status_code == 200, posted.data
    assert listing(client, "q").json == [{"email": '"***@relay.example', "comment": "hi"}]


@pytest.mark.parametrize(("mode", "expected"), [("full", "alice@example.com"), ("hidden", None)])
def test_legacy_email_mode_is_configurable(make_app, mode, expected):
    client = make_app(legacy_email=mode).test_client()
    post(client, {"email": "alice@example.com", "comment": "hi", "content_id": 1})
    assert listing(client, 1).json == [{"email": expected, "comment": "hi"}]


@pytest.mark.parametrize("mode", ["masked", "full"])
def test_a_comment_posted_without_an_email_lists_a_null_email(make_app, mode):
    """Through v1 (or by a reader whose token names none) a comment may have no address:
    the legacy list says null, as docs/api.md does, not "" nor a masked placeholder."""
    client = make_app(legacy_email=mode).test_client()
    created = client.post("/api/v1/contents/1/comments", json={"body": "no address"})
    assert created.status_code == 201
    assert listing(client, 1).json == [{"email": None, "comment": "no address"}]


def test_large_threads_are_capped_and_announced(make_app):
    client = make_app(legacy_list_max=3).test_client()
    for i in range(5):
        post(client, {"email": f"r{i}@example.com", "comment": f"c{i}", "content_id": "big"})
    response = listing(client, "big")
    assert [c["comment"] for c in response.json] == ["c0", "c1", "c2"]
    assert response.headers["X-Comments-Truncated"] == "true"
    assert "/api/v1/contents/big/comments" in response.headers["Link"]
    small = listing(client, "big-not")  # unknown: still 404, no truncation headers
    assert small.status_code == 404
    assert "X-Comments-Truncated" not in small.headers


def _assert_legacy_error(response, status, word):
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = response.json
    assert set(body) == {"status", "message"}
    assert body["status"] == word
    assert body["message"]
    assert b"Traceback" not in response.data
    assert b"<html" not in response.data.lower()


BAD_PAYLOADS = [
    ({"comment": "x", "content_id": 1}, "email"),
    ({"email": "a@example.com", "content_id": 1}, "comment"),
    ({"email": "a@example.com", "comment": "x"}, "content_id"),
    ({"email": "a@example.com", "comment": "x", "content_id": 1, "admin": True}, "admin"),
    ({"email": "a@example.com", "comment": 5, "content_id": 1}, "comment"),
    ({"email": "a@example.com", "comment": "   \n\t ", "content_id": 1}, "comment"),
    ({"email": "a@example.com", "comment": "", "content_id": 1}, "comment"),
    ({"email": "not-an-email", "comment": "x", "content_id": 1}, "email"),
    ({"email": "a b@example.com", "comment": "x", "content_id": 1}, "email"),
    ({"email": ["a@example.com"], "comment": "x", "content_id": 1}, "email"),
    ({"email": "a@example.com", "comment": "x", "content_id": ""}, "content_id"),
    ({"email": "a@example.com", "comment": "x", "content_id": "x" * 129}, "content_id"),
    ({"email": "a@example.com", "comment": "x", "content_id": "a\x00b"}, "content_id"),
    ({"email": "a@example.com", "comment": "x", "content_id": 1.5}, "content_id"),
    ({"email": "a@example.com", "comment": "x", "content_id": True}, "content_id"),
    ({"email": "a@example.com", "comment": "x", "content_id": None}, "content_id"),
    ({"email": "a@example.com", "comment": "x", "content_id": {"id": 1}}, "content_id"),
    (["not", "an", "object"], "body"),
]


@pytest.mark.parametrize(("payload", "field"), BAD_PAYLOADS)
def test_bad_fields_are_rejected_and_nothing_is_stored(client, payload, field):
    response = post(client, payload)
    _assert_legacy_error(response, 400, "BAD-REQUEST")
    assert field in response.json["message"]
    assert listing(client, 1).status_code == 404


def test_comment_over_max_length_is_rejected(make_app):
    client = make_app(max_comment_length=10).test_client()
    ok = post(client, {"email": "a@example.com", "comment": "x" * 10, "content_id": 1})
    assert ok.status_code == 200
    response = post(client, {"email": "a@example.com", "comment": "y" * 11, "content_id": 1})
    _assert_legacy_error(response, 400, "BAD-REQUEST")
    assert "at most 10 characters" in response.json["message"]
    assert len(listing(client, 1).json) == 1


def test_max_length_counts_characters_not_bytes(make_app):
    client = make_app(max_comment_length=3).test_client()
    assert (
        post(client, {"email": "a@example.com", "comment": "🎉🎉🎉", "content_id": 1}).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("body", "content_type", "status", "word"),
    [
        (b'{"email": "a@example.com", "comment": ', "application/json", 400, "BAD-REQUEST"),
        (b"", "application/json", 400, "BAD-REQUEST"),
        (b'{"email": NaN}', "application/json", 400, "BAD-REQUEST"),
        (b"\xff\xfe{}", "application/json", 400, "BAD-REQUEST"),
        (
            b"email=a@example.com&comment=x&content_id=1",
            "application/x-www-form-urlencoded",
            415,
            "UNSUPPORTED-MEDIA-TYPE",
        ),
        (
            b'{"email": "a@example.com", "comment": "x", "content_id": 1}',
            "text/plain",
            415,
            "UNSUPPORTED-MEDIA-TYPE",
        ),
    ],
)
def test_malformed_bodies(client, body, content_type, status, word):
    response = client.post(NEW, data=body, content_type=content_type)
    _assert_legacy_error(response, status, word)
    assert listing(client, 1).status_code == 404


def test_a_byte_order_mark_is_400_and_named(client):
    # RFC 8259 section 8.1; the message was Python's "decode using utf-8-sig".
    body = b'\xef\xbb\xbf{"email": "a@example.com", "comment": "x", "content_id": 1}'
    response = client.post(NEW, data=body, content_type="application/json")
    _assert_legacy_error(response, 400, "BAD-REQUEST")
    assert response.json["message"].endswith("it starts with a byte order mark")
    assert listing(client, 1).status_code == 404


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        # A reader that keeps the first key (a proxy, a WAF, a moderation tool) sees content
        # 1 and "x"; the last key won here, so content 2 got "<script>" stored.
        ('"comment": "x", "content_id": 1, "content_id": 2', "content_id"),
        ('"comment": "x", "comment": "<script>", "content_id": 1', "comment"),
        ('"email": "b@example.com", "comment": "x", "content_id": 1', "email"),
        # The same key spelt with an escape is the same key.
        ('"comment": "x", "c\\u006fmment": "y", "content_id": 1', "comment"),
        # At any depth, even where the field would be refused anyway: named first.
        ('"comment": {"t": 1, "t": 2}, "content_id": 1', "t"),
    ],
)
def test_duplicate_keys_are_400_naming_the_key_and_store_nothing(client, fields, key):
    body = '{"email": "a@example.com", ' + fields + "}"
    response = client.post(NEW, data=body, content_type="application/json")
    _assert_legacy_error(response, 400, "BAD-REQUEST")
    assert response.json["message"] == (
        f'the request body has the key "{key}" more than once in one object; send each key '
        "once (parsers disagree on which value counts)"
    )
    assert listing(client, 1).status_code == 404
    assert listing(client, 2).status_code == 404


def test_body_over_size_limit_is_413(make_app):
    client = make_app(max_body_bytes=1024).test_client()
    payload = json.dumps({"email": "a@example.com", "comment": "x" * 2000, "content_id": 1})
    response = client.post(NEW, data=payload, content_type="application/json")
    _assert_legacy_error(response, 413, "CONTENT-TOO-LARGE")
    assert listing(client, 1).status_code == 404


def test_a_body_shorter_than_its_content_length_is_400_and_stores_nothing(client):
    # The body is read by its declared length (web/common.py); a client that sends less
    # and hangs up is a bad request, never a partial JSON document taken at face value.
    payload = json.dumps({"email": "a@example.com", "comment": "short", "content_id": 1})
    response = client.post(
        NEW,
        data=payload,
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": str(len(payload) + 10)},
    )
    assert response.status_code == 400
    assert response.is_json
    assert listing(client, 1).status_code == 404


def test_wrong_method_is_405_json(client):
    response = client.get(NEW)
    _assert_legacy_error(response, 405, "METHOD-NOT-ALLOWED")
    assert "POST" in response.headers["Allow"]
    response = client.delete("/api/comment/list/1")
    _assert_legacy_error(response, 405, "METHOD-NOT-ALLOWED")


def test_unknown_legacy_route_is_404_json(client):
    _assert_legacy_error(client.get("/api/comment/nope"), 404, "NOT-FOUND")


def test_invalid_content_id_in_path_is_400(client):
    response = listing(client, "x" * 200)
    _assert_legacy_error(response, 400, "BAD-REQUEST")
