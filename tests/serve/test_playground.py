"""The browser playground in a real headless Chromium (Debian's package) against the local Ray Serve app:
load the page, give the token, ask, see the SQL and the rows."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from serve_helpers import PAIRS

pytestmark = pytest.mark.ray

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture()
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(f"Debian's chromium and chromedriver are needed ({CHROMIUM}, {CHROMEDRIVER}): "
                    "apt-get install chromium chromium-driver (.ci/run does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,860", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_playground_asks_and_shows_the_rows(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 120)
    browser.get(f"{server['base']}/playground")
    # Without the token the page itself loads, but the API answers 401 and the page says so.
    wait.until(lambda d: "API token" in d.find_element(By.ID, "error").text)
    token = browser.find_element(By.ID, "token")
    token.send_keys(server["token"])
    browser.execute_script("document.getElementById('token').dispatchEvent(new Event('change'))")
    wait.until(lambda d: any(o.get_attribute("value") == "shop"
                             for o in d.find_elements(By.CSS_SELECTOR, "#source option")))
    Select(browser.find_element(By.ID, "source")).select_by_value("shop")
    browser.find_element(By.ID, "question").send_keys(PAIRS[0][0])
    browser.find_element(By.ID, "ask").click()
    wait.until(ec.presence_of_element_located((By.ID, "rows-table")))
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#rows-table td")]
    assert cells == ["3"]
    assert browser.find_element(By.ID, "sql").text == PAIRS[0][1].rstrip(";")
    assert browser.find_elements(By.CSS_SELECTOR, "#sql .kw")  # highlighted
    flags = browser.find_element(By.ID, "flags").text
    assert "valid" in flags and "read-only" in flags and "ms" in flags and "0 repair rounds" in flags
    shot = os.environ.get("SQLTUNE_PLAYGROUND_SCREENSHOT")
    if shot:
        browser.save_screenshot(shot)


def test_playground_page_is_static_and_its_api_needs_the_token(server):
    import httpx

    page = httpx.get(f"{server['base']}/playground", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "v1/sql" in page.text
    assert httpx.get(f"{server['base']}/v1/databases", timeout=30).status_code == 401
    dbs = httpx.get(f"{server['base']}/v1/databases", headers=server["headers"], timeout=30).json()
    assert dbs == {"databases": [{"name": "shop", "dialect": "sqlite"}], "model": "sqltune-tiny"}
