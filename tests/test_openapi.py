"""The OpenAPI document and /docs: valid, complete, and true to what the app answers."""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from dataclasses import replace
from typing import Any

import jwt as pyjwt
import pytest
from flask import request
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from sqlalchemy.exc import OperationalError

from comments_api.app import create_app
from comments_api.comments.rules import encode_cursor
from comments_api.contract.paths import example_path
from comments_api.contract.problems import SLUGS
from comments_api.contract.spec import build_spec
from comments_api.identity.credentials import generate_api_key
from comments_api.settings import Settings
from comments_api.web.common import EXTENSION_KEY
from comments_api.web.docs import render_docs_page

from . import authkit
from .authkit import bearer, jwks, jwks_server, rsa_signer

METHODS = ("get", "put", "post", "delete", "patch")
PROBLEM = "application/problem+json"
SPEC_URI = "urn:comments-api:openapi"


# --- helpers ------------------------------------------------------------------------


def resolve(spec: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def check(spec: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    """Validate ``instance`` against a schema of the document (refs resolve into it)."""
    registry = Registry().with_resource(SPEC_URI, Resource(spec, DRAFT202012))
    rooted = json.loads(json.dumps(schema).replace('"#/', f'"{SPEC_URI}#/'))
    validator = Draft202012Validator(
        rooted, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(instance)


def documented(spec, path: str, method: str, response) -> dict[str, Any]:
    """Check a real response against what the document promises for it."""
    op = spec["paths"][path][method]
    status = str(response.status_code)
    assert status in op["responses"] or "default" in op["responses"], (
        f"{method.upper()} {path} answered {status}, which is not documented"
    )
    doc = resolve(spec, op["responses"].get(status, op["responses"].get("default")))
    content = doc.get("content", {})
    if not content:
        assert response.data == b"", f"{status} is documented without a body"
        return doc
    assert response.mimetype in content, (response.mimetype, list(content))
    schema = content[response.mimetype]["schema"]
    if response.mimetype.endswith("json"):
        check(spec, schema, response.json)
    for name, header in doc.get("headers", {}).items():
        declared = resolve(spec, header)
        if declared.get("required"):
            assert name in response.headers, f"{status} requires {name} but lacks it"
        schema = declared.get("schema", {})
        if name in response.headers and schema.get("type") == "integer":
            check(spec, schema, int(response.headers[name]))
    return doc


def flask_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def problem_anchors(page: str) -> set[str]:
    return set(re.findall(r'id="problem-([a-z0-9-]+)"', page))


@pytest.fixture(params=[{}, {"metrics_enabled": False, "auth_mode": "required"}], ids=str)
def bare_app(request, sqlite_url):
    """An app for what needs no data (routes, static documents), in two configurations."""
    settings = Settings(database_url=sqlite_url, ratelimit_enabled=False)
    return create_app(replace(settings, **request.param))


# --- the document itself ------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{}, {"auth_mode": "required"}, {"moderation_mode": "pre"}, {"max_comment_length": 280}],
)
def test_document_is_valid_openapi_31(overrides):
    spec = build_spec(replace(Settings(), **overrides))
    assert spec["openapi"].startswith("3.1")
    validate_openapi(spec)
    assert spec["servers"] == [{"url": "/"}]
    tags = {t["name"] for t in spec["tags"]}
    assert tags == {"legacy", "v1", "moderation", "admin", "ops"}
    used = {op["tags"][0] for item in spec["paths"].values() for op in item.values()}
    assert used == tags


def test_every_flask_route_is_documented_with_its_methods(bare_app):
    spec = bare_app.test_client().get("/openapi.json").json
    served = set()
    for rule in bare_app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((flask_path(rule.rule), method.lower()))
    documented_ops = {
        (path, method)
        for path, item in spec["paths"].items()
        for method in METHODS
        if method in item
    }
    assert served - documented_ops == set(), "routes missing from contract/paths.py"
    assert documented_ops - served == set(), "documented operations the app does not serve"


def test_operations_are_complete(bare_app):
    spec = bare_app.test_client().get("/openapi.json").json
    ids = []
    for path, item in spec["paths"].items():
        path_params = set(re.findall(r"{([^}]+)}", path))
        for method in METHODS:
            if method not in item:
                continue
            op = item[method]
            ids.append(op["operationId"])
            assert op["summary"], (path, method)
            assert op["tags"], (path, method)
            params = [resolve(spec, p) for p in op.get("parameters", [])]
            assert {p["name"] for p in params if p["in"] == "path"} == path_params, (path, method)
            assert any(s.startswith("2") for s in op["responses"]), (path, method)
            assert "default" in op["responses"], (path, method)
            error_media = PROBLEM if not path.startswith("/api/comment/") else "application/json"
            for status, response in op["responses"].items():
                if status == "default" or int(status) >= 400:
                    response = resolve(spec, response)
                    if path in ("/readyz", "/healthcheck") and status == "503":
                        continue  # readiness answers its own body, for probes
                    assert error_media in response["content"], (path, method, status)
    assert len(ids) == len(set(ids)), "operationId must be unique"


def test_every_example_matches_its_schema():
    spec = build_spec(Settings())
    seen = 0
    for item in spec["paths"].values():
        for method in METHODS:
            op = item.get(method)
            if not op:
                continue
            media_objects = list(op.get("requestBody", {}).get("content", {}).values())
            for response in op["responses"].values():
                media_objects.extend(resolve(spec, response).get("content", {}).values())
            for media in media_objects:
                if "example" in media:
                    check(spec, media["schema"], media["example"])
                    seen += 1
            for param in op.get("parameters", []):
                param = resolve(spec, param)
                if "example" in param:
                    check(spec, param["schema"], param["example"])
    assert seen > 20


def test_limits_and_settings_are_in_the_document():
    settings = Settings(max_comment_length=280, auth_mode="required")
    spec = build_spec(settings)
    schemas = spec["components"]["schemas"]
    assert schemas["NewComment"]["properties"]["body"]["maxLength"] == 280
    assert schemas["LegacyNewComment"]["properties"]["comment"]["maxLength"] == 280
    assert schemas["NewComment"]["additionalProperties"] is False
    assert schemas["LegacyNewComment"]["required"] == ["email", "comment", "content_id"]
    params = spec["components"]["parameters"]
    assert params["Limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 25,
    }
    assert params["Order"]["schema"]["enum"] == ["oldest", "newest"]
    assert params["CountContentIds"]["schema"]["maxItems"] == 100
    assert params["CountContentIds"]["explode"] is True
    comment = schemas["Comment"]
    assert "email" not in comment["properties"]
    assert comment["additionalProperties"] is False
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerApiKey"] == {
        **schemes["bearerApiKey"],
        "type": "http",
        "scheme": "bearer",
    }
    assert schemes["bearerJwt"]["bearerFormat"] == "JWT"


ANONYMOUS_WRITES = {
    ("/api/comment/new", "post"),
    ("/api/v1/contents/{content_id}/comments", "post"),
}
# Only a reader's JWT proves authorship: an API key, whatever its scopes, gets 403 there.
JWT_ONLY = {("/api/v1/comments/{comment_id}", "patch")}


@pytest.mark.parametrize("mode", ["open", "required"])
def test_reads_are_public_and_writes_declare_credentials(mode):
    spec = build_spec(Settings(auth_mode=mode))
    for path, item in spec["paths"].items():
        for method, op in item.items():
            security = op.get("security")
            public_read = method == "get" and not path.startswith(
                ("/api/v1/moderation", "/api/v1/admin")
            )
            if public_read:
                assert not security, f"GET {path} must stay public"
                continue
            assert security, f"{method.upper()} {path} declares no security"
            names = {name for requirement in security for name in requirement}
            if (path, method) in JWT_ONLY:
                assert names == {"bearerJwt"}, (path, method)
            else:
                assert names == {"bearerApiKey", "bearerJwt"}, (path, method)
            anonymous = {} in security
            expected = mode == "open" and (path, method) in ANONYMOUS_WRITES
            assert anonymous == expected, f"{method.upper()} {path} under AUTH_MODE={mode}"
            assert "401" in op["responses"], (path, method)
            assert "403" in op["responses"], (path, method)


# --- served documents ---------------------------------------------------------------


def test_openapi_json_is_served_as_json_from_the_app_settings(make_app):
    client = make_app(max_comment_length=123).test_client()
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    spec = response.json
    validate_openapi(spec)
    assert spec["components"]["schemas"]["NewComment"]["properties"]["body"]["maxLength"] == 123
    # ... and the limit it documents is the one enforced.
    path = "/api/v1/contents/1/comments"
    assert client.post(path, json={"body": "x" * 123}).status_code == 201
    too_long = client.post(path, json={"body": "x" * 124})
    documented(spec, "/api/v1/contents/{content_id}/comments", "post", too_long)
    assert too_long.status_code == 400


def test_docs_page_is_swagger_ui_from_this_origin_with_every_problem_anchor(bare_app):
    client = bare_app.test_client()
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    # Scripts from this origin only: no inline code, no eval, no other host.
    assert "script-src 'self';" in csp
    assert "unsafe" not in csp
    page = response.get_data(as_text=True)
    assert page.startswith("<!doctype html>")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "external resource"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts, "no Swagger UI"
    assert all(body == "" and "src=" in attrs for attrs, body in scripts), "inline script"
    assert not re.search(r"\son[a-z]+=", page), "inline event handler"
    # Every file the page loads is served here, with a CSP of its own.
    for url in re.findall(r"""(?:src|href)="(/docs/[^"]+)""", page):
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.mimetype in ("text/javascript", "text/css"), url
        assert asset.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert client.get(url, headers={"If-None-Match": asset.headers["ETag"]}).status_code == 304
    assert "SwaggerUIBundle" in client.get("/docs/swagger-ui-bundle.js").get_data(as_text=True)
    assert "/docs/docs.js" in page
    # Every problem type the document lists has its anchor, outside the script-built part.
    spec = client.get("/openapi.json").json
    documented_slugs = {p["slug"] for p in spec["x-problem-types"]}
    assert len(documented_slugs) >= 15
    assert problem_anchors(page) == documented_slugs
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "duplicate anchors"
    targets = set(re.findall(r'href="#([^"]+)"', page))
    assert targets - set(ids) == set(), "links to anchors that do not exist"


def test_docs_prose_lives_in_the_document(bare_app):
    spec = bare_app.test_client().get("/openapi.json").json
    text = spec["info"]["description"]
    for heading in ("## Authentication", "## Quick start", "## Errors"):
        assert heading in text
    # The legacy walkthrough is there as runnable curl commands.
    assert "curl -s -X POST http://127.0.0.1:8000/api/comment/new" in text
    assert "curl -s http://127.0.0.1:8000/api/comment/list/1" in text
    for name in spec["components"]["securitySchemes"]:
        assert f"`{name}`" in text
    # The markdown link to the problem types points at the anchor the page has.
    assert "](#problems)" in text
    assert "Every response carries `X-Request-ID`" in text
    page = bare_app.test_client().get("/docs").get_data(as_text=True)
    assert 'id="problems"' in page


def test_docs_page_escapes_what_it_renders():
    spec = build_spec(Settings())
    spec["info"]["title"] = "<script>alert(1)</script>"
    spec["x-problem-types"][0]["description"] = "<img src=x onerror=alert(1)> & `<b>`"
    page = render_docs_page(spec)
    assert "<img" not in page
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<code>&lt;b&gt;</code>" in page


def test_spec_and_page_are_built_once_per_app(bare_app, monkeypatch):
    import comments_api.web.docs as docs_module

    calls = []
    real = docs_module.build_spec

    def counting(settings):
        calls.append(settings)
        return real(settings)

    monkeypatch.setattr(docs_module, "build_spec", counting)
    client = bare_app.test_client()
    first = client.get("/openapi.json").data
    for _ in range(3):
        assert client.get("/openapi.json").data == first
        assert client.get("/docs").status_code == 200
    assert len(calls) == 1
    # ... and the cached bytes are what jsonify would answer.
    with bare_app.app_context():
        from flask import jsonify

        assert jsonify(build_spec(bare_app.extensions[EXTENSION_KEY].settings)).data == first


def test_every_registered_problem_type_has_an_anchor(bare_app):
    # tests/test_problems.py proves the registry covers what the code emits.
    page = bare_app.test_client().get("/docs").get_data(as_text=True)
    anchors = problem_anchors(page)
    assert anchors == SLUGS
    spec = build_spec(Settings())
    for item in spec["paths"].values():
        for method in METHODS:
            for response in item.get(method, {}).get("responses", {}).values():
                for media in resolve(spec, response).get("content", {}).values():
                    example = media.get("example")
                    if isinstance(example, dict) and "type" in example:
                        assert example["type"].removeprefix("/docs#problem-") in anchors


# --- real responses match the document ------------------------------------------------


def test_legacy_responses_match_the_document(client):
    spec = client.get("/openapi.json").json
    new, listing = "/api/comment/new", "/api/comment/list/{content_id}"
    body = {"email": "alice@example.com", "comment": "first post! ção 🎉", "content_id": 7}
    documented(spec, new, "post", client.post("/api/comment/new", json=body))
    ok = client.get("/api/comment/list/7")
    assert ok.status_code == 200
    documented(spec, listing, "get", ok)
    missing = client.get("/api/comment/list/8")
    assert missing.status_code == 404
    documented(spec, listing, "get", missing)
    bad = client.post("/api/comment/new", json={**body, "extra": 1})
    assert bad.status_code == 400
    documented(spec, new, "post", bad)
    wrong_type = client.post("/api/comment/new", data="{}", content_type="text/plain")
    assert wrong_type.status_code == 415
    documented(spec, new, "post", wrong_type)
    wrong_method = client.get("/api/comment/new")
    assert wrong_method.status_code == 405
    documented(spec, new, "post", wrong_method)  # the `default` response


def test_v1_responses_match_the_document(client, v1_delete):
    spec = client.get("/openapi.json").json
    thread, one = "/api/v1/contents/{content_id}/comments", "/api/v1/comments/{comment_id}"
    thread_url = "/api/v1/contents/a1/comments"
    created = client.post(
        "/api/v1/contents/a1/comments",
        json={"body": "Nice piece", "email": "alice@example.com", "author_name": "Alice"},
    )
    assert created.status_code == 201
    documented(spec, thread, "post", created)
    parent = created.json
    reply = client.post(
        "/api/v1/contents/a1/comments", json={"body": "+1", "parent_id": parent["id"]}
    )
    documented(spec, thread, "post", reply)
    first = client.get("/api/v1/contents/a1/comments", query_string={"limit": 1})
    documented(spec, thread, "get", first)
    assert first.json["next_cursor"]
    second = client.get(
        "/api/v1/contents/a1/comments",
        query_string={"limit": 1, "cursor": first.json["next_cursor"]},
    )
    documented(spec, thread, "get", second)
    # A retry with the same Idempotency-Key: the replay's header is in the document.
    keyed = {"body": "stored once", "email": "carol@example.com"}
    key = {"Idempotency-Key": "openapi-doc-key"}
    assert "Idempotent-Replayed" not in client.post(thread_url, json=keyed, headers=key).headers
    replay = client.post(thread_url, json=keyed, headers=key)
    doc = documented(spec, thread, "post", replay)
    assert replay.headers["Idempotent-Replayed"] == "true"
    check(spec, doc["headers"]["Idempotent-Replayed"]["schema"], "true")
    documented(spec, one, "get", client.get(created.headers["Location"]))
    # Deleting always needs a credential (the author's or a moderator's), whatever AUTH_MODE.
    anonymous = client.delete(created.headers["Location"])
    assert anonymous.status_code == 401
    documented(spec, one, "delete", anonymous)
    deleted = v1_delete(client, parent["id"])
    assert deleted.status_code == 204
    documented(spec, one, "delete", deleted)
    tombstone = client.get(created.headers["Location"])
    documented(spec, one, "get", tombstone)
    assert tombstone.json["status"] == "deleted"
    counts = client.get("/api/v1/counts", query_string=[("content_id", "a1"), ("content_id", "zz")])
    documented(spec, "/api/v1/counts", "get", counts)
    assert set(counts.json["counts"]) == {"a1", "zz"}
    config = client.get("/api/v1/config")
    assert config.status_code == 200
    documented(spec, "/api/v1/config", "get", config)


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "path", "status"),
    [
        ("post", "/api/v1/contents/1/comments", {"json": {"body": " "}}, "thread", 400),
        ("post", "/api/v1/contents/1/comments", {"json": {"body": "x", "x": 1}}, "thread", 400),
        (
            "post",
            "/api/v1/contents/1/comments",
            {"data": "{nope", "content_type": "application/json"},
            "thread",
            400,
        ),
        (
            "post",
            "/api/v1/contents/1/comments",
            {"data": "body=x", "content_type": "application/x-www-form-urlencoded"},
            "thread",
            415,
        ),
        (
            "post",
            "/api/v1/contents/1/comments",
            {"data": '{"body": "' + "x" * 70_000 + '"}', "content_type": "application/json"},
            "thread",
            413,
        ),
        ("get", "/api/v1/contents/1/comments?limit=0", {}, "thread", 400),
        ("get", "/api/v1/contents/1/comments?cursor=%%%", {}, "thread", 400),
        ("get", "/api/v1/contents/1/comments?order=sideways", {}, "thread", 400),
        ("get", "/api/v1/comments/999999", {}, "one", 404),
        ("get", "/api/v1/comments/abc", {}, "one", 404),
        ("get", "/api/v1/counts", {}, "counts", 400),
        (
            "get",
            "/api/v1/counts?" + "&".join(f"content_id={i}" for i in range(101)),
            {},
            "counts",
            400,
        ),
        ("put", "/api/v1/counts", {}, "counts", 405),
    ],
)
def test_v1_errors_match_the_document(client, method, url, kwargs, path, status):
    spec = client.get("/openapi.json").json
    template = {
        "thread": "/api/v1/contents/{content_id}/comments",
        "one": "/api/v1/comments/{comment_id}",
        "counts": "/api/v1/counts",
    }[path]
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status, response.data
    doc_method = method if method in spec["paths"][template] else "get"
    documented(spec, template, doc_method, response)
    problem = response.json
    anchors = problem_anchors(client.get("/docs").get_data(as_text=True))
    assert problem["type"].removeprefix("/docs#problem-") in anchors
    if status == 400 and problem["type"].endswith("validation-error"):
        assert problem["errors"]


