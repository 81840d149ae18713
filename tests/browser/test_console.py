"""Pre-moderation end to end: a reader's comment waits, a moderator works the queue in the
console at /moderation, and the approved comment appears in the reader's widget."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import SupportsIndex

import pytest
import requests
from playwright.sync_api import expect

from .conftest import Api, HostSite, contrast, dumps, run_axe, screenshot

pytestmark = pytest.mark.browser


def new_content() -> str:
    return f"story-{uuid.uuid4().hex[:8]}"


def sign_in(page, api: Api, credential: str) -> None:
    page.goto(f"{api.base}/moderation")
    page.get_by_label("API key or JWT").fill(credential)
    page.get_by_role("button", name="Sign in").click()


def queue_row(page, text: str):
    return page.locator("#queue-body tr", has_text=text)


def show_queue_of(page, content: str) -> None:
    """Limit the queue to one content and wait until that listing is drawn. A row of the
    content may already be on the listing of every content that signing in drew, so waiting
    for the row alone would let the test go on while the limited listing is on its way."""
    page.get_by_label("Limit to content").fill(content)
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#queue-caption")).to_contain_text(f" of {content}")


def test_pending_comment_is_approved_in_the_console_and_appears_in_the_widget(
    browser, page, site: HostSite, lone_pre_api: Api, axe_source
):
    content = new_content()
    # poll="2": the open widget re-reads the thread's end every 2 s, as a reader's tab would.
    url = site.thread_page(f"/{content}.html", lone_pre_api.base, content, attrs='poll="2"')
    page.goto(url)
    widget = page.locator("comments-thread")
    expect(widget.get_by_text("No comments yet")).to_be_visible()
    widget.get_by_label("Your comment").fill("Please publish me")
    widget.get_by_label("Name (optional)").fill("Waiting Reader")
    widget.get_by_role("button", name="Post comment").click()
    notice = widget.locator(".notice.ok")
    expect(notice).to_have_text(re.compile("awaiting moderation"))
    expect(notice).to_be_focused()
    expect(widget.locator("article")).to_have_count(0)
    expect(widget.get_by_label("Your comment")).to_have_value("")
    screenshot(widget, "widget-pending-notice")

    moderator = browser.new_context(viewport={"width": 1100, "height": 800})
    moderator.set_default_timeout(10_000)
    console = moderator.new_page()
    errors: list[str] = []
    console.on("pageerror", lambda exc: errors.append(str(exc)))
    console.on(
        "response",
        lambda r: r.status >= 400 and not r.url.endswith("/favicon.ico") and errors.append(r.url),
    )
    key = lone_pre_api.key("admin")
    sign_in(console, lone_pre_api, key)
    row = queue_row(console, "Please publish me")
    expect(row).to_be_visible()
    expect(row).to_contain_text("Waiting Reader")
    expect(row).to_contain_text(content)
    # The credential is in this tab's sessionStorage, never in the address.
    assert key not in console.url
    assert console.evaluate("sessionStorage.getItem('comments-api.moderation.credential')") == key
    row.get_by_role("button", name=re.compile(r"^Approve comment")).click()
    expect(console.locator("#message")).to_have_text("Approved 1 comment.")
    expect(row).to_have_count(0)

    # The reader's open widget picks it up without a reload, and announces it.
    expect(widget.locator("article p.text")).to_have_text("Please publish me", timeout=15_000)
    expect(widget.get_by_role("status")).to_have_text("1 new comment.")
    assert errors == [], errors
    moderator.close()


def test_console_approve_leaves_a_comment_its_author_edited_after_the_list_was_read(
    page, lone_pre_api: Api
):
    """Pre-moderation: the moderator read the queue, then the author changed a pending
    comment's text; Approve published the new text, unseen. The console now sends when the
    list was read (`if_unedited_since`, the listing's `read_at`): the comment stays pending and
    is listed anew, with its new text, for the moderator to judge."""
    content = new_content()
    author = lone_pre_api.token("editing-author")
    posted = lone_pre_api.post(content, "a perfectly nice comment", token=author)

    def edit(body: str) -> None:
        response = requests.patch(
            f"{lone_pre_api.base}/api/v1/comments/{posted['id']}",
            json={"body": body},
            headers={"Authorization": f"Bearer {author}"},
            timeout=5,
        )
        assert response.status_code == 200, response.text

    key = lone_pre_api.key("admin")
    sign_in(page, lone_pre_api, key)
    show_queue_of(page, content)
    row = queue_row(page, "a perfectly nice comment")
    expect(row).to_be_visible()
    time.sleep(1.1)  # an older server's Date is to the second: the edit comes a second later
    edit("BUY CHEAP PILLS")
    row.get_by_role("button", name=re.compile(r"^Approve comment")).click()
    expect(page.locator("#message")).to_have_text(
        f"Approved no comment: Comment {posted['id']} is no longer pending as listed "
        "(moderated or edited meanwhile, or gone); the list is shown anew."
    )
    fresh = queue_row(page, "BUY CHEAP PILLS")
    expect(fresh).to_be_visible()
    listed = requests.get(f"{lone_pre_api.base}/api/v1/contents/{content}/comments", timeout=5)
    assert listed.json()["items"] == []  # nothing was published

    # Listed again (a second after the edit), its text is what the moderator approves.
    time.sleep(1.1)
    with page.expect_response(lambda r: "/api/v1/moderation/comments?" in r.url):
        page.get_by_role("button", name="Refresh").click()
    fresh.get_by_role("button", name=re.compile(r"^Approve comment")).click()
    expect(page.locator("#message")).to_have_text("Approved 1 comment.")
    listed = requests.get(f"{lone_pre_api.base}/api/v1/contents/{content}/comments", timeout=5)
    assert [c["body"] for c in listed.json()["items"]] == ["BUY CHEAP PILLS"]


def test_console_bulk_actions_search_bans_and_audit(
    browser, page, site: HostSite, lone_pre_api: Api, axe_source
):
    content, other = new_content(), new_content()
    ids = [
        lone_pre_api.post(content, f"bulk candidate {i}", email=f"r{i}@example.com")["id"]
        for i in range(3)
    ]
    spam = lone_pre_api.post(
        other, "<script>alert('spam')</script> buy now", email="spam@example.com"
    )
    page.set_viewport_size({"width": 1100, "height": 800})

    # A credential without the moderation scope is refused with a reason.
    sign_in(page, lone_pre_api, lone_pre_api.key("comments:write"))
    expect(page.locator("#message")).to_have_text(re.compile("no moderation scope"))
    expect(page.get_by_label("API key or JWT")).to_be_visible()
    violations, _ = run_axe(page, axe_source)
    assert violations == [], dumps(violations)
    # A wrong one too.
    page.get_by_label("API key or JWT").fill("cak_nope_nope")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#message")).to_have_text(re.compile("credential was refused"))

    # A moderator's JWT from the identity provider (not admin): no audit log tab.
    page.get_by_label("API key or JWT").fill(
        lone_pre_api.token("desk-1", scope="comments:moderate")
    )
    page.get_by_role("button", name="Sign in").click()
    expect(queue_row(page, "bulk candidate 2")).to_be_visible()
    expect(page.locator("#who-text")).to_have_text("Signed in with a moderator token.")
    expect(page.get_by_role("tab", name="Audit log")).to_be_hidden()

    # A field is found by its border (WCAG 1.4.11): 3:1 against the page, in both schemes.
    for scheme in ("dark", "light"):
        page.emulate_media(color_scheme=scheme)
        for field in ("#queue-status", "#queue-content", "#queue-search"):
            border, around = page.locator(field).evaluate(
                "(el) => [getComputedStyle(el).borderTopColor,"
                " getComputedStyle(document.body).backgroundColor]"
            )
            assert contrast(border, around) >= 3, (scheme, field, border, around)

    # Markup in a pending comment is text here too.
    expect(queue_row(page, "buy now").locator("td.text")).to_have_text(spam["body"])
    assert page.locator("#queue-body script").count() == 0

    # Search narrows the queue; select all selects only what is shown; bulk hide.
    page.get_by_label("Search the queue").fill(content)
    expect(queue_row(page, "buy now")).to_be_hidden()
    page.get_by_label("Select every comment shown").check()
    expect(page.locator("#selected-count")).to_have_text("3 selected")
    violations, _ = run_axe(page, axe_source)
    assert violations == [], dumps(violations)
    screenshot(page, "console-queue")
    page.get_by_role("button", name="Hide selected").click()
    expect(page.locator("#message")).to_have_text("Hid 3 comments.")
    for i in range(3):
        expect(queue_row(page, f"bulk candidate {i}")).to_have_count(0)
    page.get_by_label("Search the queue").fill("")
    expect(queue_row(page, "buy now")).to_be_visible()

    # Delete asks first; the dialog is accepted.
    page.once("dialog", lambda dialog: dialog.accept())
    queue_row(page, "buy now").get_by_role("button", name=re.compile("^Delete comment")).click()
    expect(page.locator("#message")).to_have_text("Deleted 1 comment.")
    statuses = {
        c["id"]: c["status"]
        for c in requests.get(
            f"{lone_pre_api.base}/api/v1/contents/{content}/comments", timeout=5
        ).json()["items"]
    }
    assert statuses == {}, statuses  # hidden comments are not public
    # Deleted from the queue, never public, no reply: gone, not a public tombstone.
    spam_now = requests.get(f"{lone_pre_api.base}/api/v1/comments/{spam['id']}", timeout=5)
    assert spam_now.status_code == 404

    # Hidden comments of one content, listed by the server: one is published again.
    hidden_elsewhere = lone_pre_api.post(other, "hidden elsewhere", email="h@example.com")
    lone_pre_api.moderate(lone_pre_api.key("comments:moderate"), "hide", [hidden_elsewhere["id"]])
    page.get_by_label("Limit to content").fill(content)
    page.get_by_label("Status").select_option("hidden")
    for i in range(3):
        expect(queue_row(page, f"bulk candidate {i}")).to_be_visible()
    expect(page.locator("#queue-body tr")).to_have_count(3)  # not the other content's
    expect(page.get_by_role("button", name="Hide selected")).to_be_hidden()
    expect(page.get_by_role("button", name=re.compile("^Hide comment"))).to_have_count(0)
    violations, _ = run_axe(page, axe_source)
    assert violations == [], dumps(violations)
    screenshot(page, "console-hidden")
    queue_row(page, "bulk candidate 1").get_by_role(
        "button", name=re.compile("^Publish comment")
    ).click()
    # What the moderator did: published it (the API's action is "approve").
    expect(page.locator("#message")).to_have_text("Published 1 comment.")
    expect(queue_row(page, "bulk candidate 1")).to_have_count(0)
    public = requests.get(f"{lone_pre_api.base}/api/v1/contents/{content}/comments", timeout=5)
    assert [c["body"] for c in public.json()["items"]] == ["bulk candidate 1"]
    # Every content again: the other content's hidden comment is listed too.
    page.get_by_label("Limit to content").fill("")
    page.get_by_role("button", name="Refresh").click()
    expect(queue_row(page, "hidden elsewhere")).to_be_visible()
    expect(queue_row(page, "bulk candidate 1")).to_have_count(0)

    # Bans: add, listed, lift; keyboard through the tabs (arrow keys).
    page.get_by_role("tab", name="Queue").focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Bans")).to_have_attribute("aria-selected", "true")
    page.get_by_label("Email or subject").fill("Troll@Example.com")
    page.get_by_label("Reason (optional)").fill("spam links")
    page.get_by_role("button", name="Ban author").click()
    expect(page.locator("#message")).to_have_text("Banned email:troll@example.com.")
    ban_row = page.locator("#bans-body tr", has_text="email:troll@example.com")
    expect(ban_row).to_contain_text("spam links")
    banned_post = requests.post(
        f"{lone_pre_api.base}/api/v1/contents/{content}/comments",
        json={"body": "still here", "email": "troll@example.com"},
        timeout=5,
    )
    assert banned_post.status_code == 403
    violations, _ = run_axe(page, axe_source)
    assert violations == [], dumps(violations)
    screenshot(page, "console-bans")
    ban_row.get_by_role("button", name="Lift the ban on email:troll@example.com").click()
    expect(page.locator("#message")).to_have_text("Lifted the ban on email:troll@example.com.")
    expect(ban_row).to_have_count(0)
    # A refused address: the field itself says so to a screen reader (aria-invalid), focused;
    # it said so only in the status line. Typing a correction takes it back.
    target_field = page.get_by_label("Email or subject")
    target_field.fill("not an address")
    page.get_by_role("button", name="Ban author").click()
    expect(page.locator("#message")).to_contain_text("must be an email address")
    expect(target_field).to_have_attribute("aria-invalid", "true")
    expect(target_field).to_be_focused()
    expect(page.get_by_label("Reason (optional)")).not_to_have_attribute("aria-invalid", "true")
    violations, _ = run_axe(page, axe_source)
    assert violations == [], dumps(violations)
    target_field.press("Backspace")
    expect(target_field).not_to_have_attribute("aria-invalid", "true")
    target_field.fill("")

    # By content: published comments can be hidden from there.
    published = lone_pre_api.post(content, "approved then hidden", email="ok@example.com")
    lone_pre_api.moderate(lone_pre_api.key("comments:moderate"), "approve", [published["id"]])
    page.get_by_role("tab", name="By content").click()
    page.get_by_label("Content id").fill(content)
    page.get_by_role("button", name="Show its comments").click()
    content_row = page.locator("#content-body tr", has_text="approved then hidden")
    expect(content_row).to_be_visible()
    content_row.get_by_role("button", name=re.compile("^Hide comment")).click()
    expect(content_row).to_have_count(0)
    expect(page.get_by_label("Content id")).to_be_focused()

    # Sign out forgets the credential.
    page.get_by_role("button", name="Sign out").click()
    assert page.evaluate("sessionStorage.length") == 0

    # An admin sees the audit log of all of the above.
    sign_in(page, lone_pre_api, lone_pre_api.key("admin"))
    page.get_by_role("tab", name="Audit log").click()
    audit = page.locator("#audit-body")
    expect(audit.locator("tr").first).to_contain_text("hide")
    text = audit.inner_text()
    for action in ("hide", "delete", "ban", "unban"):
        assert re.search(rf"\b{action}\b", text), (action, text)
    assert all(str(i) in text for i in ids)
    violations, _ = run_axe(page, axe_source)
    assert violations == [], dumps(violations)
    screenshot(page, "console-audit")
    assert not [e for e in page.console_errors if "Content Security Policy" in e]


# What nginx in front of the API answers when the API is down.
PROXY_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"
)


def answer(status: int, body: str, content_type: str):
    """A route handler answering in place of the API, as a proxy in front of it would."""
    return lambda route: route.fulfill(status=status, body=body, content_type=content_type)


# What the console says when a proxy answers 502 with its own page.
UNAVAILABLE = "The server is unavailable right now (HTTP 502). Retry in a moment."


def answer_held_with_502(held: list, message) -> None:
    """The last request ``hold`` kept meets a proxy's 502 page, and the console says so."""
    held.pop().fulfill(status=502, body=PROXY_PAGE, content_type="text/html")
    expect(message).to_have_text(UNAVAILABLE)


class Held(list):
    """The routes ``hold`` keeps. ``pop`` waits (10 s at most) for one to arrive: a click's
    request reaches its route handler only once Playwright next dispatches events, which an
    ``expect`` on the page before it need not have done."""

    def __init__(self, page) -> None:
        super().__init__()
        self.page = page

    def pop(self, index: SupportsIndex = -1):
        deadline = time.monotonic() + 10
        while not self and time.monotonic() < deadline:
            self.page.wait_for_timeout(20)
        return super().pop(index)


def hold(page, pattern: str, method: str = "POST") -> Held:
    """Holds the requests of one method to pattern until the test answers them (continue_,
    fulfill); the others go through."""
    held = Held(page)
    page.route(
        pattern,
        lambda route: held.append(route) if route.request.method == method else route.continue_(),
    )
    return held


def test_console_reports_odd_answers_and_stays_usable(page, lone_pre_api: Api):
    content = new_content()
    # A long name without spaces: the table keeps to the page's width.
    lone_pre_api.post(content, "waiting for a look", author_name="N" * 80, email="w@example.com")
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    page.clock.install()  # timers run as usual until fast-forwarded
    moderation = "**/api/v1/moderation/**"
    message = page.locator("#message")
    key = lone_pre_api.key("comments:moderate")

    # The server is down when the moderator signs in: a sentence and a way to retry.
    page.route(moderation, answer(502, PROXY_PAGE, "text/html"))
    sign_in(page, lone_pre_api, key)
    expect(message).to_have_text(UNAVAILABLE)
    page.unroute(moderation)
    page.get_by_role("button", name="Try again").click()
    row = queue_row(page, "waiting for a look")
    expect(row).to_be_visible()
    expect(page.get_by_role("button", name="Try again")).to_be_hidden()
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths

    # Answers of the wrong shape, to a listing and to an action: said, rows kept. Each
    # click waits for its own answer: the same sentence left by the click before would
    # pass the check early, and the route go while the Approve was still on its way to
    # it, to approve the comment for real (seen once: an empty queue in a later round).
    refresh = page.get_by_role("button", name="Refresh")
    approve = row.get_by_role("button", name=re.compile("^Approve comment"))
    for body in ("{}", "null", "[]"):
        page.route(moderation, answer(200, body, "application/json"))
        for button, method in ((refresh, "GET"), (approve, "POST")):
            page.evaluate("document.getElementById('message').textContent = ''")
            with page.expect_response(
                lambda r, method=method: "/moderation/" in r.url and r.request.method == method
            ) as answered:
                button.click()
            assert answered.value.status == 200
            expect(message).to_have_text(
                re.compile(r"^The server sent an answer the console cannot read")
            )
            expect(row).to_be_visible()
        page.unroute(moderation)
    # A WAF's 403 page, mid-session: a sentence, still signed in.
    page.route(moderation, answer(403, PROXY_PAGE, "text/html"))
    row.get_by_role("button", name=re.compile("^Hide comment")).click()
    expect(message).to_have_text("This credential may not do this (HTTP 403).")
    expect(row).to_be_visible()
    page.unroute(moderation)

    # No answer at all: given up after 30 s, and the next try works.
    held: list = []
    page.route(moderation, lambda route: held.append(route))
    page.get_by_role("button", name="Refresh").click()
    page.wait_for_timeout(200)
    assert len(held) == 1
    page.clock.fast_forward(31_000)
    expect(message).to_have_text(
        "The server did not answer within 30 seconds. Check the connection and retry."
    )
    page.unroute(moderation)
    row.get_by_role("button", name=re.compile("^Approve comment")).click()
    expect(message).to_have_text("Approved 1 comment.")
    expect(row).to_have_count(0)
    assert "nginx" not in page.locator("main").inner_text()
    assert errors == [], errors


def test_console_action_buttons_wait_for_their_answer(page, pre_api: Api):
    content = new_content()
    for text in ("first in line", "second in line", "third in line"):
        pre_api.post(content, text, email="q@example.com")
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    posts: list[str] = []
    page.on(
        "request", lambda r: r.method != "GET" and "/moderation/" in r.url and posts.append(r.url)
    )
    page.clock.install()  # timers run as usual until fast-forwarded
    message = page.locator("#message")
    sign_in(page, pre_api, pre_api.key("comments:moderate"))
    show_queue_of(page, content)
    first, second, third = (queue_row(page, f"{n} in line") for n in ("first", "second", "third"))
    expect(third).to_be_visible()

    # Actions wait for their answer: the row's buttons are disabled until it comes.
    actions = "**/api/v1/moderation/comments"
    held = hold(page, actions)
    approve = first.get_by_role("button", name=re.compile("^Approve comment"))
    approve.click()
    for name in ("Approve", "Hide", "Delete"):
        expect(first.get_by_role("button", name=re.compile(f"^{name} comment"))).to_be_disabled()
    expect(second.get_by_role("button", name=re.compile("^Approve comment"))).to_be_enabled()
    approve.click(force=True)  # a second click sends nothing
    page.wait_for_timeout(200)
    assert len(posts) == 1, posts
    # A failed answer gives them back, with the focus.
    answer_held_with_502(held, message)
    expect(approve).to_be_enabled()
    expect(approve).to_be_focused()
    approve.click()
    expect(approve).to_be_disabled()
    held.pop().continue_()
    expect(message).to_have_text("Approved 1 comment.")
    expect(first).to_have_count(0)
    assert len(posts) == 2, posts

    # No answer: the buttons come back when the console gives up.
    hide = second.get_by_role("button", name=re.compile("^Hide comment"))
    hide.click()
    expect(hide).to_be_disabled()
    page.wait_for_timeout(200)
    page.clock.fast_forward(31_000)
    expect(message).to_have_text(
        "The server did not answer within 30 seconds. Check the connection and retry."
    )
    expect(hide).to_be_enabled()
    held.clear()

    # Bulk: the bulk buttons and the selected rows' buttons wait too.
    second.get_by_role("checkbox").check()
    third.get_by_role("checkbox").check()
    page.get_by_role("button", name="Approve selected").click()
    for name in ("Approve selected", "Hide selected", "Delete selected"):
        expect(page.get_by_role("button", name=name)).to_be_disabled()
    expect(third.get_by_role("button", name=re.compile("^Approve comment"))).to_be_disabled()
    held.pop().continue_()
    expect(message).to_have_text("Approved 2 comments.")
    expect(page.get_by_role("button", name="Approve selected")).to_be_enabled()
    page.unroute(actions)

    # Ban author waits for its answer.
    page.get_by_role("tab", name="Bans").click()
    bans = "**/api/v1/moderation/bans"
    held = hold(page, bans)
    ban = page.get_by_role("button", name="Ban author")
    page.get_by_label("Email or subject").fill("lift@example.com")
    ban.click()
    expect(ban).to_be_disabled()
    page.get_by_label("Email or subject").press("Enter")  # nor does Enter send it again
    page.wait_for_timeout(200)
    assert len(held) == 1, held
    held.pop().continue_()
    expect(message).to_have_text("Banned email:lift@example.com.")
    expect(ban).to_be_enabled()
    page.unroute(bans)

    # Lift ban waits for its answer too.
    lift = page.get_by_role("button", name="Lift the ban on email:lift@example.com")
    held = hold(page, "**/api/v1/moderation/bans/**", "DELETE")
    lift.click()
    expect(lift).to_be_disabled()
    held.pop().continue_()
    expect(message).to_have_text("Lifted the ban on email:lift@example.com.")
    expect(lift).to_have_count(0)
    page.unroute("**/api/v1/moderation/bans/**")

    assert errors == [], errors


def test_console_odd_answers_never_read_undefined(page, pre_api: Api):
    content = new_content()
    pre_api.post(content, "fourth in line", email="q@example.com")
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    sign_in(page, pre_api, pre_api.key("admin"))
    show_queue_of(page, content)
    actions = "**/api/v1/moderation/comments"

    # An action answered with no body at all: a sentence, not a script's error message.
    fourth = queue_row(page, "fourth in line")
    page.route(actions, answer(204, "", "application/json"))
    fourth.get_by_role("button", name=re.compile("^Approve comment")).click()
    expect(message).to_have_text(re.compile(r"^The server sent an answer the console cannot read"))
    page.unroute(actions)
    # A listing with entries that are not comments: those are left out, the rest shown.
    odd_list = {
        "items": [
            None,
            7,
            {"id": 987654, "body": "the odd list's comment", "content_id": content},
        ],
        "next_cursor": None,
    }
    page.route(
        "**/api/v1/moderation/comments?*", answer(200, json.dumps(odd_list), "application/json")
    )
    page.get_by_role("button", name="Refresh").click()
    expect(queue_row(page, "the odd list's comment")).to_be_visible()
    expect(page.locator("#queue-body tr")).to_have_count(1)
    page.unroute("**/api/v1/moderation/comments?*")

    # A ban answered without the ban's name says what was typed (as the API would name it).
    page.get_by_role("tab", name="Bans").click()
    bans = "**/api/v1/moderation/bans"
    ban = page.get_by_role("button", name="Ban author")

    def to_posts(handler):
        # Only the ban itself meets the odd answer; the listing that follows is the API's.
        return lambda route: handler(route) if route.request.method == "POST" else route.continue_()

    page.route(bans, to_posts(answer(201, "{}", "application/json")))
    page.get_by_label("Email or subject").fill(" Odd@Example.com ")
    ban.click()
    expect(message).to_have_text("Banned email:odd@example.com.")
    page.unroute(bans)
    # A refusal whose errors name no field.
    refusal = {"title": "Invalid input", "errors": [{"message": "must be an email address"}]}
    page.route(bans, to_posts(answer(400, json.dumps(refusal), "application/problem+json")))
    page.get_by_label("Email or subject").fill("not-an-address")
    ban.click()
    expect(message).to_have_text("The request failed (HTTP 400): must be an email address")
    page.unroute(bans)

    # Bans and audit entries of odd shapes: no "undefined", no script error.
    odd_bans = {"items": [None, {"reason": "no target"}, {"target": "email:x@example.com"}]}
    page.route(f"{bans}?*", answer(200, json.dumps(odd_bans), "application/json"))
    page.get_by_role("tab", name="Queue").click()
    page.get_by_role("tab", name="Bans").click()
    expect(page.locator("#bans-body tr")).to_have_count(1)
    page.unroute(f"{bans}?*")
    odd_audit = {
        "items": [{"actor": "key:desk", "action": "hide", "comment_ids": "1,2", "target": None}],
        "next_cursor": None,
    }
    page.route(
        "**/api/v1/admin/audit-log?*", answer(200, json.dumps(odd_audit), "application/json")
    )
    page.get_by_role("tab", name="Audit log").click()
    expect(page.locator("#audit-body tr")).to_have_count(1)
    expect(page.locator("#audit-body tr")).to_contain_text("key:desk")
    assert "undefined" not in page.locator("main").inner_text()
    assert errors == [], errors


def test_console_row_and_bulk_actions_on_one_comment_do_not_overlap(page, pre_api: Api):
    content = new_content()
    ids = [pre_api.post(content, f"{n} overlap", email="o@example.com")["id"] for n in range(3)]
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    sent: list = []
    page.on(
        "request",
        lambda r: (
            r.method == "POST"
            and r.url.endswith("/moderation/comments")
            and sent.append(r.post_data_json["ids"])
        ),
    )
    message = page.locator("#message")
    sign_in(page, pre_api, pre_api.key("comments:moderate"))
    show_queue_of(page, content)
    zero, one, two = (queue_row(page, f"{n} overlap") for n in range(3))
    expect(two).to_be_visible()
    held = hold(page, "**/api/v1/moderation/comments")

    # A row action on its way: the row cannot be selected for another action meanwhile.
    zero.get_by_role("checkbox").check()
    zero.get_by_role("button", name=re.compile("^Approve comment")).click()
    expect(zero.get_by_role("checkbox")).to_be_disabled()
    expect(zero.get_by_role("button", name=re.compile("^Hide comment"))).to_be_disabled()
    # A bulk action of only that comment sends nothing, and says why.
    page.get_by_role("button", name="Approve selected").click()
    expect(message).to_have_text(
        f"An action on comment {ids[0]} is still on its way; wait for its answer."
    )
    # With another one, the bulk action leaves it out.
    one.get_by_role("checkbox").check()
    page.get_by_role("button", name="Hide selected").click()
    page.wait_for_timeout(200)
    assert sent == [[ids[0]], [ids[1]]], sent
    held.pop().continue_()
    expect(message).to_have_text(
        f"Hid 1 comment. 1 left out (an action on it is still on its way): {ids[0]}."
    )
    expect(one).to_have_count(0)
    # A refresh meanwhile draws the row anew, still waiting.
    page.get_by_role("button", name="Refresh").click()
    expect(zero.get_by_role("button", name=re.compile("^Hide comment"))).to_be_disabled()
    expect(zero.get_by_role("checkbox")).to_be_disabled()
    expect(two.get_by_role("checkbox")).to_be_enabled()
    held.pop().continue_()
    expect(message).to_have_text("Approved 1 comment.")
    expect(zero).to_have_count(0)

    # A bulk action on its way: its rows' buttons and checkboxes wait too.
    two.get_by_role("checkbox").check()
    page.get_by_role("button", name="Approve selected").click()
    expect(two.get_by_role("checkbox")).to_be_disabled()
    expect(two.get_by_role("button", name=re.compile("^Approve comment"))).to_be_disabled()
    held.pop().continue_()
    expect(message).to_have_text("Approved 1 comment.")
    expect(two).to_have_count(0)
    page.unroute("**/api/v1/moderation/comments")
    assert sent == [[ids[0]], [ids[1]], [ids[2]]], sent
    assert errors == [], errors


def test_console_by_content_buttons_wait_for_their_answer(page, pre_api: Api):
    content = new_content()
    key = pre_api.key("comments:moderate")
    published = pre_api.post(content, "published, then moderated", email="p@example.com")
    pre_api.moderate(key, "approve", [published["id"]])
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    sent: list = []
    page.on(
        "request",
        lambda r: r.method == "POST" and r.url.endswith("/moderation/comments") and sent.append(1),
    )
    message = page.locator("#message")
    sign_in(page, pre_api, key)
    page.get_by_role("tab", name="By content").click()
    page.get_by_label("Content id").fill(content)
    page.get_by_role("button", name="Show its comments").click()
    row = page.locator(f'#content-body tr[data-id="{published["id"]}"]')
    hide = row.get_by_role("button", name=re.compile("^Hide comment"))
    delete = row.get_by_role("button", name=re.compile("^Delete comment"))
    expect(hide).to_be_visible()
    held = hold(page, "**/api/v1/moderation/comments")

    hide.click()
    expect(hide).to_be_disabled()
    expect(delete).to_be_disabled()
    hide.click(force=True)  # a second click sends nothing
    page.wait_for_timeout(200)
    assert len(sent) == 1, sent
    # A failed answer gives them back, with the focus.
    answer_held_with_502(held, message)
    expect(hide).to_be_enabled()
    expect(delete).to_be_enabled()
    expect(hide).to_be_focused()

    page.once("dialog", lambda dialog: dialog.accept())
    delete.click()
    expect(hide).to_be_disabled()
    expect(delete).to_be_disabled()
    held.pop().continue_()
    expect(message).to_have_text("Deleted 1 comment.")
    expect(row.locator("td").first).to_have_text("(removed)")
    page.unroute("**/api/v1/moderation/comments")
    assert len(sent) == 2, sent
    assert errors == [], errors


def test_console_focus_after_an_action_stays_where_the_moderator_went(page, pre_api: Api):
    content = new_content()
    for n in range(4):
        pre_api.post(content, f"{n} focus", email="f@example.com")
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    sign_in(page, pre_api, pre_api.key("comments:moderate"))
    show_queue_of(page, content)
    zero, one, two, three = (queue_row(page, f"{n} focus") for n in range(4))
    expect(three).to_be_visible()
    held = hold(page, "**/api/v1/moderation/comments")

    # The moderator moved on to the search box while the answer came: the focus stays there.
    zero.get_by_role("button", name=re.compile("^Approve comment")).click()
    search = page.get_by_label("Search the queue")
    search.click()
    search.press_sequentially("focus")
    held.pop().continue_()
    expect(message).to_have_text("Approved 1 comment.")
    expect(zero).to_have_count(0)
    expect(search).to_be_focused()
    expect(search).to_have_value("focus")

    # Two rows on their way: the first answer moves the focus past the second, still waiting.
    one.get_by_role("button", name=re.compile("^Approve comment")).click()
    two.get_by_role("button", name=re.compile("^Hide comment")).click()
    expect(two.get_by_role("button", name=re.compile("^Hide comment"))).to_be_disabled()
    held.pop(0).continue_()
    expect(message).to_have_text("Approved 1 comment.")
    approve_three = three.get_by_role("button", name=re.compile("^Approve comment"))
    expect(approve_three).to_be_focused()
    # The second answer leaves the moderator on the row they are at.
    page.keyboard.press("Tab")
    hide_three = three.get_by_role("button", name=re.compile("^Hide comment"))
    expect(hide_three).to_be_focused()
    held.pop().continue_()
    expect(message).to_have_text("Hid 1 comment.")
    expect(two).to_have_count(0)
    expect(hide_three).to_be_focused()
    page.unroute("**/api/v1/moderation/comments")
    assert errors == [], errors


def test_console_a_comment_hidden_while_the_hidden_view_opened_stays_listed(page, pre_api: Api):
    """The moderator hides a comment and opens the Hidden view before the answer comes;
    that view's listing already shows the comment (hidden by then): the answer must not
    take its row away, nor leave it disabled."""
    content = new_content()
    pre_api.post(content, "hide me late", email="h@example.com")
    errors = page.page_errors
    message = page.locator("#message")
    sign_in(page, pre_api, pre_api.key("comments:moderate"))
    show_queue_of(page, content)
    row = queue_row(page, "hide me late")
    expect(row).to_be_visible()
    held = hold(page, "**/api/v1/moderation/comments")
    row.get_by_role("button", name=re.compile("^Hide comment")).click()
    expect(row.get_by_role("button", name=re.compile("^Hide comment"))).to_be_disabled()
    for _ in range(100):  # bounded: 10 s for the console's request to reach the route
        if held:
            break
        page.wait_for_timeout(100)
    assert held, "the hide was never sent"
    route = held.pop()
    done = route.fetch()  # the server hides it now; the console gets the answer later
    page.get_by_label("Status").select_option("hidden")
    expect(page.locator("#queue-caption")).to_contain_text("Hidden comments")
    expect(row).to_be_visible()
    route.fulfill(response=done)
    expect(message).to_have_text("Hid 1 comment.")
    expect(row).to_be_visible()
    expect(row.get_by_role("button", name=re.compile("^Publish comment"))).to_be_enabled()
    page.unroute("**/api/v1/moderation/comments")
    assert errors == [], errors


def test_console_sign_out_leaves_nothing_of_the_session(page, pre_api: Api):
    content = new_content()
    admin = pre_api.key("admin")
    pre_api.post(content, "read before sign-out", email="private-reader@example.com")
    gone = pre_api.post(content, "hidden for the audit log", email="h@example.com")
    pre_api.moderate(admin, "hide", [gone["id"]])
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    sign_in(page, pre_api, admin)
    show_queue_of(page, content)
    expect(queue_row(page, "read before sign-out")).to_be_visible()
    page.get_by_role("tab", name="Audit log").click()
    expect(page.locator("#audit-body tr").first).to_be_visible()

    # Signed out on the audit log; a credential without admin scope signs in next.
    page.get_by_role("button", name="Sign out").click()
    for body in ("queue-body", "audit-body"):
        expect(page.locator(f"#{body} tr")).to_have_count(0)
    assert "private-reader@example.com" not in page.content()
    # In the same page (sign_in would load it anew).
    page.get_by_label("API key or JWT").fill(pre_api.key("comments:moderate"))
    page.get_by_role("button", name="Sign in").click()
    expect(queue_row(page, "read before sign-out")).to_be_visible()
    expect(page.get_by_role("tab", name="Audit log")).to_be_hidden()
    expect(page.locator("#panel-audit")).to_be_hidden()
    expect(page.get_by_role("tab", name="Queue")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("tab", name="Queue")).to_be_focused()

    # The credential is refused mid-session (revoked) on another tab: signed in again, the
    # console starts at the queue, not at that tab's old list.
    page.get_by_role("tab", name="Bans").click()
    expect(page.locator("#panel-bans")).to_be_visible()
    refused = {"title": "Unauthorized", "status": 401, "detail": "invalid credential"}
    bans = "**/api/v1/moderation/bans?*"  # the listing (a page of it)
    page.route(bans, answer(401, json.dumps(refused), "application/problem+json"))
    page.get_by_role("tab", name="Queue").click()
    page.get_by_role("tab", name="Bans").click()
    expect(message).to_have_text(re.compile("credential was refused"))
    page.unroute(bans)
    page.get_by_label("API key or JWT").fill(pre_api.key("comments:moderate"))
    page.get_by_role("button", name="Sign in").click()
    expect(queue_row(page, "read before sign-out")).to_be_visible()
    expect(page.locator("#panel-bans")).to_be_hidden()
    expect(page.locator("#panel-queue")).to_be_visible()
    expect(page.get_by_role("tab", name="Queue")).to_be_focused()
    assert errors == [], errors


def test_console_keeps_to_the_page_width_with_the_longest_content_id(page, pre_api: Api):
    longest = new_content().ljust(128, "x")  # the API's limit; no break opportunity in it
    page.set_viewport_size({"width": 900, "height": 800})
    errors = page.page_errors
    sign_in(page, pre_api, pre_api.key("comments:moderate"))
    page.get_by_label("Limit to content").fill(longest)
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#queue-empty")).to_have_text(
        f"No comments are waiting for moderation for content {longest}."
    )
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    pre_api.post(longest, "on the longest content", email="l@example.com")
    page.get_by_role("button", name="Refresh").click()
    expect(queue_row(page, "on the longest content")).to_be_visible()
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    assert errors == [], errors


