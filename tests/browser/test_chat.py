"""People chatting in the web client, in headless Chromium against a real server."""

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser.chat_page import ChatPage, artifact

pytestmark = pytest.mark.scaled

PHONE = {"viewport": {"width": 390, "height": 780}, "is_mobile": True, "has_touch": True}


def test_two_people_chat_both_ways_without_reloading(open_chat):
    ann = open_chat()
    ann.screenshot("sign-in")
    ann.sign_up("ann")
    ben = open_chat().sign_up("ben")

    ann.start_chat_with(ben)
    ann.expect_presence(ben, online=True)
    ann.send("Hi Ben 👋")
    expect(ben.conversation_link(ann.username).locator(".unread")).to_have_text("1")
    ben.open_conversation(ann.username)
    ben.expect_messages(["Hi Ben 👋"])

    ben.send("Hi Ann!\nHow are you?")
    ann.expect_messages(["Hi Ben 👋", "Hi Ann!\nHow are you?"])
    ann.send("Fine, thanks")
    ben.expect_messages(["Hi Ben 👋", "Hi Ann!\nHow are you?", "Fine, thanks"])
    ann.screenshot("chat-desktop")


def test_a_group_grows_and_a_newcomer_reads_its_history(open_chat):
    ann, ben, cat = (open_chat().sign_up(name) for name in ("ann", "ben", "cat"))

    ann.create_group("Book club", [ben])
    ann.send("Welcome to the book club")
    ben.open_conversation("Book club")
    ben.expect_messages(["Welcome to the book club"])

    ann.add_members([cat])
    cat.open_conversation("Book club")
    cat.expect_messages(["Welcome to the book club"])
    cat.send("Glad to be here")
    ann.expect_messages(["Welcome to the book club", "Glad to be here"])
    ben.expect_messages(["Welcome to the book club", "Glad to be here"])
    expect(ben.members.filter(has_text=cat.username)).to_have_count(1)
    ben.screenshot("group-desktop")


def test_older_history_loads_page_by_page(open_chat):
    ann, ben = open_chat().sign_up("ann"), open_chat().sign_up("ben")
    ann.start_chat_with(ben)
    texts = [f"message {n}" for n in range(1, 56)]  # more than one page of 50
    for text in texts:
        ann.send(text)

    ben.open_conversation(ann.username)
    ben.expect_messages(texts[-50:])
    ben.page.get_by_role("button", name="Load older messages").click()
    ben.expect_messages(texts)
    expect(ben.page.get_by_role("button", name="Load older messages")).to_be_hidden()


def test_a_reload_resumes_from_the_stored_cursor_without_losing_or_repeating(open_chat):
    ann, ben = open_chat().sign_up("ann"), open_chat().sign_up("ben")
    ann.start_chat_with(ben)
    ann.send("before the reload")
    ben.open_conversation(ann.username)
    ben.expect_messages(["before the reload"])
    cursor = ben.page.evaluate("localStorage.getItem('parley.cursor')")
    assert cursor is not None

    page_url = ben.page.url  # it names the open conversation
    ben.page.goto("about:blank")
    ann.send("while Ben was away")
    ann.send("and one more")
    with ben.page.expect_request(re.compile(r"/v1/inbox\?")) as first_poll:
        ben.page.goto(page_url)

    assert parse_qs(urlsplit(first_poll.value.url).query)["after"] == [cursor]
    ben.expect_messages(["before the reload", "while Ben was away", "and one more"])
    ann.send("after the reload")
    ben.expect_messages(
        ["before the reload", "while Ben was away", "and one more", "after the reload"]
    )


def test_a_cursor_the_server_does_not_know_is_dropped(open_chat):
    ann, ben = open_chat().sign_up("ann"), open_chat().sign_up("ben")
    ann.start_chat_with(ben)
    ann.page.evaluate("localStorage.setItem('parley.cursor', '999999')")  # say, a wiped server
    ann.page.reload()
    ann.send("still here")
    ben.open_conversation(ann.username)
    ben.send("me too")
    ann.expect_messages(["still here", "me too"])


def test_a_pruned_inbox_reloads_the_history_and_polls_on(open_chat):
    ann, ben = open_chat().sign_up("ann"), open_chat().sign_up("ben")
    ann.start_chat_with(ben)
    ann.send("one")
    cursor = int(ann.page.evaluate("localStorage.getItem('parley.cursor')"))
    pruned = {
        "error": {
            "code": "cursor_pruned",
            "message": "Entries after your cursor were pruned.",
            "details": {"oldest_cursor": cursor},
        }
    }

    def answer_pruned(route):
        route.fulfill(status=410, json=pruned)

    with ann.page.expect_request(re.compile(r"/v1/conversations/\d+/messages")):  # reloaded
        ann.page.route("**/v1/inbox?*", answer_pruned, times=1)  # the next poll
    ben.open_conversation(ann.username)
    ben.send("two")
    ann.expect_messages(["one", "two"])


