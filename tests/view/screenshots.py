"""The screenshots in docs/img/ of both pages, on files of your choice (not a test: run it).

    .venv/bin/python -m tests.view.screenshots CANDIDATES.jsonl.gz A.jsonl B.jsonl OUT_DIR

`rest view CANDIDATES` with a top-k filter, and `rest rate A B` at its first item for a rater,
each in headless Chromium as the browser tests drive it (tests/view/test_browser.py).
"""

import sys
import tempfile
from pathlib import Path

from selenium.webdriver.common.by import By

from tests.view.test_browser import CHROMIUM, DRIVER, Server, webdriver


def main(candidates: str, a: str, b: str, out: str) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1000"):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    Path(out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        view = Server("view", candidates, "--index-dir", folder)
        browser.get(view.url + "?kind=top_k&value=2&q=")
        browser.save_screenshot(str(Path(out) / "view.png"))
        view.stop()
        rate = Server("rate", a, b, "--ratings", str(Path(folder) / "ratings.sqlite"))
        browser.get(rate.url + "?rater=ann")
        browser.find_elements(By.CSS_SELECTOR, 'input[name="left"]')[5].click()
        browser.save_screenshot(str(Path(out) / "rate.png"))
        rate.stop()
    browser.quit()


if __name__ == "__main__":
    main(*sys.argv[1:])