def test_console_empty_states_after_the_last_row_goes(page, pre_api: Api):
    content, other = new_content(), new_content()
    key = pre_api.key("comments:moderate")
    published = pre_api.post(other, "the only public one", email="e@example.com")
    pre_api.moderate(key, "approve", [published["id"]])
    # One more than a page waits.
    for n in range(51):
        pre_api.post(content, f"waiting {n:02}", email=f"e{n}@example.com")
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    sign_in(page, pre_api, key)
    show_queue_of(page, content)
    expect(page.locator("#queue-body tr")).to_have_count(50)
    empty = page.locator("#queue-empty")
    expect(empty).to_be_hidden()

    # The loaded page done, with more on the server: not "none waiting".
    page.get_by_label("Select every comment shown").check()
    page.get_by_role("button", name="Approve selected").click()
    expect(message).to_have_text("Approved 50 comments.")
    expect(empty).to_have_text("Every loaded comment is done; “Load more” shows the next ones.")
    page.get_by_role("button", name="Load more").click()
    expect(queue_row(page, "waiting 50")).to_be_visible()
    expect(empty).to_be_hidden()
    queue_row(page, "waiting 50").get_by_role("button", name=re.compile("^Approve")).click()
    expect(empty).to_have_text(f"No comments are waiting for moderation for content {content}.")

    # By content: hiding the last public comment says there is none, not an empty table.
    page.get_by_role("tab", name="By content").click()
    page.get_by_label("Content id").fill(other)
    page.get_by_role("button", name="Show its comments").click()
    row = page.locator("#content-body tr", has_text="the only public one")
    row.get_by_role("button", name=re.compile("^Hide comment")).click()
    expect(message).to_have_text("Hid 1 comment.")
    expect(row).to_have_count(0)
    expect(page.locator("#content-empty")).to_have_text("This content has no public comments.")
    expect(page.locator("#content-table")).to_be_hidden()
    assert errors == [], errors


