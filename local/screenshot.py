"""``python -m local.screenshot URL OUT.png [--token T]``: a picture of the alerts page.

Opens the page in Debian's headless Chromium (through chromedriver; nothing is downloaded),
signs in when given a token, opens the detail of the newest blocked alert (or the newest
alert) and saves a screenshot: how the README's picture is made from a running stack.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


class BrowserMissing(RuntimeError):
    """Debian's chromium or chromedriver is not installed."""


def headless_chromium(profile_dir: Path, size: str = "1600,900") -> Any:
    """Debian's headless Chromium driven through its chromedriver (Selenium). Nothing is
    downloaded: Selenium Manager is not consulted when the driver path is given. Also used
    by the alerts-page browser test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        raise BrowserMissing(
            "chromium and chromedriver are needed: make setup "
            "(apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={size}",
        f"--user-data-dir={profile_dir}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.screenshot", description=__doc__)
    parser.add_argument("url", help="the alerts page, e.g. http://127.0.0.1:8080/")
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("--token", default="", help="reviewer token to sign in with")
    parser.add_argument("--size", default="1600,900", help="window size W,H (default 1600,900)")
    args = parser.parse_args(argv)
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as profile:
        try:
            driver = headless_chromium(Path(profile), args.size)
        except BrowserMissing as exc:
            print(exc, file=sys.stderr)
            return 1
        try:
            wait = WebDriverWait(driver, 20)
            driver.get(args.url)
            wait.until(ec.text_to_be_present_in_element((By.ID, "live-status"), "live"))
            if args.token:
                driver.find_element(By.ID, "token").send_keys(args.token)
                driver.find_element(By.ID, "sign-in").click()
                wait.until(ec.text_to_be_present_in_element((By.ID, "whoami"), "Signed in"))
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#alerts tbody tr")))
            rows = driver.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")
            blocked = [r for r in rows if "block" in r.text]
            (blocked or rows)[0].click()
            time.sleep(1.0)  # let live rows arrive and the highlight fade
            driver.save_screenshot(args.out)
        except WebDriverException as exc:
            print(f"screenshot failed: {exc.msg}", file=sys.stderr)
            return 1
        finally:
            driver.quit()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
