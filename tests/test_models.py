"""The request models (comments_api.contract.models): the service's words, in its order.

Unit tier: no app, no database. The functional tests (test_client_input, test_v1_api,
test_legacy_api, test_moderation) assert the same messages over HTTP; these pin the one
translation from a model's errors to FieldErrors, and that it never falls back to a
generic message, on generated input too.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from comments_api.comments.rules import MAX_ID, FieldError, InvalidInput, Limits, NotFound
from comments_api.contract import models
from comments_api.contract.components import request_schemas
from comments_api.contract.requests import (
    parse_comment_id,
    parse_content_id,
    parse_count_ids,
    parse_limit,
    parse_order,
    validate_edit,
    validate_legacy_create,
    validate_v1_create,
)
from comments_api.moderation.rules import BulkRequest, parse_ban, parse_ban_target, parse_bulk

pytestmark = pytest.mark.unit  # the fast tier: no servers, no network

LIMITS = Limits(max_comment_length=50)


def errors_of(fn: Any, *args: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInput) as caught:
        fn(*args)
    return [(e.field, e.message) for e in caught.value.errors]


def test_v1_create_lists_every_field_in_the_api_order_with_its_words():
    payload = {"zz": 1, "aa": 2, "parent_id": 1.5, "author_name": " ", "email": "a@b", "body": ""}
    assert errors_of(validate_v1_create, payload, "c", LIMITS) == [
        ("aa", "is not an accepted field"),
        ("zz", "is not an accepted field"),
        ("body", "must not be empty or whitespace only"),
        ("email", "must be a valid email address"),
        ("author_name", "must be a non-empty string"),
        ("parent_id", f"must be a positive integer up to {MAX_ID}"),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "is required"),
        (5, "must be a string"),
        ("   ", "must not be empty or whitespace only"),
        (" " * 60, "must not be empty or whitespace only"),  # emptiness first, as before
        # Characters that print nothing make no comment either (a zero-width space, a word
        # joiner with a no-break space, a BOM, a Hangul filler): they read as empty.
        ("\u200b", "must not be empty or whitespace only"),
        ("\u2060\u00a0\u200d", "must not be empty or whitespace only"),
        ("\ufeff", "must not be empty or whitespace only"),
        ("\u3164 \u3164", "must not be empty or whitespace only"),
        ("x" * 51, "must be at most 50 characters (got 51)"),
        ("bell\x07", "must not contain control characters"),
    ],
)
def test_body_messages(body, message):
    assert errors_of(validate_v1_create, {"body": body}, "c", LIMITS) == [("body", message)]


def test_invisible_characters_beside_visible_ones_are_text():
    new = validate_v1_create({"body": "a\u200b", "author_name": "Zo\u00e9\u200d"}, "c", LIMITS)
    assert (new.body, new.author_name) == ("a\u200b", "Zo\u00e9\u200d")
    assert errors_of(validate_v1_create, {"body": "b", "author_name": "\u200b"}, "c", LIMITS) == [
        ("author_name", "must be a non-empty string")
    ]


# Characters that print nothing and were missing from the set: the bidi isolates (U+2066-
# U+2069) and the Arabic letter mark, Mongolian variation selectors, variation selectors,
# the blank braille pattern. A comment, name or content id of only these printed nothing.
UNSEEN = ["\u2066\u2069", "\u2068", "\u061c", "\u180b\u180f", "\ufe0f", "\u2800", "\u2067 \u2800"]


@pytest.mark.parametrize("unseen", UNSEEN)
def test_text_of_only_characters_that_print_nothing_is_blank_everywhere(unseen):
    blank = "must not be empty or whitespace only"
    assert errors_of(validate_v1_create, {"body": unseen}, "c", LIMITS) == [("body", blank)]
    named = {"body": "b", "author_name": unseen}
    assert errors_of(validate_v1_create, named, "c", LIMITS) == [
        ("author_name", "must be a non-empty string")
    ]
    message = "must not consist only of characters that print nothing"
    assert errors_of(parse_content_id, unseen) == [("content_id", message)]
    # The published schemas say the same.
    assert not Draft202012Validator(models.CONTENT_ID.schema()).is_valid(unseen)
    fields = request_schemas(50)["NewComment"]["properties"]
    for name in ("body", "author_name"):
        schema = Draft202012Validator(fields[name])
        assert not schema.is_valid(unseen), name
        assert schema.is_valid(f"a{unseen}"), name
    # Beside a visible character they are text, as the others are.
    new = validate_v1_create({"body": f"a{unseen}", "author_name": f"Al{unseen}"}, "c", LIMITS)
    assert (new.body, new.author_name) == (f"a{unseen}", f"Al{unseen}")


# Plane 14 prints nothing: tag characters, the variation selectors supplement. The
# published patterns cannot name characters outside the BMP (ECMA-262 without the u flag),
# so the API's own checks refuse these where the schema would let them through.
PLANE_14 = ["\U000e0001", "\U000e0041\U000e0042", "\U000e0100", " \U000e007f\u200b"]


@pytest.mark.parametrize("unseen", PLANE_14)
def test_plane_14_characters_alone_are_blank_and_no_part_of_an_address(unseen):
    blank = "must not be empty or whitespace only"
    assert errors_of(validate_v1_create, {"body": unseen}, "c", LIMITS) == [("body", blank)]
    legacy = {"email": "a@b.co", "comment": unseen, "content_id": "c"}
    assert errors_of(validate_legacy_create, legacy, LIMITS) == [("comment", blank)]
    named = {"body": "b", "author_name": unseen}
    assert errors_of(validate_v1_create, named, "c", LIMITS) == [
        ("author_name", "must be a non-empty string")
    ]
    message = "must not consist only of characters that print nothing"
    assert errors_of(parse_content_id, unseen.strip()) == [("content_id", message)]
    # "troll<tag>@example.com" shows as troll@example.com and is another author.
    email = f"troll{unseen.strip()}@example.com"
    refused = [("email", "must be a valid email address")]
    assert errors_of(validate_v1_create, {"body": "x", "email": email}, "c", LIMITS) == refused
    legacy = {"email": email, "comment": "x", "content_id": "c"}
    assert errors_of(validate_legacy_create, legacy, LIMITS) == refused
    # Beside a visible character they are text: a subdivision flag is U+1F3F4 and tags.
    new = validate_v1_create({"body": f"a{unseen}", "author_name": f"Al{unseen}"}, "c", LIMITS)
    assert (new.body, new.author_name) == (f"a{unseen}", f"Al{unseen}".strip())
    wales = "\U0001f3f4\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f"
    assert validate_v1_create({"body": wales}, "c", LIMITS).body == wales


def test_v1_create_normalises_what_the_schema_allows():
    new = validate_v1_create({"body": " hi ", "author_name": " Al ", "parent_id": 7.0}, "c", LIMITS)
    assert (new.body, new.author_name, new.parent_id) == (" hi ", "Al", 7)
    assert isinstance(new.parent_id, int)


def test_legacy_messages_and_normalised_content_id():
    assert errors_of(validate_legacy_create, {"email": None, "comment": "x"}, LIMITS) == [
        ("email", "is required"),
        ("content_id", "is required"),
    ]
    bad = {"email": 3, "comment": "x", "content_id": True}
    assert errors_of(validate_legacy_create, bad, LIMITS) == [
        ("email", "must be a string"),
        ("content_id", "must be a string or an integer"),
    ]
    for raw in (7, 7.0, "7"):
        new = validate_legacy_create({"email": "a@b.co", "comment": "x", "content_id": raw}, LIMITS)
        assert new.content_id == "7"
    signed_in = validate_legacy_create({"comment": "x", "content_id": "a"}, LIMITS, False)
    assert signed_in.email is None


def test_edit_names_only_what_may_not_be_edited():
    assert errors_of(validate_edit, {"body": "", "email": "x"}, LIMITS) == [
        ("email", "cannot be edited; only body can")
    ]
    assert validate_edit({"body": "new"}, LIMITS) == "new"


@pytest.mark.parametrize("payload", [[], "x", None, 3])
def test_not_an_object(payload):
    for fn, args in (
        (validate_v1_create, (payload, "c", LIMITS)),
        (validate_legacy_create, (payload, LIMITS)),
        (validate_edit, (payload, LIMITS)),
        (parse_bulk, (payload,)),
        (parse_ban, (payload,)),
    ):
        assert errors_of(fn, *args) == [("body", "must be a JSON object")]


def test_bans():
    assert errors_of(parse_ban, {}) == [("email", "give exactly one of email or subject")]
    assert errors_of(parse_ban, {"email": "a@b.co", "subject": "bad\x00", "reason": 3}) == [
        ("email", "give exactly one of email or subject"),
        ("reason", "must be a string of at most 500, no control characters but tab and newline"),
    ]
    assert errors_of(parse_ban, {"email": None}) == [("email", "must be an email address")]
    assert errors_of(parse_ban, {"subject": None}) == [
        ("subject", "must be 1 to 200 characters, no control characters")
    ]
    assert parse_ban({"email": " Troll@Example.com"}).target == "email:troll@example.com"
    assert parse_ban({"subject": "idp|1", "reason": None}).target == "sub:idp|1"
    assert parse_ban_target("email:A@B") == "email:a@b"
    assert errors_of(parse_ban_target, "nope") == [
        ("target", "must look like email:<address> or sub:<id>")
    ]


def test_bulk():
    assert parse_bulk({"action": "hide", "ids": [3, 3.0, 1]}) == BulkRequest("hide", [3, 1], None)
    both = parse_bulk({"action": "hide", "ids": [1], "if_status": ["pending", "pending", "hidden"]})
    assert both == BulkRequest("hide", [1], ("pending", "hidden"))
    assert errors_of(parse_bulk, {"action": "erase", "ids": [], "x": 1}) == [
        ("x", "is not an accepted field"),
        ("action", "must be one of approve, hide, delete"),
        ("ids", f"must be a list of 1 to 100 comment ids (1 to {MAX_ID})"),
    ]


def test_query_and_path_values():
    assert parse_limit(None) == 25
    assert parse_limit("100") == 100
    assert errors_of(parse_limit, "\u0663") == [("limit", "must be an integer")]
    assert errors_of(parse_limit, "00000000101") == [("limit", "must be between 1 and 100")]
    assert parse_order("") == "oldest"
    assert errors_of(parse_order, "up") == [("order", "must be 'oldest' or 'newest'")]
    assert parse_content_id(-7) == "-7"
    assert errors_of(parse_content_id, " a") == [
        ("content_id", "must not start or end with whitespace")
    ]
    assert parse_count_ids(["a", "b", "a"]) == ["a", "b"]
    assert errors_of(parse_count_ids, []) == [("content_id", "give at least one content_id")]
    assert errors_of(parse_count_ids, ["a", "\x00"]) == [
        ("content_id", "must not contain control characters")
    ]
    assert errors_of(parse_count_ids, ["a"] * 101) == [
        ("content_id", "at most 100 content ids per call")
    ]
    assert parse_comment_id(str(MAX_ID)) == MAX_ID
    for raw in ("0", str(MAX_ID + 1), "\u0663", "+1", "1.0"):
        with pytest.raises(NotFound):
            parse_comment_id(raw)


@pytest.mark.parametrize("raw", ["\u200b", "\u2060\ufeff", "\u200b \u200d", "\u3164"])
def test_content_ids_of_only_invisible_characters_are_refused_by_rule_and_schema(raw):
    message = "must not consist only of characters that print nothing"
    assert errors_of(parse_content_id, raw) == [("content_id", message)]
    assert errors_of(parse_count_ids, ["a", raw]) == [("content_id", message)]
    body = {"email": "a@b.co", "comment": "x", "content_id": raw}
    assert errors_of(validate_legacy_create, body, LIMITS) == [("content_id", message)]
    # The published schema says the same, so a client can check before it sends.
    schema = Draft202012Validator(models.CONTENT_ID.schema())
    assert not schema.is_valid(raw)
    assert schema.is_valid(f"a{raw}")
    assert parse_content_id(f"a{raw}") == f"a{raw}"


@pytest.mark.parametrize("mark", ["\u200b", "\u202e", "\u2060", "\ufeff", "\u00ad", "\u3164"])
def test_an_email_with_a_character_that_prints_nothing_is_refused_by_rule_and_schema(mark):
    # "troll\u200b@example.com" shows as troll@example.com in the console and is another
    # author: a ban on one does not reach the other. A right-to-left override reverses
    # the console's sentences that name the author after it.
    email = f"troll{mark}@example.com"
    message = [("email", "must be a valid email address")]
    assert errors_of(validate_v1_create, {"body": "x", "email": email}, "c", LIMITS) == message
    legacy = {"email": email, "comment": "x", "content_id": "c"}
    assert errors_of(validate_legacy_create, legacy, LIMITS) == message
    # The published schema says the same, so a client can check before it sends.
    for name in ("NewComment", "LegacyNewComment"):
        prop = request_schemas(50)[name]["properties"]["email"]
        schema = Draft202012Validator(prop)
        assert not schema.is_valid(email), name
        assert schema.is_valid("troll@example.com"), name
        assert schema.is_valid("trölle@example.com"), name


def test_schemas_are_generated_from_the_models():
    schemas = request_schemas(50)
    assert schemas["NewComment"]["properties"]["body"]["maxLength"] == 50
    assert schemas["NewComment"]["required"] == ["body"]
    assert schemas["NewComment"]["additionalProperties"] is False
    assert schemas["CommentEdit"]["properties"]["body"]["maxLength"] == 50
    assert schemas["NewBan"]["oneOf"] == [{"required": ["email"]}, {"required": ["subject"]}]
    # The models' own rules, not copies: change a model and the schema follows.
    body = msgspec.inspect.type_info(models.comment_models(50).new).fields[0]
    assert (body.name, body.type.type.max_length) == ("body", 50)  # Metadata(StrType)


def test_lone_surrogates_are_not_text():
    # JSON's "\\ud800" escapes decode to strings no UTF-8 can store: rejected in values,
    # and a key made of them makes the object unreadable (the answers pydantic gave).
    bad = "a\ud800"
    assert errors_of(
        validate_v1_create, {"body": bad, "email": f"{bad}@b.co", "author_name": bad}, "c", LIMITS
    ) == [
        ("body", "must not contain control characters"),
        ("email", "must be a valid email address"),
        ("author_name", "must not contain control characters"),
    ]
    # Too long and a control character are told apart, as for the body: "at most 80
    # printable characters" read as a length limit to a name of two characters.
    assert errors_of(validate_v1_create, {"body": "x", "author_name": "a\x01"}, "c", LIMITS) == [
        ("author_name", "must not contain control characters")
    ]
    assert errors_of(validate_v1_create, {"body": "x", "author_name": "n" * 81}, "c", LIMITS) == [
        ("author_name", "must be at most 80 characters (got 81)")
    ]
    assert errors_of(
        validate_legacy_create, {"email": "a@b.co", "comment": "x", "content_id": bad}, LIMITS
    ) == [("content_id", "must be a string or an integer")]
    assert errors_of(parse_order, "\ud800") == [("order", "must be 'oldest' or 'newest'")]
    assert errors_of(parse_bulk, {"action": "\ud800", "ids": [1]}) == [
        ("action", "must be one of approve, hide, delete")
    ]
    assert errors_of(parse_count_ids, [bad]) == [("content_id", "must be a string or an integer")]
    assert errors_of(validate_v1_create, {"body": "", bad: 1}, "c", LIMITS) == [
        ("body", "is not valid")
    ]
    assert errors_of(validate_edit, {"body": "x", bad: 1}, LIMITS) == [("body", "is not valid")]
    assert errors_of(parse_ban, {bad: 1}) == [("email", "give exactly one of email or subject")]


# --- the translation never falls back to a generic message ------------------------------

anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8") | st.sampled_from("\x00\x07\t\n @.\u3000"), max_size=8),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=4,
)


def objects(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from([*fields, "extra"]), anything, max_size=len(fields) + 1)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.sampled_from(["new", "legacy", "legacy_signed_in", "edit", "bulk", "ban"]),
    st.data(),
)
def test_every_rejection_has_the_services_words(kind, data):
    comment = models.comment_models(50)
    model: type[models.Body] = {
        "new": comment.new,
        "legacy": comment.legacy,
        "legacy_signed_in": comment.legacy_signed_in,
        "edit": comment.edit,
        "bulk": models.BulkModeration,
        "ban": models.NewBan,
    }[kind]
    payload = data.draw(objects([f.encode_name for f in msgspec.structs.fields(model)]))
    errors: list[FieldError] = []
    try:
        model.parse(payload)
    except InvalidInput as exc:
        errors = exc.errors
        assert errors, payload
    assert FieldError("body", "is not valid") not in errors, payload
    fields = [e.field for e in errors]
    assert len(fields) == len(set(fields)), payload