def test_console_load_more_waits_for_its_page(page, pre_api: Api):
    content = new_content()
    admin = pre_api.key("admin")
    # 51 public comments, approved one by one: as many audit log entries.
    for n in range(51):
        posted = pre_api.post(content, f"public {n:02}", email=f"m{n}@example.com")
        pre_api.moderate(admin, "approve", [posted["id"]])
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    sign_in(page, pre_api, admin)
    more = page.get_by_role("button", name="Load more")

    page.get_by_role("tab", name="By content").click()
    page.get_by_label("Content id").fill(content)
    page.get_by_role("button", name="Show its comments").click()
    expect(page.locator("#content-body tr")).to_have_count(50)
    held = hold(page, "**/comments?*cursor=*", "GET")
    more.focus()
    page.keyboard.press("Enter")
    expect(more).to_be_disabled()
    more.click(force=True)  # a second click asks for nothing
    page.wait_for_timeout(200)
    assert len(held) == 1, held
    held.pop().continue_()
    expect(page.locator("#content-body tr")).to_have_count(51)
    expect(more).to_be_hidden()
    # The last page: the keyboard goes on at the row it brought, not from nowhere.
    last = page.locator("#content-body tr", has_text="public 50")
    expect(last.get_by_role("button", name=re.compile("^Hide comment"))).to_be_focused()
    page.unroute("**/comments?*cursor=*")

    page.get_by_role("tab", name="Audit log").click()
    expect(page.locator("#audit-body tr")).to_have_count(50)
    held = hold(page, "**/audit-log?*cursor=*", "GET")
    more.click()
    expect(more).to_be_disabled()
    more.click(force=True)
    page.wait_for_timeout(200)
    assert len(held) == 1, held
    held.pop().continue_()
    expect(page.locator("#audit-body tr").nth(50)).to_be_visible()
    page.unroute("**/audit-log?*cursor=*")
    assert errors == [], errors


