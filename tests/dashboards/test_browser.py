"""The real pages in headless Chromium (Debian's chromium and chromium-driver, driven by Selenium).

Each test seeds a few days of the demo organisation through chargeback.demo, signs in through the
login form and walks the pages as a person would. Screenshots of every page are written to
var/screenshots/ (gitignored), for a person to look at. Skipped, with the reason, on a machine
without /usr/bin/chromium (e.g. a laptop running bin/test); .ci/run installs it.
"""

import re
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from chargeback import demo
from tenants.models import Tenant, TenantMembership
from tests.factories import BudgetFactory, BudgetThresholdFactory, StatementFactory, StatementLineFactory

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PASSWORD = "correct horse battery staple"
SEED_DAYS = 3

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason="browser tests need Debian's headless Chromium: apt-get install chromium chromium-driver "
    "(.ci/run installs them)",
)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chargeback-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium never looks for, or downloads, a driver of its own.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def demo_data(transactional_db):
    """A few days of the demo organisation, a budget near its limit, one statement, two users."""
    report = demo.SeedReport()
    tenants = demo.seed_tenants(report)
    now = timezone.now()
    demo.seed_usage(report, tenants=tenants, anchor=now.date(), days=SEED_DAYS, now=now)
    assert report.usage.accepted > 1000
    budget = BudgetFactory(tenant=tenants["acme-corp"], name="Acme monthly", amount_nanos=400 * 10**9)
    for percent in (50, 80, 100):
        BudgetThresholdFactory(budget=budget, percent=percent, on_forecast=True)
    BudgetFactory(tenant=tenants["globex"], name="Globex weekly", period="week", amount_nanos=5 * 10**9)
    statement = StatementFactory(tenant=tenants["globex"], total_cents=250)
    StatementLineFactory(statement=statement)
    user_model = get_user_model()
    user_model.objects.create_user("finops", password=PASSWORD, is_staff=True)
    search_lead = user_model.objects.create_user("search-lead", password=PASSWORD)
    TenantMembership.objects.create(user=search_lead, tenant=Tenant.objects.get(slug="search"))
    return tenants


def _sign_in(browser, live_server, username):
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get_log("browser")  # forget what an earlier test left in the console (its 404s)
    browser.get(f"{live_server.url}/")
    # Not signed in: the page sends the browser to the login form.
    assert "/accounts/login/" in browser.current_url
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    _click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"


def _click_and_wait(browser, element) -> None:
    """Click, then wait until the next page has loaded: a click does not wait for navigation."""
    from selenium.webdriver.support.ui import WebDriverWait

    before = browser.current_url
    element.click()
    WebDriverWait(browser, 60).until(
        lambda driver: (
            driver.current_url != before and driver.execute_script("return document.readyState") == "complete"
        )
    )


def _console_errors(browser) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def _screenshot(browser, name: str) -> Path:
    """The whole page, as tall as it is, into var/screenshots/."""
    folder = Path(settings.VAR_DIR) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, max(min(height, 6000), 600))
    path = folder / f"{name}.png"
    browser.save_screenshot(str(path))
    browser.set_window_size(1400, 1000)
    return path


def _open(browser, url: str, name: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url)
    assert browser.find_element(By.TAG_NAME, "h1").text != "Not found", url
    assert _console_errors(browser) == [], url
    _screenshot(browser, name)


def _total_cost(browser) -> Decimal:
    from selenium.webdriver.common.by import By

    text = browser.find_element(By.CSS_SELECTOR, "[data-figure=total-cost]").text
    return Decimal(re.sub(r"[^0-9.]", "", text))


def _charts_have_data(browser) -> None:
    from selenium.webdriver.common.by import By

    charts = browser.find_elements(By.CSS_SELECTOR, "svg[data-chart]")
    assert len(charts) >= 4
    by_id = {chart.get_attribute("data-chart"): chart for chart in charts}
    bars = by_id["cost-over-time"].find_elements(By.CSS_SELECTOR, "rect.bar")
    assert bars and all(float(bar.get_attribute("height")) > 0 for bar in bars)
    assert by_id["cost-over-time"].find_element(By.TAG_NAME, "title").get_attribute("textContent")
    lines = by_id["latency"].find_elements(By.CSS_SELECTOR, "path.line")
    assert len(lines) == 2 and all(line.get_attribute("d").startswith("M") for line in lines)
    # Every bar carries a tooltip with its bucket, series and value.
    assert "$" in bars[0].find_element(By.TAG_NAME, "title").get_attribute("textContent")


