"""The reader widget in a real browser, embedded by a site on another origin."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from playwright.sync_api import expect

from .conftest import BANNED, DRAWN_LEFTS, Api, HostSite, contrast, dumps, run_axe, screenshot

pytestmark = pytest.mark.browser


NETWORK = "The comment service could not be reached. Check your connection and try again."


def new_content() -> str:
    return f"story-{uuid.uuid4().hex[:8]}"


def thread(page):
    return page.locator("comments-thread")


def comment_texts(page) -> list[str]:
    return page.locator("comments-thread article p.text").all_inner_texts()


def active_element_id(page) -> str | None:
    # Focus inside the Shadow DOM: document.activeElement is the host, its shadow root knows.
    return page.evaluate(
        "() => { const h = document.querySelector('comments-thread');"
        " const a = h.shadowRoot.activeElement; return a ? (a.id || a.tagName) : null; }"
    )


def open_with_token_provider(page, site: HostSite, api: Api, content: str, name: str, script: str):
    """A thread whose reader token comes from the site's provider function ``name``
    (defined by ``script``), opened and shown empty; the widget's locator."""
    site.add(f"/{name}.js", script, "text/javascript", csp=None)
    url = site.thread_page(
        f"/{content}.html",
        api.base,
        content,
        attrs=f'token-provider="{name}"',
        extra=f'<script src="/{name}.js"></script>',
    )
    page.goto(url)
    widget = thread(page)
    expect(widget.get_by_text("No comments yet")).to_be_visible()
    return widget


def no_csp_trouble(page) -> None:
    assert page.evaluate("window.cspViolations") == []
    assert not [e for e in page.console_errors if "Content Security Policy" in e], (
        page.console_errors
    )


def test_reader_reads_pages_posts_and_replies_from_another_origin(
    page, site: HostSite, open_api: Api
):
    content = new_content()
    seeded = [
        open_api.post(content, f"seeded comment {i}", author_name=f"Seed {i}") for i in range(7)
    ]
    removed = open_api.post(content, "this one is removed later", author_name="Gone")
    open_api.moderate(open_api.key("comments:moderate"), "delete", [removed["id"]])
    url = site.thread_page(f"/{content}.html", open_api.base, content, attrs='page-size="5"')

    page.goto(url)
    widget = thread(page)
    expect(widget.get_by_role("heading", name="Comments")).to_be_visible()
    expect(widget.locator("article")).to_have_count(5)
    expect(widget.get_by_text("7 comments")).to_be_visible()
    assert comment_texts(page) == [f"seeded comment {i}" for i in range(5)]

    widget.get_by_role("button", name="Load more comments").click()
    expect(widget.locator("article")).to_have_count(8)
    expect(widget.get_by_text("Comment removed")).to_be_visible()
    expect(widget.get_by_role("button", name="Load more comments")).to_be_hidden()
    expect(widget.get_by_role("status")).to_have_text("3 more comments loaded.")

    # Post: the new comment shows up, gets focus and is announced.
    widget.get_by_label("Your comment").first.fill("Great piece,\nthanks!")
    widget.get_by_label("Name (optional)").first.fill("Ana")
    widget.get_by_role("button", name="Post comment").click()
    new = widget.locator("article", has_text="Great piece")
    expect(new).to_be_visible()
    expect(new.locator(".author")).to_have_text("Ana")
    expect(widget.get_by_role("status")).to_have_text("Your comment was posted.")
    expect(widget.get_by_text("8 comments")).to_be_visible()
    assert active_element_id(page) == new.get_attribute("id")
    assert widget.get_by_label("Your comment").first.input_value() == ""

    # Reply: keyboard only, nested under its parent.
    widget.get_by_role("button", name="Reply to Seed 1").focus()
    page.keyboard.press("Enter")
    reply_box = widget.get_by_role("form", name="Reply to Seed 1").get_by_label("Your comment")
    expect(reply_box).to_be_focused()
    page.keyboard.type("I disagree, politely.")
    widget.get_by_role("button", name="Post reply").click()
    parent = widget.locator(f"li:has(> #comment-{seeded[1]['id']})")
    expect(parent.locator("> .replies article")).to_have_text(re.compile("I disagree, politely."))
    expect(widget.get_by_role("form", name="Reply to Seed 1")).to_have_count(0)

    stored = requests.get(
        f"{open_api.base}/api/v1/contents/{content}/comments?limit=100", timeout=5
    ).json()["items"]
    reply = next(c for c in stored if c["body"] == "I disagree, politely.")
    assert reply["parent_id"] == seeded[1]["id"]

    # Escape closes a reply form and gives focus back to its button.
    widget.get_by_role("button", name="Reply to Seed 2").click()
    page.keyboard.press("Escape")
    expect(widget.get_by_role("button", name="Reply to Seed 2")).to_be_focused()
    no_csp_trouble(page)
    screenshot(widget, "widget-light")

    # Newest first, from the Sort menu: the thread is read again; the menu keeps focus.
    widget.get_by_label("Sort").select_option("newest")
    expect(widget.locator("ol.thread > li > article p.text").first).to_have_text(
        "Great piece,\nthanks!"
    )
    expect(widget.get_by_label("Sort")).to_be_focused()
    # The newest 5: the reply (its parent is further down, it waits), "Great piece", the
    # tombstone, seeds 6 and 5.
    expect(widget.locator("article")).to_have_count(4)


def test_a_draft_survives_the_sort_menu_and_a_closed_reply_form(
    page, site: HostSite, open_api: Api
):
    """A rebuild of the thread (the Sort menu, new texts) used to give the reader an empty
    form: the comment being written, its name and email were gone. A reply form closed
    with text in it (Cancel, Escape, another Reply) lost its text too."""
    content = new_content()
    open_api.post(content, "the first comment", author_name="Seed")
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content))
    widget = thread(page)
    expect(widget.locator("article")).to_have_count(1)
    main = widget.get_by_role("form", name="Add a comment")
    box = main.get_by_label("Your comment")
    name = main.get_by_label("Name (optional)")
    email = main.get_by_label("Email (optional, never shown)")
    box.fill("A long comment I spent ten minutes writing")
    name.fill("Ana")
    email.fill("ana@example.com")

    widget.get_by_label("Sort").select_option("newest")
    expect(widget.get_by_label("Sort")).to_be_focused()
    expect(widget.locator("article")).to_have_count(1)
    expect(box).to_have_value("A long comment I spent ten minutes writing")
    expect(name).to_have_value("Ana")
    expect(email).to_have_value("ana@example.com")
    page.evaluate("CommentsWidget.setMessages('en', {empty: 'Be the first.'})")
    expect(widget.locator("article")).to_have_count(1)
    expect(box).to_have_value("A long comment I spent ten minutes writing")

    # A reply draft: kept when its form is closed, brought back by its Reply button.
    reply_button = widget.get_by_role("button", name="Reply to Seed")
    reply = widget.get_by_role("form", name="Reply to Seed").get_by_label("Your comment")
    reply_button.click()
    reply.fill("my reply draft")
    widget.get_by_role("button", name="Cancel").click()
    expect(reply).to_have_count(0)
    expect(reply_button).to_be_focused()
    reply_button.click()
    expect(reply).to_have_value("my reply draft")
    expect(reply).to_be_focused()
    page.keyboard.press("Escape")
    widget.get_by_label("Sort").select_option("oldest")  # a rebuild with the reply closed
    expect(widget.locator("article")).to_have_count(1)
    reply_button.click()
    expect(reply).to_have_value("my reply draft")
    # Posted, the draft is gone: the next reply starts empty.
    widget.get_by_role("button", name="Post reply").click()
    expect(widget.locator("article", has_text="my reply draft")).to_be_focused()
    reply_button.click()
    expect(reply).to_have_value("")
    widget.get_by_role("button", name="Cancel").click()

    # The main draft, sent, and the thread read again in another order while it is on its
    # way: the form shown now takes the answer.
    held: list = []
    posts = f"{open_api.base}/api/v1/contents/{content}/comments"
    page.route(
        posts,
        lambda route: held.append(route) if route.request.method == "POST" else route.continue_(),
    )
    widget.get_by_role("button", name="Post comment").click()
    expect(widget.get_by_role("button", name="Posting…")).to_be_disabled()
    widget.get_by_label("Sort").select_option("newest")
    expect(widget.locator("article")).to_have_count(2)
    expect(widget.get_by_role("button", name="Posting…")).to_be_disabled()
    expect(box).to_have_value("A long comment I spent ten minutes writing")
    assert len(held) == 1, held
    held[0].continue_()
    mine = widget.locator("article", has_text="A long comment I spent ten minutes writing")
    expect(mine).to_be_focused()
    expect(mine.locator(".author")).to_have_text("Ana")
    expect(box).to_have_value("")
    expect(widget.get_by_role("button", name="Post comment")).to_be_enabled()
    expect(widget.get_by_text("3 comments")).to_be_visible()
    page.unroute(posts)
    stored = requests.get(posts, timeout=5).json()["items"]
    assert sorted(c["body"] for c in stored) == [
        "A long comment I spent ten minutes writing",
        "my reply draft",
        "the first comment",
    ]
    # Another content in the same element (a site that reuses it): a draft, and its key,
    # are not carried to a thread they were not written for.
    box.fill("about the first story")
    thread(page).evaluate("(el, id) => el.setAttribute('content-id', id)", new_content())
    expect(widget.get_by_text("Be the first.")).to_be_visible()  # setMessages' text
    expect(box).to_have_value("")
    assert page.page_errors == []


