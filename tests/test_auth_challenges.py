"""What an auth failure tells the client: 401 or 403, always with a Bearer challenge."""

from __future__ import annotations

from comments_api.identity.credentials import SCOPE_ADMIN, SCOPE_MODERATE, SCOPE_WRITE

from .authkit import api_key, bearer

REALM = 'Bearer realm="comments-api"'


def scope_challenge(scope: str) -> str:
    return (
        f'{REALM}, error="insufficient_scope", '
        f'error_description="this credential lacks the \'{scope}\' scope", scope="{scope}"'
    )


def test_a_credential_without_the_scope_gets_403_with_an_insufficient_scope_challenge(
    build, signer
):
    """RFC 6750, section 3: a token that does not enable access gets WWW-Authenticate
    with error="insufficient_scope" (and the scope it needs); the 403 had none."""
    app = build()
    client = app.test_client()
    writer = bearer(api_key(app, SCOPE_WRITE))
    moderator = bearer(api_key(app, SCOPE_MODERATE))
    reader = bearer(signer.token("r1"))
    refused = [
        (client.get("/api/v1/moderation/pending", headers=writer), SCOPE_MODERATE),
        (client.get("/api/v1/moderation/pending", headers=reader), SCOPE_MODERATE),
        (
            client.post(
                "/api/v1/moderation/comments", json={"action": "hide", "ids": [1]}, headers=reader
            ),
            SCOPE_MODERATE,
        ),
        (client.get("/api/v1/admin/audit-log", headers=moderator), SCOPE_ADMIN),
        (
            client.post("/api/v1/contents/a1/comments", json={"body": "x"}, headers=moderator),
            SCOPE_WRITE,
        ),
        (
            client.post(
                "/api/comment/new",
                json={"email": "a@example.com", "comment": "x", "content_id": "a1"},
                headers=moderator,
            ),
            SCOPE_WRITE,
        ),
    ]
    for response, scope in refused:
        assert response.status_code == 403, response.get_data(as_text=True)
        assert response.is_json
        assert response.headers["WWW-Authenticate"] == scope_challenge(scope)
    assert client.get("/api/v1/contents/a1/comments").json["items"] == []


def test_a_403_that_is_not_about_the_credential_carries_no_challenge(build, signer):
    """Another reader's comment: the token is fine, a new one would not help."""
    app = build()
    client = app.test_client()
    posted = client.post(
        "/api/v1/contents/a1/comments",
        json={"body": "mine"},
        headers=bearer(signer.token("author")),
    )
    assert posted.status_code == 201
    other = bearer(signer.token("someone-else"))
    edited = client.patch(
        f"/api/v1/comments/{posted.json['id']}", json={"body": "x"}, headers=other
    )
    assert edited.status_code == 403
    assert "WWW-Authenticate" not in edited.headers
