"""What the public read routes tell a reader without moderator rights about comments they
must not see (pending, hidden, removed): nothing an id that names no comment would not
tell. On SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from comments_api.comments.rules import encode_cursor
from comments_api.identity.credentials import SCOPE_MODERATE, SCOPE_WRITE
from comments_api.web.common import EXTENSION_KEY

from .authkit import api_key, bearer

PAGE = "/api/v1/contents/{}/comments"


@pytest.fixture
def site(make_app):
    """Pre-moderation: a desk key (write + moderate) publishes, anonymous posts wait."""
    app = make_app(moderation_mode="pre")
    client = app.test_client()
    desk = bearer(api_key(app, SCOPE_WRITE, SCOPE_MODERATE))
    app.extensions["privacy_desk"] = desk

    def post(content_id: str, body: str, *, published: bool = True) -> int:
        answer = client.post(
            PAGE.format(content_id), json={"body": body}, headers=desk if published else None
        )
        assert answer.status_code == (201 if published else 202), answer.data
        return answer.json["id"]

    def hide(comment_id: int) -> None:
        answer = client.post(
            "/api/v1/moderation/comments",
            json={"action": "hide", "ids": [comment_id]},
            headers=desk,
        )
        assert answer.json["changed"] == [comment_id]

    return client, post, hide


def _answer(client, content_id: str, comment_id: int, order: str):
    """What a reader learns from a cursor naming ``comment_id``: status, body shape, and
    whether the page carries an ETag (a tag for some ids only is as telling as a 400)."""
    url = PAGE.format(content_id)
    response = client.get(
        url, query_string={"cursor": encode_cursor(comment_id, order), "order": order}
    )
    items = [c["id"] for c in response.json.get("items", [])] if response.is_json else None
    return response.status_code, items, "ETag" in response.headers


def test_a_cursor_naming_a_comment_the_reader_cannot_see_says_nothing_of_its_content(site):
    """A cursor naming a hidden or pending comment answered 400 on every content's list but
    its own (200), so walking the ids through one list told which article each held comment
    is on; and on its own list it got an ETag that a cursor naming nothing did not. Now it
    is a position like any id no public comment has: 200, the same page, tagged alike."""
    client, post, hide = site
    before = post("a", "a1")
    hidden_a = post("a", "hidden on a")
    hide(hidden_a)
    hidden_b = post("b", "hidden on b")
    hide(hidden_b)
    pending_a = post("a", "pending on a", published=False)
    pending_b = post("b", "pending on b", published=False)
    after = post("a", "a2")
    past_every_id = after + 1000  # names no row at all

    for order in ("oldest", "newest"):
        answers = {
            name: _answer(client, "a", comment_id, order)
            for name, comment_id in {
                "hidden on a": hidden_a,
                "hidden on b": hidden_b,
                "pending on a": pending_a,
                "pending on b": pending_b,
            }.items()
        }
        expected = [after] if order == "oldest" else [before]
        for name, (status, items, tagged) in answers.items():
            assert (status, items, tagged) == (200, expected, True), (order, name)
        # An id past every one is the same kind of position.
        status, items, tagged = _answer(client, "a", past_every_id, order)
        assert (status, tagged) == (200, True)
        assert items == ([] if order == "oldest" else [after, before])
    # A public comment's content is no secret (GET /api/v1/comments/{id} shows it): its
    # cursor is still refused on another content's list, and tagged on its own.
    assert _answer(client, "b", before, "oldest")[0] == 400
    assert _answer(client, "a", before, "oldest") == (200, [after], True)


def test_etags_do_not_move_when_only_comments_no_reader_sees_change(site):
    """The ETags of the lists and of the counts were made from the contents' change markers,
    which every write moves: posting a comment held for moderation, or removing a hidden one,
    gave each a new ETag (and If-None-Match a 200, If-Match a 412) while no byte changed, so
    anyone polling them learnt when a held comment was posted on an article."""
    client, post, hide = site
    post("a", "public")
    hidden = post("a", "to hide")
    hide(hidden)
    urls = [
        PAGE.format("a"),
        PAGE.format("a") + "?order=newest&limit=1",
        "/api/comment/list/a",
        "/api/v1/counts?content_id=a&content_id=b",
    ]

    def seen() -> list[tuple[int, str, bytes]]:
        return [(r.status_code, r.headers["ETag"], r.data) for r in map(client.get, urls)]

    before = seen()
    desk = client.application.extensions["privacy_desk"]
    for write in (
        lambda: post("a", "held", published=False),  # a pending comment
        lambda: client.delete(f"/api/v1/comments/{hidden}", headers=desk),  # removed for good
    ):
        write()
        assert seen() == before
        for (_, etag, _), url in zip(before, urls, strict=True):
            assert client.get(url, headers={"If-None-Match": etag}).status_code == 304, url
            assert client.get(url, headers={"If-Match": etag}).status_code == 200, url
    # A change a reader sees still gives each a new ETag.
    post("a", "another public one")
    assert all(new[1] != old[1] for new, old in zip(seen(), before, strict=True))


def test_a_list_keeps_its_etag_while_held_comments_are_posted_on_it(site):
    """A page built while writes landed on its content (twice in a row) was served without
    an ETag: a reader polling a list saw its tag vanish, and its revalidation get a 200,
    while comments held for moderation were being posted there. Now it is tagged by its
    bytes like any answer: held comments change nothing a reader sees."""
    client, post, _hide = site
    post("a", "public")
    url = PAGE.format("a")
    etag = client.get(url).headers["ETag"]
    service = client.application.extensions[EXTENSION_KEY].comments
    real = service.repo.list_page

    def overtaken(*args, **kwargs):  # each build is overtaken by a held comment's post
        page = real(*args, **kwargs)
        post("a", "held", published=False)
        return page

    post("a", "held", published=False)  # the cached page no longer holds: built again
    service.repo.list_page = overtaken
    try:
        busy = client.get(url)
        revalidated = client.get(url, headers={"If-None-Match": etag})
    finally:
        service.repo.list_page = real
    assert (busy.status_code, busy.headers.get("ETag")) == (200, etag)
    assert revalidated.status_code == 304
