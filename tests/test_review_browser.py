"""The review page in a real browser: Debian's headless Chromium driven by Selenium, against the
app served on 127.0.0.1, with the results store and object store checked after each action."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest
from batch_job.ledger.results import Ledger
from batch_job.ledger.schema import NEEDS_REVIEW, REVIEWED
from batch_job.review import decisions
from batch_job.review.settings import ReviewSettings
from batch_job.settings import Settings
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import text

from common.objectstore import list_objects, open_store, put_object
from tests.review_support import (
    CLASSES,
    PASSWORDS,
    Doubtful,
    classes_file,
    guesses,
    review_app,
    seed_night,
    users_file,
    utc,
)

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOT = os.environ.get("REVIEW_NIGHTS_SCREENSHOT")  # a path: the nights test saves its page there (docs)
APT_CHROMIUM = "apt-get update -qq && apt-get install -y -qq chromium chromium-driver (or make sysdeps)"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
)


@pytest.fixture
def browsers() -> Iterator:
    """Opens headless Chromium windows, each with a fresh profile; all are closed afterwards."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail(f"the browser tests need Debian's chromium and chromium-driver: {APT_CHROMIUM}")
    opened = []

    def open_browser() -> webdriver.Chrome:
        profile = tempfile.mkdtemp(prefix="chromium-profile-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        opened.append((driver, profile))
        return driver

    yield open_browser
    for driver, profile in opened:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}", route="move")


@pytest.fixture
def review(tmp_path) -> ReviewSettings:
    return ReviewSettings(users_file=str(users_file(tmp_path)), classes=str(classes_file(tmp_path, CLASSES)))


def log_in(driver, url: str, name: str) -> None:
    driver.get(url + "/")
    assert driver.current_url == url + "/login"  # no anonymous access: sent to the login form
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[name], Keys.ENTER)
    WebDriverWait(driver, 10).until(expected_conditions.presence_of_element_located((By.ID, "queue")))


def left_behind(element) -> Callable[[object], bool]:
    """Selenium's staleness_of, also for the other answer chromedriver gives, in a few percent of runs, for an
    element of the page just left: "Node with given id does not belong to the document" (SeleniumHQ/selenium#15401).
    """

    stale = expected_conditions.staleness_of(element)

    def left(driver) -> bool:
        try:
            return stale(driver)
        except WebDriverException as exc:
            if "does not belong to the document" in (exc.msg or ""):
                return True
            raise

    return left


def refused_login(driver, name: str, password: str) -> str:
    """Submits the login form and returns the error of the page that answers it (never the page before it)."""
    form = driver.find_element(By.CSS_SELECTOR, "form.login")
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password, Keys.ENTER)
    WebDriverWait(driver, 10).until(left_behind(form))
    return driver.find_element(By.CSS_SELECTOR, ".error").text


def wait_decided(driver, item: int) -> str:
    """The text that replaced the item's card once the server answered."""
    WebDriverWait(driver, 10).until(
        lambda d: not d.find_elements(By.ID, f"item-{item}") and d.find_elements(By.CSS_SELECTOR, ".decided")
    )
    return driver.find_elements(By.CSS_SELECTOR, ".decided")[-1].text


def store_keys(settings: Settings, prefix: str) -> list[str]:
    return sorted(obj.key for obj in list_objects(open_store(settings.store), prefix))


def rows(settings: Settings) -> dict:
    return {row.id: row for row in Ledger(settings.database_url).results()}


def test_login_is_required_and_a_wrong_password_is_refused(settings, review, browsers):
    seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))])
    driver = browsers()
    with review_app(settings, review) as app:
        driver.get(app.url + "/?night=2026-12-01")
        assert driver.current_url == app.url + "/login"
        assert not driver.find_elements(By.CSS_SELECTOR, ".card")
        assert "Wrong name or password" in refused_login(driver, "alice", "not her password")
        log_in(driver, app.url, "alice")
        assert "alice" in driver.find_element(By.CSS_SELECTOR, "header .who").text