def test_a_reply_closed_while_on_its_way_and_refused_opens_again_with_the_refusal(
    page, site: HostSite, open_api: Api
):
    """A reply form closed (Cancel, or the thread read again in another order) while its
    send was on its way, then refused, showed the refusal on a form no longer on the page:
    the reader took the reply for posted."""
    content = new_content()
    open_api.post(content, "the first comment", author_name="Seed")
    other = open_api.post(content, "the second comment", author_name="Other")
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content))
    widget = thread(page)
    expect(widget.locator("article")).to_have_count(2)
    reply_button = widget.get_by_role("button", name="Reply to Seed")
    reply_form = widget.get_by_role("form", name="Reply to Seed")
    posts = f"{open_api.base}/api/v1/contents/{content}/comments"
    held: list = []
    page.route(
        posts,
        lambda route: held.append(route) if route.request.method == "POST" else route.continue_(),
    )
    refusal = odd_answer(site, 502, PROXY_PAGE, "text/html")

    for close in ("Cancel", "Sort"):
        reply_button.click()
        reply_form.get_by_label("Your comment").fill(f"a reply closed by {close}")
        reply_form.get_by_role("button", name="Post reply").click()
        expect(reply_form.get_by_role("button", name="Posting…")).to_be_disabled()
        if close == "Cancel":
            reply_form.get_by_role("button", name="Cancel").click()
        else:
            order = widget.get_by_label("Sort")
            order.select_option("newest" if order.input_value() == "oldest" else "oldest")
        expect(reply_form).to_have_count(0)
        expect(reply_button).to_have_attribute("aria-expanded", "false")
        assert len(held) == 1, held
        refusal(held.pop())
        expect(reply_form.get_by_role("alert")).to_have_text(
            "Something went wrong (error 502). Please try again later."
        )
        expect(reply_form.get_by_label("Your comment")).to_have_value(f"a reply closed by {close}")
        expect(reply_form.get_by_label("Your comment")).to_be_focused()
        expect(reply_form.get_by_role("button", name="Post reply")).to_be_enabled()
        expect(reply_button).to_have_attribute("aria-expanded", "true")
        widget.get_by_role("button", name="Cancel").click()

    # Its comment hidden by a moderator and gone from the thread read again: the refusal
    # is said above the thread.
    widget.get_by_role("button", name="Reply to Other").click()
    widget.get_by_role("form", name="Reply to Other").get_by_label("Your comment").fill("late")
    widget.get_by_role("button", name="Post reply").click()
    open_api.moderate(open_api.key("comments:moderate"), "hide", [other["id"]])
    widget.get_by_label("Sort").select_option("oldest")
    expect(widget.locator("article")).to_have_count(1)
    assert len(held) == 1, held
    refusal(held.pop())
    notice = widget.locator("p.notice[tabindex]")
    expect(notice).to_have_text("Something went wrong (error 502). Please try again later.")
    expect(notice).to_be_focused()

    page.unroute(posts)
    # Sent again, it posts.
    reply_button.click()
    reply_form.get_by_role("button", name="Post reply").click()
    expect(widget.locator("article", has_text="a reply closed by Sort")).to_be_focused()
    stored = requests.get(posts, timeout=5).json()["items"]
    assert sorted(c["body"] for c in stored) == ["a reply closed by Sort", "the first comment"]
    assert page.page_errors == []


def test_a_send_caught_by_a_rebuild_while_the_token_is_asked_for_keeps_its_key(
    page, site: HostSite, open_api: Api
):
    """The thread is read again (Sort) while the site's token provider is still answering:
    the key is made after the form was copied. Its answer lost, the copy sends again with
    the same key, and the stored comment comes back, not a second one or a refusal."""
    content = new_content()
    provider = (
        "window.tokenGate = new Promise((open) => { window.openTokenGate = open; });\n"
        "window.gatedToken = () => window.tokenGate.then(() => null);\n"
    )
    widget = open_with_token_provider(page, site, open_api, content, "gatedToken", provider)
    keys: list[str | None] = []
    page.on(
        "request",
        lambda r: r.method == "POST" and keys.append(r.headers.get("idempotency-key")),
    )
    posts = f"{open_api.base}/api/v1/contents/{content}/comments"

    def lose_the_answer(route) -> None:
        route.fetch()
        route.abort("connectionreset")

    def is_post_url(url: str) -> bool:
        return url == posts

    page.route(is_post_url, lose_the_answer)
    widget.get_by_label("Your comment").fill("sent through a rebuild")
    widget.get_by_role("button", name="Post comment").click()
    widget.get_by_label("Sort").select_option("newest")
    expect(widget.get_by_role("button", name="Posting…")).to_be_disabled()
    page.evaluate("window.openTokenGate()")
    expect(widget.get_by_role("alert")).to_have_text(NETWORK)
    page.unroute(is_post_url)
    widget.get_by_role("button", name="Post comment").click()
    expect(widget.locator("article p.text")).to_have_text(["sent through a rebuild"])
    assert len(keys) == 2, keys
    assert keys[0] == keys[1], keys
    stored = requests.get(posts, timeout=5).json()["items"]
    assert [c["body"] for c in stored] == ["sent through a rebuild"]


def test_newest_first_nests_replies_that_arrive_before_their_parent(
    page, site: HostSite, open_api: Api
):
    content = new_content()
    parent = open_api.post(content, "the parent", author_name="P")
    for i in range(3):
        open_api.post(content, f"filler {i}")
    open_api.post(content, "late reply", parent_id=parent["id"])
    url = site.thread_page(
        f"/{content}.html", open_api.base, content, attrs='order="newest" page-size="2"'
    )
    page.goto(url)
    widget = thread(page)
    # Page 1 holds the reply and filler 2: the reply waits, unseen, for its parent.
    expect(widget.locator("article")).to_have_count(1)
    expect(widget.get_by_text("late reply")).to_be_hidden()
    widget.get_by_role("button", name="Load more comments").click()
    widget.get_by_role("button", name="Load more comments").click()
    expect(widget.get_by_text("late reply")).to_be_visible()
    nested = widget.locator(f"li:has(> #comment-{parent['id']}) > .replies")
    expect(nested).to_contain_text("late reply")
    assert comment_texts(page)[0] == "filler 2"


def test_markup_in_comments_is_shown_as_text_and_never_runs(page, site: HostSite, open_api: Api):
    content = new_content()
    payload = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    open_api.post(content, payload, author_name='<b onmouseover="window.pwned=3">x</b>')
    # No CSP on this host page: only the widget's own care keeps the payload inert.
    url = site.thread_page(f"/{content}.html", open_api.base, content, csp=False)
    page.goto(url)
    widget = thread(page)
    expect(widget.locator("article p.text")).to_have_text(payload)
    widget.get_by_label("Your comment").fill(payload + " again")
    widget.get_by_role("button", name="Post comment").click()
    expect(widget.locator("article p.text")).to_have_count(2)
    assert comment_texts(page) == [payload, payload + " again"]
    expect(widget.locator(".author").first).to_have_text('<b onmouseover="window.pwned=3">x</b>')
    assert widget.locator("img, script, b").count() == 0
    widget.locator(".author").first.hover()
    page.wait_for_timeout(200)
    assert page.evaluate("window.pwned") is None


def test_an_element_named_currentscript_on_the_page_does_not_choose_the_api(
    page, site: HostSite, open_api: Api
):
    """DOM clobbering: markup in the site's page (an article's image with a name) shadows
    document.currentScript; its src must not become the API the reader's token goes to."""
    content = new_content()
    open_api.post(content, "the real thread")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        elsewhere = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        markup = (
            f'<p>Story text <img name="currentScript" src="{elsewhere}/pixel.gif" '
            f'data-api="{elsewhere}" alt=""></p>'
            f'<a href="#c" data-comments-count="{content}">Comments</a>'
            f'<script src="{open_api.base}/widget/count.js" defer></script>'
        )
        url = site.thread_page(
            f"/{content}.html",
            open_api.base,
            content,
            attrs='token-provider="getReaderToken"',
            csp=False,  # a site without CSP: nothing else stops a request to elsewhere
            extra=markup,
        )
        sent_elsewhere: list[str] = []
        page.on(
            "request",
            lambda r: r.url.startswith(elsewhere + "/api/") and sent_elsewhere.append(r.url),
        )
        page.goto(url)
        page.evaluate(
            "(t) => sessionStorage.setItem('token', t)",
            open_api.token("clobbered", name="Careful Reader"),
        )
        widget = thread(page)
        expect(widget.locator("article p.text")).to_have_text("the real thread")
        expect(page.locator("[data-comments-count]")).to_have_text("1 comment")
        widget.get_by_label("Your comment").fill("posted to the real API")
        widget.get_by_role("button", name="Post comment").click()
        expect(widget.get_by_role("status")).to_have_text("Your comment was posted.")
        assert sent_elsewhere == []
    bodies = requests.get(f"{open_api.base}/api/v1/contents/{content}/comments", timeout=5)
    assert [c["body"] for c in bodies.json()["items"]] == [
        "the real thread",
        "posted to the real API",
    ]


def test_errors_are_explained_validation_duplicate_and_rate_limit(
    page, site: HostSite, open_api: Api
):
    content = new_content()
    url = site.thread_page(
        f"/{content}.html", open_api.base, content, attrs='token-provider="getReaderToken"'
    )
    page.goto(url)
    widget = thread(page)
    expect(widget.get_by_text("No comments yet")).to_be_visible()
    box = widget.get_by_label("Your comment")
    post = widget.get_by_role("button", name="Post comment")

    # Empty: caught before any request, the field says why.
    post.click()
    expect(box).to_have_attribute("aria-invalid", "true")
    expect(widget.locator(".field-error").first).to_have_text("Please write your comment first.")
    # The alert says what is wrong, as the field does: "Please correct the form:" alone
    # named no error, and the field is not read again where the focus already is.
    alert = widget.get_by_role("alert")
    expect(alert).to_have_text("Please correct the form:Please write your comment first.")
    expect(box).to_be_focused()

    # Enter in a field the browser finds wrong: the focus stays where it is, so a screen
    # reader hears of the error from the alert region alone, which must say which.
    box.fill("a fine comment")
    email = widget.get_by_label("Email (optional, never shown)")
    email.fill("no-at-sign")
    email.press("Enter")
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(email).to_be_focused()
    why = email.evaluate("(el) => el.validationMessage")
    assert "@" in why, why
    expect(alert).to_have_text(f"Please correct the form:{why}")
    expect(box).not_to_have_attribute("aria-invalid", "true")
    # Only blanks: the same, for the comment.
    box.fill("   ")
    post.click()
    expect(alert).to_have_text("Please correct the form:Please write your comment first.")
    expect(box).to_be_focused()

    # Server-side validation (problem+json errors) lands on the field it names.
    box.fill(f"you {BANNED} fool")
    widget.get_by_label("Email (optional, never shown)").fill("dup@example.com")
    post.click()
    refusal = "contains language this site does not accept"
    expect(widget.locator(".field-error", has_text=refusal)).to_be_visible()
    expect(alert).to_contain_text(refusal)
    expect(box).to_have_attribute("aria-invalid", "true")
    expect(box).to_be_focused()
    # One the browser lets through and the API refuses, Enter pressed in that field: the
    # focus stays there, so the alert must say why ("Please correct the form:" alone did).
    box.fill("a fine comment")
    email.fill("reader@localhost")
    email.press("Enter")
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(email).to_be_focused()
    expect(alert).to_have_text("Please correct the form:must be a valid email address")
    # Two fields refused, the API naming the email first: the focus goes to the first one
    # in the form (the name), and the alert must give that field's reason, not the email's.
    name = widget.get_by_label("Name (optional)")
    name.fill("a\u0007b")
    post.click()
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(name).to_be_focused()
    expect(alert).to_have_text("Please correct the form:must not contain control characters")
    name.fill("")
    email.fill("dup@example.com")

    # 409: the same author, the same text, twice.
    box.fill("same words twice")
    post.click()
    expect(widget.locator("article p.text")).to_have_text("same words twice")
    box.fill("same words twice")
    post.click()
    expect(widget.get_by_role("alert")).to_have_text("You already posted this comment here.")

    # A signed-in reader (token-provider hand-over): name from the token, no name fields.
    token = open_api.token("hasty", name="Hasty Reader")
    page.evaluate("(t) => sessionStorage.setItem('token', t)", token)
    page.reload()
    widget = thread(page)
    expect(widget.locator("article")).to_have_count(1)
    expect(widget.get_by_label("Name (optional)")).to_be_hidden()
    for text in ("first signed-in comment", "second signed-in comment"):
        widget.get_by_label("Your comment").fill(text)
        widget.get_by_role("button", name="Post comment").click()
        expect(widget.locator("article", has_text=text).locator(".author")).to_have_text(
            "Hasty Reader"
        )
    # RATELIMIT_AUTHENTICATED_WRITE=2/minute: the third is refused with the wait.
    widget.get_by_label("Your comment").fill("third, too fast")
    widget.get_by_role("button", name="Post comment").click()
    expect(widget.get_by_role("alert")).to_have_text(
        re.compile(r"You are posting too often\. Please wait \d+ seconds and try again\.")
    )
    screenshot(widget, "widget-rate-limited")

    # A token the API refuses: the reader is asked to sign in, the site gets an event.
    page.evaluate(
        "() => { sessionStorage.removeItem('token'); window.signIn = 0;"
        " document.addEventListener('comments:sign-in-required', () => window.signIn++);"
        " CommentsWidget.setToken('not-a-valid-token'); }"
    )
    widget.get_by_role("button", name="Post comment").click()
    expect(widget.get_by_role("alert")).to_have_text("Please sign in to comment.")
    assert page.evaluate("window.signIn") == 1
    no_csp_trouble(page)