def test_message_text_is_shown_as_text_never_run_as_html(open_chat):
    ann, ben = open_chat().sign_up("ann"), open_chat().sign_up("ben")
    attacks = ["<img src=x onerror=alert(1)>", "<b>not bold</b>", "<script>alert(2)</script>"]
    group_title = "<img src=y onerror=alert(3)>"

    ann.create_group(group_title, [ben])
    for text in attacks:
        ann.send(text)
    ben.open_conversation(group_title)

    ben.expect_messages(attacks)
    ann.expect_messages(attacks)
    for person in (ann, ben):
        assert person.page.locator("#messages img, #messages b, #messages script").count() == 0
        assert person.page.locator("#conversations img").count() == 0
        assert person.dialogs == []


def test_presence_dots_follow_a_contact_going_offline_and_back(open_chat):
    ann, ben = open_chat().sign_up("ann"), open_chat().sign_up("ben")
    ann.start_chat_with(ben)
    ann.expect_presence(ben, online=True)

    ben.close()  # his long poll ends; the 2 s presence window passes
    ann.expect_presence(ben, online=False)
    open_chat().log_in(ben.username)
    ann.expect_presence(ben, online=True)


def test_an_unreachable_server_is_announced_and_recovered_from(open_chat):
    ann, ben = open_chat().sign_up("ann"), open_chat().sign_up("ben")
    ann.start_chat_with(ben)
    ann.send("first")
    ben.open_conversation(ann.username)
    ben.expect_messages(["first"])

    cut_off(ben)
    ann.send("sent while Ben is cut off")  # answers his held poll; the next ones fail
    banner = ben.page.get_by_role("alert").filter(has_text="Can't reach the Parley server")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(re.compile(r"Retrying in \d+ s"))
    ben.screenshot("server-unreachable")

    reconnect(ben)
    expect(banner).to_be_hidden()
    ann.send("and after it")
    ben.expect_messages(["first", "sent while Ben is cut off", "and after it"])

    cut_off(ben)
    ben.page.reload()  # the page itself loads; the API does not answer
    expect(banner).to_be_visible()
    reconnect(ben)
    ben.expect_messages(["first", "sent while Ben is cut off", "and after it"])


def cut_off(person: ChatPage) -> None:
    """Every API request of this person's page fails as if the network were down."""
    person.page.route("**/v1/**", lambda route: route.abort("internetdisconnected"))


def reconnect(person: ChatPage) -> None:
    person.page.unroute("**/v1/**")
    person.page.get_by_role("button", name="Retry now").click()


def test_one_tab_of_a_browser_polls_and_another_takes_over_when_it_closes(open_chat):
    ann, ben = open_chat().sign_up("ann"), open_chat().sign_up("ben")
    ann.start_chat_with(ben)
    ann.send("hello")
    second_tab = ann.open_tab()  # the same device: its polls would end each other's
    expect(second_tab.page.get_by_role("alert")).to_contain_text("open in another tab")

    ben.open_conversation(ann.username)
    ben.send("to the first tab")
    ann.expect_messages(["hello", "to the first tab"])
    ann.page.close()
    expect(second_tab.page.get_by_role("alert")).to_be_hidden()
    second_tab.open_conversation(ben.username)
    ben.send("to the second tab")
    second_tab.expect_messages(["hello", "to the first tab", "to the second tab"])


def test_on_a_phone_the_list_and_the_chat_take_turns(open_chat):
    ann, ben = open_chat(**PHONE).sign_up("ann"), open_chat().sign_up("ben")
    conversations = ann.page.get_by_role("navigation", name="Conversations")

    ann.start_chat_with(ben)
    expect(conversations).to_be_hidden()
    ann.send("Typed on a phone")
    ben.open_conversation(ann.username)
    ben.send("Read on a laptop")
    ann.expect_messages(["Typed on a phone", "Read on a laptop"])
    ann.screenshot("chat-phone")

    ann.page.get_by_role("button", name="← Back").click()
    expect(conversations).to_be_visible()
    expect(ann.conversation_link(ben.username)).to_be_focused()
    ann.screenshot("conversations-phone")


def test_the_api_docs_show_every_operation_from_this_server_only(browser, server):
    context = browser.new_context()
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(f"{server.url}/docs")
    expect(page.get_by_text("/v1/inbox", exact=True)).to_be_visible()
    expect(page.get_by_text("/v1/conversations/{conversation_id}/messages").first).to_be_visible()
    page.screenshot(path=artifact("docs.png"))
    context.close()

    assert requested and all(url.startswith(server.url) for url in requested), requested
