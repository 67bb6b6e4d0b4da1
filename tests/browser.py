"""A real browser for the back office's tests: Debian's chromium driven by Playwright (never a
downloaded browser). Skipped with a clear message where no chromium exists, failed in CI. Every
page collects console errors and failed requests; a test fails on any."""

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway import usertool
from gateway.server import Gateway

CHROMIUM = shutil.which("chromium") or next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser")
                                            if Path(p).exists()), None)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
SCREENS = Path(__file__).resolve().parent.parent / ".pytest_cache" / "screens"
PASSWORD = "correct horse battery"


def need_chromium() -> str:
    if CHROMIUM is None:
        message = "no chromium on PATH: `apt-get install chromium` to run the back office's browser tests"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run them)")
        pytest.skip(message)
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("playwright is missing: it is in the dev extras (pip install -e '.[dev]')")
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    executable = need_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        yield launched
        await launched.close()


@dataclass
class Tab:
    page: Any
    gateway: Gateway
    errors: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}/admin/"

    async def sign_in(self, email: str, password: str = PASSWORD) -> None:
        await self.page.goto(self.base)
        await self.page.fill("#email", email)
        await self.page.fill("#password", password)
        await self.page.click("form.signin button[type=submit]")
        await self.page.wait_for_selector("#signout")

    async def open(self, hash_path: str) -> None:
        await self.page.evaluate("path => { location.hash = path; }", hash_path)

    async def leave(self) -> None:
        """Close the page before its gateway stops: else the page's reconnecting, refused, is a console error."""
        await self.page.close()

    async def screenshot(self, name: str) -> Path:
        SCREENS.mkdir(parents=True, exist_ok=True)
        path = SCREENS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=False)
        return path


@pytest.fixture
async def tab(browser: Any, gateway: Gateway) -> AsyncIterator[Tab]:
    """A fresh browser context at 1280x800 in English, its console watched."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US",
                                        accept_downloads=True)
    page = await context.new_page()
    opened = Tab(page, gateway)
    page.on("console", lambda m: opened.errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: opened.errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: opened.errors.append(f"request failed: {r.url} {r.failure}"))
    yield opened
    await context.close()
    assert opened.errors == [], opened.errors


async def staff(gateway: Gateway, database_url: str, role: str, brands: list[str] | None = None) -> tuple[str, str]:
    """(e-mail, user id) of a new staff account made as `run.py user create` makes it."""
    from tests.conftest import FAST_PASSWORDS  # conftest imports this module's fixtures

    email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    line = await usertool.create(gateway.config, database_url, role=role, email=email, name=f"Test {role}",
                                 password=PASSWORD, brands=brands or [], passwords=FAST_PASSWORDS)
    return email, line.split()[1]
