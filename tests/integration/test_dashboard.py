"""The dashboard in a real browser (Debian's chromium, driven by Playwright) over the platform's real processes: a
burst shows replicas rising to two and falling back to zero, with the scaling events and their reasons; with API
keys on, the page asks for a key and shows the data once one is typed. The page asks nothing of another site.

A screenshot at the burst's peak is saved in the test's directory; with ``SM_UPDATE_SCREENSHOTS=1``, as
docs/dashboard.png (the README's picture)."""

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from gateway.auth import digest
from tests.integration.platform import Platform, unavailable
from tests.integration.test_holes import job, post, sleepy

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
# one slot per replica, a second's work per job and seeds that make a burst worth a second replica at once
SLEEPY = sleepy(concurrency=1, max_replicas=2, idle_timeout=3, cold_start_seed=1, service_time_seed=1,
                env='{ MODEL_CLASS = "testmodels:Sleepy", SERVICE_TIME = "1" }')
BURST = 16
IRIS = {"features": [[5.1, 3.5, 1.4, 0.2]]}
KEY = "dashboard-key"
WAIT = 60_000  # milliseconds any condition of the page may take


@pytest.fixture
def browser() -> Iterator["Browser"]:
    """Headless chromium, closed after the test."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("no playwright (pip install playwright)")
    if not shutil.which(CHROMIUM):
        unavailable(f"no {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Visit:
    """A page of the dashboard, with every request it made and every error it logged."""

    def __init__(self, browser: "Browser", platform: Platform) -> None:
        self.page: Page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.requested: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requested.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(f"{platform.url}/dashboard")
        self.origin = platform.url

    def model(self, name: str, field: str) -> Any:
        """A model's stat on the page (its locator)."""
        return self.page.locator(f'[data-model="{name}"] .{field}')

    def check(self) -> None:
        """The page asked only its own gateway and logged no error (an answer's 4xx aside: a refused key, a route
        this gateway lacks)."""
        assert self.requested and all(url.startswith(self.origin + "/") for url in self.requested), self.requested
        assert [e for e in self.errors if not e.startswith("Failed to load resource")] == []


def test_a_burst_shows_replicas_rising_and_falling_with_the_reasons(make_platform: Callable[..., Platform],
                                                                   browser: "Browser", tmp_path: Path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    platform = make_platform(models=SLEEPY, idle_timeout=60).start("gateway", "worker", "autoscaler")
    visit = Visit(browser, platform)
    expect(visit.model("sleepy", "actual")).to_have_text("0", timeout=WAIT)
    assert post(platform, "iris", IRIS, wait=60).json()["status"] == "SUCCEEDED"  # iris warm, for the picture
    failed = post(platform, "iris", {"features": "not a matrix"}, wait=60).json()
    assert failed["status"] == "FAILED"
    expect(visit.page.locator('[data-model="iris"]')).to_contain_text("first_result", timeout=WAIT)  # its stages
    jobs = [post(platform, "sleepy", {"i": i}).json()["id"] for i in range(BURST)]

    expect(visit.model("sleepy", "actual")).to_have_text("2", timeout=WAIT)
    expect(visit.model("sleepy", "desired")).to_have_text("2", timeout=WAIT)
    events = visit.page.locator("#events")
    expect(events).to_contain_text("scale_up", timeout=WAIT)
    expect(events).to_contain_text("waiting=", timeout=WAIT)  # the policy's reason, as the autoscaler gave it
    expect(visit.page.locator("#failed")).to_contain_text(failed["id"], timeout=WAIT)
    with contextlib.suppress(PlaywrightTimeout):  # for the picture: both replicas busy, if the page sees it in time
        expect(visit.model("sleepy", "running")).to_have_text("2", timeout=20_000)
    screenshot = tmp_path / "dashboard.png"
    visit.page.screenshot(path=str(screenshot), full_page=True)
    if os.environ.get("SM_UPDATE_SCREENSHOTS"):
        shutil.copyfile(screenshot, ROOT / "docs" / "dashboard.png")

    platform.wait_until(lambda: all(job(platform, j)["status"] == "SUCCEEDED" for j in jobs), 120,
                        "the burst did not finish")
    expect(visit.model("sleepy", "actual")).to_have_text("0", timeout=WAIT)
    expect(visit.model("sleepy", "desired")).to_have_text("0", timeout=WAIT)
    expect(events).to_contain_text("scale_down", timeout=WAIT)
    expect(events).to_contain_text("idle: waiting=0", timeout=WAIT)
    visit.check()


def test_with_api_keys_the_page_asks_for_a_key_then_shows_the_data(make_platform: Callable[..., Platform],
                                                                   browser: "Browser") -> None:
    from playwright.sync_api import expect

    platform = make_platform()
    platform.env["SM_API_KEYS"] = digest(KEY)
    platform.start("gateway")
    assert requests.get(f"{platform.url}/v1/models", timeout=10).status_code == 401
    visit = Visit(browser, platform)
    form = visit.page.locator("#key-form")
    expect(form).to_be_visible(timeout=WAIT)
    expect(visit.page.locator("[data-model]")).to_have_count(0)

    visit.page.fill("#key", "not-the-key")
    visit.page.press("#key", "Enter")
    expect(visit.page.locator("#key-message")).to_contain_text("unknown API key", timeout=WAIT)
    expect(visit.page.locator("[data-model]")).to_have_count(0)

    visit.page.fill("#key", KEY)
    visit.page.press("#key", "Enter")
    expect(form).to_be_hidden(timeout=WAIT)
    expect(visit.model("iris", "bounds")).to_have_text("0\N{EN DASH}2", timeout=WAIT)
    visit.page.reload()  # the key is kept for the browser tab
    expect(visit.model("iris", "bounds")).to_have_text("0\N{EN DASH}2", timeout=WAIT)
    expect(form).to_be_hidden()
    visit.check()