def test_console_empty_tables_leave_no_scroll_box_in_the_tab_order(page, lone_pre_api: Api):
    # Each table scrolls in a focusable box (WCAG 1.4.10); with no rows the box was still a
    # tab stop around a bare header row, on the queue, the bans and the audit log.
    def box_shown(table: str) -> bool:
        return page.locator(table).evaluate(
            "(el) => getComputedStyle(el.parentElement).display !== 'none'"
        )

    sign_in(page, lone_pre_api, lone_pre_api.key("admin"))
    expect(page.locator("#queue-empty")).to_be_visible()
    assert not box_shown("#queue-table")
    page.get_by_role("tab", name="Bans").click()
    expect(page.locator("#bans-empty")).to_be_visible()
    assert not box_shown("#bans-table")
    page.get_by_label("Email or subject").fill("troll@example.com")
    page.get_by_role("button", name="Ban author").click()
    expect(page.locator("#bans-body tr")).to_have_count(1)
    assert box_shown("#bans-table")
    page.get_by_role("button", name="Lift the ban on email:troll@example.com").click()
    expect(page.locator("#bans-empty")).to_be_visible()
    assert not box_shown("#bans-table")
    # A comment arrives: the queue's table and its box come back.
    lone_pre_api.post(new_content(), "now there is one", email="r@example.com")
    page.get_by_role("tab", name="Queue").click()
    page.get_by_role("button", name="Refresh").click()
    expect(queue_row(page, "now there is one")).to_be_visible()
    assert box_shown("#queue-table")
    assert page.page_errors == []


def test_console_refresh_shows_it_is_on_its_way_until_it_ends(page, pre_api: Api, axe_source):
    content = new_content()
    pre_api.post(content, "refresh me", email="r@example.com")
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    page.clock.install()  # timers run as usual until fast-forwarded
    message = page.locator("#message")
    key = pre_api.key("comments:moderate")
    sign_in(page, pre_api, key)
    expect(page.get_by_role("tab", name="Queue")).to_be_focused()  # its first listing drawn
    refresh = page.locator("#queue-refresh")
    table = page.locator("#queue-table")
    progress = page.locator("#queue-progress")  # role=status, visually hidden
    held = hold(page, "**/api/v1/moderation/comments?*", "GET")
    page.get_by_label("Limit to content").fill(content)

    def on_its_way() -> None:
        expect(refresh).to_be_disabled()
        expect(refresh).to_have_text("Refreshing…")
        expect(table).to_have_attribute("aria-busy", "true")
        expect(progress).to_have_text("Loading the queue…")

    def answered(route) -> None:
        """An older listing answers now; the console has read it."""
        with page.expect_response(route.request.url):
            route.continue_()
        page.wait_for_timeout(200)

    def ended(said: str = "") -> None:
        expect(refresh).to_be_enabled()
        expect(refresh).to_have_text("Refresh")
        expect(table).not_to_have_attribute("aria-busy", "true")
        expect(progress).to_have_text(said)

    # A double click lists once; the end says what came, and the keyboard is back on Refresh.
    refresh.dblclick()
    on_its_way()
    assert page.locator("#queue-progress[role=status]").count() == 1
    violations, _ = run_axe(page, axe_source)
    assert violations == [], dumps(violations)
    page.wait_for_timeout(200)
    assert len(held) == 1, held
    held.pop().continue_()
    expect(queue_row(page, "refresh me")).to_be_visible()
    ended("1 pending comment listed.")
    expect(refresh).to_be_focused()

    # A proxy's 502: said, and the busy state ends. Enter in the form meanwhile lists nothing
    # more, and the keyboard stays where the moderator went.
    refresh.click()
    on_its_way()
    field = page.get_by_label("Limit to content")
    field.press("Enter")
    page.wait_for_timeout(200)
    assert len(held) == 1, held
    answer_held_with_502(held, message)
    ended()
    expect(field).to_be_focused()
    expect(queue_row(page, "refresh me")).to_be_visible()

    # No answer: it ends when the console gives up.
    refresh.click()
    on_its_way()
    page.wait_for_timeout(200)
    page.clock.fast_forward(31_000)
    expect(message).to_have_text(
        "The server did not answer within 30 seconds. Check the connection and retry."
    )
    ended()
    held.clear()

    # Status changed while a refresh is on its way: it ends with the latest listing, not the
    # first answer.
    refresh.click()
    on_its_way()
    page.get_by_label("Status").select_option("hidden")
    page.wait_for_timeout(200)
    assert len(held) == 2, held
    answered(held.pop(0))
    on_its_way()
    held.pop().continue_()
    ended("0 hidden comments listed.")
    page.get_by_label("Status").select_option("pending")
    page.wait_for_timeout(200)
    held.pop().continue_()
    ended("1 pending comment listed.")

    # Signed out mid-refresh: ended, and the old answer does not end the next sign-in's.
    refresh.click()
    on_its_way()
    page.get_by_role("button", name="Sign out").click()
    ended()
    page.get_by_label("API key or JWT").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#app")).to_be_visible()
    on_its_way()
    page.wait_for_timeout(200)
    assert len(held) == 2, held
    answered(held.pop(0))
    on_its_way()
    held.pop().continue_()
    ended("1 pending comment listed.")

    # The refresh itself refused (a revoked credential): signed out, ended.
    refresh.click()
    on_its_way()
    refused = {"title": "Unauthorized", "status": 401, "detail": "invalid credential"}
    page.wait_for_timeout(200)
    held.pop().fulfill(
        status=401, body=json.dumps(refused), content_type="application/problem+json"
    )
    expect(message).to_have_text(re.compile("credential was refused"))
    ended()
    page.unroute("**/api/v1/moderation/comments?*")
    assert errors == [], errors