def test_cross_origin_scripts_may_send_and_read_every_header_the_api_uses(
    page, site: HostSite, open_api: Api
):
    # Plain fetch() from the site's origin, never intercepted: Chromium's own CORS checks,
    # preflights included. Each header here is outside the CORS safelists.
    content = new_content()
    page.goto(site.add(f"/{content}-fetch.html", "<!doctype html><title>fetch</title>", csp=None))
    seen = page.evaluate(
        """async ([api, content]) => {
          const url = `${api}/api/v1/contents/${content}/comments`;
          const post = () => fetch(url, { method: "POST", body: JSON.stringify({ body: "direct" }),
            headers: { "Content-Type": "application/json", "Idempotency-Key": "fetch-key-1",
                       "X-Request-ID": "site-req-1" } });
          const first = await post();
          const again = await post();
          const list = await fetch(url);
          const etag = list.headers.get("ETag");
          const revalidated = await fetch(url, { headers: { "If-None-Match": etag } });
          return { first: first.status, location: first.headers.get("Location"),
                   requestId: first.headers.get("X-Request-ID"), again: again.status,
                   replayed: again.headers.get("Idempotent-Replayed"), etag,
                   revalidated: revalidated.status };
        }""",
        [open_api.base, content],
    )
    assert seen["first"] == 201, seen
    assert seen["location"], seen
    assert seen["requestId"] == "site-req-1", seen
    assert (seen["again"], seen["replayed"]) == (201, "true"), seen
    assert seen["etag"], seen
    assert seen["revalidated"] == 304, seen
    stored = requests.get(f"{open_api.base}/api/v1/contents/{content}/comments", timeout=5)
    assert [c["body"] for c in stored.json()["items"]] == ["direct"]


def test_sending_again_after_a_lost_answer_shows_the_stored_comment_once(
    page, site: HostSite, open_api: Api
):
    content = new_content()
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content))
    widget = thread(page)
    expect(widget.get_by_text("No comments yet")).to_be_visible()
    keys: list[str | None] = []
    replayed: list[str | None] = []
    page.on(
        "request",
        lambda r: r.method == "POST" and keys.append(r.headers.get("idempotency-key")),
    )
    page.on(
        "response",
        lambda r: (
            r.request.method == "POST" and replayed.append(r.headers.get("idempotent-replayed"))
        ),
    )

    def lose_the_answer(route) -> None:
        route.fetch()  # the API stores the comment ...
        route.abort("connectionreset")  # ... and its answer never reaches the reader

    posts = f"{open_api.base}/api/v1/contents/{content}/comments"

    def is_post_url(url: str) -> bool:
        return url == posts

    page.route(is_post_url, lose_the_answer)
    widget.get_by_label("Your comment").fill("sent over a flaky connection")
    widget.get_by_label("Email (optional, never shown)").fill("flaky@example.com")
    widget.get_by_role("button", name="Post comment").click()
    expect(widget.get_by_role("alert")).to_have_text(
        "The comment service could not be reached. Check your connection and try again."
    )
    page.unroute(is_post_url)
    # The reader sends again: without the first key this was a 409 "already posted".
    widget.get_by_role("button", name="Post comment").click()
    expect(widget.locator("article p.text")).to_have_text(["sent over a flaky connection"])
    expect(widget.get_by_role("status")).to_have_text("Your comment was posted.")
    assert len(keys) == 2, keys
    assert keys[0], keys
    assert keys[0] == keys[1], keys
    assert replayed[-1] == "true", replayed
    stored = requests.get(posts, timeout=5).json()["items"]
    assert [c["body"] for c in stored] == ["sent over a flaky connection"]

    # The next comment is a new request with a new key.
    widget.get_by_label("Your comment").fill("a second thought")
    widget.get_by_role("button", name="Post comment").click()
    expect(widget.locator("article", has_text="a second thought")).to_be_visible()
    assert len(keys) == 3, keys
    assert keys[2] not in (None, keys[0]), keys


def test_sending_again_a_comment_shown_meanwhile_counts_it_once_and_focuses_it(
    page, site: HostSite, open_api: Api
):
    """The answer to a post is lost; a refresh (a poll, another thread of the content, the
    reader's other tab) shows the stored comment; the reader sends again and gets the
    stored comment back. The thread said "2 comments" for one, and the focus was lost."""
    content = new_content()
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content))
    widget = thread(page)
    expect(widget.get_by_text("No comments yet")).to_be_visible()
    posts = f"{open_api.base}/api/v1/contents/{content}/comments"

    def lose_the_answer(route) -> None:
        route.fetch()  # the API stores the comment ...
        route.abort("connectionreset")  # ... and its answer never reaches the reader

    def is_post_url(url: str) -> bool:
        return url == posts

    page.route(is_post_url, lose_the_answer)
    widget.get_by_label("Your comment").fill("stored, its answer lost")
    widget.get_by_role("button", name="Post comment").click()
    expect(widget.get_by_role("alert")).to_have_text(NETWORK)
    page.unroute(is_post_url)
    thread(page).evaluate("(el) => el.refresh()")
    expect(widget.locator("article p.text")).to_have_text(["stored, its answer lost"])
    count = widget.locator(".head .meta")
    expect(count).to_have_text("1 comment")

    widget.get_by_role("button", name="Post comment").click()
    expect(widget.get_by_role("status")).to_have_text("Your comment was posted.")
    expect(widget.get_by_label("Your comment")).to_have_value("")
    expect(count).to_have_text("1 comment")
    expect(widget.locator("article")).to_have_count(1)
    (stored,) = requests.get(posts, timeout=5).json()["items"]
    expect(widget.locator(f"#comment-{stored['id']}")).to_be_focused()
    assert page.page_errors == []


def test_require_sign_in_shows_the_form_once_the_site_hands_over_a_token(
    page, site: HostSite, open_api: Api
):
    content = new_content()
    url = site.thread_page(
        f"/{content}.html",
        open_api.base,
        content,
        attrs='require-sign-in sign-in-url="/login"',
    )
    page.goto(url)
    widget = thread(page)
    expect(widget.get_by_text("No comments yet")).to_be_visible()
    expect(widget.get_by_role("link", name="Sign in")).to_have_attribute("href", "/login")
    expect(widget.get_by_label("Your comment")).to_be_hidden()
    page.evaluate("(t) => CommentsWidget.setToken(t)", open_api.token("signed", name="Signed In"))
    expect(widget.get_by_label("Your comment")).to_be_visible()
    expect(widget.get_by_role("link", name="Sign in")).to_be_hidden()
    expect(widget.get_by_label("Name (optional)")).to_be_hidden()
    widget.get_by_label("Your comment").fill("posted with the site's token")
    widget.get_by_role("button", name="Post comment").click()
    expect(widget.locator("article .author")).to_have_text("Signed In")
    page.evaluate("CommentsWidget.setToken(null)")
    expect(widget.get_by_label("Your comment")).to_be_hidden()
    no_csp_trouble(page)


def test_an_edited_comment_says_so_and_an_approved_one_does_not(page, site: HostSite, pre_api: Api):
    """The "(edited)" marker follows the author's edit (`edited_at`), never a moderator's
    approval, which moves `updated_at` only. Pre-moderation: both comments are approved."""
    content = new_content()
    author = {"Authorization": f"Bearer {pre_api.token('editor', name='Editor')}"}
    posted = [
        requests.post(
            f"{pre_api.base}/api/v1/contents/{content}/comments",
            json={"body": body},
            headers=author,
            timeout=5,
        ).json()
        for body in ("first words", "left alone")
    ]
    edited = requests.patch(
        f"{pre_api.base}/api/v1/comments/{posted[0]['id']}",
        json={"body": "better words"},
        headers=author,
        timeout=5,
    )
    assert edited.status_code == 200, edited.text
    pre_api.moderate(pre_api.key("comments:moderate"), "approve", [c["id"] for c in posted])
    page.goto(site.thread_page(f"/{content}.html", pre_api.base, content))
    widget = thread(page)
    expect(widget.locator("article p.text")).to_have_text(["better words", "left alone"])
    marker = widget.locator("article .meta .edited")
    expect(marker).to_have_count(1)
    expect(marker).to_have_text("(edited)")
    expect(marker).to_have_attribute("datetime", edited.json()["edited_at"])
    expect(widget.locator(f"#comment-{posted[0]['id']} .edited")).to_have_count(1)
    no_csp_trouble(page)


def test_the_widget_reads_the_servers_auth_mode_and_limits_itself(
    page, site: HostSite, required_api: Api, open_api: Api
):
    """No require-sign-in or max-length attribute: /api/v1/config says writes need a
    credential (AUTH_MODE=required) and comments stop at 300 characters. The limits are
    kept by the widget on sending (a field error, nothing sent), not by cutting the text."""
    content = new_content()
    held: list = []
    posts: list[str] = []
    page.on("request", lambda r: r.method == "POST" and posts.append(r.url))
    page.route("**/api/v1/config", lambda route: held.append(route))  # on their way...
    page.goto(site.thread_page(f"/{content}.html", required_api.base, content))
    widget = thread(page)
    expect(widget.get_by_text("No comments yet")).to_be_visible()
    # ...and meanwhile no form shows (it would flash up, then give way to the prompt).
    expect(widget.get_by_label("Your comment")).to_be_hidden()
    expect(widget.get_by_text("Please sign in to comment.")).to_be_hidden()
    assert len(held) == 1  # one request for the page
    held[0].continue_()
    expect(widget.get_by_text("Please sign in to comment.")).to_be_visible()
    expect(widget.get_by_label("Your comment")).to_be_hidden()
    page.evaluate("(t) => CommentsWidget.setToken(t)", required_api.token("r1", name="Reader"))
    body = widget.get_by_label("Your comment")
    expect(body).to_be_visible()
    assert_limit(page, widget, 300, posts)
    expect(widget.locator("article p.text")).to_have_text("y" * 300)
    # The open server's widget on another page keeps its form for anonymous readers.
    other = new_content()
    page.goto(site.thread_page(f"/{other}.html", open_api.base, other))
    open_widget = thread(page)
    expect(open_widget.get_by_label("Your comment")).to_be_visible()
    expect(open_widget.get_by_text("Please sign in to comment.")).to_be_hidden()
    assert_limit(page, open_widget, 5000, posts)
    # Settings that cannot be read: the form shows, with the attributes' rules.
    page.unroute("**/api/v1/config")
    page.route("**/api/v1/config", lambda route: route.abort())
    page.goto(site.thread_page(f"/{other}-x.html", open_api.base, other, attrs='max-length="99"'))
    fallback = thread(page)
    expect(fallback.get_by_label("Your comment")).to_be_visible()
    assert_limit(page, fallback, 99, posts)


