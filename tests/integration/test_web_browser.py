"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against a daemon.

The page is loaded once; clients are then activated by the strict client over TCP, and the
count and the new rows must appear without a reload, within a bounded wait (the page polls).
One machine name is an HTML payload: it must show as text, and no dialog may open.

``KMS_HOST_DASHBOARD_PNG=docs/dashboard.png`` saves the README's screenshot there (otherwise
it goes to the test's temporary directory).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from harness import RunningHost, make_request, run_host

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing: Debian's chromium package (.ci/setup-browser.sh)",
        allow_module_level=True,
    )

from playwright.async_api import Browser, Dialog, Page, async_playwright, expect  # noqa: E402

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WEB = '[web]\nlisten = "127.0.0.1:0"\n[counting]\nprefill = "none"\n'
PAYLOAD = "<img src=x onerror=alert(1)>"
UPDATE_WAIT_MS = 10_000
"""How long the page gets to show a change: several polls (every 1.5 s), not a speed test."""


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def activate(host: RunningHost, product: str, machine_name: str) -> None:
    async with await host.client() as client:
        result = await client.activate(make_request(product, machine_name=machine_name))
    assert result.hresult == 0


async def open_dashboard(browser: Browser, host: RunningHost, dialogs: list[str]) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})

    async def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    address, port = host.web[0]
    await page.goto(f"http://{address}:{port}/")
    return page


@pytest.mark.asyncio
async def test_page_shows_new_activations_live_and_as_text(
    tmp_path: Path, browser: Browser
) -> None:
    dialogs: list[str] = []
    async with run_host(tmp_path, WEB) as host:
        page = await open_dashboard(browser, host, dialogs)
        windows = page.locator("#counts tr[data-app=windows] td.count")
        await expect(windows).to_have_text("0", timeout=UPDATE_WAIT_MS)
        await expect(page.locator("#clients tbody tr")).to_have_count(0)

        await activate(host, "win10pro", PAYLOAD)
        await activate(host, "ws2022dc", "build-agent-07.lab.example")
        await activate(host, "o2021pp", "office-desk-12.lab.example")

        await expect(windows).to_have_text("2", timeout=UPDATE_WAIT_MS)
        office = page.locator("#counts tr[data-app=office] td.count")
        await expect(office).to_have_text("1", timeout=UPDATE_WAIT_MS)
        await expect(page.locator("#activations tbody tr")).to_have_count(3, timeout=UPDATE_WAIT_MS)
        await expect(page.locator("#clients tbody tr")).to_have_count(3, timeout=UPDATE_WAIT_MS)
        for table in ("#activations", "#clients"):
            machines = page.locator(f"{table} td.machine")
            await expect(machines.filter(has_text=PAYLOAD)).to_have_count(1)
            assert await page.locator(f"{table} img").count() == 0

        await page.fill("#filter input[name=machine]", "build-agent")
        await expect(page.locator("#clients tbody tr")).to_have_count(1, timeout=UPDATE_WAIT_MS)
        await expect(page.locator("#clients td.machine")).to_have_text("build-agent-07.lab.example")
        await page.fill("#filter input[name=machine]", "")
        await expect(page.locator("#clients tbody tr")).to_have_count(3, timeout=UPDATE_WAIT_MS)
        await expect(page.locator("#state")).to_contain_text("live")
        screenshot = os.environ.get("KMS_HOST_DASHBOARD_PNG") or str(tmp_path / "dashboard.png")
        await page.screenshot(path=screenshot, full_page=True)
    assert dialogs == []