def test_console_draws_only_the_latest_listing_asked(page, pre_api: Api):
    first, second = new_content(), new_content()
    key = pre_api.key("comments:moderate")
    for content in (first, second):
        pre_api.post(content, f"pending on {content}", email="s@example.com")
        published = pre_api.post(content, f"public on {content}", email="s@example.com")
        pre_api.moderate(key, "approve", [published["id"]])
        hidden = pre_api.post(content, f"hidden on {content}", email="s@example.com")
        pre_api.moderate(key, "hide", [hidden["id"]])
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    sign_in(page, pre_api, key)
    expect(page.locator("#queue-body tr").first).to_be_visible()

    def late(held: list, content: str) -> None:
        """The held listing of content answers now, after the other one."""
        with page.expect_response(lambda r: content in r.url):
            next(route for route in held if content in route.request.url).continue_()
        page.wait_for_timeout(200)

    # A slow listing of the first content, then a quick one of the second: the second stays.
    # (Refresh and the Queue tab wait for the listing on its way; a change of Status lists anew.)
    listings = "**/api/v1/moderation/comments?*"
    held = hold(page, listings, "GET")
    page.get_by_label("Limit to content").fill(first)
    page.get_by_role("button", name="Refresh").click()
    expect(page.get_by_role("button", name="Refresh")).to_be_disabled()
    page.get_by_label("Limit to content").fill(second)
    page.get_by_label("Status").select_option("hidden")
    page.wait_for_timeout(200)
    assert len(held) == 2, held
    late(held, second)
    expect(queue_row(page, f"hidden on {second}")).to_be_visible()
    late(held, first)
    expect(page.locator("#queue-body tr")).to_have_count(1)
    expect(queue_row(page, f"hidden on {second}")).to_be_visible()
    page.unroute(listings)

    # By content: "Show its comments" waits for its listing, so what can answer late there is
    # a "Load more" page asked before another content's listing. It is not added to that one.
    page.get_by_role("tab", name="By content").click()
    listings = "**/api/v1/moderation/comments?status=published*"
    held = []

    def first_has_more(route) -> None:
        if "cursor=" in route.request.url:
            held.append(route)
        elif first in route.request.url:
            # The real first page, said to have more (as a 51st comment would).
            response = route.fetch()
            route.fulfill(response=response, json={**response.json(), "next_cursor": "more"})
        else:
            route.continue_()

    page.route(listings, first_has_more)
    page.get_by_label("Content id").fill(first)
    page.get_by_role("button", name="Show its comments").click()
    expect(page.locator("#content-body tr", has_text=f"public on {first}")).to_be_visible()
    page.get_by_role("button", name="Load more").click()
    page.wait_for_timeout(200)
    assert len(held) == 1, held
    page.get_by_label("Content id").fill(second)
    page.get_by_role("button", name="Show its comments").click()
    expect(page.locator("#content-body tr", has_text=f"public on {second}")).to_be_visible()
    late_page = {
        "items": [{"id": 987654, "body": f"late page of {first}", "status": "published"}],
        "next_cursor": None,
    }
    with page.expect_response(lambda r: "cursor=" in r.url):
        held.pop().fulfill(json=late_page)
    page.wait_for_timeout(200)
    expect(page.locator("#content-body tr")).to_have_count(1)
    expect(page.locator("#content-body tr", has_text=f"public on {second}")).to_be_visible()
    page.unroute(listings)
    assert errors == [], errors


@pytest.mark.parametrize(
    ("status", "button", "done"),
    [("pending", "Approve selected", "Approved"), ("hidden", "Publish selected", "Published")],
)
def test_console_bulk_action_failing_half_way_says_what_it_did(
    page, pre_api: Api, status: str, button: str, done: str
):
    content = new_content()
    key = pre_api.key("comments:moderate")
    # One more than a call's 100 ids (distinct authors: at most 20 each on one content).
    ids = [
        pre_api.post(content, f"bulk {n:03}", email=f"b{n}@example.com")["id"] for n in range(101)
    ]
    if status == "hidden":
        for part in (ids[:100], ids[100:]):
            pre_api.moderate(key, "hide", part)
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    sign_in(page, pre_api, key)
    page.get_by_label("Limit to content").fill(content)
    page.get_by_label("Status").select_option(status)
    page.get_by_role("button", name="Refresh").click()
    for _ in range(2):
        page.get_by_role("button", name="Load more").click()
    expect(page.locator("#queue-body tr")).to_have_count(101)
    page.get_by_label("Select every comment shown").check()
    expect(page.locator("#selected-count")).to_have_text("101 selected")

    # The first call of 100 ids is answered, the second meets a proxy's 502.
    calls: list = []
    actions: set = set()

    def second_fails(route) -> None:
        calls.append(route.request.post_data_json["ids"])
        actions.add(route.request.post_data_json["action"])
        if len(calls) == 1:
            route.continue_()
        else:
            route.fulfill(status=502, body=PROXY_PAGE, content_type="text/html")

    page.route("**/api/v1/moderation/comments", second_fails)
    page.get_by_role("button", name=button).click()
    # Hidden ones are published: said so, for the answered call and the failed one alike.
    expect(message).to_have_text(f"{done} 100 comments. 1 more failed: {UNAVAILABLE}")
    assert [len(part) for part in calls] == [100, 1], calls
    assert actions == {"approve"}, actions
    expect(page.locator("#queue-body tr")).to_have_count(1)
    expect(queue_row(page, "bulk 100")).to_be_visible()
    page.unroute("**/api/v1/moderation/comments")
    # The retry is of that one alone, and it is not "unchanged".
    page.get_by_role("button", name=button).click()
    expect(message).to_have_text(f"{done} 1 comment.")
    counts = requests.get(f"{pre_api.base}/api/v1/counts?content_id={content}", timeout=5)
    assert counts.json()["counts"] == {content: 101}, counts.text  # all of them public now
    assert errors == [], errors


def test_console_says_when_the_audit_log_is_empty(page, required_api: Api):
    # No test moderates on this server: its audit log is empty, as on a fresh install.
    admin = required_api.key("admin")
    log = requests.get(
        f"{required_api.base}/api/v1/admin/audit-log",
        headers={"Authorization": f"Bearer {admin}"},
        timeout=5,
    )
    assert log.json()["items"] == [], log.text
    errors = page.page_errors
    sign_in(page, required_api, admin)
    page.get_by_role("tab", name="Audit log").click()
    expect(page.locator("#audit-empty")).to_have_text("No moderation action has been logged yet.")
    expect(page.locator("#audit-empty")).to_be_visible()
    assert errors == [], errors


def test_console_sign_in_takes_a_pasted_authorization_value(page, pre_api: Api):
    errors = page.page_errors
    message = page.locator("#message")
    # Blanks only: said, not silently ignored.
    sign_in(page, pre_api, "   ")
    expect(message).to_have_text("Paste an API key or a JWT first.")
    expect(page.get_by_label("API key or JWT")).to_be_focused()
    # Copied with its scheme from a request's Authorization header.
    page.get_by_label("API key or JWT").fill(f"Bearer {pre_api.key('comments:moderate')}")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who-text")).to_have_text("Signed in with an API key.")
    assert errors == [], errors


def test_console_try_again_keeps_the_focus_while_the_server_is_down(page, pre_api: Api):
    errors = page.page_errors
    message = page.locator("#message")
    moderation = "**/api/v1/moderation/**"
    page.route(moderation, answer(502, PROXY_PAGE, "text/html"))
    sign_in(page, pre_api, pre_api.key("comments:moderate"))
    retry = page.get_by_role("button", name="Try again")
    expect(retry).to_be_visible()
    # Still down: the keyboard stays on "Try again", for the next press.
    retry.focus()
    page.keyboard.press("Enter")
    expect(message).to_have_text(UNAVAILABLE)
    expect(retry).to_be_focused()
    page.unroute(moderation)
    page.keyboard.press("Enter")
    expect(page.get_by_role("tab", name="Queue")).to_be_focused()
    # Through at last: "The server is unavailable" no longer stands over the queue.
    expect(message).to_have_text("")
    assert errors == [], errors


def test_console_lifting_a_ban_lifted_meanwhile_says_so(page, pre_api: Api):
    key = pre_api.key("comments:moderate")
    for who in ("gone", "kept"):
        pre_api.ban(key, f"{who}@example.com")
    errors = page.page_errors
    message = page.locator("#message")
    sign_in(page, pre_api, key)
    page.get_by_role("tab", name="Bans").click()
    gone = page.get_by_role("button", name="Lift the ban on email:gone@example.com")
    expect(gone).to_be_visible()

    # Another moderator lifts it first: the API's 404. Not "Lifted": this moderator did not.
    lifted = requests.delete(
        f"{pre_api.base}/api/v1/moderation/bans/email:gone@example.com",
        headers={"Authorization": f"Bearer {key}"},
        timeout=5,
    )
    assert lifted.status_code == 204, lifted.text
    gone.click()
    expect(message).to_have_text("email:gone@example.com was no longer banned (lifted meanwhile).")
    expect(gone).to_have_count(0)

    # A proxy's 404 page is a failure, not a lifted ban: said, the row stays.
    kept = page.get_by_role("button", name="Lift the ban on email:kept@example.com")
    page.route("**/api/v1/moderation/bans/**", answer(404, PROXY_PAGE, "text/html"))
    kept.click()
    expect(message).to_have_text("The request failed (HTTP 404).")
    expect(kept).to_be_enabled()
    page.unroute("**/api/v1/moderation/bans/**")
    kept.click()
    expect(message).to_have_text("Lifted the ban on email:kept@example.com.")
    expect(kept).to_have_count(0)
    assert errors == [], errors