def assert_limit(page, widget, limit: int, posts: list[str]) -> None:
    """One character over the limit is refused on the field, nothing sent; at it, posted."""
    box = widget.get_by_label("Your comment")
    sent = len(posts)
    box.fill("y" * (limit + 1))
    widget.get_by_role("button", name="Post comment").click()
    expect(widget.locator(".field-error").first).to_have_text(
        f"At most {limit:,} characters (now {limit + 1:,})."
    )
    expect(box).to_have_attribute("aria-invalid", "true")
    expect(widget.get_by_role("alert")).to_contain_text(
        f"At most {limit:,} characters (now {limit + 1:,})."
    )
    expect(box).to_be_focused()
    expect(box).to_have_value("y" * (limit + 1))  # the text as written, to shorten
    page.wait_for_timeout(300)  # what a send would have needed to start
    assert len(posts) == sent, posts
    box.fill("y" * limit)
    widget.get_by_role("button", name="Post comment").click()
    expect(widget.get_by_role("status")).to_have_text("Your comment was posted.")
    expect(widget.locator("article p.text").last).to_have_text("y" * limit)
    expect(widget.locator("article").last).to_be_focused()
    assert len(posts) == sent + 1, posts


def test_limits_count_characters_as_the_api_does_so_emoji_are_not_cut(
    page, site: HostSite, open_api: Api
):
    """The API counts characters (MAX_COMMENT_LENGTH=5000, names 80); the textarea's
    maxlength counted UTF-16 units, two per emoji: 3000 emoji, which the API takes, were
    cut to 2500 without a word, and a name of 50 emoji to 40."""
    content = new_content()
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content))
    widget = thread(page)
    expect(widget.get_by_text("No comments yet")).to_be_visible()
    posts: list[str] = []
    page.on("request", lambda r: r.method == "POST" and posts.append(r.url))
    box = widget.get_by_label("Your comment")
    name = widget.get_by_label("Name (optional)")
    post = widget.get_by_role("button", name="Post comment")

    # Over the limits: said on the field, nothing sent, nothing cut.
    box.fill("\U0001f600" * 5001)
    expect(box).to_have_value("\U0001f600" * 5001)
    post.click()
    expect(widget.locator(".field-error").first).to_have_text(
        "At most 5,000 characters (now 5,001)."
    )
    expect(box).to_have_attribute("aria-invalid", "true")
    expect(box).to_be_focused()
    box.fill("\U0001f600" * 3000)
    name.fill("\U0001f642" * 81)
    post.click()
    expect(widget.get_by_text("At most 80 characters (now 81).", exact=True)).to_be_visible()
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(name).to_be_focused()
    page.wait_for_timeout(300)  # what a send would have needed to start
    assert posts == [], posts

    # Within them: taken whole, posted whole.
    name.fill("\U0001f642" * 50)
    expect(name).to_have_value("\U0001f642" * 50)
    expect(box).to_have_value("\U0001f600" * 3000)
    post.click()
    expect(widget.get_by_role("status")).to_have_text("Your comment was posted.")
    expect(widget.locator("article p.text")).to_have_text("\U0001f600" * 3000)
    expect(widget.locator("article .author")).to_have_text("\U0001f642" * 50)
    assert len(posts) == 1, posts
    (stored,) = requests.get(
        f"{open_api.base}/api/v1/contents/{content}/comments", timeout=5
    ).json()["items"]
    assert stored["body"] == "\U0001f600" * 3000
    assert stored["author"]["name"] == "\U0001f642" * 50


def test_portuguese_dark_demo_page_and_badges(page, site: HostSite, open_api: Api, axe_source):
    content = new_content()
    open_api.post(content, "Ótima matéria!", author_name="Joana")
    page.emulate_media(color_scheme="dark")
    page.goto(f"{open_api.base}/widget/demo?content_id={content}&lang=pt-BR")
    widget = thread(page)
    expect(widget.get_by_role("heading", name="Comentários")).to_be_visible()
    expect(widget.get_by_role("button", name="Publicar comentário")).to_be_visible()
    expect(page.locator("[data-comments-count]")).to_have_text("1 comentário")
    background = page.evaluate(
        "() => getComputedStyle(document.querySelector('comments-thread')).getPropertyValue("
        "'--comments-bg')"
    )
    assert background.strip() == "#17181c", background  # dark through prefers-color-scheme
    widget.get_by_label("Seu comentário", exact=True).fill("Concordo.")
    widget.get_by_role("button", name="Publicar comentário").click()
    expect(widget.get_by_role("status")).to_have_text("Seu comentário foi publicado.")
    no_csp_trouble_same_origin(page)
    violations, _ = run_axe(page, axe_source)
    assert violations == [], dumps(violations)
    screenshot(page, "demo-pt-BR-dark")

    # Badges on a listing page of the site: one counts call for every link.
    others = [new_content() for _ in range(3)]
    for i, other in enumerate(others):
        for n in range(i):
            open_api.post(other, f"comment {n}")
    links = "".join(
        f'<li><a href="/{c}.html" data-comments-count="{c}">comments</a></li>'
        for c in [content, *others]
    )
    listing = site.add(
        "/listing.html",
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Listing</title>
<script src="/host.js"></script><script src="{open_api.base}/widget/count.js" defer></script>
</head><body><main><h1>Latest</h1><ul>{links}</ul>
<a href="#" data-comments-count="&#x200b;&#x2060;" id="invisible">comments</a><p lang="pt-BR">
<a href="#" data-comments-count="{content}">comentários</a></p></main></body></html>""",
        csp=site.strict_csp(open_api.base),
    )
    calls = []
    page.on("request", lambda r: "/api/v1/counts" in r.url and calls.append(r.url))
    page.emulate_media(color_scheme="light")
    page.goto(listing)
    badges = page.locator("ul [data-comments-count]")
    expect(badges).to_have_text(["2 comments", "0 comments", "1 comment", "2 comments"])
    expect(page.locator("p [data-comments-count]")).to_have_text("2 comentários")
    # An id the API refuses (it prints nothing) keeps the site's text and costs no other
    # badge its count: it is left out of the one call.
    expect(page.locator("#invisible")).to_have_text("comments")
    assert len(calls) == 1, calls
    assert page.evaluate("window.cspViolations") == []


def no_csp_trouble_same_origin(page) -> None:
    assert not [e for e in page.console_errors if "Content Security Policy" in e], (
        page.console_errors
    )


def test_accessibility_axe_light_and_dark(page, site: HostSite, open_api: Api, axe_source):
    content = new_content()
    first = open_api.post(content, "An accessible comment", author_name="Lia")
    open_api.post(content, "And a reply", author_name="Rui", parent_id=first["id"])
    removed = open_api.post(content, "removed", author_name="X")
    open_api.moderate(open_api.key("comments:moderate"), "delete", [removed["id"]])
    url = site.thread_page(f"/{content}.html", open_api.base, content)
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.goto(url)
        widget = thread(page)
        expect(widget.locator("article")).to_have_count(3)
        # An open reply form and a field error are part of what must be accessible.
        widget.get_by_role("button", name="Reply to Lia").click()
        widget.get_by_role("button", name="Post reply").click()
        expect(
            widget.locator("form .field-error", has_text="Please write your comment first.")
        ).to_be_visible()
        violations, checked = run_axe(page, axe_source)
        assert violations == [], dumps(violations)
        assert {"label", "color-contrast", "button-name"} <= checked, checked
        # A field is found by its border (WCAG 1.4.11): 3:1 against the form around it.
        for field in widget.locator("form textarea, form input").all():
            border, around = field.evaluate(
                "(el) => [getComputedStyle(el).borderTopColor,"
                " getComputedStyle(el.closest('form')).backgroundColor]"
            )
            assert contrast(border, around) >= 3, (scheme, border, around)
        screenshot(widget, f"widget-{scheme}-reply")
    no_csp_trouble(page)


def test_the_widget_says_which_language_its_texts_and_the_comments_are_in(
    page, site: HostSite, open_api: Api
):
    content = new_content()
    open_api.post(content, "Ein Kommentar auf Deutsch", author_name="Jonas")
    # German is not shipped: on a German page the widget's texts are English, and a screen
    # reader must read them as English; the readers' texts are taken to be the page's.
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content, lang="de"))
    widget = thread(page)
    expect(widget.locator("article p.text")).to_have_text("Ein Kommentar auf Deutsch")
    for selector, lang in [
        ("h2", "en"),
        ("label", "en"),
        ("button.reply", "en"),
        ("button[type=submit]", "en"),
        ("article p.text", "de"),
        ("textarea", "de"),
    ]:
        assert widget.locator(selector).first.evaluate(f"(el) => el.matches(':lang({lang})')"), (
            selector,
            lang,
        )


def test_load_more_from_the_keyboard_keeps_the_focus(page, site: HostSite, open_api: Api):
    content = new_content()
    for i in range(5):
        open_api.post(content, f"paged {i}", author_name="Pager")
    url = site.thread_page(f"/{content}.html", open_api.base, content, attrs='page-size="2"')
    page.goto(url)
    widget = thread(page)
    more = widget.get_by_role("button", name="Load more comments")
    more.focus()
    # Disabled while its page loads, the button loses the focus: it gets it back, so that
    # Enter again reads on (not the top of the page on the next Tab).
    page.keyboard.press("Enter")
    expect(widget.locator("article")).to_have_count(4)
    expect(more).to_be_focused()
    page.keyboard.press("Enter")
    expect(widget.locator("article")).to_have_count(5)
    expect(more).to_be_hidden()
    expect(widget.locator("article").last).to_be_focused()


def test_load_more_leaves_the_focus_where_the_reader_moved_it(page, site: HostSite, open_api: Api):
    # The button gives the focus up while its page loads; a reader who went on meanwhile
    # (into the comment field) had it taken back to the button when the page came, and
    # the next space typed there loaded another page instead of going into the text.
    content = new_content()
    for i in range(5):
        open_api.post(content, f"paged {i}", author_name="Pager")
    held: list = []
    page.route("**/comments?*cursor=*", lambda route: held.append(route))
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content, attrs='page-size="2"'))
    widget = thread(page)
    expect(widget.locator("article")).to_have_count(2)
    more = widget.get_by_role("button", name="Load more comments")
    more.focus()
    page.keyboard.press("Enter")
    for _ in range(100):  # the next page is on its way, held
        if held:
            break
        page.wait_for_timeout(50)
    assert held
    box = widget.get_by_label("Your comment")
    box.focus()
    page.keyboard.type("hello")
    held[0].continue_()
    expect(widget.locator("article")).to_have_count(4)
    expect(box).to_be_focused()
    page.keyboard.type(" world")
    expect(box).to_have_value("hello world")
    expect(widget.locator("article")).to_have_count(4)
    # The last page: its first comment took the focus from the field all the same.
    more.focus()
    page.keyboard.press("Enter")
    for _ in range(100):
        if len(held) > 1:
            break
        page.wait_for_timeout(50)
    assert len(held) > 1
    box.focus()
    held[1].continue_()
    expect(widget.locator("article")).to_have_count(5)
    expect(more).to_be_hidden()
    expect(box).to_be_focused()
    page.keyboard.type("!")
    expect(box).to_have_value("hello world!")


def test_site_texts_are_marked_with_the_page_language(page, site: HostSite, open_api: Api):
    # A site that writes the widget's texts itself (the messages element) on a page in a
    # language the widget does not ship writes them in the page's language: they were
    # marked English (the shipped fallback) and read by a screen reader as English.
    content = new_content()
    texts = (
        '<script type="application/json" id="texts">'
        '{"title": "Leserkommentare", "submit": "Kommentar senden"}</script>'
    )
    url = site.thread_page(
        f"/{content}.html", open_api.base, content, attrs='messages="texts"', extra=texts, lang="de"
    )
    page.goto(url)
    widget = thread(page)
    heading = widget.get_by_role("heading", name="Leserkommentare")
    expect(heading).to_be_visible()
    assert heading.evaluate("(el) => el.matches(':lang(de)')")
    assert widget.locator("textarea").evaluate("(el) => el.matches(':lang(de)')")


def test_site_replaces_texts_and_languages_fall_back(page, site: HostSite, open_api: Api):
    content = new_content()
    texts = '<script type="application/json" id="texts">{"title": "Readers\' views"}</script>'
    second = f'<comments-thread content-id="{content}" lang="pt-PT"></comments-thread>'
    url = site.thread_page(
        f"/{content}.html",
        open_api.base,
        content,
        attrs='messages="texts"',
        extra=texts + second,
    )
    page.goto(url)
    english, portuguese = thread(page).nth(1), thread(page).nth(0)
    expect(english.get_by_role("heading", name="Readers' views")).to_be_visible()
    expect(english.get_by_role("button", name="Post comment")).to_be_visible()
    # pt-PT is not shipped: the closest language, pt-BR, is used.
    expect(portuguese.get_by_role("heading", name="Comentários")).to_be_visible()
    page.evaluate("CommentsWidget.setMessages('pt-BR', {submit: 'Enviar'})")
    expect(portuguese.get_by_role("button", name="Enviar")).to_be_visible()
    expect(english.get_by_role("heading", name="Readers' views")).to_be_visible()
    # A JSON data block is not a script: the strict CSP has nothing to block.
    no_csp_trouble(page)


def test_unreachable_api_is_reported_with_a_retry(page, site: HostSite, open_api: Api):
    content = new_content()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        url = site.thread_page(
            f"/{content}.html", open_api.base, content, attrs=f'api="{closed}"', csp=False
        )
        page.goto(url)
        widget = thread(page)
        expect(widget.get_by_role("alert")).to_have_text(
            "The comment service could not be reached. Check your connection and try again."
        )
        expect(widget.get_by_role("button", name="Try again")).to_be_visible()


def test_badges_batch_one_counts_call_per_hundred_contents(page, site: HostSite, open_api: Api):
    ids = [new_content() for _ in range(101)]
    open_api.post(ids[100], "the only comment")
    links = "".join(f'<a href="#" data-comments-count="{c}">…</a> ' for c in ids)
    url = site.add(
        "/many.html",
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Many</title>
<script src="{open_api.base}/widget/count.js" defer></script></head>
<body><main><h1>Archive</h1><p>{links}</p></main></body></html>""",
        csp=site.strict_csp(open_api.base),
    )
    calls = []
    page.on("request", lambda r: "/api/v1/counts" in r.url and calls.append(r.url))
    page.goto(url)
    expect(page.locator(f'[data-comments-count="{ids[100]}"]')).to_have_text("1 comment")
    expect(page.locator(f'[data-comments-count="{ids[0]}"]')).to_have_text("0 comments")
    assert len(calls) == 2, calls
    assert [url.count("content_id=") for url in calls] == [100, 1]


