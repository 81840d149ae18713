"""How a credential reaches us: only the Authorization header, and what its claims grant."""

from __future__ import annotations

from comments_api.identity.credentials import SCOPE_MODERATE
from comments_api.web.common import EXTENSION_KEY

from .authkit import api_key, bearer

POST = "/api/v1/contents/a1/comments"


def test_a_token_in_the_url_is_refused_not_ignored(build, signer):
    """`?access_token=` (RFC 6750, section 2.3) was ignored: the reader's comment was
    posted as anonymous, and the token left in every access log on the way."""
    app = build()
    client = app.test_client()
    token = signer.token("alice")
    posted = client.post(f"{POST}?access_token={token}", json={"body": "as alice"})
    assert posted.status_code == 400, posted.json
    assert posted.mimetype == "application/problem+json"
    assert "Authorization: Bearer" in posted.json["detail"]
    challenge = posted.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="comments-api", error="invalid_request"')
    # On reads too, with a header as well (two ways at once), and on the legacy API.
    read = client.get(f"/api/v1/counts?content_id=a1&access_token={token}")
    assert read.status_code == 400
    both = client.post(f"{POST}?access_token={token}", json={"body": "x"}, headers=bearer(token))
    assert both.status_code == 400
    legacy = client.post(
        f"/api/comment/new?access_token={token}",
        json={"email": "a@example.com", "comment": "x", "content_id": "a1"},
    )
    assert legacy.status_code == 400
    assert legacy.json["status"] == "BAD-REQUEST"  # the legacy shape
    assert client.get("/api/v1/contents/a1/comments").json["items"] == []


def test_any_whitespace_after_bearer_still_carries_the_token(build, signer):
    """ "Bearer<TAB>token" was read as another scheme: the reader posted as anonymous."""
    client = build().test_client()
    token = signer.token("tabby", name="Tabby")
    for separator in ("\t", "  ", " \t"):
        posted = client.post(
            POST,
            json={"body": f"sep {separator!r}"},
            headers={"Authorization": f"Bearer{separator}{token}"},
        )
        assert posted.status_code == 201, posted.json
        assert posted.json["author"]["name"] == "Tabby"
    broken = client.post(POST, json={"body": "x"}, headers={"Authorization": "Bearer\tnot-a-jwt"})
    assert broken.status_code == 401


def test_scope_and_scp_grant_moderation_as_a_string_or_a_list(build, signer):
    """Azure AD sends `scp` as a space-separated string: its moderators got 403."""
    app = build()
    client = app.test_client()
    queue = "/api/v1/moderation/pending"
    for claims in (
        {"scp": "openid comments:moderate"},
        {"scp": ["comments:moderate"]},
        {"scope": "openid comments:moderate"},
        {"scope": ["comments:moderate"]},
        {"scope": "openid", "scp": "comments:moderate"},
    ):
        response = client.get(queue, headers=bearer(signer.token("mod", **claims)))
        assert response.status_code == 200, (claims, response.json)
    for claims in ({"scp": "openid profile"}, {"scope": "comments:moderator"}, {"scp": 7}, {}):
        response = client.get(queue, headers=bearer(signer.token("reader", **claims)))
        assert response.status_code == 403, claims
    # A key's scopes are untouched by any of this.
    assert client.get(queue, headers=bearer(api_key(app, SCOPE_MODERATE))).status_code == 200


def test_an_email_the_provider_has_not_verified_is_not_the_readers(build, signer):
    """`email_verified: false` is an address the reader typed, anyone's: it was stored,
    hashed into their public avatar and shown to moderators as theirs."""
    app = build()
    client = app.test_client()
    claimed = {"email": "editor@news.example", "name": "Mallory"}
    unverified = signer.token("mallory", email_verified=False, **claimed)
    posted = client.post(POST, json={"body": "hi"}, headers=bearer(unverified))
    assert posted.status_code == 201
    assert posted.json["author"] == {"name": "Mallory", "email_hash": None}
    verified = signer.token("editor", email_verified=True, **claimed)
    again = client.post(POST, json={"body": "hello"}, headers=bearer(verified))
    assert again.json["author"]["email_hash"] is not None
    repo = app.extensions[EXTENSION_KEY].repo
    assert repo.get(posted.json["id"]).email is None
    assert repo.get(again.json["id"]).email == "editor@news.example"