def test_unknown_route_and_ops_match_the_document(client):
    spec = client.get("/openapi.json").json
    unknown = client.get("/api/v1/nothing-here")
    assert unknown.status_code == 404
    assert unknown.mimetype == PROBLEM
    check(spec, {"$ref": "#/components/schemas/Problem"}, unknown.json)
    for path in ("/healthz", "/readyz", "/healthcheck"):
        response = client.get(path)
        assert response.status_code == 200
        documented(spec, path, "get", response)


# --- authenticated and moderation flows -----------------------------------------------

ISSUER, AUDIENCE = "https://id.example.test", "comments-api-tests"


def reader_token(secret: str, subject: str) -> str:
    now = int(time.time())
    claims = {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    return pyjwt.encode({**claims, "name": "Reader"}, secret, algorithm="HS256")


def admin_key(app) -> str:
    new = generate_api_key()
    app.extensions[EXTENSION_KEY].repo.add_api_key(
        new.key_id, "openapi-tests", new.key_hash, ["admin"]
    )
    return new.key


@pytest.fixture
def auth_app(make_app):
    secret = secrets.token_hex(32)
    app = make_app(
        moderation_mode="pre",
        jwt_hs256_secret=secret,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    return app, secret


def test_author_and_moderator_responses_match_the_document(auth_app):
    app, secret = auth_app
    client = app.test_client()
    spec = client.get("/openapi.json").json
    thread, one = "/api/v1/contents/{content_id}/comments", "/api/v1/comments/{comment_id}"
    reader = {"Authorization": f"Bearer {reader_token(secret, 'reader-1')}"}
    other = {"Authorization": f"Bearer {reader_token(secret, 'reader-2')}"}
    moderator = {"Authorization": f"Bearer {admin_key(app)}"}

    pending = client.post("/api/v1/contents/m1/comments", json={"body": "hi"}, headers=reader)
    assert pending.status_code == 202
    documented(spec, thread, "post", pending)
    comment_id = pending.json["id"]

    queue = client.get("/api/v1/moderation/pending", headers=moderator)
    assert queue.status_code == 200
    documented(spec, "/api/v1/moderation/pending", "get", queue)
    assert comment_id in {c["id"] for c in queue.json["items"]}
    documented(spec, "/api/v1/moderation/pending", "get", client.get("/api/v1/moderation/pending"))
    forbidden = client.get("/api/v1/moderation/pending", headers=reader)
    assert forbidden.status_code == 403
    documented(spec, "/api/v1/moderation/pending", "get", forbidden)

    bulk = "/api/v1/moderation/comments"
    approved = client.post(
        bulk, json={"action": "approve", "ids": [comment_id, 999999]}, headers=moderator
    )
    assert approved.status_code == 200
    documented(spec, bulk, "post", approved)
    bad_bulk = client.post(bulk, json={"action": "nuke", "ids": []}, headers=moderator)
    assert bad_bulk.status_code == 400
    documented(spec, bulk, "post", bad_bulk)
    client.post(bulk, json={"action": "hide", "ids": [comment_id]}, headers=moderator)
    hidden = client.get(f"{bulk}?status=hidden&content_id=m1", headers=moderator)
    assert [c["status"] for c in hidden.json["items"]] == ["hidden"]
    documented(spec, bulk, "get", hidden)
    bad_status = client.get(f"{bulk}?status=published", headers=moderator)
    assert bad_status.status_code == 400
    documented(spec, bulk, "get", bad_status)
    documented(spec, bulk, "get", client.get(f"{bulk}?status=hidden"))
    client.post(bulk, json={"action": "approve", "ids": [comment_id]}, headers=moderator)

    url = f"/api/v1/comments/{comment_id}"
    edited = client.patch(url, json={"body": "hi, edited"}, headers=reader)
    assert edited.status_code == 200
    documented(spec, one, "patch", edited)
    assert edited.json["status"] == "pending"  # changed text waits for approval again
    client.post(bulk, json={"action": "approve", "ids": [comment_id]}, headers=moderator)
    not_author = client.patch(url, json={"body": "mine now"}, headers=other)
    assert not_author.status_code == 403
    documented(spec, one, "patch", not_author)
    deleted = client.delete(url, headers=reader)
    assert deleted.status_code == 204
    documented(spec, one, "delete", deleted)
    tombstone = client.get(url)
    documented(spec, one, "get", tombstone)
    assert tombstone.json["status"] == "deleted"

    bans, ban_path = "/api/v1/moderation/bans", "/api/v1/moderation/bans/{target}"
    banned = client.post(bans, json={"email": "Troll@Example.com"}, headers=moderator)
    assert banned.status_code == 201
    documented(spec, bans, "post", banned)
    documented(
        spec,
        bans,
        "post",
        client.post(bans, json={"email": "troll@example.com"}, headers=moderator),
    )
    listed = client.get(bans, headers=moderator)
    documented(spec, bans, "get", listed)
    rejected = client.post(
        "/api/comment/new",
        json={"email": "troll@example.com", "comment": "again", "content_id": "m1"},
    )
    assert rejected.status_code == 403
    documented(spec, "/api/comment/new", "post", rejected)
    lifted = client.delete(banned.headers["Location"], headers=moderator)
    assert lifted.status_code == 204
    documented(spec, ban_path, "delete", lifted)
    again = client.delete(banned.headers["Location"], headers=moderator)
    assert again.status_code == 404
    documented(spec, ban_path, "delete", again)

    audit = client.get("/api/v1/admin/audit-log", headers=moderator)
    assert audit.status_code == 200
    documented(spec, "/api/v1/admin/audit-log", "get", audit)
    assert {"approve", "ban", "unban", "edit"} <= {e["action"] for e in audit.json["items"]}
    bad_token = client.get("/api/v1/counts?content_id=1", headers={"Authorization": "Bearer nope"})
    assert bad_token.status_code == 401
    documented(spec, "/api/v1/counts", "get", bad_token)
    assert "WWW-Authenticate" in bad_token.headers


def test_anonymous_write_in_required_mode_matches_the_document(make_app):
    client = make_app(auth_mode="required").test_client()
    spec = client.get("/openapi.json").json
    response = client.post("/api/v1/contents/1/comments", json={"body": "hello"})
    assert response.status_code == 401
    documented(spec, "/api/v1/contents/{content_id}/comments", "post", response)
    legacy = client.post(
        "/api/comment/new", json={"email": "a@example.com", "comment": "x", "content_id": 1}
    )
    assert legacy.status_code == 401
    documented(spec, "/api/comment/new", "post", legacy)


def test_rate_limited_responses_match_the_document(make_app):
    client = make_app(ratelimit_enabled=True, ratelimit_anonymous_write="2/minute").test_client()
    spec = client.get("/openapi.json").json
    statuses = []
    for i in range(3):
        response = client.post("/api/v1/contents/1/comments", json={"body": f"n{i}"})
        statuses.append(response.status_code)
    assert statuses == [201, 201, 429]
    documented(spec, "/api/v1/contents/{content_id}/comments", "post", response)
    for name in ("Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"):
        assert name in response.headers


def test_every_problem_the_http_server_answers_has_an_anchor(bare_app):
    """comments_api.worker answers some errors before the app runs; their links resolve too."""
    from comments_api import worker

    page = bare_app.test_client().get("/docs").get_data(as_text=True)
    anchors = problem_anchors(page)
    # The statuses it answers: gunicorn's parse errors, read deadlines, draining, crashes.
    statuses = {status for _, status, _ in worker._CLIENT_ERRORS} | {408, 413, 500, 503}
    assert {400, 414, 431} <= statuses
    for status in statuses:
        _, body = worker.error_document(status, "x", "/api/v1/counts")
        slug = json.loads(body)["type"].removeprefix("/docs#problem-")
        assert slug in anchors, f"{status}: add {slug!r} to contract/problems.py"


def test_write_preconditions_match_the_document(make_app):
    """The v1 writes' 412s (If-Match naming a tag, If-None-Match: *) are documented, with
    the headers that cause them, and the problem types they carry."""
    secret = secrets.token_hex(32)
    app = make_app(jwt_hs256_secret=secret, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    client = app.test_client()
    spec = client.get("/openapi.json").json
    thread, one = "/api/v1/contents/{content_id}/comments", "/api/v1/comments/{comment_id}"
    author = {"Authorization": f"Bearer {reader_token(secret, 'reader-1')}"}
    created = client.post("/api/v1/contents/p1/comments", json={"body": "hi"}, headers=author)
    location = created.headers["Location"]
    writes = [
        (
            thread,
            "post",
            lambda h: client.post("/api/v1/contents/p1/comments", json={"body": "x"}, headers=h),
        ),
        (one, "patch", lambda h: client.patch(location, json={"body": "x"}, headers=h)),
        (one, "delete", lambda h: client.delete(location, headers=h)),
    ]
    for path, method, send in writes:
        op = spec["paths"][path][method]
        params = {resolve(spec, p)["name"] for p in op.get("parameters", [])}
        assert {"If-Match", "If-None-Match"} <= params, (method, path)
        doc_412 = resolve(spec, op["responses"]["412"])
        for conditions, slug in (
            ({"If-Match": '"x"'}, "if-match-failed"),
            ({"If-None-Match": "*"}, "if-none-match-failed"),
        ):
            failed = send({**author, **conditions})
            assert failed.status_code == 412, (method, path, failed.data)
            documented(spec, path, method, failed)
            assert failed.json["type"] == f"/docs#problem-{slug}"
            assert f"/docs#problem-{slug}" in doc_412["description"]
            assert failed.headers["Cache-Control"] == "no-store"
            assert "Cache-Control" in doc_412["headers"]


def _served_path(path: str) -> str:
    return example_path(path).replace("/api/v1/counts", "/api/v1/counts?content_id=1")


def test_scripts_and_stylesheets_revalidate_as_documented(bare_app):
    """Every file that answers with an ETag documents it, its Cache-Control, the
    If-None-Match it takes and the 304 it answers (to its ETag and to ``*``)."""
    client = bare_app.test_client()
    spec = client.get("/openapi.json").json
    revalidating = []
    for path, item in spec["paths"].items():
        op = item.get("get", {})
        media = set(op.get("responses", {}).get("200", {}).get("content", {}))
        if not media & {"text/javascript", "text/css", "text/html"}:
            continue  # the pages and files for people (the API's reads: test_read_cache.py)
        plain = client.get(_served_path(path))
        assert plain.status_code == 200, path
        etag = plain.headers.get("ETag")
        if etag is None:
            assert "304" not in op["responses"], path
            continue
        revalidating.append(path)
        params = {resolve(spec, p)["name"] for p in op.get("parameters", [])}
        assert "If-None-Match" in params, path
        doc = documented(spec, path, "get", plain)
        assert {"ETag", "Cache-Control"} <= set(doc["headers"]), path
        assert "public" in plain.headers["Cache-Control"]
        for condition in (etag, f"W/{etag}", "*"):
            not_modified = client.get(path, headers={"If-None-Match": condition})
            assert not_modified.status_code == 304, (path, condition)
            assert "304" in op["responses"], path
            doc = documented(spec, path, "get", not_modified)
            for name in doc["headers"]:
                assert name in not_modified.headers, (path, name)
            check(spec, doc["headers"]["ETag"]["schema"], not_modified.headers["ETag"])
    assert {"/widget/comments.js", "/docs/docs.css", "/moderation/console.js"} <= set(revalidating)


def test_a_credential_sent_wrongly_is_documented_on_every_operation(client):
    """identity/guards.py refuses a bad bearer token (401) and a token in the URL (400)
    before any view, on every operation: public reads, /api/v1/config, the widget's
    scripts and the health probes included. Each lists both, not only under default."""
    spec = client.get("/openapi.json").json
    checked = 0
    for path, method, responses in _operations(spec):
        url = _served_path(path)
        send = getattr(client, method)
        bad = send(url, headers={"Authorization": "Bearer not-a-credential"})
        assert bad.status_code == 401, (method, path, bad.status_code)
        assert "401" in responses, (method, path)
        documented(spec, path, method, bad)
        in_url = send(url + ("&" if "?" in url else "?") + "access_token=x")
        assert in_url.status_code == 400, (method, path, in_url.status_code)
        assert "400" in responses, (method, path)
        assert "access_token" in responses["400"]["description"], (method, path)
        documented(spec, path, method, in_url)
        assert "WWW-Authenticate" in in_url.headers
        checked += 1
    assert checked >= 25


def _operations(spec: dict) -> list[tuple[str, str, dict]]:
    """(path, method, responses) of every operation the spec documents."""
    return [
        (path, method, item[method]["responses"])
        for path, item in spec["paths"].items()
        for method in METHODS
        if method in item
    ]


def test_an_unreachable_identity_provider_is_documented_on_every_operation(make_app):
    """A bearer JWT is verified against the JWKS before any view, on every operation: with
    the identity provider down the answer is a 503 with Retry-After, which only `default`
    documented (a 500 there) beside the database's 503."""
    signer = rsa_signer()
    with jwks_server(jwks(signer)) as state:
        url = state["url"]
    # The server is stopped: each fetch of the key set is refused, as in an outage.
    app = make_app(jwt_jwks_url=url, jwt_issuer=authkit.ISSUER, jwt_audience=authkit.AUDIENCE)
    client = app.test_client()
    spec = client.get("/openapi.json").json
    token = bearer(signer.token())
    checked = 0
    for path, method, responses in _operations(spec):
        unverified = getattr(client, method)(_served_path(path), headers=token)
        assert unverified.status_code == 503, (method, path, unverified.status_code)
        assert "503" in responses, (method, path)
        assert "identity provider" in responses["503"]["description"], (method, path)
        doc = documented(spec, path, method, unverified)
        assert "Retry-After" in doc["headers"], (method, path)  # its value: documented()
        checked += 1
    assert checked >= 25


def test_an_api_key_cannot_edit_as_the_document_says(make_app):
    """PATCH of one comment declares the reader's JWT alone: an API key, even `admin`, is
    never a comment's author (identity.credentials.is_author), so it is always a 403."""
    secret = secrets.token_hex(32)
    app = make_app(jwt_hs256_secret=secret, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    client = app.test_client()
    spec = client.get("/openapi.json").json
    one = "/api/v1/comments/{comment_id}"
    reader = {"Authorization": f"Bearer {reader_token(secret, 'reader-1')}"}
    posted = client.post("/api/v1/contents/k1/comments", json={"body": "hi"}, headers=reader)
    url = f"/api/v1/comments/{posted.json['id']}"
    by_key = client.patch(
        url, json={"body": "x"}, headers={"Authorization": f"Bearer {admin_key(app)}"}
    )
    assert by_key.status_code == 403, by_key.json
    documented(spec, one, "patch", by_key)
    by_author = client.patch(url, json={"body": "edited"}, headers=reader)
    assert by_author.status_code == 200
    assert spec["paths"][one]["patch"]["security"] == [{"bearerJwt": []}]


def _sqlite_disk_full() -> OperationalError:
    """A real SQLITE_FULL, wrapped as SQLAlchemy raises it from a write on a full volume."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("PRAGMA max_page_count = 1")
        with pytest.raises(sqlite3.OperationalError) as full:
            conn.execute("INSERT INTO t VALUES (zeroblob(65536))")
    finally:
        conn.close()
    assert full.value.sqlite_errorname == "SQLITE_FULL"
    return OperationalError("INSERT INTO comments ...", {}, full.value)


def test_a_full_database_volume_is_documented_on_every_write(make_app):
    """A write that meets a full database volume answers 507 with Retry-After (app.py; the
    disk-full drill in test_fault_drills.py fills a real one): every operation that stores
    something declares it, in its API's shape, not only under `default` (a 500 there)."""
    app = make_app()
    full = _sqlite_disk_full()

    @app.before_request
    def volume_full() -> None:
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            raise full

    client = app.test_client()
    spec = client.get("/openapi.json").json
    admin = {"Authorization": f"Bearer {admin_key(app)}"}
    checked = 0
    for path, method, responses in _operations(spec):
        if method == "get":
            continue
        answer = getattr(client, method)(_served_path(path), json={}, headers=admin)
        assert answer.status_code == 507, (method, path, answer.status_code)
        assert "507" in responses, (method, path)
        doc = documented(spec, path, method, answer)
        assert "Retry-After" in doc["headers"], (method, path)  # its value: documented()
        if not path.startswith("/api/comment/"):
            assert answer.json["type"] == "/docs#problem-insufficient-storage"
            assert "/docs#problem-insufficient-storage" in doc["description"]
        checked += 1
    assert checked == 7


def test_a_request_line_too_long_is_documented_on_counts():
    """The server answers a counts call whose request line passes its limit (a hundred long
    non-ASCII ids, percent-encoded) with 414 itself (comments_api.worker), before the app:
    the operation where a client meets it declares it, without `instance`."""
    from comments_api import worker

    spec = build_spec(Settings())
    responses = spec["paths"]["/api/v1/counts"]["get"]["responses"]
    assert "414" in responses
    media, body = worker.error_document(414, "the request line is too long", "/api/v1/counts")
    documented_414 = responses["414"]["content"][media]
    check(spec, documented_414["schema"], json.loads(body))
    assert documented_414["example"] == json.loads(body)


def test_a_signed_in_reader_may_leave_out_the_legacy_email(make_app):
    """The legacy create takes a reader's JWT as the author, without `email` (the body is
    read as LegacySignedInComment): the document says so instead of "all three required"."""
    secret = secrets.token_hex(32)
    app = make_app(jwt_hs256_secret=secret, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    client = app.test_client()
    spec = client.get("/openapi.json").json
    reader = {"Authorization": f"Bearer {reader_token(secret, 'reader-1')}"}
    stored = client.post(
        "/api/comment/new", json={"comment": "hi", "content_id": 1}, headers=reader
    )
    assert stored.status_code == 200
    documented(spec, "/api/comment/new", "post", stored)
    op = spec["paths"]["/api/comment/new"]["post"]
    assert "except `email` when a reader's sign-in JWT is sent" in op["requestBody"]["description"]
    email = spec["components"]["schemas"]["LegacyNewComment"]["properties"]["email"]
    assert "may be left out" in email["description"]


def test_the_read_etags_are_described_as_the_server_makes_them(client):
    """The three cached reads' ETag is a hash of the bytes answered, not of a state. The
    document said "the same from every worker and instance for the " and stopped (the rest,
    "same state; ...", was a string statement of its own), and the 304's said only that.
    Every 200 carries one now (a page never cached, whose cursor names no public comment,
    included), so it is required."""
    spec = client.get("/openapi.json").json
    thread = "/api/v1/contents/{content_id}/comments"
    client.post("/api/v1/contents/a1/comments", json={"body": "kept"})
    past_every_id = encode_cursor(10**9, "oldest")  # a position no comment is at
    uncached = client.get("/api/v1/contents/a1/comments", query_string={"cursor": past_every_id})
    assert (uncached.status_code, "ETag" in uncached.headers) == (200, True), uncached.json
    documented(spec, thread, "get", uncached)
    for path in (thread, "/api/comment/list/{content_id}", "/api/v1/counts"):
        for status in ("200", "304"):
            etag = spec["paths"][path]["get"]["responses"][status]["headers"]["ETag"]
            assert "for the same bytes; send it back in `If-None-Match`." in etag["description"]
            assert "for the  " not in etag["description"], (path, status)
            assert etag.get("required") is True, (path, status)
