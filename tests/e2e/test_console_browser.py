"""The compliance console in a real browser (Debian's Chromium, headless, driven by
Playwright; no browser download, nothing from the internet): signed in with a pasted token, an
alert raised by a transfer appears in the queue without a reload; clearing its case from the
page updates the page and the view. Screenshots are kept in ``.ledgerline/artifacts/``."""

import shutil
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Route, async_playwright

from tests.conftest import REPO, Running, unique
from tests.e2e.compliance_support import COMPLIANCE, Ledger
from tests.e2e.helpers import graphql

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / ".ledgerline" / "artifacts"


async def test_an_alert_appears_live_and_its_case_is_cleared_from_the_console(
        http: httpx.AsyncClient, running: Running) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is needed (apt-get install chromium)")
    origins = ("{0.scheme}://{0.netloc}/".format(urlsplit(running.graphql_url)), running.command_url + "/")
    outside: list[str] = []

    async def only_the_stack(route: Route) -> None:
        if route.request.url.startswith((*origins, "data:")):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    ledger = await Ledger(http, running).start()
    whale = unique("whale")
    await ledger.fund(whale, 1_000_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1500, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append("console: " + m.text) if m.type == "error" else None)
            await page.route("**/*", only_the_stack)
            opened = await page.goto(running.graphql_url.replace("/graphql", "/console"))
            assert opened is not None and opened.status == 200
            await page.fill("#token", COMPLIANCE)
            await page.click("#login")
            await page.locator("#live.on").wait_for(timeout=30_000)

            await ledger.send(whale, unique("to"), 1_000_000)  # trips large_movement
            row = page.locator(f'tr[data-wallet="{whale}"]')
            await row.wait_for(timeout=30_000)  # pushed by alertRaised: no reload
            assert "large_movement" in await row.inner_text()
            await page.screenshot(path=str(ARTIFACTS / "console-alert.png"))

            await row.click()
            await page.locator("#case-status").wait_for(timeout=15_000)
            assert await page.locator("#case-status").inner_text() == "open"
            assert await page.locator("#case-wallet").inner_text() == whale
            assert "TransferConfirmed" in await page.locator(".evidence pre").first.inner_text()
            assert await page.locator("#moves tr").count() >= 1
            case_id = await row.locator("td.status").get_attribute("data-case-status")

            await page.fill("#note", "known counterparty")
            await page.click("#act-clear")
            await page.locator("#case-status", has_text="cleared").wait_for(timeout=30_000)
            await page.locator(f'tr[data-wallet="{whale}"] td.status', has_text="cleared").wait_for(timeout=5_000)
            await page.screenshot(path=str(ARTIFACTS / "console-cleared.png"))
            assert "known counterparty" in await page.locator("#notes").inner_text()
        finally:
            await browser.close()
    data = await graphql(http, running, COMPLIANCE, "query($id: ID!) { case(id: $id) { status } }", id=case_id)
    assert data["case"] == {"status": "cleared"}
    view = await graphql(http, running, COMPLIANCE, """query($w: ID) { alerts(filter: {wallet: $w}) {
        nodes { status } } }""", w=whale)
    assert view["alerts"]["nodes"] == [{"status": "cleared"}]
    assert outside == [] and errors == []