def test_badges_survive_a_stuck_a_failed_and_an_odd_batch(page, site: HostSite, open_api: Api):
    # Four batches of counts: the first never answers, the second meets a proxy page, the
    # third has counts of the wrong kind, the fourth is the API's. Each fills its own badges.
    ids = [new_content() for _ in range(301)]
    for c in (ids[0], ids[100], ids[200], ids[300], ids[300]):
        open_api.post(c, "counted")
    links = "".join(f'<a href="#" data-comments-count="{c}">Comments</a> ' for c in ids)
    url = site.add(
        "/stuck-counts.html",
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Stuck</title>
<script src="{open_api.base}/widget/count.js" defer></script></head>
<body><main><h1>Archive</h1><p>{links}</p></main></body></html>""",
        csp=site.strict_csp(open_api.base),
    )
    odd = {"counts": {ids[200]: "7", ids[201]: -1, ids[202]: 2.5, ids[203]: None}}
    held: list = []
    proxy = odd_answer(site, 502, PROXY_PAGE, "text/html")
    odd_json = odd_answer(site, 200, json.dumps(odd), "application/json")

    def counts(route) -> None:
        first = parse_qs(urlsplit(route.request.url).query)["content_id"][0]
        batch = ids.index(first) // 100
        if batch == 0:
            held.append(route)
        elif batch == 1:
            proxy(route)
        elif batch == 2:
            odd_json(route)
        else:
            route.continue_()

    def is_counts(u: str) -> bool:
        return "/api/v1/counts" in u

    page.route(is_counts, counts)
    failed: list[str] = []
    page.on("requestfailed", lambda r: is_counts(r.url) and failed.append(r.url))
    errors = page.page_errors
    page.clock.install()  # timers run as usual until fast-forwarded
    page.goto(url)

    def badge(c: str):
        return page.locator(f'[data-comments-count="{c}"]')

    def valued() -> list[str]:
        return page.eval_on_selector_all(
            "[data-comments-count-value]", "els => els.map(e => e.dataset.commentsCount)"
        )

    # The last batch is not held up by the first, still waiting for its answer.
    expect(badge(ids[300])).to_have_text("2 comments")
    assert len(held) == 1
    assert valued() == [ids[300]]
    for c in (ids[0], ids[100], ids[101], ids[200], ids[201], ids[202], ids[203]):
        expect(badge(c)).to_have_text("Comments")  # the site's own text
    # The stuck request is given up after 20 s; its badges keep the site's text.
    page.clock.fast_forward(21_000)
    for _ in range(50):
        if failed:
            break
        page.wait_for_timeout(100)
    assert len(failed) == 1, failed
    expect(badge(ids[0])).to_have_text("Comments")
    assert valued() == [ids[300]]

    # The next refresh, with the API answering, fills every badge.
    page.unroute(is_counts, counts)
    page.evaluate("CommentsCount.refresh()")
    expect(badge(ids[0])).to_have_text("1 comment")
    expect(badge(ids[100])).to_have_text("1 comment")
    expect(badge(ids[201])).to_have_text("0 comments")
    assert errors == [], errors


# What nginx in front of the API answers when the API is down. Proxies that add CORS headers
# to their own pages (`add_header … always`) let the widget see the status; without them the
# browser reports a network failure (test_unreachable_api_is_reported_with_a_retry).
PROXY_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"
)


def odd_answer(site: HostSite, status: int, body: str, content_type: str, **headers: str):
    """A route handler answering in place of the API, as a proxy in front of it would."""

    def answer(route) -> None:
        if route.request.method == "OPTIONS":
            route.continue_()  # the preflight reaches the API; the request itself does not
            return
        route.fulfill(
            status=status,
            content_type=content_type,
            body=body,
            headers={
                "Access-Control-Allow-Origin": site.origin,
                "Access-Control-Expose-Headers": "Retry-After",
                **headers,
            },
        )

    return answer


def test_odd_answers_to_reading_the_thread_are_reported_with_a_retry(
    page, site: HostSite, open_api: Api
):
    content = new_content()
    open_api.post(content, "the only comment", author_name="Reader")
    url = site.thread_page(f"/{content}.html", open_api.base, content)
    errors = page.page_errors
    reads = f"{open_api.base}/api/v1/contents/{content}/comments**"
    answers = [
        (502, PROXY_PAGE, "text/html"),
        (504, PROXY_PAGE, "text/html"),
        (200, PROXY_PAGE, "text/html"),  # a captive portal's page
        (200, "{}", "application/json"),
        (200, "null", "application/json"),
        (200, "[]", "application/json"),
        (200, '{"items": null}', "application/json"),
    ]
    for status, body, content_type in answers:
        page.route(reads, odd_answer(site, status, body, content_type))
        page.goto(url)
        widget = thread(page)
        expect(widget.get_by_role("alert")).to_have_text("The comments could not be loaded.")
        expect(widget.get_by_role("button", name="Try again")).to_be_visible()
        assert "nginx" not in widget.locator("section").inner_text()
        assert errors == [], (status, body, errors)
        page.unroute(reads)
    # The reader's retry once the API answers again.
    widget.get_by_role("button", name="Try again").click()
    expect(widget.locator("article p.text")).to_have_text(["the only comment"])
    # Polling meets the same answers: nothing thrown, nothing lost.
    page.route(reads, odd_answer(site, 200, '{"items": [null, 5]}', "application/json"))
    page.evaluate("CommentsWidget.refresh()")
    expect(widget.locator("article p.text")).to_have_text(["the only comment"])
    assert errors == [], errors
    # A comment without its text is shown without it.
    page.unroute(reads)
    bodiless = {"id": 2**40, "status": "published", "body": None, "author": {"name": "Odd"}}
    page.route(reads, odd_answer(site, 200, json.dumps({"items": [bodiless]}), "application/json"))
    page.evaluate("CommentsWidget.refresh()")
    expect(widget.locator("article p.text")).to_have_text(["the only comment", ""])
    assert errors == [], errors


def test_a_post_meeting_a_proxy_page_or_no_answer_keeps_the_text_and_its_key(
    page, site: HostSite, open_api: Api
):
    content = new_content()
    page.clock.install()  # timers run as usual until fast-forwarded
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content))
    errors = page.page_errors
    widget = thread(page)
    expect(widget.get_by_text("No comments yet")).to_be_visible()
    keys: list[str | None] = []
    page.on(
        "request",
        lambda r: r.method == "POST" and keys.append(r.headers.get("idempotency-key")),
    )
    posts = f"{open_api.base}/api/v1/contents/{content}/comments"
    box = widget.get_by_label("Your comment")
    post = widget.get_by_role("button", name="Post comment")
    box.fill("written with care")

    page.route(posts, odd_answer(site, 502, PROXY_PAGE, "text/html"))
    post.click()
    expect(widget.get_by_role("alert")).to_have_text(
        "Something went wrong (error 502). Please try again later."
    )
    expect(box).to_have_value("written with care")
    expect(post).to_be_enabled()
    page.unroute(posts)

    # No answer at all: after the widget's deadline the reader gets the button back.
    held: list = []
    page.route(
        posts,
        lambda route: (
            route.continue_() if route.request.method == "OPTIONS" else held.append(route)
        ),
    )
    post.click()
    expect(widget.get_by_role("button", name="Posting…")).to_be_disabled()
    page.clock.fast_forward(30_000)
    expect(widget.get_by_role("alert")).to_have_text(
        "The comment service could not be reached. Check your connection and try again."
    )
    expect(box).to_have_value("written with care")
    expect(post).to_be_enabled()
    page.unroute(posts)

    post.click()
    expect(widget.locator("article p.text")).to_have_text(["written with care"])
    assert len(keys) == 3, keys
    assert keys[0], keys
    assert len(set(keys)) == 1, keys  # the same comment, the same key
    stored = requests.get(posts, timeout=5).json()["items"]
    assert [c["body"] for c in stored] == ["written with care"]
    assert errors == [], errors


HOP_BY_HOP = {
    "accept-encoding",
    "connection",
    "content-encoding",
    "content-length",
    "date",
    "host",
    "keep-alive",
    "server",
    "transfer-encoding",
}


class StallingProxy:
    """A loopback proxy in front of the API, as a site may have: every request passes
    through (preflights and CORS headers included), but while ``hold`` is set a POST's
    answer stops after its headers and first bytes (the API has stored the comment) until
    ``release`` is set (``stalls`` picks other requests). route.fulfill cannot do this: it
    hands over a whole body or none."""

    def __init__(self, api: str) -> None:
        self.stalls = lambda method, path: method == "POST"
        self.hold = threading.Event()
        self.release = threading.Event()
        self.stalled = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                answer = requests.request(
                    self.command,
                    api + self.path,
                    headers={**headers, "Accept-Encoding": "identity"},
                    data=self.rfile.read(length) if length else None,
                    timeout=10,
                    allow_redirects=False,
                )
                self.send_response(answer.status_code)
                for k, v in answer.headers.items():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                if not (proxy.hold.is_set() and proxy.stalls(self.command, self.path)):
                    self.wfile.write(answer.content)
                    return
                self.wfile.write(answer.content[:8])
                self.wfile.flush()
                proxy.stalled.set()
                proxy.release.wait(60)
                self.close_connection = True

            do_GET = do_POST = do_OPTIONS = forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stalling_proxy(open_api: Api) -> Iterator[StallingProxy]:
    proxy = StallingProxy(open_api.base)
    yield proxy
    proxy.stop()


def test_an_answer_whose_body_stalls_is_given_up_and_its_post_sent_again_once(
    page, site: HostSite, open_api: Api, stalling_proxy: StallingProxy
):
    """The widget's 20 s deadline ended when an answer's headers came: a proxy that then
    stalled the body left "Posting…" disabled for good, and the reader could only reload
    (and lose the text)."""
    content = new_content()
    page.clock.install()  # timers run as usual until fast-forwarded
    url = site.thread_page(
        f"/{content}-stall.html",
        open_api.base,
        content,
        attrs=f'api="{stalling_proxy.origin}"',
        csp=False,  # the proxy is one more origin to connect to
    )
    page.goto(url)
    errors = page.page_errors
    widget = thread(page)
    expect(widget.get_by_text("No comments yet")).to_be_visible()
    keys: list[str | None] = []
    page.on(
        "request",
        lambda r: r.method == "POST" and keys.append(r.headers.get("idempotency-key")),
    )
    box = widget.get_by_label("Your comment")
    post = widget.get_by_role("button", name="Post comment")
    box.fill("held up mid-answer")

    stalling_proxy.hold.set()
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        post.click()
    assert answer.value.status == 201  # the headers came: the rest never does
    assert stalling_proxy.stalled.wait(10)
    expect(widget.get_by_role("button", name="Posting…")).to_be_disabled()
    page.clock.fast_forward(30_000)
    expect(widget.get_by_role("alert")).to_have_text(NETWORK)
    expect(box).to_have_value("held up mid-answer")
    expect(post).to_be_enabled()

    stalling_proxy.hold.clear()
    stalling_proxy.release.set()
    post.click()
    expect(widget.locator("article p.text")).to_have_text(["held up mid-answer"])
    expect(widget.get_by_role("status")).to_have_text("Your comment was posted.")
    assert len(keys) == 2, keys
    assert keys[0], keys
    assert keys[0] == keys[1], keys  # the same comment, the same key
    stored = requests.get(f"{open_api.base}/api/v1/contents/{content}/comments", timeout=5)
    assert [c["body"] for c in stored.json()["items"]] == ["held up mid-answer"]
    assert errors == [], errors


def test_a_thread_page_whose_body_stalls_is_given_up_with_a_retry(
    page, site: HostSite, open_api: Api, stalling_proxy: StallingProxy
):
    """The deadline that covers a comment's answer covers the thread's pages too: the first
    page and "Load more" whose bodies stall are reported with a retry, not left loading."""
    content = new_content()
    for n in range(3):
        open_api.post(content, f"comment {n}", author_name="Seed")
    page.clock.install()
    url = site.thread_page(
        f"/{content}-stalled-pages.html",
        open_api.base,
        content,
        attrs=f'api="{stalling_proxy.origin}" page-size="2"',
        csp=False,
    )
    first_page = f"/api/v1/contents/{content}/comments?"
    stalling_proxy.stalls = lambda method, path: method == "GET" and path.startswith(first_page)
    stalling_proxy.hold.set()
    page.goto(url)
    widget = thread(page)
    assert stalling_proxy.stalled.wait(10)
    page.clock.fast_forward(30_000)
    expect(widget.get_by_role("alert")).to_have_text(NETWORK)
    stalling_proxy.hold.clear()
    stalling_proxy.release.set()
    widget.get_by_role("button", name="Try again").click()
    expect(widget.locator("article p.text")).to_have_text(["comment 0", "comment 1"])

    stalling_proxy.stalled.clear()
    stalling_proxy.release = threading.Event()
    stalling_proxy.stalls = lambda method, path: method == "GET" and "cursor=" in path
    stalling_proxy.hold.set()
    more = widget.get_by_role("button", name="Load more comments")
    more.click()
    assert stalling_proxy.stalled.wait(10)
    expect(more).to_be_disabled()
    page.clock.fast_forward(30_000)
    expect(widget.get_by_role("alert")).to_have_text(NETWORK)
    expect(more).to_be_enabled()
    stalling_proxy.hold.clear()
    stalling_proxy.release.set()
    widget.get_by_role("button", name="Try again").click()
    expect(widget.locator("article p.text")).to_have_text(["comment 0", "comment 1", "comment 2"])
    assert page.page_errors == []


def test_a_double_click_posts_once_while_the_token_provider_is_slow(
    page, site: HostSite, open_api: Api
):
    content = new_content()
    # A site's provider that refreshes the reader's session first: a third of a second.
    provider = "window.slowToken = () => new Promise((done) => setTimeout(() => done(null), 300));"
    widget = open_with_token_provider(page, site, open_api, content, "slowToken", provider)
    posts: list[str] = []
    page.on("request", lambda r: r.method == "POST" and posts.append(r.url))
    widget.get_by_label("Your comment").fill("clicked twice")
    widget.get_by_role("button", name="Post comment").dblclick()
    expect(widget.locator("article p.text")).to_have_text(["clicked twice"])
    expect(widget.get_by_role("status")).to_have_text("Your comment was posted.")
    page.wait_for_timeout(500)  # what a second send would have needed
    expect(widget.locator("article")).to_have_count(1)
    assert widget.locator("form [role=alert]").inner_text() == ""
    assert len(posts) == 1, posts
    stored = requests.get(f"{open_api.base}/api/v1/contents/{content}/comments", timeout=5).json()[
        "items"
    ]
    assert [c["body"] for c in stored] == ["clicked twice"]


def test_odd_refusals_read_as_sentences(page, site: HostSite, open_api: Api):
    content = new_content()
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content))
    widget = thread(page)
    expect(widget.get_by_text("No comments yet")).to_be_visible()
    posts = f"{open_api.base}/api/v1/contents/{content}/comments"
    box = widget.get_by_label("Your comment")
    post = widget.get_by_role("button", name="Post comment")
    alert = widget.locator("form").get_by_role("alert")
    box.fill("a comment")
    in_five_minutes = formatdate(time.time() + 300, usegmt=True)
    for headers, wait in (
        ({"Retry-After": in_five_minutes}, "5 minutes"),
        ({"Retry-After": "0"}, "1 second"),
    ):
        page.route(posts, odd_answer(site, 429, PROXY_PAGE, "text/html", **headers))
        post.click()
        expect(alert).to_have_text(f"You are posting too often. Please wait {wait} and try again.")
        page.unroute(posts)
    # A 400 whose errors are not the API's {field, message}: no "undefined", no object.
    for errors in ('["bad request"]', '[{"field": "body", "message": {"code": 7}}]'):
        page.route(posts, odd_answer(site, 400, f'{{"errors": {errors}}}', "application/json"))
        post.click()
        expect(alert).to_have_text("Please correct the form:")
        assert "undefined" not in widget.locator("form").inner_text()
        assert "[object Object]" not in widget.locator("form").inner_text()
        page.unroute(posts)
    # A 201 whose body is not the comment (rewritten on the way): stored, said so, no ghost.
    page.route(posts, odd_answer(site, 201, "[]", "application/json"))
    post.click()
    expect(widget.locator(".notice.ok")).to_have_text("Your comment was posted.")
    expect(box).to_have_value("")
    expect(widget.locator("article")).to_have_count(0)


def test_long_unbroken_names_and_words_stay_inside_the_widget(page, site: HostSite, open_api: Api):
    content = new_content()
    open_api.post(content, "x" * 2000, author_name="W" * 80)
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content))
    widget = thread(page)
    expect(widget.locator("article")).to_have_count(1)
    widths = page.evaluate(
        "() => { const w = document.querySelector('comments-thread');"
        " return [w.scrollWidth, w.clientWidth, document.documentElement.scrollWidth,"
        " document.documentElement.clientWidth]; }"
    )
    assert widths[0] <= widths[1], widths
    assert widths[2] <= widths[3], widths


def test_newest_first_refresh_shows_every_comment_when_more_than_a_page_arrived(
    page, site: HostSite, open_api: Api
):
    content = new_content()
    for i in range(2):
        open_api.post(content, f"early {i}")
    url = site.thread_page(
        f"/{content}.html", open_api.base, content, attrs='order="newest" page-size="3"'
    )
    page.goto(url)
    widget = thread(page)
    expect(widget.locator("article")).to_have_count(2)
    # Seven arrive before the next poll: more than a page. None may be skipped, and the
    # thread stays newest first.
    for i in range(7):
        open_api.post(content, f"late {i}")
    page.evaluate("CommentsWidget.refresh()")
    expect(widget.locator("article")).to_have_count(9)
    assert comment_texts(page) == [f"late {i}" for i in reversed(range(7))] + [
        "early 1",
        "early 0",
    ]
    expect(widget.get_by_role("status")).to_have_text("7 new comments.")


def test_a_badge_with_an_id_the_api_refuses_does_not_cost_the_others_their_count(
    page, site: HostSite, open_api: Api
):
    good = new_content()
    open_api.post(good, "the only comment")
    # Ids a template may well produce, which the API refuses (400 for the whole call).
    refused = ["x" * 129, f"{new_content()} ", "a\u0007b"]
    links = "".join(f'<a href="#" data-comments-count="{c}">Comments</a> ' for c in refused)
    url = site.add(
        "/refused-ids.html",
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Ids</title>
<script src="{open_api.base}/widget/count.js" defer></script></head>
<body><main><h1>Archive</h1><p>{links}<a href="#" data-comments-count="{good}">Comments</a>
</p></main></body></html>""",
        csp=site.strict_csp(open_api.base),
    )
    calls = []
    page.on("request", lambda r: "/api/v1/counts" in r.url and calls.append(r.url))
    page.goto(url)
    expect(page.locator(f'[data-comments-count="{good}"]')).to_have_text("1 comment")
    # The refused ids keep the site's own text, and are not asked for at all.
    badges = page.locator("[data-comments-count]")
    for i in range(len(refused)):
        expect(badges.nth(i)).to_have_text("Comments")
    assert [parse_qs(urlsplit(u).query)["content_id"] for u in calls] == [[good]]