def test_the_queue_shows_a_nights_items_with_their_top3_newest_night_first(settings, review, browsers):
    older = seed_night(settings, utc(2026, 11, 30), [Doubtful("old.jpg", guesses(2))])
    newer = seed_night(settings, utc(2026, 12, 1), [Doubtful(f"{n}.jpg", guesses(n)) for n in range(3)])
    driver = browsers()
    with review_app(settings, review) as app:
        log_in(driver, app.url, "alice")
        cards = driver.find_elements(By.CSS_SELECTOR, ".card")
        assert [int(card.get_attribute("data-item")) for card in cards][-1] == older[0]  # newest night first
        Select(driver.find_element(By.ID, "night")).select_by_visible_text("2026-12-01")
        driver.find_element(By.CSS_SELECTOR, ".filters button").click()
        WebDriverWait(driver, 10).until(lambda d: "night=2026-12-01" in d.current_url)
        cards = driver.find_elements(By.CSS_SELECTOR, ".card")
        assert sorted(int(card.get_attribute("data-item")) for card in cards) == sorted(newer)
        first = driver.find_element(By.ID, f"item-{newer[0]}")
        assert [" ".join(b.text.split()) for b in first.find_elements(By.CSS_SELECTOR, ".guess")] == [
            f"1 {CLASSES[0]} 41%",
            f"2 {CLASSES[1]} 33%",
            f"3 {CLASSES[2]} 12%",
        ]
        assert "inbox/2026-12-01/0.jpg" in first.text and "night 2026-12-01" in first.text
        assert driver.execute_script("return arguments[0].naturalWidth", first.find_element(By.TAG_NAME, "img")) > 0
        assert driver.find_element(By.ID, "total").text == "3 waiting"


def test_confirm_by_click_by_key_and_correct_through_the_search_box(settings, review, browsers):
    items = seed_night(settings, utc(2026, 12, 1), [Doubtful(f"{n}.jpg", guesses(0)) for n in range(4)])
    driver = browsers()
    with review_app(settings, review) as app:
        log_in(driver, app.url, "alice")
        order = [int(card.get_attribute("data-item")) for card in driver.find_elements(By.CSS_SELECTOR, ".card")]
        first, second, third, fourth = order

        driver.find_element(By.CSS_SELECTOR, f"#item-{first} .guess[data-key='1']").click()
        assert "moved to sorted/" in wait_decided(driver, first)
        # The next item is current at once; keyboard only from here.
        assert "current" in driver.find_element(By.ID, f"item-{second}").get_attribute("class")
        driver.find_element(By.TAG_NAME, "body").send_keys("2")
        wait_decided(driver, second)
        driver.find_element(By.TAG_NAME, "body").send_keys("/")
        search = driver.switch_to.active_element
        assert search.get_attribute("class") == "search"
        search.send_keys("Rings", Keys.ENTER)
        wait_decided(driver, third)
        assert not driver.find_element(By.ID, "page-done").is_displayed()
        driver.find_element(By.TAG_NAME, "body").send_keys("x")
        wait_decided(driver, fourth)
        assert driver.find_element(By.ID, "total").text == "0 waiting"
        # After the last card of the page: a prompt, and n loads what still waits.
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "page-done").is_displayed())
        driver.find_element(By.TAG_NAME, "body").send_keys("n")
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "empty"))

    decided = rows(settings)
    assert {item: (decided[item].status, decided[item].final_category) for item in items} == {
        first: (REVIEWED, CLASSES[0]),
        second: (REVIEWED, CLASSES[1]),
        third: (REVIEWED, "Rings"),
        fourth: ("unusable", None),
    }
    assert all(decided[item].reviewed_by == "alice" and decided[item].category == CLASSES[0] for item in items)
    names = {item: f"{items.index(item)}.jpg" for item in items}
    assert store_keys(settings, "review/") == []
    assert store_keys(settings, "sorted/") == sorted(
        [
            f"sorted/{CLASSES[0]}/2026-12-01/{names[first]}",
            f"sorted/{CLASSES[1]}/2026-12-01/{names[second]}",
            f"sorted/Rings/2026-12-01/{names[third]}",
        ]
    )
    assert store_keys(settings, "unusable/") == [f"unusable/2026-12-01/{names[fourth]}"]


def test_two_browsers_deciding_the_same_item_the_second_is_told_who_was_first(settings, review, browsers):
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))])
    alice, bob = browsers(), browsers()
    with review_app(settings, review) as app:
        log_in(alice, app.url, "alice")
        log_in(bob, app.url, "bob")  # both now show the undecided item
        alice.find_element(By.CSS_SELECTOR, f"#item-{item} .guess[data-key='2']").click()
        wait_decided(alice, item)
        bob.find_element(By.CSS_SELECTOR, f"#item-{item} .guess[data-key='1']").click()
        told = wait_decided(bob, item)
    assert "Already decided by alice" in told and CLASSES[1] in told and "Nothing was changed" in told
    row = rows(settings)[item]
    assert (row.status, row.final_category, row.reviewed_by) == (REVIEWED, CLASSES[1], "alice")
    assert store_keys(settings, "sorted/") == [f"sorted/{CLASSES[1]}/2026-12-01/a.jpg"]


