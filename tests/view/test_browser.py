"""Both pages in a real browser: headless Chromium, driven by Selenium, against `rest view` and
`rest rate` running as they do for a user. Skipped where Debian's chromium and chromium-driver are
not installed (.ci/run installs them). With REST_SCREENSHOTS=DIR, screenshots of both pages land
in DIR (docs/img/ holds the ones the README shows)."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rest_cli.view.rating import a_on_left
from tests.helpers import REPO, write_jsonl
from tests.view.test_view import candidates, write

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.subprocess,
              pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                 reason="no browser: apt-get install chromium chromium-driver")]
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                     "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


class Server:
    """`rest ARGS` serving a page in a child process; its address is the first line it prints.
    Every server a test starts is killed when the test ends, however it ends (`servers` fixture)."""

    started: list = []

    def __init__(self, *args, env=None):
        self.process = subprocess.Popen([sys.executable, "-m", "rest_cli", *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, cwd=REPO,
                                        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
        Server.started.append(self.process)
        self.url = self.process.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.process.stderr.read()

    def kill(self):
        self.process.send_signal(signal.SIGKILL)  # a crash: nothing is cleaned up
        self.process.wait(timeout=10)

    def stop(self):
        # SIGTERM, as a service manager stops it: SIGINT may be ignored where the tests run (a shell
        # starts background jobs with SIGINT ignored, and Python then keeps it so).
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=10) == 0


@pytest.fixture(autouse=True)
def servers():
    yield
    while Server.started:
        process = Server.started.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def screenshot(browser, name):
    folder = os.environ.get("REST_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / name))


def text_of(browser, element_id: str, changed_from: str | None = None) -> str:
    """The text of an element; with `changed_from`, once the page has moved on to other text."""
    if changed_from is not None:  # while the next page loads, the old element goes stale
        loading = (StaleElementReferenceException, NoSuchElementException)
        WebDriverWait(browser, 10, ignored_exceptions=loading).until(
            lambda b: b.find_element(By.ID, element_id).text != changed_from)
    return browser.find_element(By.ID, element_id).text


def no_alert(browser) -> bool:
    try:
        browser.switch_to.alert.text  # noqa: B018  (reading it is the test: it raises without an alert)
    except NoAlertPresentException:
        return True
    return False


def test_view_browses_searches_filters_and_pages(browser, tmp_path):
    path = write(tmp_path / "candidates.jsonl.gz", candidates(sources=45), gz=True)
    server = Server("view", str(path), "--index-dir", str(tmp_path / "cache"))
    try:
        browser.get(server.url)
        assert "45 sources, 225 candidates (45 references)" in browser.find_element(By.TAG_NAME, "body").text
        assert len(browser.find_elements(By.CSS_SELECTOR, "#histogram .bin")) == 20
        first = browser.find_element(By.CSS_SELECTOR, ".source .hyp")
        assert first.text == "reference 0" and no_alert(browser)  # ref has reward 1.0: listed first
        hyps = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".hyp")]
        assert "<script>alert(0)</script> candidate 0 of 0" in hyps  # shown as text, never run
        # A filter: top-2 per source marks two candidates of each source kept.
        browser.find_element(By.ID, "kind").send_keys("top-k")
        browser.find_element(By.ID, "value").send_keys("2")
        browser.find_element(By.ID, "apply").click()
        WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.ID, "overall"))
        assert "The filter keeps 90 of 225 candidates" in text_of(browser, "overall")
        assert len(browser.find_elements(By.CSS_SELECTOR, "tr.kept")) == 40  # 20 sources on the page
        screenshot(browser, "view.png")
        before = text_of(browser, "matches")
        browser.find_element(By.ID, "next").click()
        assert "page 2 of 3" in text_of(browser, "matches", changed_from=before)
        assert browser.find_elements(By.CSS_SELECTOR, '.source[data-source="20"]')
        # Search keeps the filter and finds a candidate's text.
        box = browser.find_element(By.ID, "q")
        box.clear()
        before = text_of(browser, "matches")
        box.send_keys("candidate 3 of 44", Keys.ENTER)
        assert "1 sources match" in text_of(browser, "matches", changed_from=before)
        sources = browser.find_elements(By.CSS_SELECTOR, ".source")
        assert len(sources) == 1 and sources[0].get_attribute("data-source") == "44"
        assert len(browser.find_elements(By.CSS_SELECTOR, "tr.kept")) == 2  # the filter still applies
    finally:
        server.stop()


def outputs(path, system, n):
    return write_jsonl(path, [{"id": k, "src": f"Quelle Nummer {k}: der Hund läuft.",
                               "hyp": f"{system}: the dog runs ({k})", "reward": 0.5} for k in range(n)])


def rate_by_keyboard(browser, left, right):
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(str(left))
    body.send_keys(str(right))
    before = text_of(browser, "progress")
    body.send_keys(Keys.ENTER)
    text_of(browser, "progress", changed_from=before)  # the next item's page


def test_ratings_survive_a_killed_server(browser, tmp_path):
    a, b = outputs(tmp_path / "a.jsonl", "A", 12), outputs(tmp_path / "b.jsonl", "B", 12)
    database = tmp_path / "ratings.sqlite"
    given = {k: (k % 7, (k + 2) % 7) for k in range(10)}  # (left, right) as the rater sees them
    server = Server("rate", str(a), str(b), "--ratings", str(database))
    browser.get(server.url)
    browser.find_element(By.ID, "rater").send_keys("ann", Keys.ENTER)
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.ID, "progress"))
    assert text_of(browser, "progress") == "ann: 0 of 12 rated"
    screenshot(browser, "rate.png")
    for k in range(5):
        rate_by_keyboard(browser, *given[k])
    server.kill()
    server = Server("rate", str(a), str(b), "--ratings", str(database))  # a new port: reopen the page
    try:
        browser.get(server.url + "?rater=ann")
        assert browser.find_element(By.ID, "progress").text == "ann: 5 of 12 rated"
        assert "Quelle Nummer 5" in browser.find_element(By.ID, "source").text
        for k in range(5, 10):
            rate_by_keyboard(browser, *given[k])
        assert browser.find_element(By.ID, "progress").text == "ann: 10 of 12 rated"
    finally:
        server.stop()
    with sqlite3.connect(database) as db:
        stored = {item: (a_score, b_score)
                  for item, a_score, b_score in db.execute("SELECT item, score_a, score_b FROM ratings")}
    expected = {k: (left, right) if a_on_left("ann", k) else (right, left)
                for k, (left, right) in given.items()}
    assert stored == expected
