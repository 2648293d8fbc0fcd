"""Web UI fixtures: one real platform for the package (two runner servers with different
labels, a backend process on SQLite, real terraform) and headless Chromium from Debian
driven by Playwright.

The browser is ``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs it);
Playwright never downloads a browser of its own here. Without the binary the browser tests
are skipped with that reason. Screenshots go to ``test-artifacts/web/``, and a failing
browser test leaves one named after it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, expect, sync_playwright

from tests.backend.platform import TOKEN, Backend, start_backend
from tests.conftest import skip_unless_strict
from tests.procs import RunnerProcess, start_runner

CHROMIUM = Path(os.environ.get("IAC_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
TIMEOUT_MS = 30_000

expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class Platform:
    """Runner servers aws-1 (provider=aws) and gcp-1 (provider=gcp, 2 slots) and a backend."""

    tmp: Path
    env: dict[str, str]
    db_url: str
    backend: Backend
    runners: dict[str, RunnerProcess]

    @property
    def url(self) -> str:
        return self.backend.url

    def restart_backend(self) -> None:
        """SIGKILL the backend and start it again on the same port, database and data."""
        port = int(self.backend.url.rsplit(":", 1)[1])
        self.backend.stop(signal.SIGKILL)
        self.backend = start_backend(self.tmp, self.env, self.db_url, port=port)


@pytest.fixture(scope="package")
def web_env(tf_cli_config: str) -> dict[str, str]:
    """As ``tool_env``, for fixtures that outlive one test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IAC_", "TF_"))}
    env.pop("PYTHONUNBUFFERED", None)
    env.pop("DATABASE_URL", None)
    env.pop("ENCRYPTION_KEY", None)
    env["TF_CLI_CONFIG_FILE"] = tf_cli_config
    env["CHECKPOINT_DISABLE"] = "1"
    return env


@pytest.fixture(scope="package")
def platform(
    tmp_path_factory: pytest.TempPathFactory, web_env: dict[str, str]
) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("web")
    runners = {
        "aws-1": start_runner(
            tmp, web_env, "--label", "provider=aws", "--grace", "2", name="aws-1"
        ),
        "gcp-1": start_runner(
            tmp,
            web_env,
            "--label",
            "provider=gcp",
            "--max-concurrent",
            "2",
            "--grace",
            "2",
            name="gcp-1",
        ),
    }
    db_url = f"sqlite:///{tmp / 'db' / 'iac.db'}"
    backend = start_backend(tmp, web_env, db_url)
    platform = Platform(tmp, web_env, db_url, backend, runners)
    try:
        backend.register("aws-1", runners["aws-1"].address, provider="aws")
        backend.register("gcp-1", runners["gcp-1"].address, provider="gcp")
        backend.wait_runners_healthy("aws-1", "gcp-1")
        yield platform
    finally:
        platform.backend.stop()
        for runner in runners.values():
            runner.stop()


# Package scope, not session: Playwright's sync API keeps an asyncio loop marked running
# in this thread while it is open, so a later test of the same worker that calls
# asyncio.run() (a PostgreSQL database made for it, say) would fail.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        skip_unless_strict(
            f"no Chromium at {CHROMIUM}: install Debian's browser with "
            "`apt-get install -y chromium` (or set IAC_TEST_CHROMIUM) to run the browser tests"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (empty sessionStorage) per test. An uncaught exception in the
    page's JavaScript fails the test; a failed test leaves a screenshot."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    console: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(f"{exc.name}: {exc.message}"))
    tab.on("console", lambda msg: _keep_console(console, msg))
    try:
        yield tab
        if request.node.stash.get(CALL_FAILED, False):
            screenshot(tab, f"failed-{request.node.name}")
    finally:
        context.close()
    assert not errors, f"JavaScript errors in the page: {errors}; console: {console}"


def _keep_console(into: list[str], message: ConsoleMessage) -> None:
    into.append(f"{message.type}: {message.text}")


def screenshot(tab: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    try:
        tab.screenshot(path=str(path), full_page=True)
    except Error:
        pass  # a screenshot is evidence, not the test
    return path


def sign_in(tab: Page, url: str, path: str = "/", token: str = TOKEN) -> None:
    """Open `path`, get sent to /login, paste the token, and land back on `path`."""
    tab.goto(url + path)
    tab.wait_for_url("**/login?**")
    tab.fill("#token", token)
    tab.click("#login-form button[type=submit]")
    tab.wait_for_url(url + path)
