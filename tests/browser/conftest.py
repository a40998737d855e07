"""A real server in the embedded mode and headless Chromium, shared by a module's tests.

The server is what ``make run`` starts on a fresh machine: gunicorn with one
worker, a SQLite file (migrated with Alembic, copied from the suite's template),
no Redis. Going offline shows within seconds: a held poll counts as online until
it ends, so polls are held for 2 s at most, and presence has a 2 s window.
"""

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.browser.chat_page import ChatPage
from tests.browser.chromium import LAUNCH_ARGS, chromium_executable
from tests.scaled.servers import Instance, embedded_instance

QUICK_PRESENCE = {
    "LONG_POLL_CAP_S": "2",
    "PRESENCE_WINDOW_S": "2",
    "PRESENCE_SWEEP_INTERVAL_S": "0.2",
}


@pytest.fixture(scope="module")
def server(sqlite_template, tmp_path_factory) -> Iterator[Instance]:
    with embedded_instance(
        "web", sqlite_template, tmp_path_factory.mktemp("web"), **QUICK_PRESENCE
    ) as instance:
        yield instance


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_executable()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_chat(browser, server) -> Iterator[Callable[..., ChatPage]]:
    """Open the web client in a new browser context (a new person); none may raise a
    script error."""
    opened: list[ChatPage] = []

    def open_page(**context_options) -> ChatPage:
        chat = ChatPage.open(browser, server.url, **context_options)
        opened.append(chat)
        return chat

    yield open_page
    for chat in opened:
        chat.close()
    assert [error for chat in opened for error in chat.errors] == []
