"""The console's Bans tab a page at a time: the newest bans first, "Load more bans" as the
other lists' "Load more", and "Lift ban" on any page without losing the moderator's place."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from .conftest import Api, dumps, run_axe
from .test_console import hold, sign_in

pytestmark = pytest.mark.browser

PAGES = "**/api/v1/moderation/bans?*cursor=*"


def lift_button(page, n: int):
    return page.get_by_role("button", name=f"Lift the ban on email:b{n:02}@example.com", exact=True)


def test_console_bans_load_more_and_lift_on_any_page(page, lone_pre_api: Api, axe_source):
    key = lone_pre_api.key("comments:moderate")
    # One page (50) and two more: b51 is the newest ban, b00 the oldest.
    for n in range(52):
        lone_pre_api.ban(key, f"b{n:02}@example.com")
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    rows = page.locator("#bans-body tr")
    more = page.get_by_role("button", name="Load more bans")
    sign_in(page, lone_pre_api, key)
    page.get_by_role("tab", name="Bans").click()

    # The first page, newest first, and the button for the rest; said to screen readers.
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_attribute("data-target", "email:b51@example.com")
    expect(rows.last).to_have_attribute("data-target", "email:b02@example.com")
    expect(more).to_be_visible()
    expect(page.locator("#bans-progress")).to_have_text(
        "50 bans listed, more with “Load more bans”."
    )
    violations, _ = run_axe(page, axe_source)
    assert violations == [], dumps(violations)

    # "Load more bans" by keyboard waits for its page: a second press asks for nothing.
    held = hold(page, PAGES, "GET")
    more.focus()
    page.keyboard.press("Enter")
    expect(more).to_be_disabled()
    more.click(force=True)
    page.wait_for_timeout(200)
    assert len(held) == 1, held
    held.pop().continue_()
    expect(rows).to_have_count(52)
    expect(rows.nth(50)).to_have_attribute("data-target", "email:b01@example.com")
    expect(rows.last).to_have_attribute("data-target", "email:b00@example.com")
    expect(more).to_be_hidden()
    # The last page: the keyboard goes on at the first row it brought, not from nowhere.
    expect(lift_button(page, 1)).to_be_focused()
    page.unroute(PAGES)

    # Lifting a ban of the second page, by keyboard: its row goes, the others stay as loaded
    # (not the first page read again), and the keyboard is on the next ban's "Lift ban".
    page.keyboard.press("Enter")
    expect(message).to_have_text("Lifted the ban on email:b01@example.com.")
    expect(lift_button(page, 1)).to_have_count(0)
    expect(rows).to_have_count(51)
    expect(lift_button(page, 0)).to_be_focused()
    # The last row: the keyboard goes back to the row before it.
    page.keyboard.press("Enter")
    expect(message).to_have_text("Lifted the ban on email:b00@example.com.")
    expect(rows).to_have_count(50)
    expect(lift_button(page, 2)).to_be_focused()
    # A ban of the first page too; the author may post again.
    lift_button(page, 30).click()
    expect(message).to_have_text("Lifted the ban on email:b30@example.com.")
    expect(rows).to_have_count(49)
    expect(lift_button(page, 29)).to_be_focused()
    posted = lone_pre_api.post("bans-paged", "back again", email="b30@example.com")
    assert posted["status"] == "pending"

    # Refresh lists the first page anew: the newest bans, with a ban made meanwhile first;
    # the 50 bans left now fit on it.
    lone_pre_api.ban(key, "b99@example.com")
    page.get_by_role("button", name="Refresh").click()
    expect(rows.first).to_have_attribute("data-target", "email:b99@example.com")
    expect(rows).to_have_count(50)  # b99, b51 … b31, b29 … b02
    expect(rows.last).to_have_attribute("data-target", "email:b02@example.com")
    expect(more).to_be_hidden()
    expect(page.locator("#bans-progress")).to_have_text("50 bans listed.")
    assert errors == [], errors


def test_console_looks_up_one_ban_without_paging(page, lone_pre_api: Api, axe_source):
    """ "Look up one ban" asks GET /moderation/bans/{target}: a ban beyond the loaded page is
    found and lifted from there, an address in the other Unicode form finds its ban, an
    address not banned is said so, and a target the API refuses marks the box invalid."""
    key = lone_pre_api.key("comments:moderate")
    for n in range(52):  # b00 and b01 are on the second page
        lone_pre_api.ban(key, f"b{n:02}@example.com")
    lone_pre_api.ban(key, "jos\u00e9@example.com")  # stored composed
    page.set_viewport_size({"width": 1100, "height": 800})
    errors = page.page_errors
    message = page.locator("#message")
    rows = page.locator("#bans-body tr")
    box = page.get_by_role("searchbox", name="Look up one ban")
    result = page.locator("#ban-lookup-result")
    sign_in(page, lone_pre_api, key)
    page.get_by_role("tab", name="Bans").click()
    expect(rows).to_have_count(50)
    expect(page.locator('#bans-body tr[data-target="email:b00@example.com"]')).to_have_count(0)

    # A ban not on the loaded page, by keyboard: said on the status line, the keyboard stays.
    expect(result).to_have_attribute("role", "status")
    box.fill("B00@example.com")
    box.press("Enter")
    expect(result).to_contain_text("email:b00@example.com is banned, since ")
    expect(result).to_contain_text(", by api_key:")
    expect(box).to_be_focused()
    violations, _ = run_axe(page, axe_source)
    assert violations == [], dumps(violations)

    # Lifted from the answer: the author may post, the list is left as loaded, and the
    # keyboard goes back to the box.
    lift = result.get_by_role("button", name="Lift the ban on email:b00@example.com")
    lift.focus()
    page.keyboard.press("Enter")
    expect(message).to_have_text("Lifted the ban on email:b00@example.com.")
    expect(result).to_have_text("email:b00@example.com is not banned.")
    expect(box).to_be_focused()
    expect(rows).to_have_count(50)
    assert lone_pre_api.post("lookup", "back", email="b00@example.com")["status"] == "pending"

    # The address typed decomposed finds the ban stored composed; one not banned is said so.
    box.fill("sub:nobody")
    page.get_by_role("button", name="Look up", exact=True).click()
    expect(result).to_have_text("sub:nobody is not banned.")
    box.fill("email:jose\u0301@example.com")
    box.press("Enter")
    expect(result).to_contain_text("email:jos\u00e9@example.com is banned, since ")

    # A target the API refuses: said, the box marked invalid and focused; typing clears it.
    box.fill("bad\u007fsubject")
    box.press("Enter")
    expect(message).to_contain_text("target must look like email:<address> or sub:<id>")
    expect(box).to_have_attribute("aria-invalid", "true")
    expect(box).to_be_focused()
    expect(result).to_have_text("")
    box.fill("b01@example.com")
    expect(box).not_to_have_attribute("aria-invalid", "true")
    assert errors == [], errors


def test_console_ban_look_up_never_keeps_saying_what_the_console_changed(page, lone_pre_api: Api):
    """The look-up's answer stayed as drawn whatever the console did next: a ban lifted from
    its row was still "banned" there (its "Lift ban" then called it "lifted meanwhile"), a
    lift from an earlier answer, ending after the next look-up, wrote over that one's answer
    ("c1 is not banned" in place of "c2 is banned"), and an author banned from the form was
    still "not banned". And "sub: reader-7", which the form bans as reader-7, was looked up
    with its space and called not banned."""
    key = lone_pre_api.key("comments:moderate")
    for n in range(3):
        lone_pre_api.ban(key, f"c{n}@example.com")
    errors = page.page_errors
    message = page.locator("#message")
    box = page.get_by_role("searchbox", name="Look up one ban")
    result = page.locator("#ban-lookup-result")
    sign_in(page, lone_pre_api, key)
    page.get_by_role("tab", name="Bans").click()
    expect(page.locator("#bans-body tr")).to_have_count(3)

    def look_up(address: str, answer: str) -> None:
        box.fill(address)
        box.press("Enter")
        expect(result).to_contain_text(answer)

    # Lifted from its row: the answer that called it banned says it no longer is.
    look_up("c0@example.com", "email:c0@example.com is banned, since ")
    page.locator('#bans-body tr[data-target="email:c0@example.com"] button').click()
    expect(message).to_have_text("Lifted the ban on email:c0@example.com.")
    expect(result).to_have_text("email:c0@example.com is not banned.")

    # A lift from an answer that ends once another look-up is shown leaves that one alone.
    look_up("c1@example.com", "email:c1@example.com is banned, since ")
    held = hold(page, "**/api/v1/moderation/bans/*", "DELETE")
    result.get_by_role("button", name="Lift the ban on email:c1@example.com").click()
    look_up("c2@example.com", "email:c2@example.com is banned, since ")
    assert len(held) == 1, held
    held.pop().continue_()
    expect(message).to_have_text("Lifted the ban on email:c1@example.com.")
    expect(page.locator('#bans-body tr[data-target="email:c1@example.com"]')).to_have_count(0)
    expect(result).to_contain_text("email:c2@example.com is banned, since ")
    expect(box).to_be_focused()
    page.unroute("**/api/v1/moderation/bans/*")

    # Banned from the form: the answer that called the author not banned goes.
    look_up("d@example.com", "email:d@example.com is not banned.")
    page.locator("#ban-target").fill("d@example.com")
    page.get_by_role("button", name="Ban author").click()
    expect(message).to_have_text("Banned email:d@example.com.")
    expect(result).to_have_text("")

    # Pasted as the ban form takes it, a space after the kind: the form bans the subject
    # without it, and the look-up asked for " reader-7" and called reader-7 not banned.
    page.locator("#ban-target").fill("sub:reader-7")
    page.get_by_role("button", name="Ban author").click()
    expect(message).to_have_text("Banned sub:reader-7.")
    look_up("sub: reader-7", "sub:reader-7 is banned, since ")
    assert errors == [], errors


def test_console_lifting_a_ban_in_one_unicode_form_clears_every_form_it_lifted(
    page, lone_pre_api: Api
):
    """One mailbox banned twice, in each Unicode form (the release before 0016's ban of
    ``josé`` typed decomposed, then one typed precomposed): the API's lift by either form
    lifts both, yet the console dropped only the row it was asked for, and the look-up's
    answer about the other form kept calling the author banned, its "Lift ban" then saying
    "lifted meanwhile"."""
    from datetime import UTC, datetime, timedelta

    from comments_api.store.repository import Repository, make_engine

    composed, decomposed = "email:jos\u00e9@example.com", "email:jose\u0301@example.com"
    engine = make_engine(lone_pre_api.env["DATABASE_URL"])
    try:
        repo = Repository(engine)
        made = datetime.now(UTC) - timedelta(minutes=5)
        # As the release before 0016 stored them (its own key of each address as typed).
        assert repo.ban(decomposed, "old", "key:old-release", now=made)
        assert repo.ban(composed, "twice", "key:old-release", now=made + timedelta(minutes=1))
    finally:
        engine.dispose()
    key = lone_pre_api.key("comments:moderate")
    errors = page.page_errors
    message = page.locator("#message")
    rows = page.locator("#bans-body tr")
    box = page.get_by_role("searchbox", name="Look up one ban")
    result = page.locator("#ban-lookup-result")
    sign_in(page, lone_pre_api, key)
    page.get_by_role("tab", name="Bans").click()
    expect(rows).to_have_count(2)
    # The look-up answers the first made, the decomposed one.
    box.fill("jos\u00e9@example.com")
    box.press("Enter")
    expect(result).to_contain_text(f"{decomposed} is banned, since ")

    # Lifted from the other form's row: both rows go, and the answer says so.
    page.locator(f'#bans-body tr[data-target="{composed}"] button').click()
    expect(message).to_have_text(f"Lifted the ban on {composed}.")
    expect(rows).to_have_count(0)
    expect(result).to_have_text(f"{decomposed} is not banned.")
    expect(page.locator("#bans-empty")).to_have_text("Nobody is banned.")
    assert errors == [], errors