def test_a_provider_name_that_prints_nothing_is_no_name(build, signer):
    """A zero-width space or tag characters as the token's name showed as an empty author:
    such a name is no name, as an author_name that prints nothing is refused."""
    app = build()
    client = app.test_client()
    # The last: what the 80-character cut leaves prints nothing.
    for name in ("\u200b", "\U000e0041\U000e0042", " \u2060 ", "\u200b" * 80 + "x"):
        token = signer.token("reader", name=name)
        posted = client.post(POST, json={"body": f"hi {name!r}"}, headers=bearer(token))
        assert posted.status_code == 201, posted.json
        assert posted.json["author"]["name"] == "anonymous", repr(name)
        # The username stands in, as it does for a missing or empty name.
        token = signer.token("reader", name=name, preferred_username="zoe")
        posted = client.post(POST, json={"body": f"hey {name!r}"}, headers=bearer(token))
        assert posted.json["author"]["name"] == "zoe", repr(name)
    token = signer.token("reader", name="Zo\u00e9\U000e0041")
    posted = client.post(POST, json={"body": "hi Zoe"}, headers=bearer(token))
    assert posted.json["author"]["name"] == "Zo\u00e9\U000e0041"


def test_an_email_verified_claim_sent_as_the_string_false_is_not_verified(build, signer):
    """Sign in with Apple (and others) send `email_verified` as "true"/"false" strings:
    "false" was not `False`, so an address the provider had not verified was stored,
    hashed into the reader's public avatar and shown to moderators as theirs."""
    app = build()
    client = app.test_client()
    claimed = {"email": "editor@news.example", "name": "Mallory"}
    for value in ("false", "False"):
        token = signer.token("mallory", email_verified=value, **claimed)
        posted = client.post(POST, json={"body": f"hi {value}"}, headers=bearer(token))
        assert posted.status_code == 201
        assert posted.json["author"] == {"name": "Mallory", "email_hash": None}
    token = signer.token("editor", email_verified="true", **claimed)
    verified = client.post(POST, json={"body": "hello"}, headers=bearer(token))
    assert verified.json["author"]["email_hash"] is not None


def test_a_provider_name_that_is_an_email_address_is_not_published(build, signer):
    """Auth0 sets `name` to the address of a reader who gave no name, and Entra ID's
    `preferred_username` is usually the sign-in address: either was shown as the author
    on every public list, the widget's included, where addresses are never shown."""
    app = build()
    client = app.test_client()
    for number, claims in enumerate(
        (
            {"name": "jane.doe@readers.example"},
            {"name": None, "preferred_username": "Jane.Doe@Readers.Example"},
            {"name": "Jane Doe <jane.doe@readers.example>"},
        )
    ):
        token = signer.token("jane", **claims)
        posted = client.post(POST, json={"body": f"hi {number}"}, headers=bearer(token))
        assert posted.status_code == 201, posted.json
        assert posted.json["author"]["name"] == "anonymous", claims
    # The username stands in for an address-like name; a name with an "@" handle stays.
    token = signer.token("jane", name="jane.doe@readers.example", preferred_username="jdoe")
    posted = client.post(POST, json={"body": "hi jdoe"}, headers=bearer(token))
    assert posted.json["author"]["name"] == "jdoe"
    token = signer.token("jane", name="Jane @ the desk")
    posted = client.post(POST, json={"body": "hi desk"}, headers=bearer(token))
    assert posted.json["author"]["name"] == "Jane @ the desk"
    listed = client.get("/api/v1/contents/a1/comments?limit=100").get_data(as_text=True)
    assert "jane.doe@" not in listed.lower()
