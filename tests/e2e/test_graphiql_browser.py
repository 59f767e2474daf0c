"""GraphiQL in a real browser: it opens without a token, loads nothing from the internet, and
runs a query with the token set in its headers pane, as the README tells a person to do.

Debian's Chromium, driven headless by Playwright (no browser of Playwright's own). The
screenshot of the answered query is kept in ``.ledgerline/artifacts/``.
"""

import json
import shutil
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Page, Route, async_playwright

from tests.conftest import REPO, Running, token, unique

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / ".ledgerline" / "artifacts"


async def _type_into(page: Page, editor: str, text: str) -> None:
    """Replaces the text of one of GraphiQL's editors, through the keyboard."""
    await page.locator(f"{editor} .CodeMirror:visible").click()
    await page.keyboard.press("Control+A")
    await page.keyboard.press("Delete")
    await page.keyboard.insert_text(text)


async def test_graphiql_runs_a_query_with_the_token_from_its_headers_pane(running: Running) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is needed (apt-get install chromium; .ci/run installs it)")
    alice = unique("alice")
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(running.graphql_url))
    outside: list[str] = []

    async def only_this_server(route: Route) -> None:
        url = route.request.url
        if url.startswith((origin + "/", "data:")):
            await route.continue_()
        else:  # the test machine has no internet: a page that needs it would stay blank
            outside.append(url)
            await route.abort()

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 800})
            await page.route("**/*", only_this_server)
            opened = await page.goto(running.graphql_url)
            assert opened is not None and opened.status == 200
            await page.locator(".graphiql-query-editor .CodeMirror").wait_for(timeout=30_000)

            await page.get_by_role("button", name="Headers").click()
            await _type_into(page, ".graphiql-editor-tool", json.dumps(
                {"Authorization": f"Bearer {token(alice, wallets=[alice])}"}))
            await _type_into(page, ".graphiql-query-editor",
                             f'{{ wallet(id: "{alice}") {{ id balances {{ available }} }} }}')
            await page.locator(".graphiql-execute-button").click()

            response = page.locator(".graphiql-response")
            await response.get_by_text(f'"id": "{alice}"').wait_for(timeout=30_000)
            answer = await response.inner_text()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = await page.screenshot(path=str(ARTIFACTS / "graphiql.png"))
        finally:
            await browser.close()
    assert '"balances": []' in answer, answer
    assert "errors" not in answer, answer
    assert outside == []
    assert len(shot) > 10_000