def test_try_again_from_the_keyboard_keeps_the_focus_in_the_thread(
    page, site: HostSite, open_api: Api
):
    content = new_content()
    first = open_api.post(content, "the only comment", author_name="Reader")
    url = site.thread_page(f"/{content}.html", open_api.base, content)
    reads = f"{open_api.base}/api/v1/contents/{content}/comments**"
    page.route(reads, odd_answer(site, 503, PROXY_PAGE, "text/html"))
    page.goto(url)
    widget = thread(page)
    retry = widget.get_by_role("button", name="Try again")
    retry.focus()
    # Still down: the new "Try again" has the keyboard, not the page's body.
    page.keyboard.press("Enter")
    expect(widget.get_by_role("alert")).to_have_text("The comments could not be loaded.")
    expect(retry).to_be_focused()
    # Back: the focus goes to the first comment the retry brought.
    page.unroute(reads)
    page.keyboard.press("Enter")
    expect(widget.locator("article p.text")).to_have_text(["the only comment"])
    expect(widget.locator(f"#comment-{first['id']}")).to_be_focused()


def test_a_comment_posted_before_the_last_page_is_read_stays_at_the_end(
    page, site: HostSite, open_api: Api
):
    content = new_content()
    parent = open_api.post(content, "seed 0")
    for i in range(1, 4):
        open_api.post(content, f"seed {i}")
    open_api.post(content, "an older reply", parent_id=parent["id"])
    url = site.thread_page(f"/{content}.html", open_api.base, content, attrs='page-size="2"')
    page.goto(url)
    widget = thread(page)
    expect(widget.locator("article")).to_have_count(2)
    # Posted with pages still unread: shown now, and still last once they are read.
    widget.get_by_label("Your comment").first.fill("mine")
    widget.get_by_role("button", name="Post comment").click()
    expect(widget.locator("article", has_text="mine")).to_be_focused()
    widget.get_by_role("button", name="Reply").first.click()
    widget.get_by_role("form", name=re.compile("Reply to")).get_by_label("Your comment").fill(
        "my reply"
    )
    widget.get_by_role("button", name="Post reply").click()
    expect(widget.locator("article", has_text="my reply")).to_be_visible()
    more = widget.get_by_role("button", name="Load more comments")
    more.click()
    expect(widget.locator("article")).to_have_count(6)  # seeds 2 and 3
    more.click()
    expect(widget.locator("article")).to_have_count(7)  # the older reply (and "mine")
    more.click()  # "my reply" again: the end
    expect(more).to_be_hidden()
    expect(widget.locator("ol.thread > li > article p.text")).to_have_text(
        ["seed 0", "seed 1", "seed 2", "seed 3", "mine"]
    )
    replies = widget.locator(f"li:has(> #comment-{parent['id']}) > .replies article p.text")
    expect(replies).to_have_text(["an older reply", "my reply"])


