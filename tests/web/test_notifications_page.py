"""The Notifications page in a real browser against a backend process (no runner needed)
and a real receiver: the destinations, a test sent from the page and its delivery with
each attempt; a viewer gets no button."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from playwright.sync_api import Page, expect

from tests.backend.platform import Backend, start_backend
from tests.backend.receiver import Receiver, signature_ok
from tests.web.conftest import screenshot, sign_in


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


@pytest.fixture(scope="module")
def backend(web_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp("web-notify")
    env = {
        **web_env,
        "ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "IAC_NOTIFY_ALLOW": "127.0.0.1",
        "IAC_NOTIFY_POLL_INTERVAL": "0.05",
    }
    started = start_backend(tmp, env, f"sqlite:///{tmp / 'db' / 'iac.db'}")
    yield started
    started.stop()


def test_send_a_test_from_the_page_and_see_its_delivery(
    backend: Backend, receiver: Receiver, page: Page
) -> None:
    receiver.answer(503)  # the first attempt fails: both attempts are listed
    made = backend.call(
        "POST", "/notifications/destinations", 201, json={"name": "ops", "url": receiver.url()}
    )
    backend.call(
        "POST",
        "/notifications/destinations",
        201,
        json={"name": "chat", "url": receiver.url("/chat"), "kind": "slack",
              "events": ["run.failed"]},
    )  # fmt: skip
    sign_in(page, backend.url, "/notifications")
    row = page.locator("#destinations tr[data-destination='ops']")
    expect(row).to_contain_text(f"127.0.0.1:{receiver.port}")
    expect(row).to_contain_text("every deployment")
    expect(page.locator("#destinations tr[data-destination='chat']")).to_contain_text("run.failed")
    row.locator("button.send-test").click()
    expect(page.locator("#flash")).to_contain_text("Test queued for ops: delivery")
    delivery = page.locator("#deliveries tr[data-status='delivered']")
    expect(delivery).to_have_count(1)
    expect(delivery).to_contain_text("test")
    expect(delivery.locator("ol.attempts li")).to_have_count(2)
    expect(delivery.locator("ol.attempts li").first).to_contain_text("HTTP 503")
    expect(delivery.locator("ol.attempts li").nth(1)).to_contain_text("HTTP 200")
    expect(page.locator("#deliveries-of")).to_have_text("to ops")
    assert all(signature_ok(made["secret"], r) for r in receiver.received)
    screenshot(page, "notifications")

    viewer = backend.call("POST", "/tokens", 201, json={"name": "viewer-n", "role": "viewer"})
    page.evaluate("() => sessionStorage.clear()")
    sign_in(page, backend.url, "/notifications", token=viewer["token"])
    expect(page.locator("#destinations tr[data-destination='ops']")).to_be_visible()
    expect(page.locator("button.send-test")).to_have_count(0)