def test_console_an_error_goes_once_the_same_listing_gets_through(page, pre_api: Api):
    content = new_content()
    pre_api.post(content, "first after the outage", email="u@example.com")
    pre_api.post(content, "second after the outage", email="u@example.com")
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    sign_in(page, pre_api, pre_api.key("comments:moderate"))
    page.get_by_label("Limit to content").fill(content)
    refresh = page.get_by_role("button", name="Refresh")
    refresh.click()
    first = queue_row(page, "first after the outage")
    expect(first).to_be_visible()
    listings = "**/api/v1/moderation/comments?*"
    down = answer(502, PROXY_PAGE, "text/html")

    # Refresh meets a proxy's 502, then gets through: the error goes.
    page.route(listings, down)
    refresh.click()
    expect(message).to_have_text(UNAVAILABLE)
    page.unroute(listings)
    refresh.click()
    expect(refresh).to_have_text("Refresh")
    expect(message).to_have_text("")
    expect(message).to_be_hidden()

    # Something said since (an action's result) stays: it is not the listing's to take back.
    page.route(listings, down)
    refresh.click()
    expect(message).to_have_text(UNAVAILABLE)
    page.unroute(listings)
    first.get_by_role("button", name=re.compile("^Approve comment")).click()
    expect(message).to_have_text("Approved 1 comment.")
    refresh.click()
    expect(queue_row(page, "second after the outage")).to_be_visible()
    expect(refresh).to_have_text("Refresh")
    expect(message).to_have_text("Approved 1 comment.")

    # The same for another list: the bans, read again through their tab.
    bans = "**/api/v1/moderation/bans?*"
    page.route(bans, down)
    page.get_by_role("tab", name="Bans").click()
    expect(message).to_have_text(UNAVAILABLE)
    page.unroute(bans)
    page.get_by_role("tab", name="Queue").click()
    page.get_by_role("tab", name="Bans").click()
    expect(message).to_have_text("")
    assert errors == [], errors


def test_console_by_content_shows_its_listing_is_on_its_way(page, pre_api: Api):
    content = new_content()
    key = pre_api.key("comments:moderate")
    published = pre_api.post(content, "listed by content", email="c@example.com")
    pre_api.moderate(key, "approve", [published["id"]])
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    sign_in(page, pre_api, key)
    page.get_by_role("tab", name="By content").click()
    page.get_by_label("Content id").fill(content)
    show = page.locator("#content-show")
    table = page.locator("#content-table")
    progress = page.locator("#content-progress")  # role=status, visually hidden
    listings = "**/api/v1/moderation/comments?status=published*"
    held = hold(page, listings, "GET")

    def on_its_way() -> None:
        expect(show).to_be_disabled()
        expect(show).to_have_text("Loading…")
        expect(table).to_have_attribute("aria-busy", "true")
        expect(progress).to_have_text("Loading the comments…")

    def ended(said: str = "") -> None:
        expect(show).to_be_enabled()
        expect(show).to_have_text("Show its comments")
        expect(table).not_to_have_attribute("aria-busy", "true")
        expect(progress).to_have_text(said)

    # A double click (and Enter meanwhile) lists once; the keyboard is back on the button.
    show.dblclick()
    on_its_way()
    page.get_by_label("Content id").press("Enter")
    page.wait_for_timeout(200)
    assert len(held) == 1, held
    held.pop().continue_()
    expect(page.locator("#content-body tr", has_text="listed by content")).to_be_visible()
    ended(f"1 comment of {content} listed.")

    # A proxy's 502 ends it too.
    show.click()
    on_its_way()
    page.wait_for_timeout(200)
    answer_held_with_502(held, message)
    ended()
    expect(show).to_be_focused()

    # And a sign-out while it is on its way.
    show.click()
    on_its_way()
    page.get_by_role("button", name="Sign out").click()
    ended()
    held.pop().continue_()
    page.unroute(listings)
    assert errors == [], errors


def test_console_by_content_load_more_continues_the_content_shown(page, pre_api: Api):
    shown, typed = new_content(), new_content()
    key = pre_api.key("comments:moderate")
    for content in (shown, typed):
        published = pre_api.post(content, f"public on {content}", email="m@example.com")
        pre_api.moderate(key, "approve", [published["id"]])
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    more_asked: list[str] = []
    next_page = {
        "items": [{"id": 987655, "body": f"next page of {shown}", "status": "published"}],
        "next_cursor": None,
    }

    def listings(route) -> None:
        url = route.request.url
        if "cursor=" in url:
            more_asked.append(url)
            route.fulfill(json=next_page)
        elif shown in url:
            # The real first page, said to have more (as a 51st comment would).
            response = route.fetch()
            route.fulfill(response=response, json={**response.json(), "next_cursor": "more"})
        else:
            route.fulfill(status=502, body=PROXY_PAGE, content_type="text/html")

    page.route("**/api/v1/moderation/comments?status=published*", listings)
    sign_in(page, pre_api, key)
    page.get_by_role("tab", name="By content").click()
    page.get_by_label("Content id").fill(shown)
    page.get_by_role("button", name="Show its comments").click()
    expect(page.locator("#content-body tr", has_text=f"public on {shown}")).to_be_visible()
    caption = page.locator("#content-table caption")
    expect(caption).to_have_text(f"Public comments of {shown}, oldest first")

    # Another content's listing fails: the table still shows the first one's comments (and
    # says so), and "Load more" goes on with them, not with the content typed since.
    page.get_by_label("Content id").fill(typed)
    page.get_by_role("button", name="Show its comments").click()
    expect(message).to_have_text(UNAVAILABLE)
    expect(caption).to_have_text(f"Public comments of {shown}, oldest first")
    page.get_by_role("button", name="Load more").click()
    expect(page.locator("#content-body tr", has_text=f"next page of {shown}")).to_be_visible()
    expect(page.locator("#content-body tr")).to_have_count(2)
    assert [f"content_id={shown}&" in url for url in more_asked] == [True], more_asked
    page.unroute("**/api/v1/moderation/comments?status=published*")
    assert errors == [], errors


def test_console_says_it_is_signing_in_until_the_check_answers(page, pre_api: Api):
    errors = page.page_errors
    message = page.locator("#message")
    key = pre_api.key("comments:moderate")
    check = "**/api/v1/moderation/pending?*"
    held = hold(page, check, "GET")
    submit = page.locator("#sign-in-submit")

    # From the form: said, and "Sign in" waits; the message goes once signed in.
    sign_in(page, pre_api, key)
    expect(message).to_have_text("Signing in…")
    expect(submit).to_be_disabled()
    page.wait_for_timeout(200)
    assert len(held) == 1, held
    held.pop().continue_()
    expect(page.get_by_role("tab", name="Queue")).to_be_focused()
    expect(message).to_have_text("")
    expect(submit).to_be_enabled()

    # A reload with the credential kept: said too, not a blank page.
    page.reload()
    expect(message).to_have_text("Signing in…")
    page.wait_for_timeout(200)
    held.pop().continue_()
    expect(page.get_by_role("tab", name="Queue")).to_be_focused()
    expect(message).to_have_text("")

    # "Try again": the last try's error gives way to it, and comes back if still down.
    page.reload()
    page.wait_for_timeout(200)
    answer_held_with_502(held, message)
    retry = page.get_by_role("button", name="Try again")
    retry.click()
    expect(message).to_have_text("Signing in…")
    page.wait_for_timeout(200)
    answer_held_with_502(held, message)
    expect(retry).to_be_focused()
    retry.click()
    expect(message).to_have_text("Signing in…")
    page.wait_for_timeout(200)
    held.pop().continue_()
    expect(page.get_by_role("tab", name="Queue")).to_be_focused()
    expect(message).to_have_text("")
    page.unroute(check)
    assert errors == [], errors


def test_console_bans_and_audit_log_show_their_listing_and_a_tab_lists_once(
    page, pre_api: Api, axe_source
):
    admin = pre_api.key("admin")
    pre_api.ban(admin, "busy-state@example.com")
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    sign_in(page, pre_api, admin)
    expect(page.get_by_role("tab", name="Queue")).to_be_focused()  # its first listing drawn

    def on_its_way(name: str, loading: str) -> None:
        refresh = page.locator(f"#{name}-refresh")
        expect(refresh).to_be_disabled()
        expect(refresh).to_have_text("Refreshing…")
        expect(page.locator(f"#{name}-table")).to_have_attribute("aria-busy", "true")
        expect(page.locator(f"#{name}-progress")).to_have_text(loading)

    def ended(name: str, said: str | re.Pattern = "") -> None:
        refresh = page.locator(f"#{name}-refresh")
        expect(refresh).to_be_enabled()
        expect(refresh).to_have_text("Refresh")
        expect(page.locator(f"#{name}-table")).not_to_have_attribute("aria-busy", "true")
        expect(page.locator(f"#{name}-progress")).to_have_text(said)

    lists = [
        (
            "Bans",
            "bans",
            "**/api/v1/moderation/bans?*",
            "Loading the bans…",
            r"^\d+ bans? listed\.$",
        ),
        (
            "Audit log",
            "audit",
            "**/api/v1/admin/audit-log?*",
            "Loading the audit log…",
            r"^\d+ audit log entr(y|ies) listed(, more with “Load more”)?\.$",
        ),
    ]

    def let_the_one_listing_through(held: list) -> None:
        # Clicks meanwhile sent no second listing: the one held is let through.
        page.wait_for_timeout(200)
        assert len(held) == 1, held
        held.pop().continue_()

    for tab_name, name, listings, loading, said in lists:
        tab = page.get_by_role("tab", name=tab_name)
        refresh = page.locator(f"#{name}-refresh")
        held = hold(page, listings, "GET")
        # Selected: its list is on its way, shown as the queue's is. A click on the selected
        # tab (and on its disabled Refresh) meanwhile sends nothing more.
        tab.click()
        on_its_way(name, loading)
        if name == "bans":
            violations, _ = run_axe(page, axe_source)
            assert violations == [], dumps(violations)
        tab.click()
        refresh.click(force=True)
        let_the_one_listing_through(held)
        ended(name, re.compile(said))
        # Selected again once it has ended: listed anew, as a refresh.
        tab.click()
        on_its_way(name, loading)
        let_the_one_listing_through(held)
        ended(name, re.compile(said))
        # Its Refresh lists it too; a proxy's 502 ends the busy state, the keyboard on Refresh.
        refresh.click()
        on_its_way(name, loading)
        page.wait_for_timeout(200)
        answer_held_with_502(held, message)
        ended(name)
        expect(refresh).to_be_focused()
        page.unroute(listings)
    page.get_by_role("tab", name="Bans").click()
    expect(page.locator("#bans-body tr", has_text="email:busy-state@example.com")).to_be_visible()
    ended("bans", re.compile(r"^\d+ bans? listed\.$"))

    # The Queue tab too: selected again while its listing is on its way, it sends nothing.
    queue = "**/api/v1/moderation/comments?*"
    held = hold(page, queue, "GET")
    page.get_by_role("tab", name="Queue").click()
    expect(page.locator("#queue-refresh")).to_be_disabled()
    page.get_by_role("tab", name="Queue").click()
    let_the_one_listing_through(held)
    expect(page.locator("#queue-refresh")).to_be_enabled()
    page.unroute(queue)

    # Signed out with a listing on its way: ended.
    held = hold(page, "**/api/v1/moderation/bans?*", "GET")
    page.get_by_role("tab", name="Bans").click()
    on_its_way("bans", "Loading the bans…")
    page.get_by_role("button", name="Sign out").click()
    ended("bans")
    held.pop().continue_()
    page.unroute("**/api/v1/moderation/bans?*")
    assert errors == [], errors


