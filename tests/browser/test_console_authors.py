"""The console's author view: one author's comments across contents (the queue listed with
author=), and "Delete all by this author", which calls the API's delete by author again
while it answers ``more``."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from .conftest import DRAWN_LEFTS, Api, HostSite, _start_api, dumps, run_axe, screenshot
from .test_console import (
    PROXY_PAGE,
    UNAVAILABLE,
    hold,
    new_content,
    queue_row,
    show_queue_of,
    sign_in,
)

pytestmark = pytest.mark.browser

ACTIONS = "**/api/v1/moderation/comments"
LISTINGS = "**/api/v1/moderation/comments?*"
# What the API's delete by author erases per call (contract.models.MAX_AUTHOR_DELETE, a
# constant of the server process): one comment more takes two calls.
PER_CALL = 1000


@pytest.fixture(scope="module")
def author_api(tmp_path_factory: pytest.TempPathFactory, site: HostSite) -> Iterator[Api]:
    """Pre-moderation, and an author may post more than a call's 1000 comments on one
    content (THREAD_AUTHOR_MAX). Its own server: a thousand pending comments of one author
    would fill the first pages of the shared server's queue for the other tests."""
    yield from _start_api(
        tmp_path_factory.mktemp("author-api"),
        site,
        AUTH_MODE="open",
        MODERATION_MODE="pre",
        RATELIMIT_ENABLED="false",
        THREAD_AUTHOR_MAX="5000",
    )


def email() -> str:
    return f"writer-{uuid.uuid4().hex[:8]}@example.com"


