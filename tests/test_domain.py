"""Domain rules in isolation: plain Python, no HTTP, no database."""

from __future__ import annotations

import pytest

from comments_api.comments.rules import (
    InvalidInput,
    Limits,
    decode_cursor,
    email_hash,
    encode_cursor,
    legacy_email_view,
    mask_email,
)
from comments_api.contract.requests import parse_content_id, validate_legacy_create

pytestmark = pytest.mark.unit  # the fast tier: no servers, no network


# 1.0 is the number 1 in JSON and an integer for JSON Schema: the published schema
# accepts it, so the validator does too (issue 8: schema and validator must agree).
@pytest.mark.parametrize(
    ("raw", "expected"), [(1, "1"), ("1", "1"), (0, "0"), ("a-b_c", "a-b_c"), (1.0, "1")]
)
def test_content_ids_normalise_to_strings(raw, expected):
    assert parse_content_id(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", " ", " 1", "1 ", "a\nb", "x" * 129, 1.5, 10**128, None, True, [1]]
)
def test_bad_content_ids(raw):
    with pytest.raises(InvalidInput):
        parse_content_id(raw)


@pytest.mark.parametrize(
    "email",
    ["a@example.com", "first.last+tag@sub.example.co.uk", "ção@exemplo.com.br", "x@a-b.io"],
)
def test_valid_emails(email):
    payload = {"email": email, "comment": "x", "content_id": 1}
    assert validate_legacy_create(payload, Limits()).email == email


@pytest.mark.parametrize(
    "email",
    ["", "a", "a@", "@b.com", "a@b", "a@@b.com", "a b@c.com", "a@-b.com", "a@b..com",
     "a\x00@b.com", "x" * 65 + "@b.com", "a@" + "b" * 250 + ".com"],
)  # fmt: skip
def test_invalid_emails(email):
    with pytest.raises(InvalidInput) as info:
        validate_legacy_create({"email": email, "comment": "x", "content_id": 1}, Limits())
    assert info.value.errors[0].field == "email"


def test_all_problems_are_reported_at_once():
    with pytest.raises(InvalidInput) as info:
        validate_legacy_create({"email": "bad", "comment": "", "extra": 1}, Limits())
    assert {e.field for e in info.value.errors} == {"email", "comment", "content_id", "extra"}


def test_comment_keeps_newlines_but_not_other_control_characters():
    ok = validate_legacy_create(
        {"email": "a@b.co", "comment": "a\nb\tc", "content_id": 1}, Limits()
    )
    assert ok.body == "a\nb\tc"
    with pytest.raises(InvalidInput):
        validate_legacy_create({"email": "a@b.co", "comment": "a\x07b", "content_id": 1}, Limits())


def test_cursor_round_trip_and_order_binding():
    assert decode_cursor(encode_cursor(42, "oldest"), "oldest") == 42
    assert decode_cursor(None, "oldest") is None
    with pytest.raises(InvalidInput):
        decode_cursor(encode_cursor(42, "oldest"), "newest")


def test_public_identity_helpers():
    assert mask_email("alice@example.com") == "a***@example.com"
    # The domain follows the last "@"; an address without one shows no domain.
    assert mask_email('"alice@corp.example"@relay.example') == '"***@relay.example'
    assert mask_email("alice") == "a***@"
    assert email_hash("Alice@Example.com ") == email_hash("alice@example.com")
    assert legacy_email_view("alice@example.com", "full") == "alice@example.com"
    assert legacy_email_view("alice@example.com", "hidden") is None