@pytest.mark.parametrize(("size", "shown"), [("500", 3), ("0", 1), ("ten", 3), ("2.5", 2)])
def test_a_page_size_out_of_range_still_shows_the_thread(
    page, site: HostSite, open_api: Api, size: str, shown: int
):
    content = new_content()
    for i in range(3):
        open_api.post(content, f"comment {i}")
    url = site.thread_page(
        f"/{content}-{size}.html", open_api.base, content, attrs=f'page-size="{size}"'
    )
    page.goto(url)
    widget = thread(page)
    # Not "The comments could not be loaded." for a site's typo: the nearest size allowed
    # (1-100, whole numbers; 25 when it is no number at all).
    expect(widget.locator("article")).to_have_count(shown)
    expect(widget.get_by_text("The comments could not be loaded.")).to_have_count(0)


def test_a_comment_posted_in_one_thread_shows_at_once_in_the_others_of_its_content(
    page, site: HostSite, open_api: Api
):
    """Two threads of one content (on the page, and in another tab of the reader's) saw
    a comment posted in the other only at their next poll, or never without one; the
    page's badge kept its old count. The post is also an event the site can listen to."""
    content, other = new_content(), new_content()
    open_api.post(content, "already here")
    extra = (
        f'<script src="{open_api.base}/widget/count.js" defer></script>'
        f'<p><a href="#" data-comments-count="{content}">comments</a></p>'
        f'<comments-thread id="second" content-id="{content}"></comments-thread>'
        f'<comments-thread id="unrelated" content-id="{other}"></comments-thread>'
    )
    url = site.thread_page(f"/{content}-twice.html", open_api.base, content, extra=extra)
    page.goto(url)
    second_tab = page.context.new_page()
    second_tab.goto(url)
    threads = page.locator("comments-thread")
    first, second, unrelated = threads.nth(2), threads.nth(0), threads.nth(1)
    for widget in (first, second):
        expect(widget.locator("article")).to_have_count(1)
    expect(unrelated.get_by_text("No comments yet")).to_be_visible()
    elsewhere = second_tab.locator("comments-thread").nth(2)
    expect(elsewhere.locator("article")).to_have_count(1)
    badge = page.locator("[data-comments-count]")
    expect(badge).to_have_text("1 comment")
    page.evaluate(
        "window.postedEvents = []; document.addEventListener('comments:posted',"
        " (e) => window.postedEvents.push(e.detail))"
    )

    first.get_by_label("Your comment").first.fill("posted in the first thread")
    first.get_by_role("button", name="Post comment").click()
    expect(first.locator("article", has_text="posted in the first thread")).to_be_visible()
    # No poll attribute: only the post can have told them.
    expect(second.locator("article", has_text="posted in the first thread")).to_be_visible()
    expect(second.get_by_role("status")).to_have_text("1 new comment.")
    expect(elsewhere.locator("article", has_text="posted in the first thread")).to_be_visible()
    expect(unrelated.locator("article")).to_have_count(0)
    expect(badge).to_have_text("2 comments")
    (event,) = page.evaluate("window.postedEvents")
    stored = requests.get(f"{open_api.base}/api/v1/contents/{content}/comments", timeout=5)
    newest = stored.json()["items"][-1]
    assert event == {"contentId": content, "id": newest["id"], "parentId": None}
    assert page.page_errors == []


def test_names_and_texts_in_other_scripts_or_with_direction_controls_stay_in_their_place(
    page, site: HostSite, open_api: Api
):
    """A name is a reader's text set beside ours: a right-to-left override it ends with must
    not reverse the date after it, and an Arabic name must not pull the date's leading
    number into its own run (the example HTML gives for <bdi>). A comment in a
    right-to-left script reads right to left in a left-to-right page, and others do not."""
    content = new_content()
    override = open_api.post(content, "palavras", author_name="Mallory\u202e")
    arabic = open_api.post(content, "شكرا على المقال!", author_name="علي")
    latin = open_api.post(content, "Obrigada!", author_name="Joana")
    # pt-BR dates start with the day's number: "5 de dez. de 2026 22:47".
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content, lang="pt-BR"))
    widget = thread(page)
    expect(widget.locator("article")).to_have_count(3)

    date = widget.locator(f"#comment-{override['id']} .meta time")
    assert (date.text_content() or "")[:1].isdigit(), date.text_content()
    lefts = date.evaluate(DRAWN_LEFTS)
    assert lefts == sorted(lefts), f"the date is drawn reversed: {lefts}"

    name = widget.locator(f"#comment-{arabic['id']} .meta .author").bounding_box()
    lefts = widget.locator(f"#comment-{arabic['id']} .meta time").evaluate(DRAWN_LEFTS)
    assert name is not None
    assert lefts[0] >= name["x"] + name["width"], f"the date's number moved into the name: {lefts}"

    directions = page.evaluate(
        "(ids) => ids.map((id) => getComputedStyle(document.querySelector('comments-thread')"
        ".shadowRoot.querySelector(`#comment-${id} p.text`)).direction)",
        [arabic["id"], latin["id"], override["id"]],
    )
    assert directions == ["rtl", "ltr", "ltr"]
    # So does what a reader types in Arabic, as it is typed.
    field = widget.get_by_label("Seu comentário", exact=True)
    field.fill("شكرا")
    assert field.evaluate("(el) => getComputedStyle(el).direction") == "rtl"
    no_csp_trouble(page)


def test_a_link_to_a_comment_shows_it_reading_on_to_its_page(page, site: HostSite, open_api: Api):
    """An address ending in #comment-ID (what each comment's date links to) brings that
    comment into view and focus, reading on through the pages before it; a widget of
    another content on the same page reads nothing more for it."""
    content, other = new_content(), new_content()
    posted = [open_api.post(content, f"comment {n}") for n in range(4)]
    for n in range(3):
        open_api.post(other, f"elsewhere {n}")
    wanted = posted[3]
    second = f'<comments-thread content-id="{other}" page-size="1"></comments-thread>'
    url = site.thread_page(
        f"/{content}.html", open_api.base, content, attrs='page-size="1"', extra=second
    )
    pages_of_other: list[str] = []
    page.on(
        "request", lambda r: f"/contents/{other}/comments" in r.url and pages_of_other.append(r.url)
    )
    page.goto(f"{url}#comment-{wanted['id']}")
    widget = page.locator(f'comments-thread[content-id="{content}"]')
    linked = widget.locator(f"#comment-{wanted['id']}")
    expect(linked).to_be_focused()
    expect(linked).to_be_in_viewport()
    expect(widget.locator("article")).to_have_count(4)  # page by page up to the fourth
    expect(page.locator(f'comments-thread[content-id="{other}"] article')).to_have_count(1)

    # Each comment's date is its link: following it shows that comment.
    first = widget.locator(f"#comment-{posted[0]['id']}")
    permalink = first.locator(".meta a")
    expect(permalink).to_have_attribute("href", f"#comment-{posted[0]['id']}")
    permalink.click()
    expect(first).to_be_focused()
    assert page.evaluate("location.hash") == f"#comment-{posted[0]['id']}"
    # One comment is marked as the one linked to.
    expect(widget.locator("article.linked")).to_have_count(1)
    expect(first).to_have_class(re.compile(r"\blinked\b"))
    # Read again in another order, the thread leaves the focus on the menu: only opening
    # the address, or changing it, moves it.
    widget.get_by_label("Sort").select_option("newest")
    expect(widget.locator("article")).to_have_count(1)
    expect(widget.get_by_label("Sort")).to_be_focused()
    # Meanwhile the other content's widget read its first page only.
    assert len(pages_of_other) == 1, pages_of_other
    no_csp_trouble(page)