def test_console_a_failed_listing_leaves_the_status_select_as_the_table_shows(page, pre_api: Api):
    content, other = new_content(), new_content()
    key = pre_api.key("comments:moderate")
    pre_api.post(content, "pending all along", email="s@example.com")
    hidden = pre_api.post(content, "hidden all along", email="s@example.com")
    pre_api.moderate(key, "hide", [hidden["id"]])
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    status = page.get_by_label("Status")
    caption = page.locator("#queue-caption")
    sign_in(page, pre_api, key)
    show_queue_of(page, content)
    pending = queue_row(page, "pending all along")
    expect(pending).to_be_visible()
    listings = "**/api/v1/moderation/comments?*"
    down = answer(502, PROXY_PAGE, "text/html")

    # "Hidden comments" chosen, its listing fails: the table still holds the pending ones, and
    # the select says so again (with the caption, the row and bulk buttons); the message too.
    page.route(listings, down)
    status.select_option("hidden")
    expect(status).to_have_value("pending")
    expect(message).to_have_text(
        f"{UNAVAILABLE} The queue still shows the pending comments of {content}."
    )
    expect(pending).to_be_visible()
    expect(caption).to_have_text(f"Comments waiting for a moderator of {content}, oldest first")
    expect(page.get_by_role("button", name="Hide selected")).to_be_visible()
    expect(page.get_by_role("button", name="Approve selected")).to_be_visible()
    page.unroute(listings)
    # Chosen again once the server is back: listed, and the error goes.
    status.select_option("hidden")
    expect(queue_row(page, "hidden all along")).to_be_visible()
    expect(caption).to_have_text(f"Hidden comments of {content}, oldest first")
    expect(message).to_have_text("")

    # Another content typed, its listing fails: the select keeps what is shown, the content
    # typed stays (Refresh asks it again) and the message names the one still shown.
    page.route(listings, down)
    page.get_by_label("Limit to content").fill(other)
    page.get_by_role("button", name="Refresh").click()
    expect(message).to_have_text(
        f"{UNAVAILABLE} The queue still shows the hidden comments of {content}."
    )
    expect(status).to_have_value("hidden")
    expect(page.get_by_label("Limit to content")).to_have_value(other)
    expect(page.get_by_role("button", name="Publish selected")).to_be_visible()
    # The listing shown, failing again: the error alone.
    page.get_by_label("Limit to content").fill(content)
    page.get_by_role("button", name="Refresh").click()
    expect(message).to_have_text(UNAVAILABLE)
    page.unroute(listings)
    assert errors == [], errors


def test_console_late_answers_of_a_signed_out_session_say_nothing(page, pre_api: Api):
    content = new_content()
    key = pre_api.key("comments:moderate")
    pre_api.post(content, "approved after sign-out", email="late-reader@example.com")
    pre_api.ban(key, "late-ban@example.com")
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    main = page.locator("main")

    def late(held: list) -> None:
        """The held request of the signed-out session answers now; the console has read it."""
        route = held.pop()
        with page.expect_response(route.request.url):
            route.continue_()
        page.wait_for_timeout(200)

    def sign_in_here() -> None:
        page.get_by_label("API key or JWT").fill(key)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("tab", name="Queue")).to_be_focused()

    sign_in(page, pre_api, key)
    show_queue_of(page, content)
    row = queue_row(page, "approved after sign-out")
    expect(row).to_be_visible()

    # An approval on its way when the moderator signs out: its answer says nothing there.
    actions = "**/api/v1/moderation/comments"
    held = hold(page, actions)
    row.get_by_role("button", name=re.compile("^Approve comment")).click()
    page.get_by_role("button", name="Sign out").click()
    expect(message).to_have_text("Signed out.")
    late(held)
    expect(message).to_have_text("Signed out.")
    expect(page.get_by_label("API key or JWT")).to_be_focused()
    page.unroute(actions)

    # A lifted ban: neither its result (an email address) nor a listing asked without a
    # credential (whose 401 would say "credential was refused").
    sign_in_here()
    page.get_by_role("tab", name="Bans").click()
    lift = page.get_by_role("button", name="Lift the ban on email:late-ban@example.com")
    held = hold(page, "**/api/v1/moderation/bans/**", "DELETE")
    lift.click()
    page.get_by_role("button", name="Sign out").click()
    late(held)
    expect(message).to_have_text("Signed out.")
    assert "late-ban@example.com" not in main.inner_text()
    page.unroute("**/api/v1/moderation/bans/**")

    # A ban answered after the next sign-in: nothing said in that session, its form untouched,
    # and the old credential's 401 does not sign the new session out.
    sign_in_here()
    page.get_by_role("tab", name="Bans").click()
    bans = "**/api/v1/moderation/bans"
    held = hold(page, bans)
    page.get_by_label("Email or subject").fill("late-too@example.com")
    page.get_by_role("button", name="Ban author").click()
    page.get_by_role("button", name="Sign out").click()
    sign_in_here()
    page.get_by_role("tab", name="Bans").click()
    page.get_by_label("Email or subject").fill("typed in the new session")
    refused = {"title": "Unauthorized", "status": 401, "detail": "invalid credential"}
    route = held.pop()
    with page.expect_response(route.request.url):
        route.fulfill(status=401, body=json.dumps(refused), content_type="application/problem+json")
    page.wait_for_timeout(200)
    expect(page.locator("#app")).to_be_visible()
    expect(message).not_to_have_text(re.compile("refused|Banned"))
    expect(page.get_by_label("Email or subject")).to_have_value("typed in the new session")
    page.unroute(bans)
    assert errors == [], errors


def test_console_a_new_session_is_not_held_by_the_old_sessions_requests(page, lone_pre_api: Api):
    content = new_content()
    key = lone_pre_api.key("comments:moderate")
    # One more than a page: "Load more" is shown.
    ids = [
        lone_pre_api.post(content, f"held {n:02}", email=f"h{n}@example.com")["id"]
        for n in range(51)
    ]
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    a, b = queue_row(page, "held 00"), queue_row(page, "held 01")
    more = page.get_by_role("button", name="Load more")
    bulk = [page.locator(f"#bulk-{action}") for action in ("approve", "hide", "delete")]
    ban = page.locator("#ban-submit")
    actions, pages, bans = (
        "**/api/v1/moderation/comments",
        "**/api/v1/moderation/comments?*cursor=*",
        "**/api/v1/moderation/bans",
    )
    held_actions, held_pages = hold(page, actions), hold(page, pages, "GET")

    def listed() -> None:
        show_queue_of(page, content)
        expect(page.locator("#queue-body tr")).to_have_count(50)

    def start_everything(target: str) -> None:
        """A page, a row action, a bulk action and a ban, all on their way."""
        page.get_by_role("tab", name="Queue").click()
        more.click()
        expect(more).to_be_disabled()
        a.get_by_role("button", name=re.compile("^Approve comment")).click()
        b.get_by_role("checkbox").check()
        page.get_by_role("button", name="Approve selected").click()
        page.get_by_role("tab", name="Bans").click()
        page.get_by_label("Email or subject").fill(target)
        ban.click()
        page.wait_for_timeout(200)
        assert (len(held_actions), len(held_pages), len(held_bans)) == (2, 1, 1)

    def disabled() -> dict[str, bool]:
        """Whether each control the requests above disabled is disabled now."""
        return page.evaluate(
            """([a, b]) => {
                const row = (id) => document.querySelector(`#queue-body tr[data-id="${id}"]`);
                const controls = {
                    "Load more": document.getElementById("queue-more"),
                    "Ban author": document.getElementById("ban-submit"),
                };
                for (const action of ["approve", "hide", "delete"])
                    controls[`bulk ${action}`] = document.getElementById(`bulk-${action}`);
                for (const [name, id] of [["a", a], ["b", b]])
                    for (const el of row(id).querySelectorAll("button, input"))
                        controls[`${name}: ${el.getAttribute("aria-label")}`] = el;
                const states = Object.entries(controls).map(([k, el]) => [k, el.disabled]);
                return Object.fromEntries(states);
            }""",
            [ids[0], ids[1]],
        )

    def late(route) -> None:
        """A held request of the signed-out session answers now; the console has read it."""
        with page.expect_response(route.request.url):
            route.continue_()
        page.wait_for_timeout(200)

    sign_in(page, lone_pre_api, key)
    listed()
    held_bans = hold(page, bans)
    start_everything("old-session@example.com")
    page.get_by_role("button", name="Sign out").click()

    # Signed in again while all of them wait: every control of the new session is usable.
    page.get_by_label("API key or JWT").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("tab", name="Queue")).to_be_focused()
    listed()
    states = disabled()
    assert not any(states.values()), states

    # The new session's own requests on their way, then the old ones answer: nothing of the
    # new session is enabled, focused or said by them.
    old = [held_actions.pop(0), held_actions.pop(0), held_pages.pop(), held_bans.pop()]
    start_everything("new-session@example.com")
    reason = page.get_by_label("Reason (optional)")
    reason.fill("typed while the old answers come")
    for route in old:
        late(route)
    states = disabled()
    assert all(states.values()), states
    expect(reason).to_be_focused()
    expect(message).to_have_text("")
    expect(page.locator("#queue-body tr")).to_have_count(50)  # the old page is not drawn

    # The new session's answers (the old ones moderated both comments meanwhile): theirs said.
    held_pages.pop().continue_()
    expect(page.locator("#queue-body tr")).to_have_count(51)
    expect(more).to_be_hidden()
    held_actions.pop(0).continue_()
    expect(message).to_have_text(
        f"Approved no comment: Comment {ids[0]} is no longer pending as listed (moderated "
        "or edited meanwhile, or gone); the list is shown anew."
    )
    expect(a).to_have_count(0)
    held_actions.pop().continue_()
    expect(message).to_have_text(
        f"Approved no comment: Comment {ids[1]} is no longer pending as listed (moderated "
        "or edited meanwhile, or gone); the list is shown anew."
    )
    for button in bulk:
        expect(button).to_be_enabled()
    held_bans.pop().continue_()
    expect(message).to_have_text("Banned email:new-session@example.com.")
    expect(ban).to_be_enabled()
    page.unroute(actions)
    page.unroute(pages)
    page.unroute(bans)
    assert errors == [], errors
    # The server is shared: the tests after this one find their rows on the queue's first page.
    lone_pre_api.moderate(key, "approve", ids)


