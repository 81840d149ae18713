"""/openapi.json read by a developer generating a client: do its examples and field
descriptions say what the server answers? Real app (Flask test client), both databases."""

from __future__ import annotations

from typing import Any

import pytest

from comments_api.contract.problems import status_title
from comments_api.identity.credentials import SCOPE_WRITE
from comments_api.web.common import EXTENSION_KEY

from .authkit import AUDIENCE, ISSUER, api_key, bearer, hs_signer

PROBLEM = "application/problem+json"


def example(spec: dict[str, Any], path: str, method: str, status: int) -> Any:
    response = spec["paths"][path][method]["responses"][str(status)]
    (content,) = response["content"].values()
    return content["example"]


def test_the_documented_413_is_the_413_the_server_sends(make_app):
    """The examples said "Request Entity Too Large" / REQUEST-ENTITY-TOO-LARGE (Python's
    phrase); the server says RFC 9110's "Content Too Large" / CONTENT-TOO-LARGE."""
    client = make_app(max_body_bytes=256).test_client()
    spec = client.get("/openapi.json").json
    big = {"comment": "x" * 400, "email": "a@example.com", "content_id": 1}

    legacy = client.post("/api/comment/new", json=big)
    assert legacy.status_code == 413
    assert example(spec, "/api/comment/new", "post", 413)["status"] == legacy.json["status"]

    v1 = client.post("/api/v1/contents/1/comments", json={"body": "x" * 400})
    assert (v1.status_code, v1.mimetype) == (413, PROBLEM)
    documented = example(spec, "/api/v1/contents/{content_id}/comments", "post", 413)
    assert (documented["type"], documented["title"]) == (v1.json["type"], v1.json["title"])
    assert spec["paths"]["/api/v1/contents/{content_id}/comments"]["post"]["responses"]["413"][
        "description"
    ].startswith(v1.json["title"])


@pytest.mark.parametrize(
    ("method", "path", "url", "kwargs"),
    [
        ("post", "/api/v1/contents/{content_id}/comments", "/api/v1/contents/1/comments",
         {"json": {"body": "   "}}),
        ("get", "/api/v1/contents/{content_id}/comments", "/api/v1/contents/1/comments",
         {"query_string": {"limit": 1000}}),
        ("get", "/api/v1/counts", "/api/v1/counts",
         {"query_string": {"content_id": [str(i) for i in range(101)]}}),
    ],
)  # fmt: skip
def test_a_documented_validation_error_has_the_type_the_server_gives_it(
    make_app, method, path, url, kwargs
):
    """The 400 examples carried `errors` under type bad-request; a body with `errors` is
    always a validation-error."""
    client = make_app().test_client()
    spec = client.get("/openapi.json").json
    real = getattr(client, method)(url, **kwargs)
    assert real.status_code == 400
    documented = example(spec, path, method, 400)
    assert "errors" in documented
    assert "errors" in real.json
    assert documented["type"] == real.json["type"] == "/docs#problem-validation-error"
    assert documented["title"] == real.json["title"]


def test_every_error_example_titles_its_status_as_the_server_does(make_app):
    """Titles of errors answered by status alone come from one place (status_title)."""
    spec = make_app().test_client().get("/openapi.json").json
    seen = 0
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for status, response in op["responses"].items():
                if not status.isdigit() or int(status) < 400:
                    continue
                for media, content in response.get("content", {}).items():
                    body = content.get("example")
                    if media == PROBLEM:
                        assert body["title"] == status_title(int(status)), (method, path, status)
                    elif path.startswith("/api/comment/"):
                        word = status_title(int(status)).upper().replace(" ", "-")
                        assert body["status"] == word, (method, path, status)
                    else:
                        continue  # not an error body (readiness's 503)
                    seen += 1
    assert seen > 50


def test_the_email_and_name_fields_say_when_they_count(make_app):
    """NewComment said `email`/`author_name` are "ignored when the caller is
    authenticated"; a backend's API key sets them (api.md), only a reader's JWT replaces them."""
    signer = hs_signer()
    app = make_app(jwt_hs256_secret=signer.key, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    client = app.test_client()
    body = {"body": "hi", "email": "ann@example.com", "author_name": "Ann"}

    by_backend = client.post(
        "/api/v1/contents/1/comments", json=body, headers=bearer(api_key(app, SCOPE_WRITE))
    )
    assert by_backend.status_code == 201
    assert by_backend.json["author"]["name"] == "Ann"
    stored = app.extensions[EXTENSION_KEY].repo.get(by_backend.json["id"])
    assert stored.email == "ann@example.com"
    by_reader = client.post(
        "/api/v1/contents/1/comments", json=body, headers=bearer(signer.token("r1"))
    )
    assert by_reader.json["author"]["name"] == "Reader r1"

    schema = client.get("/openapi.json").json["components"]["schemas"]["NewComment"]
    for field in ("email", "author_name"):
        description = schema["properties"][field]["description"]
        assert "when the caller is authenticated" not in description
        assert "JWT" in description
        assert "API key" in description