# Combining marks from the blocks "Zalgo" generators draw from, above and below the line.
MARKS_ABOVE = "".join(map(chr, range(0x0300, 0x0315)))
MARKS_BELOW = "".join(map(chr, range(0x0316, 0x0334)))


def test_stacked_combining_marks_stay_inside_their_comment(page, site: HostSite, open_api: Api):
    """A letter under two hundred combining marks draws a tower far above and below its
    line (it is text the API accepts; a name holds fifty). The tower must not cover the
    comments around it, nor the site's page: what the neighbours look like is the same
    with it shown or hidden. Accents stacked two high on a capital still show whole."""
    content = new_content()
    tower = (MARKS_ABOVE + MARKS_BELOW) * 4
    open_api.post(content, "the comment above", author_name="Above")
    tall = open_api.post(content, f"Z{tower} and more", author_name=f"N{MARKS_ABOVE}{MARKS_BELOW}")
    open_api.post(content, "the comment below", author_name="Below")
    # Vietnamese stacks two marks on capitals: clipped text must still show them whole.
    accents = open_api.post(content, "ẤỒỮẶ Ǘ Ḉ g̃ ẤỒỮẶ", author_name="Ấu Ǜ")
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content))
    widget = thread(page)
    expect(widget.locator("article")).to_have_count(4)
    neighbours = [
        widget.locator("li", has_text=f"the comment {where}") for where in ("above", "below")
    ]
    heading = page.locator("h1")

    def looks() -> list[bytes]:
        return [n.screenshot(animations="disabled") for n in [*neighbours, heading]]

    shown = looks()
    page.evaluate(
        "(id) => document.querySelector('comments-thread').shadowRoot"
        ".querySelectorAll(`#comment-${id} .text, #comment-${id} .author`)"
        ".forEach((el) => { el.style.visibility = 'hidden'; })",
        tall["id"],
    )
    hidden = looks()
    assert [a == b for a, b in zip(shown, hidden, strict=True)] == [True, True, True]

    accented = widget.locator(f"#comment-{accents['id']}")
    # Its date's link focused from the keyboard: the focus ring is not clipped either.
    page.keyboard.press("Tab")
    accented.locator(".permalink").focus()
    assert accented.locator(".permalink").evaluate("(el) => el.matches(':focus-visible')")
    clipped = accented.screenshot(animations="disabled")
    page.evaluate(
        "(id) => document.querySelector('comments-thread').shadowRoot"
        ".querySelectorAll(`#comment-${id} .text, #comment-${id} .meta`)"
        ".forEach((el) => { el.style.overflow = 'visible'; })",
        accents["id"],
    )
    assert accented.screenshot(animations="disabled") == clipped, "accents or focus ring clipped"
    no_csp_trouble(page)


def test_runs_of_blank_lines_show_as_one(page, site: HostSite, open_api: Api):
    """A word under hundreds of line breaks (blank lines of spaces or invisible characters
    too) would push the thread pages down: the widget shows one blank line between
    paragraphs and none after the last. The API still returns the text as written."""
    content = new_content()
    # Lines of tag characters (plane 14) print nothing either.
    flood = "\n\t\u200b\n\U000e0041\U000e0042\n" * 600
    body = f"first paragraph{flood}second\r\nline two\n\n\nthird\n\n{' ' * 3}\n"
    posted = open_api.post(content, body)
    open_api.post(content, "one line")
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content))
    widget = thread(page)
    expect(widget.locator("article")).to_have_count(2)
    texts = widget.locator("p.text")
    assert texts.first.text_content() == "first paragraph\n\nsecond\nline two\n\nthird"
    tall, line = (box["height"] for box in (t.bounding_box() or {} for t in texts.all()))
    assert tall <= 6 * line, (tall, line)
    stored = requests.get(f"{open_api.base}/api/v1/comments/{posted['id']}", timeout=5)
    assert stored.json()["body"] == body
    no_csp_trouble(page)


def test_a_long_chain_of_replies_keeps_room_for_its_text(page, site: HostSite, open_api: Api):
    """Each level of replies is indented; a chain twenty replies deep (a heated exchange, or
    a vandal's) would squeeze the last ones to a few letters a line on a phone. Replies
    indent three levels at most; deeper ones still follow the comment they answer, and
    name it with a link to it."""
    content = new_content()
    chain = [open_api.post(content, "level 0", author_name="Writer 0")]
    for level in range(1, 21):
        chain.append(
            open_api.post(
                content, f"level {level}", author_name=f"Writer {level}", parent_id=chain[-1]["id"]
            )
        )
    page.set_viewport_size({"width": 360, "height": 800})
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content))
    widget = thread(page)
    expect(widget.locator("article")).to_have_count(21)
    lefts = [
        (widget.locator(f"#comment-{c['id']} p.text").bounding_box() or {})["x"] for c in chain
    ]
    assert lefts[0] < lefts[1] < lefts[2] < lefts[3], lefts
    assert lefts[3:] == [lefts[3]] * 18, lefts
    # Reading order is the conversation's.
    assert comment_texts(page) == [f"level {level}" for level in range(21)]
    labels = [widget.locator(f"#comment-{c['id']} .reply-to") for c in chain]
    for level in (1, 2, 3):
        expect(labels[level]).to_be_hidden()
    for level in range(4, 21):
        expect(labels[level]).to_have_text(f"in reply to Writer {level - 1}")
    labels[12].click()
    expect(widget.locator(f"#comment-{chain[11]['id']}")).to_be_focused()
    no_csp_trouble(page)


def gap_after_name(widget, comment: dict[str, Any]) -> float:
    """The space between a comment's name and its date, in the page's reading order."""
    name, date = (
        widget.locator(f"#comment-{comment['id']} .meta {part}").bounding_box() or {}
        for part in (".author", "time")
    )
    if date["x"] >= name["x"]:  # left to right: the date on the name's right
        return date["x"] - (name["x"] + name["width"])
    return name["x"] - (date["x"] + date["width"])


@pytest.mark.parametrize("direction", ["rtl", "ltr"])
def test_replies_indent_and_names_stand_apart_in_the_pages_direction(
    page, site: HostSite, open_api: Api, direction: str
):
    """An Arabic or Hebrew site's page is right to left, and so is the widget in it: a reply
    indents from the right, where its lines start, with the thread's line on that side. On
    either page a name stands apart from the date after it, whatever its own script."""
    content = new_content()
    parent = open_api.post(content, "تعليق", author_name="علي")
    reply = open_api.post(content, "Hello", author_name="Sarah", parent_id=parent["id"])
    page.goto(site.thread_page(f"/{content}.html", open_api.base, content, direction=direction))
    widget = thread(page)
    expect(widget.locator("article")).to_have_count(2)
    boxes = [widget.locator(f"#comment-{c['id']}").bounding_box() or {} for c in (parent, reply)]
    lefts = [box["x"] for box in boxes]
    rights = [box["x"] + box["width"] for box in boxes]
    replies = widget.locator(f"#comment-{parent['id']} + ol.replies")
    sides = replies.evaluate(
        "(el) => [getComputedStyle(el).borderLeftWidth, getComputedStyle(el).borderRightWidth]"
    )
    if direction == "rtl":
        assert rights[1] <= rights[0] - 16, rights  # indented from the right
        assert lefts[1] == lefts[0], lefts
        assert sides == ["0px", "3px"], sides
    else:
        assert lefts[1] >= lefts[0] + 16, lefts
        assert rights[1] == rights[0], rights
        assert sides == ["3px", "0px"], sides
    for comment in (parent, reply):
        assert gap_after_name(widget, comment) >= 6, (direction, comment["author"])
    no_csp_trouble(page)


@pytest.mark.parametrize(
    ("lang", "shown"), [("en", "1,234,567 comments"), ("pt-BR", "1.234.567 comentários")]
)
def test_counts_are_written_as_the_readers_language_writes_numbers(
    page, site: HostSite, open_api: Api, lang: str, shown: str
):
    """A busy story's count, in the thread's heading and in a badge, is grouped as the
    page's language groups digits."""
    content = new_content()
    open_api.post(content, "one of many")
    badge = (
        f'<p><a href="#" data-comments-count="{content}">…</a></p>'
        f'<script src="{open_api.base}/widget/count.js" defer></script>'
    )
    url = site.thread_page(f"/{content}.html", open_api.base, content, lang=lang, extra=badge)
    many = json.dumps({"counts": {content: 1234567}})
    page.route("**/api/v1/counts?**", odd_answer(site, 200, many, "application/json"))
    page.goto(url)
    expect(thread(page).locator(".head .meta")).to_have_text(shown)
    expect(page.locator(f'[data-comments-count="{content}"]')).to_have_text(shown)
    no_csp_trouble(page)


# " . " and " ": ids the API refuses (surrounding whitespace) were asked for, and its 400 read
# as "The comments could not be loaded. Try again" under a form that could post nowhere.
@pytest.mark.parametrize("content_id", [".", "..", " . ", " ", "a\u00a0"])
def test_a_dot_content_id_is_named_and_no_thread_is_asked_for(
    page, site: HostSite, open_api: Api, content_id: str
):
    # A URL path resolves "." and ".." away: the thread's request would reach another
    # route (a 404 reported as "could not be loaded"), so the widget names the mistake.
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/v1/" in r.url else None)
    url = site.thread_page(f"/dot-{content_id.encode().hex()}.html", open_api.base, content_id)
    page.goto(url)
    widget = thread(page)
    expect(widget.locator("p.meta")).to_have_text(f'content-id "{content_id}" cannot name a thread')
    expect(widget.locator("form, textarea")).to_have_count(0)
    assert [u for u in asked if "/contents" in u or "/counts" in u] == []


def test_a_percent_content_id_is_a_thread_of_its_own(page, site: HostSite, open_api: Api):
    # "%2E" is no dot segment once encoded ("%252E"): its own thread, not "." nor another route.
    content_id = f"%2E-{uuid.uuid4().hex[:6]}"
    open_api.post(quote(content_id, safe=""), "a comment on a percent id")  # the path's own %
    page.goto(site.thread_page("/percent-id.html", open_api.base, content_id))
    expect(thread(page).locator("article p.text")).to_have_text("a comment on a percent id")