def post_many(api: Api, content_id: str, n: int, address: str, prefix: str) -> list[int]:
    """n pending comments of one author, over one kept-alive connection."""
    with requests.Session() as http:
        ids = []
        for i in range(n):
            response = http.post(
                f"{api.base}/api/v1/contents/{content_id}/comments",
                json={"body": f"{prefix} {i:04}", "email": address},
                timeout=10,
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
    return ids


def by_author(api: Api, key: str, author: str, status: str) -> list[dict[str, Any]]:
    response = requests.get(
        f"{api.base}/api/v1/moderation/comments",
        params={"status": status, "author": author, "limit": 100},
        headers={"Authorization": f"Bearer {key}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


def author_control(row) -> Any:
    return row.get_by_role("button", name=re.compile("^This author's comments"))


def open_author_view(page, row) -> None:
    """Open the author's comments from a row and wait until that listing is drawn: the
    listing of the row's content may have as many rows, so a count alone cannot tell."""
    author_control(row).click()
    expect(page.locator("#queue-caption")).to_contain_text(" by ")


def test_console_lists_one_authors_comments_across_contents(page, author_api: Api, axe_source):
    first, second = new_content(), new_content()
    writer = email()
    subject = f"reader-{uuid.uuid4().hex[:8]}"
    token = author_api.token(subject)
    key = author_api.key("comments:moderate")
    author_api.post(first, "writer on the first", email=writer)
    author_api.post(second, "writer on the second", email=writer)
    hidden = author_api.post(second, "writer hidden", email=writer)
    author_api.moderate(key, "hide", [hidden["id"]])
    author_api.post(first, "someone else", email=email())
    author_api.post(first, "nobody in particular")  # neither email nor subject
    for content in (first, second):
        signed_in = requests.post(
            f"{author_api.base}/api/v1/contents/{content}/comments",
            json={"body": f"signed in on {content}"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert signed_in.status_code == 202, signed_in.text
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    asked: list[str] = []
    page.on("request", lambda r: "/moderation/comments?" in r.url and asked.append(r.url))
    sign_in(page, author_api, key)
    bar = page.locator("#queue-author")
    caption = page.locator("#queue-caption")
    expect(queue_row(page, "writer on the first")).to_be_visible()
    expect(bar).to_be_hidden()

    # From the queue limited to one content, the keyboard opens the author's comments of
    # every content: the email is the key of an author without a subject.
    show_queue_of(page, first)
    expect(page.locator("#queue-body tr")).to_have_count(4)
    expect(author_control(queue_row(page, "nobody in particular"))).to_have_count(0)
    author_control(queue_row(page, "writer on the first")).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#queue-body tr")).to_have_count(2)
    expect(queue_row(page, "writer on the first")).to_be_visible()
    expect(queue_row(page, "writer on the second")).to_be_visible()
    expect(bar).to_be_visible()
    expect(bar).to_contain_text(f"email:{writer}")
    expect(caption).to_have_text(
        f"Comments waiting for a moderator by email:{writer}, oldest first"
    )
    expect(page.get_by_label("Limit to content")).to_have_value("")
    expect(page.locator("#queue-progress")).to_have_text(
        f"2 pending comments by email:{writer} listed."
    )
    expect(page.locator("#queue-author-text")).to_be_focused()  # the row it was on went
    assert "author=email%3A" in asked[-1], asked
    assert "content_id" not in asked[-1], asked
    # In the author's own view their rows have no control for it.
    expect(author_control(page.locator("#queue-body"))).to_have_count(0)
    violations, _ = run_axe(page, axe_source)
    assert violations == [], dumps(violations)
    screenshot(page, "console-author")

    # The Status select works in the author view: the author's hidden comments.
    page.get_by_label("Status").select_option("hidden")
    expect(page.locator("#queue-body tr")).to_have_count(1)
    expect(queue_row(page, "writer hidden")).to_be_visible()
    expect(bar).to_contain_text(f"email:{writer}")
    page.get_by_label("Status").select_option("pending")
    expect(page.locator("#queue-body tr")).to_have_count(2)

    # Cleared: every author's pending comments again, and no word of the author.
    page.get_by_role("button", name="Clear author filter").click()
    expect(bar).to_be_hidden()
    expect(queue_row(page, "someone else")).to_be_visible()
    expect(queue_row(page, "nobody in particular")).to_be_visible()
    expect(caption).to_have_text("Comments waiting for a moderator, oldest first")
    assert "author=" not in asked[-1], asked

    # A signed-in reader's comments are under their subject, not the token's email.
    author_control(queue_row(page, f"signed in on {first}")).click()
    expect(bar).to_contain_text(f"sub:{subject}")
    expect(page.locator("#queue-body tr")).to_have_count(2)
    expect(queue_row(page, f"signed in on {second}")).to_be_visible()

    # A failed author listing leaves the view shown, and says so.
    page.get_by_role("button", name="Clear author filter").click()
    expect(bar).to_be_hidden()
    page.route(LISTINGS, lambda route: route.fulfill(status=502, body=PROXY_PAGE))
    author_control(queue_row(page, "writer on the first")).click()
    expect(page.locator("#message")).to_have_text(
        f"{UNAVAILABLE} The queue still shows the pending comments of every content."
    )
    expect(bar).to_be_hidden()
    expect(queue_row(page, "someone else")).to_be_visible()
    page.unroute(LISTINGS)

    # A sign-out leaves no author on the page; the next session lists every author.
    author_control(queue_row(page, "writer on the first")).click()
    expect(bar).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(bar).to_be_hidden()
    assert page.locator("#queue-author-key").inner_text() == ""
    sign_in(page, author_api, key)
    expect(queue_row(page, "someone else")).to_be_visible()
    expect(bar).to_be_hidden()
    assert errors == [], errors


def test_console_author_view_load_more_keeps_the_author(page, author_api: Api):
    first, second = new_content(), new_content()
    writer, other = email(), email()
    key = author_api.key("comments:moderate")
    post_many(author_api, first, 30, writer, "early")
    post_many(author_api, first, 60, other, "in between")
    post_many(author_api, second, 21, writer, "late")
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    sign_in(page, author_api, key)
    show_queue_of(page, first)
    expect(queue_row(page, "early 0000")).to_be_visible()
    open_author_view(page, queue_row(page, "early 0000"))
    expect(page.locator("#queue-body tr")).to_have_count(50)
    more = page.get_by_role("button", name="Load more")
    held = hold(page, "**/moderation/comments?*cursor=*", "GET")
    more.click()
    page.wait_for_timeout(200)
    assert len(held) == 1, held
    asked = held[0].request.url
    assert "author=email%3A" in asked, asked
    assert "status=pending" in asked, asked
    held.pop().continue_()
    expect(page.locator("#queue-body tr")).to_have_count(51)
    expect(more).to_be_hidden()
    expect(queue_row(page, "late 0020")).to_be_visible()
    expect(page.locator("#queue-body tr", has_text="in between")).to_have_count(0)
    rows = page.locator("#queue-body tr")
    assert all(writer in text for text in rows.all_inner_texts())
    page.unroute("**/moderation/comments?*cursor=*")
    assert errors == [], errors


def test_console_deletes_all_by_an_author_calling_while_more(page, author_api: Api):
    content, other_content = new_content(), new_content()
    writer = email()
    key = author_api.key("comments:moderate")
    # One more than a call erases, in every status and on two contents.
    post_many(author_api, content, PER_CALL - 1, writer, "bulk of it")
    published = author_api.post(other_content, "already public", email=writer)
    author_api.moderate(key, "approve", [published["id"]])
    hidden = author_api.post(other_content, "already hidden", email=writer)
    author_api.moderate(key, "hide", [hidden["id"]])
    bystander_email = email()
    bystander = author_api.post(content, "a bystander stays", email=bystander_email)
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    sign_in(page, author_api, key)
    page.get_by_label("Limit to content").fill(other_content)
    page.get_by_role("button", name="Refresh").click()
    page.get_by_label("Status").select_option("hidden")
    author_control(queue_row(page, "already hidden")).click()
    expect(page.locator("#queue-author")).to_contain_text(f"email:{writer}")
    delete_all = page.locator("#queue-author-delete")  # its name says "Deleting…" meanwhile
    expect(delete_all).to_have_text("Delete all by this author")

    # Asked first; declined, nothing is sent.
    calls: list[dict[str, Any]] = []
    held: list = []
    dialogs: list[str] = []

    def record(route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        calls.append(route.request.post_data_json)
        if len(calls) == 2:
            held.append(route)  # the second call waits: the progress is shown meanwhile
        else:
            route.continue_()

    page.route(ACTIONS, record)

    def decline(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", decline)
    delete_all.click()
    page.wait_for_timeout(300)
    assert calls == [], calls
    assert len(dialogs) == 1, dialogs
    assert f"email:{writer}" in dialogs[0], dialogs
    assert "cannot be restored" in dialogs[0], dialogs

    page.once("dialog", lambda dialog: dialog.accept())
    delete_all.click()
    progress = page.locator("#queue-author-progress")
    expect(progress).to_have_text(f"Deleted {PER_CALL} comments of email:{writer} so far…")
    expect(delete_all).to_be_disabled()
    expect(delete_all).to_have_text("Deleting…")
    assert len(held) == 1
    held.pop().continue_()
    expect(message).to_have_text(f"Deleted {PER_CALL + 1} comments of email:{writer}.")
    assert calls == [{"action": "delete", "author": f"email:{writer}"}] * 2, calls
    expect(progress).to_have_text("")
    expect(delete_all).to_be_enabled()
    expect(delete_all).to_have_text("Delete all by this author")
    # Listed anew: the author view of hidden comments is empty, and says whose.
    expect(page.locator("#queue-body tr")).to_have_count(0)
    expect(page.locator("#queue-empty")).to_have_text(f"No comments are hidden by email:{writer}.")
    for status in ("pending", "hidden"):
        assert by_author(author_api, key, f"email:{writer}", status) == []
    public = requests.get(f"{author_api.base}/api/v1/comments/{published['id']}", timeout=5)
    assert public.json()["status"] == "deleted", public.text  # a tombstone
    left = by_author(author_api, key, f"email:{bystander_email}", "pending")
    assert [c["id"] for c in left] == [bystander["id"]], left
    page.unroute(ACTIONS)
    assert errors == [], errors


def test_console_delete_all_by_an_author_failing_half_way_says_what_it_did(page, author_api: Api):
    content = new_content()
    writer = email()
    key = author_api.key("comments:moderate")
    started = time.monotonic()
    post_many(author_api, content, PER_CALL + 1, writer, "to erase")
    print(f"posted {PER_CALL + 1} comments in {time.monotonic() - started:.1f} s")
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    sign_in(page, author_api, key)
    show_queue_of(page, content)
    open_author_view(page, queue_row(page, "to erase 0000"))
    expect(page.locator("#queue-body tr")).to_have_count(50)
    calls: list = []

    def second_fails(route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        calls.append(route.request.post_data_json)
        if len(calls) == 1:
            route.continue_()
        else:
            route.fulfill(status=502, body=PROXY_PAGE, content_type="text/html")

    page.route(ACTIONS, second_fails)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete all by this author").click()
    expect(message).to_have_text(
        f"Deleted {PER_CALL} comments of email:{writer}, then a call failed: {UNAVAILABLE} "
        "Some of the author's comments are left; “Delete all by this author” again "
        "deletes them."
    )
    expect(message).to_have_class(re.compile("error"))
    assert len(calls) == 2, calls
    # Listed anew: the one comment left.
    expect(page.locator("#queue-body tr")).to_have_count(1)
    expect(queue_row(page, f"to erase {PER_CALL:04}")).to_be_visible()
    page.unroute(ACTIONS)

    # Again: one call, the rest.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete all by this author").click()
    expect(message).to_have_text(f"Deleted 1 comment of email:{writer}.")
    expect(page.locator("#queue-body tr")).to_have_count(0)
    assert by_author(author_api, key, f"email:{writer}", "pending") == []

    # A first call that fails did nothing, and says so.
    post_many(author_api, content, 1, writer, "one more")
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#queue-body tr")).to_have_count(1)
    page.route(ACTIONS, lambda route: route.fulfill(status=502, body=PROXY_PAGE))
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete all by this author").click()
    expect(message).to_have_text(f"Deleted no comment of email:{writer}: {UNAVAILABLE}")
    expect(page.locator("#queue-body tr")).to_have_count(1)
    page.unroute(ACTIONS)
    assert errors == [], errors


def open_author(page, content: str, text: str) -> None:
    """From wherever the queue is: the author view of the pending comment with `text` on
    `content` (the queue of every content may not show it on its first page)."""
    bar = page.locator("#queue-author")
    if bar.is_visible():
        page.get_by_role("button", name="Clear author filter").click()
        expect(bar).to_be_hidden()
    show_queue_of(page, content)
    open_author_view(page, queue_row(page, text))


def test_delete_all_by_an_author_belongs_to_that_author_while_another_is_shown(
    page, author_api: Api
):
    content = new_content()
    first, second = email(), email()
    key = author_api.key("comments:moderate")
    # The second author's comment first: the content's queue then shows it on its first page.
    post_many(author_api, content, 1, second, "the second author's")
    post_many(author_api, content, PER_CALL + 1, first, "the first author's")
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    bar = page.locator("#queue-author")
    delete_all = page.locator("#queue-author-delete")  # its name says "Deleting…" meanwhile
    progress = page.locator("#queue-author-progress")
    sign_in(page, author_api, key)
    expect(page.locator("#queue-body tr").first).to_be_visible()

    # The first author's second call waits, and so does the second author's only one.
    calls: list[dict[str, Any]] = []
    held: dict[str, list] = {first: [], second: []}

    def record(route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        body = route.request.post_data_json
        calls.append(body)
        mine = [c for c in calls if c["author"] == body["author"]]
        if body["author"] == f"email:{second}" or len(mine) == 2:
            held[body["author"].removeprefix("email:")].append(route)
        else:
            route.continue_()

    page.route(ACTIONS, record)
    open_author(page, content, "the first author's 0000")
    expect(bar).to_contain_text(f"email:{first}")
    page.once("dialog", lambda dialog: dialog.accept())
    delete_all.click()
    expect(progress).to_have_text(f"Deleted {PER_CALL} comments of email:{first} so far…")
    expect(delete_all).to_have_text("Deleting…")
    expect(delete_all).to_be_disabled()

    # Another author meanwhile: their bar has its own button, usable, and no word of the
    # first author's deletion.
    open_author(page, content, "the second author's")
    expect(bar).to_contain_text(f"email:{second}")
    expect(delete_all).to_have_text("Delete all by this author")
    expect(delete_all).to_be_enabled()
    expect(progress).to_have_text("")

    # Back to the first author: their deletion is still on its way, and says so.
    open_author(page, content, f"the first author's {PER_CALL:04}")
    expect(bar).to_contain_text(f"email:{first}")
    expect(delete_all).to_have_text("Deleting…")
    expect(delete_all).to_be_disabled()
    expect(progress).to_have_text(f"Deleted {PER_CALL} comments of email:{first} so far…")

    # The second author's deletion starts while the first one's is still on its way...
    open_author(page, content, "the second author's")
    page.once("dialog", lambda dialog: dialog.accept())
    delete_all.click()
    expect(delete_all).to_have_text("Deleting…")
    expect(delete_all).to_be_disabled()
    page.wait_for_timeout(200)
    assert len(held[second]) == 1, calls

    # ...and the first one's end leaves the second author's bar as it is.
    assert len(held[first]) == 1, calls
    held[first].pop().continue_()
    expect(message).to_have_text(f"Deleted {PER_CALL + 1} comments of email:{first}.")
    expect(page.locator("#queue-progress")).to_have_text(
        f"1 pending comment by email:{second} listed."
    )
    expect(bar).to_contain_text(f"email:{second}")
    expect(delete_all).to_have_text("Deleting…")
    expect(delete_all).to_be_disabled()
    expect(progress).to_have_text("")

    held[second].pop().continue_()
    expect(message).to_have_text(f"Deleted 1 comment of email:{second}.")
    expect(delete_all).to_have_text("Delete all by this author")
    expect(delete_all).to_be_enabled()
    expect(page.locator("#queue-empty")).to_have_text(
        f"No comments are waiting for moderation by email:{second}."
    )
    assert calls == [{"action": "delete", "author": f"email:{first}"}] * 2 + [
        {"action": "delete", "author": f"email:{second}"}
    ], calls
    for who in (first, second):
        assert by_author(author_api, key, f"email:{who}", "pending") == []
    page.unroute(ACTIONS)
    assert errors == [], errors


def test_by_content_rows_open_their_authors_comments(page, author_api: Api, axe_source):
    content, elsewhere = new_content(), new_content()
    writer = email()
    subject = f"reader-{uuid.uuid4().hex[:8]}"
    key = author_api.key("comments:moderate")
    public = author_api.post(content, "public by the writer", email=writer)
    anonymous = author_api.post(content, "public by nobody in particular")
    signed_in = author_api.post(
        content, "public by a signed-in reader", token=author_api.token(subject)
    )
    assert signed_in["status"] == "pending", signed_in
    author_api.moderate(key, "approve", [public["id"], anonymous["id"], signed_in["id"]])
    also_public = author_api.post(elsewhere, "the writer public elsewhere", email=writer)
    author_api.moderate(key, "approve", [also_public["id"]])
    author_api.post(elsewhere, "the writer waiting elsewhere", email=writer)
    # The public list still names no author's address or subject.
    listed = requests.get(f"{author_api.base}/api/v1/contents/{content}/comments", timeout=5)
    assert writer not in listed.text, listed.text
    for item in listed.json()["items"]:
        assert not {"author_email", "author_subject"} & item.keys(), item
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    sign_in(page, author_api, key)
    expect(page.locator("#queue-body tr").first).to_be_visible()
    page.get_by_role("tab", name="By content").click()
    page.get_by_label("Content id").fill(content)
    page.get_by_role("button", name="Show its comments").click()
    rows = page.locator("#content-body tr")
    expect(rows).to_have_count(3)
    row = page.locator("#content-body tr", has_text="public by the writer")
    expect(author_control(row)).to_have_accessible_name(f"This author's comments (email:{writer})")
    expect(
        author_control(page.locator("#content-body tr", has_text="signed-in reader"))
    ).to_have_accessible_name(f"This author's comments (sub:{subject})")
    expect(
        author_control(page.locator("#content-body tr", has_text="nobody in particular"))
    ).to_have_count(0)
    violations, _ = run_axe(page, axe_source)
    assert violations == [], dumps(violations)

    # The author view is the queue's: its tab, every content, "Delete all by this author",
    # opened on the author's published comments (the kind of comment it was opened from),
    # not their pending ones, which may be none: that would look like "nothing by them".
    asked: list[str] = []
    page.on("request", lambda r: "/moderation/comments?" in r.url and asked.append(r.url))
    author_control(row).click()
    expect(page.get_by_role("tab", name="Queue")).to_have_attribute("aria-selected", "true")
    bar = page.locator("#queue-author")
    status = page.get_by_label("Status")
    queue_rows = page.locator("#queue-body tr")
    expect(bar).to_contain_text(f"email:{writer}, on every content")
    expect(status).to_have_value("published")
    expect(queue_rows).to_have_count(2)
    expect(queue_row(page, "public by the writer")).to_be_visible()
    expect(queue_row(page, "the writer public elsewhere")).to_be_visible()
    expect(page.locator("#queue-caption")).to_have_text(
        f"Published comments by email:{writer}, oldest first"
    )
    expect(page.locator("#queue-progress")).to_have_text(
        f"2 published comments by email:{writer} listed."
    )
    expect(page.locator("#queue-author-text")).to_be_focused()
    expect(page.locator("#queue-author-delete")).to_be_enabled()
    assert "status=published" in asked[-1], asked
    assert "author=email%3A" in asked[-1], asked
    # A published comment can be hidden or deleted, not approved (it is).
    published_row = queue_row(page, "the writer public elsewhere")
    expect(published_row.get_by_role("button", name="Approve")).to_have_count(0)
    expect(published_row.get_by_role("button", name="Publish")).to_have_count(0)
    expect(page.get_by_role("button", name="Approve selected")).to_be_hidden()
    expect(page.get_by_role("button", name="Hide selected")).to_be_visible()
    violations, _ = run_axe(page, axe_source)
    assert violations == [], dumps(violations)
    published_row.get_by_role("button", name=f"Hide comment {also_public['id']}").click()
    expect(page.locator("#message")).to_have_text("Hid 1 comment.")
    expect(queue_rows).to_have_count(1)
    assert [c["id"] for c in by_author(author_api, key, f"email:{writer}", "hidden")] == [
        also_public["id"]
    ]

    # The Status select offers the author's other statuses too, and Published again.
    expect(status.locator("option")).to_have_count(3)
    status.select_option("pending")
    expect(queue_rows).to_have_count(1)
    expect(queue_row(page, "the writer waiting elsewhere")).to_be_visible()
    expect(
        queue_row(page, "the writer waiting elsewhere").get_by_role(
            "button", name=re.compile("^Approve")
        )
    ).to_be_visible()
    status.select_option("published")
    expect(queue_row(page, "public by the writer")).to_be_visible()
    expect(queue_rows).to_have_count(1)

    # Leaving the author view on Published lists every author's pending comments: the
    # server refuses published comments of every content (400), so none is asked for, and
    # Published is no longer offered.
    page.get_by_role("button", name="Clear author filter").click()
    expect(bar).to_be_hidden()
    expect(status).to_have_value("pending")
    expect(status.locator("option")).to_have_count(2)
    expect(page.locator("#queue-caption")).to_have_text(
        "Comments waiting for a moderator, oldest first"
    )
    assert "status=pending" in asked[-1], asked
    assert "author=" not in asked[-1], asked
    assert not any("status=published" in url and "author=" not in url for url in asked), asked
    expect(page.locator("#message")).not_to_have_class(re.compile("error"))

    # Opened from a pending row, the author view keeps the status shown (pending).
    # (Limited to its content first: other tests' pending comments may fill the first page.)
    open_author(page, elsewhere, "the writer waiting elsewhere")
    expect(bar).to_contain_text(f"email:{writer}")
    expect(status).to_have_value("pending")
    expect(queue_rows).to_have_count(1)
    assert errors == [], errors


def test_an_author_key_with_a_direction_override_leaves_the_words_after_it_alone(
    page, author_api: Api
):
    """A subject from the identity provider may hold a right-to-left override. Where the
    console names the key in a sentence (the caption, the author bar, the delete-all
    question, the ban messages), the words after it read as written."""
    content = new_content()
    subject = f"ev\u202eil-{uuid.uuid4().hex[:6]}"
    apart = f"\u2068sub:{subject}\u2069"
    key = author_api.key("comments:moderate")
    posted = author_api.post(content, "from an odd subject", token=author_api.token(subject))
    assert posted["status"] == "pending", posted
    page.set_viewport_size({"width": 1100, "height": 800})
    sign_in(page, author_api, key)
    # This server's other tests leave pages of pending comments: the queue of this content.
    show_queue_of(page, content)
    author_control(queue_row(page, "from an odd subject")).click()
    caption = page.locator("#queue-caption")
    expect(caption).to_have_text(f"Comments waiting for a moderator by {apart}, oldest first")
    tail = caption.evaluate(DRAWN_LEFTS)[-len(", oldest first") :]
    assert tail == sorted(tail), f"', oldest first' is drawn reversed: {tail}"
    scope = page.locator("#queue-author-scope").evaluate(DRAWN_LEFTS)
    assert scope == sorted(scope), f"the author bar's scope is drawn reversed: {scope}"

    dialogs: list[str] = []

    def decline(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", decline)
    with page.expect_event("dialog"):
        page.get_by_role("button", name="Delete all by this author").click()
    expect(page.get_by_role("button", name="Delete all by this author")).to_be_enabled()
    assert len(dialogs) == 1, dialogs
    assert f"Delete every comment of {apart}, pending" in dialogs[0], dialogs

    page.get_by_role("tab", name="Bans").click()
    page.get_by_label("Email or subject").fill(f"sub:{subject}")
    page.get_by_role("button", name="Ban author").click()
    expect(page.locator("#message")).to_have_text(f"Banned {apart}.")
    page.get_by_role("button", name=f"Lift the ban on sub:{subject}").click()
    expect(page.locator("#message")).to_have_text(f"Lifted the ban on {apart}.")
    assert page.page_errors == []