def test_every_page_loads_without_console_errors_and_draws_its_charts(browser, live_server, demo_data):
    from selenium.webdriver.common.by import By

    _sign_in(browser, live_server, "finops")
    assert _console_errors(browser) == []
    _charts_have_data(browser)
    _screenshot(browser, "overview")

    _open(browser, f"{live_server.url}/?stack=tenant", "overview-by-tenant")
    _charts_have_data(browser)
    _open(browser, f"{live_server.url}/tenants/", "tenants")
    _open(browser, f"{live_server.url}/tenants/acme-corp/", "tenant-acme-corp")
    _charts_have_data(browser)

    _open(browser, f"{live_server.url}/budgets/", "budgets")
    bars = browser.find_elements(By.CSS_SELECTOR, "[role=progressbar]")
    assert len(bars) == 2
    for bar in bars:
        assert float(bar.get_attribute("aria-valuenow")) >= 0
        assert "spent" in bar.get_attribute("aria-valuetext")

    _open(browser, f"{live_server.url}/statements/", "statements")
    pdf_link = browser.find_element(By.LINK_TEXT, "PDF").get_attribute("href")
    assert re.search(r"/statements/\d+/pdf$", pdf_link)


def test_a_drill_down_click_narrows_the_view(browser, live_server, demo_data):
    from selenium.webdriver.common.by import By

    _sign_in(browser, live_server, "finops")
    browser.get(f"{live_server.url}/tenants/acme-corp/")
    heading = browser.find_element(By.TAG_NAME, "h1").text
    total = _total_cost(browser)
    assert heading == "Acme Corp" and total > 0

    # Tenant -> child tenant.
    child_link = "table[data-breakdown=tenant] tbody a[href*='/tenants/support-bot/']"
    _click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, child_link))
    assert "/tenants/support-bot/" in browser.current_url
    assert browser.find_element(By.TAG_NAME, "h1").text == "Support Bot"
    child_total = _total_cost(browser)
    assert 0 < child_total < total

    # -> feature -> model -> prompt template -> records, each narrower than the last.
    steps = [("tag.feature", "Feature:"), ("model", "Model:"), ("tag.prompt_template", "Prompt template:")]
    previous_total = child_total
    for dimension, label in steps:
        _click_and_wait(
            browser, browser.find_element(By.CSS_SELECTOR, f"table[data-breakdown='{dimension}'] tbody a")
        )
        assert f"{dimension}=" in browser.current_url
        assert label in browser.find_element(By.TAG_NAME, "h1").text
        narrowed = _total_cost(browser)
        assert 0 < narrowed <= previous_total
        assert _console_errors(browser) == []
        previous_total = narrowed
    rows = browser.find_elements(By.CSS_SELECTOR, "table[data-records] tbody tr")
    assert rows
    _screenshot(browser, "tenant-records")

    # The breadcrumb leads back up.
    _click_and_wait(
        browser, browser.find_element(By.CSS_SELECTOR, "nav.breadcrumbs a[href^='/tenants/acme-corp/']")
    )
    assert browser.find_element(By.TAG_NAME, "h1").text == "Acme Corp"


def test_a_tenant_user_sees_only_their_tenant(browser, live_server, demo_data):
    from selenium.webdriver.common.by import By

    _sign_in(browser, live_server, "search-lead")
    _screenshot(browser, "overview-tenant-user")
    options = [
        option.get_attribute("value")
        for option in browser.find_elements(By.CSS_SELECTOR, "select[name=tenant] option")
    ]
    assert options == ["", "search", "search-rerank"]
    browser.get(f"{live_server.url}/tenants/search/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Search"
    assert _console_errors(browser) == []

    browser.get(f"{live_server.url}/tenants/globex/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
    browser.get(f"{live_server.url}/tenants/acme-corp/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
    _screenshot(browser, "not-found")


def test_the_savings_page_ranks_opportunities_and_filters_by_tenant(browser, live_server, demo_data):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _sign_in(browser, live_server, "finops")
    _click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "nav a[href='/savings/']"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Savings"
    assert _console_errors(browser) == []
    rows = browser.find_elements(By.CSS_SELECTOR, "table[data-opportunities] tbody tr")
    assert rows, "the demo's expensive model and repeated prompts are opportunities"
    savings = [
        int(
            row.find_element(By.CSS_SELECTOR, "[data-monthly-savings-nanos]").get_attribute(
                "data-monthly-savings-nanos"
            )
        )
        for row in rows
    ]
    assert savings == sorted(savings, reverse=True) and savings[0] > 0
    # The largest opportunity draws the longest bar.
    widths = [row.find_element(By.CSS_SELECTOR, "span.share").size["width"] for row in rows]
    assert widths[0] == max(widths) > 0
    assert browser.find_elements(By.CSS_SELECTOR, "table[data-costliest] tbody tr")
    pdf_link = browser.find_element(By.LINK_TEXT, "PDF").get_attribute("href")
    assert "/savings/pdf?" in pdf_link
    _screenshot(browser, "savings")

    # Narrowing to one tenant keeps only its request types.
    Select(browser.find_element(By.CSS_SELECTOR, "select[name=tenant]")).select_by_value("search")
    _click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]"))
    assert "tenant=search" in browser.current_url
    assert _console_errors(browser) == []
    features = {
        row.text.split(" · ")[0]
        for row in browser.find_elements(By.CSS_SELECTOR, "table[data-costliest] tbody th")
    }
    assert features and features <= {"search-summary", "rerank"}  # the features of search and its child
