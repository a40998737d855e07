"""One person at the web client: a browser context of their own, driven like a user does."""

import re
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.factories import PASSWORD
from tests.scaled.client import unique_username

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
ONLINE = re.compile(r"\bonline\b")
PRESENCE_WAIT_MS = 10_000  # above the server's poll hold + presence window + sweep (conftest)


class ChatPage:
    """The page of one browser context (its own localStorage: its own token and cursor).

    Uncaught script errors and dialogs (``alert`` and the like) are recorded, for
    tests to assert that there were none.
    """

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.username = ""
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("dialog", self._record_dialog)

    @classmethod
    def open(cls, browser: Browser, base_url: str, **context_options) -> "ChatPage":
        page = browser.new_context(**context_options).new_page()
        chat = cls(page, base_url)
        page.goto(base_url)
        return chat

    def open_tab(self) -> "ChatPage":
        """Another tab of the same browser: it shares this one's localStorage, so its session."""
        tab = ChatPage(self.page.context.new_page(), self.base_url)
        tab.username = self.username
        tab.page.goto(self.base_url)
        return tab

    def _record_dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def close(self) -> None:
        self.page.context.close()

    # ---- signing in ----

    def sign_up(self, name: str) -> "ChatPage":
        self.username = unique_username(name)
        self._fill_sign_in(self.username)
        self.page.get_by_role("button", name="Sign up").click()
        expect(self.page.locator("#whoami")).to_contain_text(self.username)
        return self

    def log_in(self, username: str) -> "ChatPage":
        self.username = username
        self._fill_sign_in(username)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page.locator("#whoami")).to_contain_text(username)
        return self

    def _fill_sign_in(self, username: str) -> None:
        self.page.get_by_label("Username", exact=True).fill(username)
        self.page.get_by_label("Password", exact=True).fill(PASSWORD)

    # ---- conversations ----

    def start_chat_with(self, other: "ChatPage") -> None:
        self.page.get_by_label("Chat with (username)").fill(other.username)
        self.page.get_by_role("button", name="Start chat").click()
        expect(self.page.locator("#conversation-title")).to_have_text(other.username)

    def create_group(self, title: str, members: list["ChatPage"]) -> None:
        self.page.get_by_text("New group").click()
        self.page.get_by_label("Group name").fill(title)
        self.page.locator("#group-members").fill(", ".join(m.username for m in members))
        self.page.get_by_role("button", name="Create group").click()
        expect(self.page.locator("#conversation-title")).to_have_text(title)

    def add_members(self, members: list["ChatPage"]) -> None:
        self.page.locator("#add-usernames").fill(", ".join(m.username for m in members))
        self.page.get_by_role("button", name="Add", exact=True).click()
        for member in members:
            expect(self.members.filter(has_text=member.username)).to_have_count(1)

    def conversation_link(self, title: str):
        return self.page.locator("#conversations button", has_text=title)

    def open_conversation(self, title: str) -> None:
        self.conversation_link(title).click()
        expect(self.page.locator("#conversation-title")).to_have_text(title)

    @property
    def members(self):
        return self.page.locator("#members li")

    def expect_presence(self, other: "ChatPage", online: bool) -> None:
        dot = self.members.filter(has_text=other.username).locator(".dot")
        words = re.compile("^online$" if online else "^offline")  # what a screen reader says
        # Going offline shows once the last poll's hold and the presence window have passed.
        expect(dot).to_have_attribute("aria-label", words, timeout=PRESENCE_WAIT_MS)
        if online:
            expect(dot).to_have_class(ONLINE)
        else:
            expect(dot).not_to_have_class(ONLINE)

    # ---- messages ----

    def send(self, text: str) -> None:
        """Type a message and press Enter; returns once the server has taken it."""
        box = self.page.get_by_label("Message", exact=True)
        box.fill(text)
        box.press("Enter")
        expect(box).to_have_value("")

    @property
    def messages(self):
        return self.page.locator("#messages .text")

    def expect_messages(self, texts: list[str]) -> None:
        """Exactly these messages, in this order: none missing, none twice."""
        expect(self.messages).to_have_text(texts)

    def screenshot(self, name: str) -> None:
        self.page.screenshot(path=artifact(f"{name}.png"))


def artifact(name: str) -> Path:
    """Where a test keeps a file for people to look at (test-artifacts/ is not committed)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