def test_console_a_failed_audit_log_check_is_said_and_asked_again(page, lone_pre_api: Api):
    admin, moderator = lone_pre_api.key("admin"), lone_pre_api.key("comments:moderate")
    content = new_content()
    lone_pre_api.post(content, "listed while the check fails", email="a@example.com")
    logged = lone_pre_api.post(content, "hidden for the audit log", email="a@example.com")
    lone_pre_api.moderate(admin, "hide", [logged["id"]])
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    page.clock.install()  # timers run as usual until fast-forwarded
    message = page.locator("#message")
    tab = page.get_by_role("tab", name="Audit log")
    check = "**/api/v1/admin/audit-log?limit=1"
    checks: list[str] = []
    page.on("request", lambda r: r.url.endswith("/audit-log?limit=1") and checks.append(r.url))

    def not_checked(error: str) -> str:
        return (
            f"Could not check whether this credential may read the audit log: {error} "
            "It is checked again with the next listing (Refresh, a tab)."
        )

    # An admin signs in while the check meets a proxy's 502: told so, not a bare error, and
    # the queue is listed all the same.
    page.route(check, answer(502, PROXY_PAGE, "text/html"))
    sign_in(page, lone_pre_api, admin)
    expect(queue_row(page, "listed while the check fails")).to_be_visible()
    expect(message).to_have_text(not_checked(UNAVAILABLE))
    expect(tab).to_be_hidden()
    assert len(checks) == 1, checks  # the first listing did not ask it a second time
    # Refresh asks it again; still down, still said.
    page.evaluate("document.getElementById('message').textContent = ''")
    page.get_by_role("button", name="Refresh").click()
    expect(message).to_have_text(not_checked(UNAVAILABLE))
    assert len(checks) == 2, checks
    expect(tab).to_be_hidden()
    # The server back, the next listing (another tab) brings the tab, and says so.
    page.unroute(check)
    page.get_by_role("tab", name="Bans").click()
    expect(tab).to_be_visible()
    expect(message).to_have_text("This credential may read the audit log: its tab is shown.")
    tab.click()
    expect(page.locator("#audit-body tr").first).to_be_visible()
    # Known now: listings ask it no more.
    page.get_by_role("tab", name="Queue").click()
    expect(page.locator("#queue-refresh")).to_have_text("Refresh")
    assert len(checks) == 3, checks

    # The 30 s give-up at sign-in: said too, and the next listing asks it again.
    page.get_by_role("button", name="Sign out").click()
    held = hold(page, check, "GET")
    page.get_by_label("API key or JWT").fill(admin)
    page.get_by_role("button", name="Sign in").click()
    expect(queue_row(page, "listed while the check fails")).to_be_visible()
    page.wait_for_timeout(200)
    page.clock.fast_forward(31_000)
    expect(message).to_have_text(
        not_checked("The server did not answer within 30 seconds. Check the connection and retry.")
    )
    expect(tab).to_be_hidden()
    held.clear()
    page.unroute(check)
    page.get_by_role("button", name="Refresh").click()
    expect(tab).to_be_visible()

    # A moderator without admin scope: once the check answers (403), the error goes, no tab.
    page.get_by_role("button", name="Sign out").click()
    page.route(check, answer(502, PROXY_PAGE, "text/html"))
    page.get_by_label("API key or JWT").fill(moderator)
    page.get_by_role("button", name="Sign in").click()
    expect(message).to_have_text(not_checked(UNAVAILABLE))
    page.unroute(check)
    page.get_by_role("button", name="Refresh").click()
    expect(message).to_have_text("")
    expect(page.locator("#queue-refresh")).to_have_text("Refresh")
    expect(tab).to_be_hidden()
    assert errors == [], errors


def test_console_try_again_shows_its_try_and_is_back_when_it_fails(page, pre_api: Api):
    errors = page.page_errors
    page.clock.install()  # timers run as usual until fast-forwarded
    message = page.locator("#message")
    retry = page.locator("#retry")
    check = "**/api/v1/moderation/pending?*"
    held = hold(page, check, "GET")
    sign_in(page, pre_api, pre_api.key("comments:moderate"))
    page.wait_for_timeout(200)
    held.pop().continue_()
    expect(page.get_by_role("tab", name="Queue")).to_be_focused()
    # A reload with the credential kept, the server down: "Try again" alone on the page.
    page.reload()
    page.wait_for_timeout(200)
    answer_held_with_502(held, message)
    expect(retry).to_have_text("Try again")
    expect(retry).to_be_focused()

    def trying() -> None:
        expect(retry).to_be_visible()
        expect(retry).to_be_disabled()
        expect(retry).to_have_text("Trying again…")
        expect(message).to_have_text("Signing in…")

    def back() -> None:
        expect(retry).to_be_visible()
        expect(retry).to_be_enabled()
        expect(retry).to_have_text("Try again")
        expect(retry).to_be_focused()

    # Pressed: it stays in view while it tries, and a second press asks nothing more.
    retry.click()
    trying()
    retry.click(force=True)
    page.wait_for_timeout(200)
    assert len(held) == 1, held
    # A proxy's 502: back, with the keyboard, for the next try.
    answer_held_with_502(held, message)
    back()
    # No answer: back when the console gives up.
    page.keyboard.press("Enter")
    trying()
    page.wait_for_timeout(200)
    page.clock.fast_forward(31_000)
    expect(message).to_have_text(
        "The server did not answer within 30 seconds. Check the connection and retry."
    )
    back()
    held.clear()
    # Through at last: it goes.
    page.keyboard.press("Enter")
    trying()
    page.wait_for_timeout(200)
    held.pop().continue_()
    expect(page.get_by_role("tab", name="Queue")).to_be_focused()
    expect(retry).to_be_hidden()
    expect(retry).to_have_text("Try again")
    expect(message).to_have_text("")
    page.unroute(check)
    assert errors == [], errors


def test_console_shows_arabic_comments_and_names_right_to_left(page, pre_api: Api):
    """A reader's text takes its direction from itself: an Arabic comment or name reads
    right to left in the queue and in a content's listing; a Latin one stays left to right."""
    content = new_content()
    key = pre_api.key("comments:moderate")
    arabic = pre_api.post(content, "شكرا على المقال!", author_name="علي")
    latin = pre_api.post(content, "Obrigada!", author_name="Joana")
    page.set_viewport_size({"width": 1100, "height": 800})
    sign_in(page, pre_api, key)
    show_queue_of(page, content)
    # The direction of the innermost element holding each text.
    directions = """(rows) => rows.map((row) => [...row.querySelectorAll('td, td *')]
      .filter((cell) => !cell.children.length && ['شكرا على المقال!', 'علي', 'Obrigada!',
        'Joana'].includes(cell.textContent))
      .map((cell) => [cell.textContent, getComputedStyle(cell).direction]))"""
    rows = [page.locator(f'#queue-body tr[data-id="{c["id"]}"]') for c in (arabic, latin)]
    expect(rows[1]).to_be_visible()
    expect(rows[0]).to_be_visible()
    queued = page.locator("#queue-body tr").evaluate_all(directions)
    assert [["شكرا على المقال!", "rtl"], ["علي", "rtl"]] in queued, queued
    assert [["Obrigada!", "ltr"], ["Joana", "ltr"]] in queued, queued

    pre_api.moderate(key, "approve", [arabic["id"], latin["id"]])
    page.get_by_role("tab", name="By content").click()
    page.get_by_label("Content id").fill(content)
    page.get_by_role("button", name="Show its comments").click()
    expect(page.locator("#content-body tr")).to_have_count(2)
    listed = page.locator("#content-body tr").evaluate_all(directions)
    assert [["شكرا على المقال!", "rtl"], ["علي", "rtl"]] in listed, listed
    assert [["Obrigada!", "ltr"], ["Joana", "ltr"]] in listed, listed
    assert page.page_errors == []


def test_console_keeps_stacked_combining_marks_inside_their_row(page, pre_api: Api):
    """A letter under two hundred combining marks ("Zalgo") draws a tower far above and
    below its line. In the queue it must not cover the rows around it, where a moderator
    reads and acts: they look the same with its text shown or hidden."""
    content = new_content()
    marks = "".join(map(chr, range(0x0300, 0x0334)))
    pre_api.post(content, "the row above", email="a@example.com")
    tall = pre_api.post(content, f"Z{marks * 4}", author_name=f"N{marks}")
    pre_api.post(content, "the row below", email="b@example.com")
    page.set_viewport_size({"width": 1100, "height": 800})
    sign_in(page, pre_api, pre_api.key("comments:moderate"))
    show_queue_of(page, content)
    neighbours = [queue_row(page, f"the row {where}") for where in ("above", "below")]
    expect(page.locator("#queue-body tr")).to_have_count(3)

    def looks() -> list[bytes]:
        return [row.screenshot(animations="disabled") for row in neighbours]

    shown = looks()
    page.locator(f'#queue-body tr[data-id="{tall["id"]}"] td').evaluate_all(
        "(cells) => cells.forEach((cell) => { cell.style.visibility = 'hidden'; })"
    )
    assert [now == before for now, before in zip(looks(), shown, strict=True)] == [True, True]
    assert page.page_errors == []


def test_console_shows_runs_of_blank_lines_as_one(page, pre_api: Api):
    """A comment of a few words under hundreds of blank lines would make its row pages tall
    and push the queue's other rows out of reach: the console shows one blank line between
    paragraphs and none after the last, in the queue and in a content's listing."""
    content = new_content()
    key = pre_api.key("comments:moderate")
    # Lines of tag characters (plane 14) print nothing either.
    flood = "\n\u200b \n\U000e0041\U000e0042\n" * 300
    tall = pre_api.post(content, f"before{flood}after\n\n\nthe end{flood}", email="f@example.com")
    short = pre_api.post(content, "one line", email="g@example.com")
    page.set_viewport_size({"width": 1100, "height": 800})
    sign_in(page, pre_api, key)
    show_queue_of(page, content)
    shown = "before\n\nafter\n\nthe end"
    rows = [page.locator(f'#queue-body tr[data-id="{c["id"]}"]') for c in (tall, short)]
    expect(rows[1]).to_be_visible()
    # text_content: to_have_text would fold the line breaks away.
    assert rows[0].locator("td.text").text_content() == shown
    heights = [(row.bounding_box() or {})["height"] for row in rows]
    assert heights[0] <= 3 * heights[1], heights

    pre_api.moderate(key, "approve", [tall["id"]])
    page.get_by_role("tab", name="By content").click()
    page.get_by_label("Content id").fill(content)
    page.get_by_role("button", name="Show its comments").click()
    listed = page.locator(f'#content-body tr[data-id="{tall["id"]}"] td.text')
    expect(listed).to_be_visible()
    assert listed.text_content() == shown
    assert page.page_errors == []


def test_console_at_320_pixels_only_its_tables_scroll_sideways(page, lone_pre_api: Api, axe_source):
    # At 320 px (WCAG 1.4.10) the queue's six columns made the whole page scroll sideways,
    # the forms and the tabs with it. Data tables may scroll: in a box of their own, which
    # takes the keyboard focus to scroll by.
    content = new_content()
    lone_pre_api.post(
        content, "a comment long enough to wrap " * 4, email="a.long.address@example.com"
    )
    page.set_viewport_size({"width": 320, "height": 700})
    sign_in(page, lone_pre_api, lone_pre_api.key("admin"))
    expect(queue_row(page, "a comment long enough")).to_be_visible()
    page.get_by_role("tab", name="Bans").click()
    page.get_by_label("Email or subject").fill("someone.far.too.long@example.com")
    page.get_by_role("button", name="Ban author").click()
    expect(page.locator("#bans-body tr")).to_have_count(1)
    widths = "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    for tab, table in (
        ("Queue", "#queue-table"),
        ("Bans", "#bans-table"),
        ("Audit log", "#audit-table"),
    ):
        page.get_by_role("tab", name=tab).click()
        expect(page.locator(f"{table} tbody tr").first).to_be_visible()
        scroll_width, client_width = page.evaluate(widths)
        assert scroll_width <= client_width, (tab, scroll_width, client_width)
    page.get_by_role("tab", name="Queue").click()
    box = page.get_by_role("region", name="Comments waiting for a moderator, oldest first")
    assert box.evaluate("(el) => el.scrollWidth > el.clientWidth")  # it is wider: it scrolls
    box.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "() => document.querySelector('#queue-table').parentElement.scrollLeft > 0"
    )
    violations, _ = run_axe(page, axe_source)
    assert violations == [], dumps(violations)
    # An empty By content table (hidden) leaves no empty box in the tab order.
    page.get_by_role("tab", name="By content").click()
    expect(page.locator("#content-table")).to_be_hidden()
    assert (
        page.locator("#content-table").evaluate(
            "(el) => getComputedStyle(el.parentElement).display"
        )
        == "none"
    )