def test_a_form_posted_without_its_csrf_token_is_refused(settings, review, browsers):
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))])
    driver = browsers()
    with review_app(settings, review) as app:
        log_in(driver, app.url, "alice")
        # What a forged form would send: the session cookie rides along, the token does not.
        driver.execute_script(
            "document.querySelectorAll(arguments[0]).forEach(e => e.remove());"
            "document.querySelector(arguments[1]).submit();",
            f"#item-{item} input[name=csrf]",
            f"#item-{item} form.unusable",
        )
        WebDriverWait(driver, 10).until(lambda d: "CSRF" in d.find_element(By.TAG_NAME, "body").text)
    assert rows(settings)[item].status == NEEDS_REVIEW
    assert store_keys(settings, "review/") == ["review/2026-12-01/a.jpg"]


def test_a_plain_text_error_gives_the_card_back_with_why(settings, review, browsers):
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))])
    driver = browsers()
    with review_app(settings, review) as app:
        log_in(driver, app.url, "alice")
        # A session whose CSRF token went stale: the server's 403 is plain text, no card fragment.
        driver.execute_script("document.querySelectorAll('input[name=csrf]').forEach(e => (e.value = 'stale'))")
        driver.find_element(By.CSS_SELECTOR, f"#item-{item} .guess[data-key='1']").click()
        card = WebDriverWait(driver, 10).until(
            lambda d: d.find_element(By.CSS_SELECTOR, f"#item-{item}:not([data-pending]) .refused")
        )
        assert "403" in card.text and "CSRF" in card.text
        assert all(button.is_enabled() for button in driver.find_elements(By.CSS_SELECTOR, f"#item-{item} button"))
        assert not driver.find_elements(By.CSS_SELECTOR, "#done .placeholder")
    assert rows(settings)[item].status == NEEDS_REVIEW


def test_a_hostile_key_and_class_name_are_shown_as_text_and_run_nothing(settings, tmp_path, browsers):
    hostile_class = "<img src=x onerror=alert('class')>"
    hostile_name = "\"><svg onload=alert('key')>&amp;.jpg"
    review = ReviewSettings(
        users_file=str(users_file(tmp_path)), classes=str(classes_file(tmp_path, [*CLASSES, hostile_class]))
    )
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful(hostile_name, [(hostile_class, 0.4), *guesses(0)[:2]])])
    driver = browsers()
    with review_app(settings, review) as app:
        log_in(driver, app.url, "alice")
        card = driver.find_element(By.ID, f"item-{item}")
        assert f"inbox/2026-12-01/{hostile_name}" in card.text
        assert hostile_class in card.find_element(By.CSS_SELECTOR, ".guess[data-key='1']").text
        assert not driver.find_elements(By.CSS_SELECTOR, "#queue svg, #queue img[src='x']")
        card.find_element(By.CSS_SELECTOR, ".guess[data-key='1']").click()
        told = wait_decided(driver, item)
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018 - reading it is the check
    assert told.startswith(f"inbox/2026-12-01/{hostile_name}: {hostile_class} (moved to sorted/{hostile_class}/")
    assert rows(settings)[item].final_category == hostile_class


def test_wrong_passwords_are_throttled_in_the_browser(settings, tmp_path, browsers):
    review = ReviewSettings(users_file=str(users_file(tmp_path)), login_limit_per_name="2/minute")
    driver = browsers()
    with review_app(settings, review) as app:
        driver.get(app.url + "/login")
        errors = [refused_login(driver, "alice", "not her password") for _ in range(3)]
        assert ["Wrong name or password" in error for error in errors] == [True, True, False]
        assert "Too many wrong passwords: try again in" in errors[2]
        # The right password is refused too while the limit holds.
        assert "Too many wrong passwords" in refused_login(driver, "alice", PASSWORDS["alice"])
        assert not driver.find_elements(By.ID, "queue")


def test_two_quick_keys_decide_two_cards_and_undo_brings_one_back(settings, review, browsers):
    items = seed_night(settings, utc(2026, 12, 1), [Doubtful(f"{n}.jpg", guesses(0)) for n in range(3)])
    driver = browsers()
    with review_app(settings, review) as app:
        log_in(driver, app.url, "alice")
        first, second, third = (
            int(c.get_attribute("data-item")) for c in driver.find_elements(By.CSS_SELECTOR, ".card")
        )
        driver.find_element(By.TAG_NAME, "body").send_keys("11")  # faster than the server answers
        WebDriverWait(driver, 10).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#done .decided")) == 2)
        assert [int(c.get_attribute("data-item")) for c in driver.find_elements(By.CSS_SELECTOR, "#queue .card")] == [
            third
        ]
        driver.find_element(By.TAG_NAME, "body").send_keys("u")  # the last decision back
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, f"item-{second}"))
        assert "current" in driver.find_element(By.ID, f"item-{second}").get_attribute("class")
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "total").text == "2 waiting")
    decided = rows(settings)
    assert (decided[first].status, decided[second].status, decided[third].status) == (
        REVIEWED,
        NEEDS_REVIEW,
        NEEDS_REVIEW,
    )
    assert store_keys(settings, "sorted/") == [f"sorted/{CLASSES[0]}/2026-12-01/{items.index(first)}.jpg"]
    assert len(store_keys(settings, "review/")) == 2


