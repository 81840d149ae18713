"""One author's comments: the moderation listing's ``author`` filter and delete by author
(an erasure request: "delete everything this reader wrote")."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import quote

import pytest
from sqlalchemy import select

from comments_api.contract.spec import build_spec
from comments_api.identity.credentials import SCOPE_ADMIN, SCOPE_MODERATE, SCOPE_WRITE
from comments_api.moderation.rules import parse_bulk, transition
from comments_api.settings import Settings
from comments_api.store.repository import audit_log, comments, idempotency_keys
from comments_api.web.common import EXTENSION_KEY

from .authkit import api_key, bearer
from .test_contract_agreement import schema_accepts

BULK = "/api/v1/moderation/comments"
PENDING = "/api/v1/moderation/pending"
AUDIT = "/api/v1/admin/audit-log"
ANN = "email:ann@example.com"


def post(client, body, content_id="c1", headers=None, key=None, **extra):
    headers = dict(headers or {})
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(
        f"/api/v1/contents/{content_id}/comments", json={"body": body, **extra}, headers=headers
    )


def listed(client, url, headers):
    response = client.get(url, headers=headers)
    assert response.status_code == 200, response.json
    return [c["id"] for c in response.json["items"]], response.json["next_cursor"], response


def problem_fields(response):
    assert response.status_code == 400, response.data
    assert response.mimetype == "application/problem+json"
    return [e["field"] for e in response.json["errors"]]


def test_listing_by_author_across_contents_pages_with_cursors(build, signer):
    app = build(moderation_mode="pre")
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    ann = [
        post(client, "ann 1", "c1", email="Ann@Example.com").json["id"],
        post(client, "ann 2", "c2", email="ann@example.com").json["id"],
    ]
    post(client, "bob 1", "c1", email="bob@example.com")
    ann.append(post(client, "ann 3", "c2", email="ann@example.com").json["id"])
    post(client, "signed in", "c1", headers=bearer(signer.token("ann-sub")))
    ann.append(post(client, "ann 4", "c3", email="ANN@example.com").json["id"])

    # The key is written as a ban's target is: the address in any case.
    first, _, response = listed(client, f"{BULK}?author=email:ANN@example.com&limit=2", mod)
    assert first == ann[:2]
    assert {c["author_email"].lower() for c in response.json["items"]} == {"ann@example.com"}
    link = response.headers["Link"]
    assert "author=email%3Aann%40example.com" in link
    second, cursor2, _ = listed(client, link.split(">")[0].lstrip("<"), mod)
    assert (second, cursor2) == (ann[2:], None)
    # The pending queue takes the same filter, and it combines with content_id.
    assert listed(client, f"{PENDING}?author={quote(ANN)}", mod)[0] == ann
    assert listed(client, f"{PENDING}?author={quote(ANN)}&content_id=c2", mod)[0] == ann[1:3]
    page, more, _ = listed(client, f"{PENDING}?author={quote(ANN)}&content_id=c2&limit=1", mod)
    assert page == [ann[1]]
    assert listed(client, f"{PENDING}?author={quote(ANN)}&content_id=c2&cursor={more}", mod)[0] == [
        ann[2]
    ]
    # A signed-in reader's comments are under their subject.
    assert [c["body"] for c in client.get(f"{PENDING}?author=sub:ann-sub", headers=mod).json[
        "items"
    ]] == ["signed in"]  # fmt: skip
    assert listed(client, f"{BULK}?status=hidden&author={quote(ANN)}", mod)[0] == []


def test_a_cursor_is_bound_to_its_author(build):
    app = build(moderation_mode="pre")
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    bob = post(client, "bob 1", "c1", email="bob@example.com").json["id"]
    ann = [post(client, f"ann {i}", "c1", email="ann@example.com").json["id"] for i in range(3)]
    bob_later = post(client, "bob 2", "c1", email="bob@example.com").json["id"]

    _, of_ann, _ = listed(client, f"{PENDING}?author={quote(ANN)}&limit=1", mod)
    for url in (
        f"{PENDING}?author=email:bob@example.com&cursor={of_ann}",  # would skip bob's first
        f"{PENDING}?cursor={of_ann}",
        f"{PENDING}?author={quote(ANN)}&content_id=c1&cursor={of_ann}",
    ):
        response = client.get(url, headers=mod)
        assert problem_fields(response) == ["cursor"], url
        assert "author" in response.json["errors"][0]["message"]
    # A cursor of the unfiltered listing is not a position in one author's either.
    _, of_all, _ = listed(client, f"{PENDING}?limit=1", mod)
    assert problem_fields(client.get(f"{PENDING}?author={quote(ANN)}&cursor={of_all}", headers=mod))
    # ...while it still works where it was issued (cursors without author are as before).
    assert listed(client, f"{PENDING}?cursor={of_all}", mod)[0] == [*ann, bob_later]
    assert listed(client, f"{PENDING}?author={quote(ANN)}&cursor={of_ann}", mod)[0] == ann[1:]
    assert bob < ann[0]


@pytest.mark.parametrize(
    "author",
    ["nonsense", "email:", "sub:", "EMAIL:ann@example.com", "email:ann\x00@example.com", ""],
)
def test_a_bad_author_key_is_a_400_problem(build, author):
    app = build()
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    response = client.get(BULK, query_string={"author": author}, headers=mod)
    assert problem_fields(response) == ["author"]
    assert "email:<address> or sub:<id>" in response.json["errors"][0]["message"]
    deleted = client.post(BULK, json={"action": "delete", "author": author}, headers=mod)
    assert problem_fields(deleted) == ["author"]


def test_an_unencoded_plus_in_the_author_filter_is_refused_saying_how_to_send_it(build, signer):
    # A query string reads + as a space: the filter would list nothing, silently.
    app = build(moderation_mode="pre")
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    mine = post(client, "plus-addressed", email="ann+news@example.com").json["id"]
    response = client.get(f"{PENDING}?author=email:ann+news@example.com", headers=mod)
    assert problem_fields(response) == ["author"]
    assert "%2B" in response.json["errors"][0]["message"]
    assert listed(client, f"{PENDING}?author=email:ann%2Bnews@example.com", mod)[0] == [mine]
    # A subject is taken as it comes: a space in one is not a mistake.
    post(client, "signed in", headers=bearer(signer.token("a b")))
    assert len(listed(client, f"{PENDING}?author=sub:a+b", mod)[0]) == 1


@pytest.mark.parametrize("sent", ["email:+news@example.com", "email:news@example.com+"])
def test_an_unencoded_plus_first_or_last_is_refused_not_trimmed_to_another_author(build, sent):
    # Trimmed as an address is (key_address), "+news@..." read as " news@..." listed the
    # comments of news@example.com, another author, and a trailing one likewise.
    app = build(moderation_mode="pre")
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    post(client, "someone else's", email="news@example.com")
    plus = post(client, "plus first", email="+news@example.com").json["id"]
    response = client.get(f"{PENDING}?author={sent}", headers=mod)
    assert problem_fields(response) == ["author"]
    assert "%2B" in response.json["errors"][0]["message"]
    encoded = listed(client, f"{PENDING}?author=email:%2Bnews@example.com", mod)[0]
    assert encoded == [plus]


def test_delete_by_author_takes_exactly_one_of_ids_or_author_and_only_delete(build):
    app = build()
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    for body, fields in (
        ({"action": "delete"}, ["ids"]),
        ({"action": "delete", "ids": [1], "author": ANN}, ["ids"]),
        ({"action": "hide", "author": ANN}, ["author"]),
        ({"action": "approve", "author": ANN}, ["author"]),
        ({"action": "delete", "author": ANN, "if_status": ["pending"]}, ["if_status"]),
        ({"action": "delete", "author": 5}, ["author"]),
        ({"action": "delete", "author": None}, ["author"]),
    ):
        assert problem_fields(client.post(BULK, json=body, headers=mod)) == fields, body


BODIES = [
    ({"action": "delete", "author": ANN}, True),
    ({"action": "delete", "author": "sub:x"}, True),
    ({"action": "delete", "ids": [1]}, True),
    ({"action": "hide", "ids": [1], "if_status": ["pending"]}, True),
    ({"action": "delete"}, False),
    ({"action": "delete", "ids": [1], "author": ANN}, False),
    ({"action": "hide", "author": ANN}, False),
    ({"action": "delete", "author": "nonsense"}, False),
    ({"action": "delete", "author": None}, False),
    ({"action": "delete", "author": ANN, "if_status": ["hidden"]}, False),
]


def test_the_published_schema_and_the_validator_agree_on_author_bodies():
    spec = build_spec(Settings())
    schema = spec["components"]["schemas"]["BulkModeration"]
    for body, expected in BODIES:
        assert schema_accepts(spec, schema, body) is expected, body
        try:
            parse_bulk(body)
            accepted = True
        except Exception:
            accepted = False
        assert accepted is expected, body


def stored(app, table, *where):
    with app.extensions[EXTENSION_KEY].repo.engine.connect() as conn:
        return conn.execute(select(table).where(*where)).all()


def test_delete_by_author_erases_every_comment_of_that_author_and_nobody_elses(build, signer):
    app = build(legacy_email="full")
    client = app.test_client()
    mod_key = api_key(app, SCOPE_MODERATE)
    mod = bearer(mod_key)
    secret = "ann's secret text"
    replied = post(client, f"{secret} 1", "c1", email="Ann@example.com", key="k-1").json["id"]
    reply = post(client, "bob replies", "c1", email="bob@example.com", parent_id=replied)
    alone = post(client, f"{secret} 2", "c2", email="ann@example.com", key="k-2").json["id"]
    hidden = post(client, f"{secret} 3", "c2", email="ann@example.com").json["id"]
    held = post(client, f"{secret} 4", "c3", email="ann@example.com").json["id"]
    bob = post(client, "bob alone", "c3", email="bob@example.com").json["id"]
    signed = post(client, "signed", "c3", headers=bearer(signer.token("ann"))).json["id"]
    moved = client.post(BULK, json={"action": "hide", "ids": [hidden, held]}, headers=mod)
    assert moved.json["changed"] == [hidden, held]

    deleted = client.post(BULK, json={"action": "delete", "author": "email:ANN@example.com"},
                          headers=mod)  # fmt: skip
    assert deleted.status_code == 200, deleted.json
    assert deleted.json == {
        "action": "delete",
        "changed": sorted([replied, alone, hidden, held]),
        "unchanged": [],
        "more": False,
    }
    # Public ones become tombstones (one keeps its reply's thread); never-public ones go.
    for cid in (replied, alone):
        tomb = client.get(f"/api/v1/comments/{cid}").json
        assert (tomb["status"], tomb["body"], tomb["author"]) == ("deleted", None, None)
    assert client.get(f"/api/v1/comments/{hidden}").status_code == 404
    assert stored(app, comments.c.id, comments.c.id.in_([hidden, held])) == []
    assert stored(app, comments, comments.c.author_key == "email:ann@example.com") == []
    assert (
        "ann@example.com"
        not in json.dumps(
            [list(map(str, r)) for r in stored(app, comments, comments.c.id > 0)]
        ).lower()
    )
    assert secret not in json.dumps([list(map(str, r)) for r in stored(app, comments)])
    # Nobody else's comments moved, not even the same person signed in (another key).
    assert client.get(f"/api/v1/comments/{reply.json['id']}").json["body"] == "bob replies"
    assert client.get(f"/api/v1/comments/{bob}").json["status"] == "published"
    assert client.get(f"/api/v1/comments/{signed}").json["body"] == "signed"
    # The stored Idempotency-Key answers lost the text; a retry replays the tombstone.
    for key in ("k-1", "k-2"):
        (answer,) = stored(app, idempotency_keys, idempotency_keys.c.key == key)
        assert secret not in answer.body
        assert "ann" not in answer.body.lower()
    again = post(client, f"{secret} 1", "c1", email="Ann@example.com", key="k-1")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (again.json["id"], again.json["status"], again.json["body"]) == (
        replied,
        "deleted",
        None,
    )
    # One audit row, naming the comments but not the address.
    audit = client.get(AUDIT, headers=bearer(api_key(app, SCOPE_ADMIN))).json["items"]
    assert audit[0]["action"] == "delete"
    assert audit[0]["comment_ids"] == deleted.json["changed"]
    assert audit[0]["actor"] == f"api_key:{mod_key.split('_')[1]}"
    assert audit[0]["target"] is None
    digest = hashlib.sha256(b"email:ann@example.com").hexdigest()
    assert audit[0]["details"] == {"author_sha256": digest, "more": False}
    assert "ann" not in json.dumps(audit[0]).lower()
    assert [e["action"] for e in audit[1:]] == ["hide"]
    # Nothing left: a second call changes nothing.
    again = client.post(BULK, json={"action": "delete", "author": ANN}, headers=mod)
    assert again.json == {"action": "delete", "changed": [], "unchanged": [], "more": False}


def test_delete_by_author_is_capped_per_call_and_says_there_is_more(build):
    app = build()
    client = app.test_client()
    ids = [post(client, f"ann {i}", f"c{i}", email="ann@example.com").json["id"] for i in range(5)]
    repo = app.extensions[EXTENSION_KEY].repo
    change = transition("delete")
    first = repo.moderate_author(ANN, change, "tests", {"author_sha256": "x"}, limit=3)
    assert first == (ids[:3], True)
    assert repo.moderate_author(ANN, change, "tests", None, limit=3) == (ids[3:], False)
    assert repo.moderate_author(ANN, change, "tests", None, limit=3) == ([], False)
    rows = stored(app, audit_log, audit_log.c.actor == "tests")
    assert [json.loads(r.comment_ids) for r in rows] == [ids[:3], ids[3:], []]


def test_author_filter_and_delete_need_the_moderate_scope(build):
    app = build()
    client = app.test_client()
    cid = post(client, "ann", "c1", email="ann@example.com").json["id"]
    writer = bearer(api_key(app, SCOPE_WRITE))
    body = {"action": "delete", "author": ANN}
    assert client.get(f"{BULK}?author={quote(ANN)}").status_code == 401
    assert client.get(f"{BULK}?author=nonsense").status_code == 401  # before the 400
    assert client.get(f"{BULK}?author={quote(ANN)}", headers=writer).status_code == 403
    assert client.post(BULK, json=body).status_code == 401
    assert client.post(BULK, json=body, headers=writer).status_code == 403
    assert client.get(f"/api/v1/comments/{cid}").json["body"] == "ann"
    # The same calls with the scope: only they list and erase.
    mod = bearer(api_key(app, SCOPE_MODERATE))
    assert listed(client, f"{BULK}?author={quote(ANN)}&status=hidden", mod)[0] == []
    assert client.post(BULK, json=body, headers=mod).json["changed"] == [cid]
    assert client.get(f"/api/v1/comments/{cid}").json["body"] is None


def test_the_openapi_document_describes_the_author_filter_and_delete():
    spec = build_spec(Settings())
    listing = spec["paths"][BULK]["get"]["parameters"]
    params = spec["components"]["parameters"]
    names = {params[p["$ref"].rsplit("/", 1)[1]]["name"] for p in listing if "$ref" in p}
    assert "author" in names
    author = next(params[p["$ref"].rsplit("/", 1)[1]] for p in listing
                  if params[p["$ref"].rsplit("/", 1)[1]]["name"] == "author")  # fmt: skip
    assert author["schema"] == {"$ref": "#/components/schemas/BanTarget"}
    result = spec["components"]["schemas"]["BulkResult"]
    assert "more" in result["properties"]
    assert "more" not in result.get("required", [])
