"""The console as moderators meet each other's work: an action on comments that moved on
since they were listed, and bans that say whom they reach."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from playwright.sync_api import expect

from .conftest import Api
from .test_console import hold, new_content, queue_row, sign_in

pytestmark = pytest.mark.browser

ACTIONS = "**/api/v1/moderation/comments"


def with_stale_if_match(page) -> None:
    """Moderation POSTs reach the real API with a stale If-Match (as a client or proxy that
    kept a tag would send them): the API answers its own 412 and changes nothing."""

    def forward(route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        route.continue_(headers={**route.request.headers, "if-match": '"seen-before"'})

    page.route(ACTIONS, forward)


def queue_of(page, content_id: str) -> None:
    """The queue of one content: the shared server's other pending comments (more than one
    page, from other tests) stay out of the way."""
    page.get_by_label("Limit to content").fill(content_id)
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#queue-caption")).to_contain_text(content_id)


def reader_post(api: Api, content_id: str, token: str, body: str) -> int:
    response = requests.post(
        f"{api.base}/api/v1/contents/{content_id}/comments",
        json={"body": body},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    return response.status_code


def test_console_an_action_refused_as_stale_is_said_and_the_list_shown_anew(
    page, lone_pre_api: Api
):
    content = new_content()
    mine = lone_pre_api.post(content, "the one I act on", email="a@example.com")
    theirs = lone_pre_api.post(content, "the one a colleague approves", email="b@example.com")
    page.set_viewport_size({"width": 1100, "height": 800})
    message = page.locator("#message")
    sign_in(page, lone_pre_api, lone_pre_api.key("comments:moderate"))
    queue_of(page, content)
    row = queue_row(page, "the one I act on")
    expect(row).to_be_visible()
    expect(queue_row(page, "a colleague approves")).to_be_visible()

    # Another moderator approves one meanwhile; this one's action meets the API's 412.
    lone_pre_api.moderate(lone_pre_api.key("comments:moderate"), "approve", [theirs["id"]])
    # A content typed, not yet listed: the list shown anew is still the one shown.
    page.get_by_label("Limit to content").fill(new_content())
    with_stale_if_match(page)
    row.get_by_role("button", name=re.compile("^Approve comment")).click()
    expect(message).to_have_text(
        re.compile(
            r"^Approved no comment \(HTTP 412\): If-Match names no current ETag.*"
            rf"Comment {mine['id']} may have been moderated meanwhile; "
            r"the list is shown anew\.$"
        )
    )
    expect(message).to_have_attribute("role", "status")
    expect(message).to_have_class(re.compile(r"\berror\b"))
    # Listed anew: the colleague's work shows, the refused comment stays, usable, with the
    # keyboard on it.
    expect(queue_row(page, "a colleague approves")).to_have_count(0)
    expect(page.locator("#queue-body tr")).to_have_count(1)
    approve = row.get_by_role("button", name=re.compile("^Approve comment"))
    expect(approve).to_be_enabled()
    expect(approve).to_be_focused()
    status = requests.get(f"{lone_pre_api.base}/api/v1/comments/{mine['id']}", timeout=5)
    assert status.status_code == 404  # still pending: not public

    page.unroute(ACTIONS)
    approve.press("Enter")
    expect(message).to_have_text("Approved 1 comment.")
    expect(row).to_have_count(0)

    # By content: a published comment a colleague hid meanwhile.
    public = lone_pre_api.post(
        content, "published, then hidden by a colleague", email="c@example.com"
    )
    lone_pre_api.moderate(lone_pre_api.key("comments:moderate"), "approve", [public["id"]])
    page.get_by_role("tab", name="By content").click()
    page.get_by_label("Content id").fill(content)
    page.get_by_role("button", name="Show its comments").click()
    content_row = page.locator("#content-body tr", has_text="hidden by a colleague")
    expect(content_row).to_be_visible()
    lone_pre_api.moderate(lone_pre_api.key("comments:moderate"), "hide", [public["id"]])
    with_stale_if_match(page)
    content_row.get_by_role("button", name=re.compile("^Hide comment")).click()
    expect(message).to_have_text(
        re.compile(rf"^Hid no comment \(HTTP 412\): .*Comment {public['id']} may have been")
    )
    expect(content_row).to_have_count(0)  # listed anew: hidden, no longer public
    expect(page.locator("#content-body tr", has_text="the one I act on")).to_be_visible()
    expect(page.get_by_label("Content id")).to_be_focused()
    assert page.page_errors == [], page.page_errors


def test_console_a_ban_takes_an_author_as_the_console_lists_them(page, lone_pre_api: Api):
    content = new_content()
    by_subject, by_email = f"reader-{uuid.uuid4().hex[:8]}", f"reader-{uuid.uuid4().hex[:8]}"
    subject_token, email_token = lone_pre_api.token(by_subject), lone_pre_api.token(by_email)
    assert reader_post(lone_pre_api, content, subject_token, "signed in, posting") == 202
    assert reader_post(lone_pre_api, content, email_token, "signed in too") == 202
    page.set_viewport_size({"width": 1100, "height": 800})
    message = page.locator("#message")
    sign_in(page, lone_pre_api, lone_pre_api.key("comments:moderate"))
    queue_of(page, content)
    # The queue shows a signed-in author as "sub:<subject>" beside the token's email.
    row = queue_row(page, "signed in, posting")
    expect(row).to_contain_text(f"sub:{by_subject}")
    expect(row).to_contain_text(f"{by_subject}@readers.example")

    # Pasted as the queue shows it: the subject's ban, not one of "sub:sub:…".
    page.get_by_role("tab", name="Bans").click()
    page.get_by_label("Ban by").select_option("subject")
    page.get_by_label("Email or subject").fill(f"sub:{by_subject}")
    page.get_by_role("button", name="Ban author").click()
    expect(message).to_have_text(f"Banned sub:{by_subject}.")
    expect(page.locator("#bans-body tr", has_text=f"sub:{by_subject}")).to_be_visible()
    assert reader_post(lone_pre_api, content, subject_token, "after the ban") == 403

    # An email as the ban list shows one, with the subject kind chosen: the email's ban,
    # which also stops the signed-in reader whose token carries it.
    page.get_by_label("Ban by").select_option("subject")
    page.get_by_label("Email or subject").fill(f"email:{by_email.upper()}@readers.example")
    page.get_by_role("button", name="Ban author").click()
    expect(message).to_have_text(f"Banned email:{by_email}@readers.example.")
    assert reader_post(lone_pre_api, content, email_token, "after the email ban") == 403
    assert page.page_errors == [], page.page_errors


def test_console_bans_say_whom_they_stop(page, pre_api: Api):
    page.set_viewport_size({"width": 1100, "height": 800})
    message = page.locator("#message")
    subject = f"reader-{uuid.uuid4().hex[:8]}"
    sign_in(page, pre_api, pre_api.key("comments:moderate"))
    page.get_by_role("tab", name="Bans").click()
    target = page.get_by_label("Email or subject")
    # The form says what a ban of the kind chosen stops.
    expect(target).to_have_accessible_description(
        re.compile("signed-in reader whose token carries it")
    )
    page.get_by_label("Ban by").select_option("subject")
    expect(target).to_have_accessible_description(
        re.compile("signed-in reader with this token subject")
    )
    target.fill(subject)
    page.get_by_role("button", name="Ban author").click()
    expect(message).to_have_text(f"Banned sub:{subject}.")
    # The form is back to its first kind, and says so.
    expect(page.get_by_label("Ban by")).to_have_value("email")
    expect(target).to_have_accessible_description(
        re.compile("signed-in reader whose token carries it")
    )
    target.fill(f"{subject}@example.com")
    page.get_by_role("button", name="Ban author").click()
    expect(message).to_have_text(f"Banned email:{subject}@example.com.")
    # Each ban listed says whom it stops.
    expect(page.locator("#bans-body tr", has_text=f"sub:{subject}")).to_contain_text(
        "signed-in reader with this token subject"
    )
    expect(page.locator("#bans-body tr", has_text=f"email:{subject}@")).to_contain_text(
        "signed-in reader whose token carries it"
    )
    assert page.page_errors == [], page.page_errors


def refuse(status: int, retry_after: str, body: str, content_type: str):
    """A route handler answering moderation POSTs in place of the API (a proxy, a busy
    database); the listings go through."""

    def handler(route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        route.fulfill(
            status=status,
            headers={"Retry-After": retry_after, "Content-Type": content_type},
            body=body,
        )

    return handler


def test_console_says_how_long_a_429_or_503_asks_to_wait(page, lone_pre_api: Api):
    content = new_content()
    lone_pre_api.post(content, "waiting while the server is busy", email="w@example.com")
    page.set_viewport_size({"width": 1100, "height": 800})
    message = page.locator("#message")
    sign_in(page, lone_pre_api, lone_pre_api.key("comments:moderate"))
    queue_of(page, content)
    row = queue_row(page, "waiting while the server is busy")
    approve = row.get_by_role("button", name=re.compile("^Approve comment"))
    expect(approve).to_be_enabled()

    # A proxy's maintenance page: its Retry-After, not "a moment".
    page.route(ACTIONS, refuse(503, "120", "<h1>Down for maintenance</h1>", "text/html"))
    approve.click()
    expect(message).to_have_text(
        "The server is unavailable right now (HTTP 503). Retry in 120 seconds."
    )
    expect(approve).to_be_enabled()
    page.unroute(ACTIONS)
    # The API's own 503 (the database busy): its detail, and how long to wait.
    problem = json.dumps(
        {
            "type": "/docs#problem-service-unavailable",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "the database is temporarily unavailable; retry shortly",
        }
    )
    page.route(ACTIONS, refuse(503, "2", problem, "application/problem+json"))
    approve.click()
    expect(message).to_have_text(
        "the database is temporarily unavailable; retry shortly. Wait 2 seconds and retry."
    )
    page.unroute(ACTIONS)
    # A 429 whose Retry-After is a date (RFC 9110 allows either): the seconds until then.
    at = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    page.route(ACTIONS, refuse(429, at, "", "text/html"))
    approve.click()
    expect(message).to_have_text(re.compile(r"^Too many requests; wait \d+ seconds and retry\.$"))
    waited = int(re.search(r"\d+", message.inner_text()).group())
    assert 60 <= waited <= 91, waited
    expect(approve).to_be_enabled()
    page.unroute(ACTIONS)
    approve.click()
    expect(message).to_have_text("Approved 1 comment.")
    assert page.page_errors == [], page.page_errors


def mark_drawn(page, body: str) -> None:
    """Marks the rows drawn so far, so a test can wait for a listing to draw them anew."""
    page.eval_on_selector_all(
        f"{body} tr", "rows => rows.forEach(r => r.classList.add('drawn-before'))"
    )


def test_console_a_list_drawn_anew_keeps_the_buttons_of_an_action_on_its_way(page, pre_api: Api):
    content = new_content()
    key = pre_api.key("comments:moderate")
    public = pre_api.post(content, "published, about to be hidden", email="p@example.com")
    pre_api.moderate(key, "approve", [public["id"]])
    target = f"sub:reader-{uuid.uuid4().hex[:8]}"
    pre_api.ban(key, f"{target[4:]}@example.com")  # another ban, listed beside it
    banned = requests.post(
        f"{pre_api.base}/api/v1/moderation/bans",
        json={"subject": target[4:]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=5,
    )
    assert banned.status_code == 201, banned.text
    page.set_viewport_size({"width": 1100, "height": 800})
    message = page.locator("#message")
    sign_in(page, pre_api, key)

    # Lift ban on its way, the bans listed again meanwhile: the redrawn "Lift ban" waits
    # too (a second click would lift nothing and call the ban "lifted meanwhile").
    page.get_by_role("tab", name="Bans").click()
    lift = page.get_by_role("button", name=f"Lift the ban on {target}")
    held = hold(page, "**/api/v1/moderation/bans/**", "DELETE")
    lift.click()
    expect(lift).to_be_disabled()
    mark_drawn(page, "#bans-body")
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#bans-body tr.drawn-before")).to_have_count(0)  # drawn anew
    expect(lift).to_be_disabled()
    expect(page.locator("#bans-body button:enabled")).not_to_have_count(0)  # the other one
    assert len(held) == 1
    held.pop().continue_()
    expect(message).to_have_text(f"Lifted the ban on {target}.")
    expect(lift).to_have_count(0)
    page.unroute("**/api/v1/moderation/bans/**")

    # By content: Hide on its way, the comments shown again meanwhile.
    page.get_by_role("tab", name="By content").click()
    page.get_by_label("Content id").fill(content)
    page.get_by_role("button", name="Show its comments").click()
    hide = page.get_by_role("button", name=f"Hide comment {public['id']}")
    delete = page.get_by_role("button", name=f"Delete comment {public['id']}")
    held = hold(page, ACTIONS)
    hide.click()
    expect(hide).to_be_disabled()
    mark_drawn(page, "#content-body")
    page.get_by_role("button", name="Show its comments").click()
    expect(page.locator("#content-body tr.drawn-before")).to_have_count(0)  # drawn anew
    expect(page.locator("#content-body tr")).to_have_count(1)
    expect(hide).to_be_disabled()
    expect(delete).to_be_disabled()
    assert len(held) == 1
    held.pop().continue_()
    expect(message).to_have_text("Hid 1 comment.")
    expect(hide).to_have_count(0)
    page.unroute(ACTIONS)
    assert page.page_errors == [], page.page_errors


def test_console_load_more_that_brings_nothing_says_so_and_keeps_the_keyboard(page, pre_api: Api):
    content = new_content()
    # One page (50) and one more; a colleague approves the one more before it is loaded.
    ids = [
        pre_api.post(content, f"queued {i:02}", email=f"q{i}@example.com")["id"] for i in range(51)
    ]
    page.set_viewport_size({"width": 1100, "height": 800})
    sign_in(page, pre_api, pre_api.key("comments:moderate"))
    queue_of(page, content)
    expect(page.locator("#queue-body tr")).to_have_count(50)
    more = page.get_by_role("button", name="Load more")
    expect(more).to_be_visible()
    pre_api.moderate(pre_api.key("comments:moderate"), "approve", [ids[-1]])

    more.focus()
    page.keyboard.press("Enter")
    expect(more).to_be_hidden()
    expect(page.locator("#queue-progress")).to_have_text("Nothing more to load.")
    # As a page that brings rows hands the keyboard to its first one's first control.
    expect(page.get_by_label(f"Select comment {ids[-2]}")).to_be_focused()
    expect(page.locator("#queue-body tr")).to_have_count(50)
    assert page.page_errors == [], page.page_errors
    # The shared server's queue as it was, for the tests that list every content.
    pre_api.moderate(pre_api.key("comments:moderate"), "delete", ids[:-1])


MARKUP = "<img src=x onerror=window.pwned=1><script>window.pwned=2</script>"


def test_console_shows_markup_as_text_in_every_list(page, lone_pre_api: Api):
    """Coverage, not a fix: markup in a body, an author name, a ban's subject and reason
    is text in the queue, By content, the bans, the message and the audit log."""
    content = new_content()
    comment = lone_pre_api.post(
        content, f"body {MARKUP}", author_name=f"name {MARKUP}", email="m@example.com"
    )
    page.set_viewport_size({"width": 1100, "height": 800})
    message = page.locator("#message")
    sign_in(page, lone_pre_api, lone_pre_api.key("admin"))
    queue_of(page, content)
    row = queue_row(page, "body <img")
    expect(row.locator("td.text")).to_have_text(f"body {MARKUP}")
    expect(row).to_contain_text(f"name {MARKUP}")
    row.get_by_role("button", name=re.compile("^Approve comment")).click()
    expect(message).to_have_text("Approved 1 comment.")

    page.get_by_role("tab", name="By content").click()
    page.get_by_label("Content id").fill(content)
    page.get_by_role("button", name="Show its comments").click()
    shown = page.locator("#content-body tr", has_text="body <img")
    expect(shown.locator("td.text")).to_have_text(f"body {MARKUP}")
    expect(shown).to_contain_text(f"name {MARKUP}")

    page.get_by_role("tab", name="Bans").click()
    page.get_by_label("Ban by").select_option("subject")
    subject = f"{uuid.uuid4().hex[:8]}{MARKUP}"  # a new ban each run
    page.get_by_label("Email or subject").fill(subject)
    page.get_by_label("Reason (optional)").fill(f"reason {MARKUP}")
    page.get_by_role("button", name="Ban author").click()
    expect(message).to_have_text(f"Banned sub:{subject}.")
    ban = page.locator("#bans-body tr", has_text=f"sub:{subject}")
    expect(ban).to_contain_text(f"reason {MARKUP}")

    page.get_by_role("tab", name="Audit log").click()
    expect(page.locator("#audit-body tr").first).to_contain_text(f"sub:{subject}")
    expect(page.locator("#audit-body")).to_contain_text(str(comment["id"]))
    assert page.locator("main img, main script").count() == 0
    assert page.evaluate("window.pwned") is None
    assert page.page_errors == [], page.page_errors


def test_console_acts_only_on_comments_still_as_it_listed_them(page, lone_pre_api: Api):
    """Hide on a queue row a colleague approved meanwhile: the API is told the status the
    row showed (`if_status`), so the published comment stays published, and the console says
    nothing was done. It used to hide the published comment and say "Hid 1 comment."."""
    content = new_content()
    pending = lone_pre_api.post(
        content, "pending, then approved by a colleague", email="d@example.com"
    )
    page.set_viewport_size({"width": 1100, "height": 800})
    message = page.locator("#message")
    sign_in(page, lone_pre_api, lone_pre_api.key("comments:moderate"))
    queue_of(page, content)
    row = queue_row(page, "approved by a colleague")
    expect(row).to_be_visible()

    lone_pre_api.moderate(lone_pre_api.key("comments:moderate"), "approve", [pending["id"]])
    row.get_by_role("button", name=re.compile("^Hide comment")).click()
    expect(message).to_have_text(
        f"Hid no comment: Comment {pending['id']} is no longer pending (moderated meanwhile, "
        "or gone); the list is shown anew."
    )
    expect(message).to_have_class(re.compile(r"\berror\b"))
    expect(queue_row(page, "approved by a colleague")).to_have_count(0)
    public = requests.get(f"{lone_pre_api.base}/api/v1/comments/{pending['id']}", timeout=5)
    assert public.status_code == 200
    assert public.json()["status"] == "published"
    assert page.page_errors == [], page.page_errors