def test_a_typo_keeps_the_card_and_the_count_follows_other_reviewers(settings, review, browsers):
    items = seed_night(settings, utc(2026, 12, 1), [Doubtful(f"{n}.jpg", guesses(0)) for n in range(3)])
    driver = browsers()
    with review_app(settings, review) as app:
        log_in(driver, app.url, "alice")
        first = int(driver.find_elements(By.CSS_SELECTOR, ".card")[0].get_attribute("data-item"))
        driver.find_element(By.TAG_NAME, "body").send_keys("/")
        driver.switch_to.active_element.send_keys("ringz", Keys.ENTER)
        suggestion = WebDriverWait(driver, 10).until(
            lambda d: d.find_element(By.CSS_SELECTOR, f"#item-{first} .suggestion")
        )
        assert (
            suggestion.text == "Rings"
            and "not one of the model's classes" in driver.find_element(By.ID, f"item-{first}").text
        )
        other = next(item for item in items if item != first)
        decisions.decide(Ledger(settings.database_url).engine, other, "bob", "Cones")  # another reviewer
        suggestion.click()
        wait_decided(driver, first)
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "total").text == "1 waiting")
    assert rows(settings)[first].final_category == "Rings"


def test_the_whole_photo_opens_scaled_by_click_and_by_key(settings, review, browsers):
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))], photo_size=(900, 1200))
    driver = browsers()
    with review_app(settings, review) as app:
        log_in(driver, app.url, "alice")
        driver.find_element(By.CSS_SELECTOR, f"#item-{item} a.whole").click()
        whole = driver.find_element(By.CSS_SELECTOR, "#whole img")
        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return arguments[0].naturalWidth", whole) > 0)
        assert driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", whole) == [
            900,
            1200,
        ]
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        WebDriverWait(driver, 10).until(lambda d: not d.find_element(By.ID, "whole").get_attribute("open"))
        driver.find_element(By.TAG_NAME, "body").send_keys("o")
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "whole").get_attribute("open"))
    assert rows(settings)[item].status == NEEDS_REVIEW  # looking decides nothing


def test_at_500_px_nothing_scrolls_sideways_and_set_and_percentages_show(settings, review, browsers):
    seed_night(settings, utc(2026, 12, 1), [Doubtful(f"{n}.jpg", guesses(n)) for n in range(2)])
    driver = browsers()
    driver.set_window_size(500, 900)
    with review_app(settings, review) as app:
        log_in(driver, app.url, "alice")
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
        width = driver.execute_script("return document.documentElement.clientWidth")
        card = driver.find_elements(By.CSS_SELECTOR, ".card")[0]
        for element in [card.find_element(By.CSS_SELECTOR, ".set"), *card.find_elements(By.CSS_SELECTOR, ".guess .p")]:
            box = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()", element)
            assert element.is_displayed() and box["left"] >= 0 and box["right"] <= width, box


def test_the_nights_page_lists_each_night_with_its_report(settings, review, browsers, tmp_path):
    items = seed_night(settings, utc(2026, 12, 1), [Doubtful(f"{n}.jpg", guesses(n)) for n in range(2)])
    ledger = Ledger(settings.database_url)
    [night] = decisions.nights(ledger.engine)
    summary = {"statuses": {"ok": 41, "needs_review": 2, "dead": 1}, "failure_rate": 0.023, "drift": {"warnings": []}}
    with ledger.engine.begin() as connection:
        connection.execute(text("UPDATE runs SET summary = :s"), {"s": json.dumps(summary)})
    put_object(open_store(settings.store), f"runs/{night.run_id}/report.html", b"<h1>Night of 2026-12-01</h1>")
    driver = browsers()
    with review_app(settings, review) as app:
        log_in(driver, app.url, "alice")
        driver.find_element(By.CSS_SELECTOR, f"#item-{items[0]} .guess[data-key='1']").click()
        wait_decided(driver, items[0])
        driver.find_element(By.LINK_TEXT, "Nights").click()
        row = WebDriverWait(driver, 10).until(
            lambda d: d.find_element(By.CSS_SELECTOR, f"tr[data-run='{night.run_id}']")
        )
        assert row.text.split()[:2] == ["2026-12-01", "0/1"] and "2.3%" in row.text and "none" in row.text
        assert driver.find_element(By.ID, "today").text.splitlines()[1] == "alice 1"
        if SCREENSHOT:
            driver.save_screenshot(SCREENSHOT)
        row.find_element(By.LINK_TEXT, "report").click()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.TAG_NAME, "h1"))
        assert driver.find_element(By.TAG_NAME, "h1").text == "Night of 2026-12-01"
        assert driver.current_url == f"{app.url}/nights/{night.run_id}/report"
