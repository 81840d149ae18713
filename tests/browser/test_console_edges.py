"""The console's 30 s deadline on a body that stalls after its headers, a credential that
cannot be sent as a header, and the focus after a By content action."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import expect

from .conftest import Api
from .test_console import hold, new_content, queue_row, sign_in
from .test_widget import StallingProxy

pytestmark = pytest.mark.browser

NO_ANSWER = "The server did not answer within 30 seconds. Check the connection and retry."


@pytest.fixture
def console_proxy(pre_api: Api) -> Iterator[StallingProxy]:
    """The console served through a proxy (same origin for the page and its calls) that can
    stop an answer after its headers."""
    proxy = StallingProxy(pre_api.base)
    yield proxy
    proxy.stop()


def test_console_an_action_whose_answer_stalls_is_given_up_as_unanswered(
    page, pre_api: Api, console_proxy: StallingProxy
):
    """The deadline covered the body, but a 200 whose body stalled was said to be "an answer
    the console cannot read (HTTP 200)": as if the server had answered nonsense, when it
    never finished answering (and may have approved the comment)."""
    content = new_content()
    pre_api.post(content, "approved while the answer stalls", email="s@example.com")
    page.clock.install()  # timers run as usual until fast-forwarded
    page.goto(f"{console_proxy.origin}/moderation")
    page.get_by_label("API key or JWT").fill(pre_api.key("comments:moderate"))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Limit to content").fill(content)
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#queue-caption")).to_contain_text(content)
    row = queue_row(page, "approved while the answer stalls")
    approve = row.get_by_role("button", name=re.compile("^Approve comment"))

    console_proxy.stalls = lambda method, path: method == "POST" and "/moderation/" in path
    console_proxy.hold.set()
    with page.expect_response(lambda r: r.request.method == "POST") as answered:
        approve.click()
    assert answered.value.status == 200  # the headers came: the rest never does
    assert console_proxy.stalled.wait(10)
    expect(approve).to_be_disabled()
    page.clock.fast_forward(31_000)
    expect(page.locator("#message")).to_have_text(NO_ANSWER)
    expect(approve).to_be_enabled()
    console_proxy.hold.clear()
    console_proxy.release.set()

    # A listing whose body stalls is given up the same way, and Refresh is usable again.
    console_proxy.stalled.clear()
    console_proxy.release.clear()
    console_proxy.stalls = lambda method, path: method == "GET" and "/moderation/comments?" in path
    console_proxy.hold.set()
    refresh = page.get_by_role("button", name="Refresh")
    refresh.click()
    assert console_proxy.stalled.wait(10)
    expect(page.get_by_role("button", name="Refreshing…")).to_be_disabled()
    page.clock.fast_forward(31_000)
    expect(page.locator("#message")).to_have_text(NO_ANSWER)
    expect(refresh).to_be_enabled()
    console_proxy.hold.clear()
    console_proxy.release.set()
    assert page.page_errors == [], page.page_errors


def test_console_a_credential_that_cannot_be_sent_is_said_to_be_no_credential(page, pre_api: Api):
    """A key pasted with a zero-width space in it: fetch refuses such a header, and the
    console said "The server could not be reached" with a "Try again" that never could."""
    key = pre_api.key("comments:moderate")
    sent: list[str] = []
    page.on("request", lambda r: "/api/" in r.url and sent.append(r.url))
    page.goto(f"{pre_api.base}/moderation")
    field = page.get_by_label("API key or JWT")
    field.fill(key[:12] + "\u200b" + key[12:])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#message")).to_have_text(
        re.compile(r"^This is not an API key or a JWT: it holds a space or a character")
    )
    expect(page.get_by_role("button", name="Try again")).to_be_hidden()
    expect(field).to_be_focused()
    assert page.evaluate("sessionStorage.length") == 0
    assert sent == [], sent

    field.fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("tab", name="Queue")).to_be_focused()
    assert page.page_errors == [], page.page_errors


def test_console_by_content_action_leaves_the_focus_where_the_moderator_went(page, pre_api: Api):
    """A Hide on By content moved the keyboard to the content id field when its answer came,
    even after the moderator had moved on to another row's button (the queue's actions move
    it only when it is lost)."""
    content = new_content()
    key = pre_api.key("comments:moderate")
    ids = [pre_api.post(content, f"public {n}", email="p@example.com")["id"] for n in range(3)]
    pre_api.moderate(key, "approve", ids)
    page.set_viewport_size({"width": 1100, "height": 800})
    sign_in(page, pre_api, key)
    page.get_by_role("tab", name="By content").click()
    page.get_by_label("Content id").fill(content)
    page.get_by_role("button", name="Show its comments").click()
    first, second, third = (page.locator(f'#content-body tr[data-id="{i}"]') for i in ids)
    expect(third).to_be_visible()
    held = hold(page, "**/api/v1/moderation/comments")

    first.get_by_role("button", name=re.compile("^Hide comment")).click()
    delete_second = second.get_by_role("button", name=re.compile("^Delete comment"))
    delete_second.focus()
    held.pop().continue_()
    expect(page.locator("#message")).to_have_text("Hid 1 comment.")
    expect(first).to_have_count(0)
    expect(delete_second).to_be_focused()

    # Delete the same way: the moderator moved on, the tombstone does not take the focus.
    page.once("dialog", lambda dialog: dialog.accept())
    delete_second.click()
    hide_third = third.get_by_role("button", name=re.compile("^Hide comment"))
    hide_third.focus()
    held.pop().continue_()
    expect(page.locator("#message")).to_have_text("Deleted 1 comment.")
    expect(second.locator("td").first).to_have_text("(removed)")
    expect(hide_third).to_be_focused()

    # Left on the button that went, the focus still goes to the content id.
    hide_third.click()
    held.pop().continue_()
    expect(third).to_have_count(0)
    expect(page.get_by_label("Content id")).to_be_focused()
    page.unroute("**/api/v1/moderation/comments")
    public = requests.get(f"{pre_api.base}/api/v1/contents/{content}/comments", timeout=5)
    assert [c["status"] for c in public.json()["items"]] == ["deleted"]
    assert page.page_errors == [], page.page_errors
