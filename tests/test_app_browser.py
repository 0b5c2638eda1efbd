"""The real thing: `streamlit run app.py` (quick mode) driven by headless Chromium through selenium.

Checks that the page renders its title and the soft-label panel with no exception or error box, that the
Playground's slider redraws its boundary pictures (issue 25), that the Accuracy tab's heatmap, the Compare
tab's charts and the Methods tab's table and chart render in the browser (issue 28), and saves screenshots
under artifacts/. Skips (with the install command) without Chromium.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT_S = 300  # the first launch may train the quick teacher
BAD = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """A quick-mode Streamlit server on a free port; always killed, its log kept for failures."""
    port = _free_port()
    log = open(tmp_path / "streamlit.log", "w+")
    env = {**os.environ, "KD_QUICK": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
                             "--server.headless", "true", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
                             "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read()[-3000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.3)
        else:
            pytest.fail("streamlit did not open its port within 60 s")
        yield {"url": f"http://127.0.0.1:{port}", "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def browser(tmp_path):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; run `make system-deps` "
                    f"(sudo apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1400,1800", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _stale():
    from selenium.common.exceptions import StaleElementReferenceException

    return (StaleElementReferenceException,)  # fragments rerun, so elements can go stale


def _open_tab(browser, label: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def click(driver):  # the page reruns (its heatmap refreshes), so elements can go stale
        tabs = driver.find_elements(By.XPATH, f"//*[@role='tab'][contains(., '{label}')]")
        if tabs:
            tabs[0].click()
            return True
        return False

    WebDriverWait(browser, 60, ignored_exceptions=_stale()).until(click)


def _metric_text(driver, label):
    from selenium.webdriver.common.by import By

    texts = [m.text for m in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')
             if m.is_displayed() and label in m.text]
    return texts[0] if texts else None


def _soft_labels_render(server, browser, out: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    start = time.monotonic()
    browser.get(server["url"])
    wait = WebDriverWait(browser, WAIT_S)
    title = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "h1")))
    assert "Knowledge distillation" in title.text
    _open_tab(browser, "Soft labels")  # the Playground is the first tab (issue 25); a hidden tab's text reads ""

    def ready_or_broken(driver):
        if driver.find_elements(By.CSS_SELECTOR, BAD):
            return "broken"
        metrics = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')
        charts = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')
        if any("Mean entropy of the soft labels" in m.text for m in metrics) and charts:
            return "ready"
        return False

    state = wait.until(ready_or_broken)
    seconds = time.monotonic() - start
    time.sleep(2)  # let the charts finish drawing for the screenshot
    browser.save_screenshot(str(out / "app_screenshot.png"))
    errors = [e.text for e in browser.find_elements(By.CSS_SELECTOR, BAD)]
    if state == "broken" or errors:
        server["log"].seek(0)
        pytest.fail(f"the page shows an exception or error: {errors}\nserver log:\n{server['log'].read()[-3000:]}")
    print(f"soft-label panel ready {seconds:.1f} s after opening the page")


def _t_slider_moves_the_heading(browser) -> None:
    """Move T one notch with the keyboard; the panel's heading follows (the latency an instructor feels)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30, ignored_exceptions=_stale()).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "h3").text)
    heading = browser.find_element(By.CSS_SELECTOR, "h3").text
    slider = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stSlider"] input[type="range"]')[0]
    browser.execute_script("arguments[0].focus()", slider)
    start = time.monotonic()
    ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
    WebDriverWait(browser, 60, ignored_exceptions=_stale()).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "h3").text != heading)
    print(f"T slider step -> '{browser.find_element(By.CSS_SELECTOR, 'h3').text}' in {time.monotonic() - start:.2f} s")
    assert WebDriverWait(browser, 10, ignored_exceptions=_stale()).until(
        lambda d: "T = 5" in d.find_element(By.CSS_SELECTOR, "h3").text)  # 4 -> 5 on the log-spaced scale
    time.sleep(1)
    assert not browser.find_elements(By.CSS_SELECTOR, BAD)


def _heatmap_fills(browser, out: Path) -> None:
    """The Accuracy tab: the heatmap fills in the background and the seed spread appears beside it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _open_tab(browser, "Accuracy")

    def spread_shown(driver):
        if driver.find_elements(By.CSS_SELECTOR, BAD):
            return "broken"
        metrics = [m.text for m in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')]
        return "ready" if any("Span / seed spread" in m for m in metrics) else False

    start = time.monotonic()
    state = WebDriverWait(browser, WAIT_S, ignored_exceptions=_stale()).until(spread_shown)
    print(f"heatmap and seed spread shown {time.monotonic() - start:.1f} s after opening the Accuracy tab")
    time.sleep(2)
    browser.save_screenshot(str(out / "app_accuracy_screenshot.png"))
    assert state == "ready", [e.text for e in browser.find_elements(By.CSS_SELECTOR, BAD)]

    assert WebDriverWait(browser, 30, ignored_exceptions=_stale()).until(lambda d: _charts_shown(d) >= 1), \
        "no heatmap on the Accuracy tab"


def _charts_shown(driver) -> int:
    """Vega-Lite charts drawn (a canvas or svg inside) on the visible tab."""
    from selenium.webdriver.common.by import By

    return sum(1 for c in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')
               if c.is_displayed() and c.find_elements(By.CSS_SELECTOR, "canvas, svg"))


def _compare_draws_soft_label_charts(browser, out: Path) -> None:
    """The Compare tab draws the Soft labels tab's chart for each image at both Ts (no matplotlib images)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _open_tab(browser, "Compare")
    assert WebDriverWait(browser, 60, ignored_exceptions=_stale()).until(lambda d: _charts_shown(d) == 8), \
        f"the Compare tab shows {_charts_shown(browser)} charts, not 2 x 4"
    images = [i for i in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img') if i.is_displayed()]
    assert len(images) == 4  # the digits, one a row
    time.sleep(1)
    browser.save_screenshot(str(out / "app_compare_screenshot.png"))


def _methods_table_fits(browser, out: Path) -> None:
    """The Methods tab: its table fits its column (no sideways scrolling) and its chart is drawn."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _open_tab(browser, "Methods")
    wait = WebDriverWait(browser, WAIT_S, ignored_exceptions=_stale())

    def table(driver):
        shown = [t for t in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]') if t.is_displayed()]
        return shown[0] if shown else False

    from selenium.common.exceptions import TimeoutException

    try:
        WebDriverWait(browser, 20, ignored_exceptions=_stale()).until(table)
    except TimeoutException:  # nothing trained in this cache yet: train the default method
        buttons = [b for b in browser.find_elements(By.CSS_SELECTOR, "button") if b.is_displayed() and
                   b.text.startswith("Train ") and "seed" in b.text]
        buttons[0].click()
    grid = wait.until(table)
    assert wait.until(lambda d: _charts_shown(d) >= 1), "no chart on the Methods tab"
    time.sleep(2)
    scroller = grid.find_elements(By.CSS_SELECTOR, ".dvn-scroller")
    widths = browser.execute_script("const s = arguments[0]; return [s.scrollWidth, s.clientWidth];", scroller[0]) \
        if scroller else None
    box, column = grid.rect["width"], grid.find_element(By.XPATH, "..").rect["width"]
    print(f"Methods table: {box:.0f} px wide in a {column:.0f} px column; scroll/client width {widths}")
    browser.save_screenshot(str(out / "app_methods_screenshot.png"))
    assert box <= column + 1 and (widths is None or widths[0] <= widths[1] + 1), (box, column, widths)
    assert not browser.find_elements(By.CSS_SELECTOR, BAD)


def _beta_slider_redraws(browser, out: Path) -> None:
    """The Generative KD tab: move the beta slider and time the redraw the browser shows."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    _open_tab(browser, "Generative KD")
    assert WebDriverWait(browser, 60, ignored_exceptions=_stale()).until(
        lambda d: _metric_text(d, "JSD(beta=0.5)")), "the KL-direction tab shows no student entropy"
    assert float(_metric_text(browser, "Student mass between the modes").split()[-1]) > 0.3  # covering at 0.5

    def beta_slider(driver):
        for box in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSlider"]'):
            if box.is_displayed() and "beta of the generalized JSD" in box.text:
                return box.find_element(By.CSS_SELECTOR, 'input[type="range"]')
        return False

    times = []
    for expected in ("0.55", "0.6"):  # two notches: 0.5 -> 0.55 -> 0.6, where the best fit jumps to one mode
        slider = WebDriverWait(browser, 30, ignored_exceptions=_stale()).until(beta_slider)
        browser.execute_script("arguments[0].focus()", slider)
        start = time.monotonic()
        ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
        WebDriverWait(browser, 60, ignored_exceptions=_stale()).until(
            lambda d, label=f"JSD(beta={expected})": _metric_text(d, label))
        times.append(time.monotonic() - start)
    between = float(_metric_text(browser, "Student mass between the modes").split()[-1])
    print(f"KL-direction tab: beta slider steps redrawn in the browser in "
          f"{', '.join(f'{t:.2f} s' for t in times)}; mass between the modes at beta 0.6: {between:.3f}")
    assert between < 0.1  # seeking one mode at beta 0.6 (measured 0.054)
    browser.save_screenshot(str(out / "app_generative_screenshot.png"))
    assert not browser.find_elements(By.CSS_SELECTOR, BAD)


def test_app_renders_in_a_real_browser(server, browser):
    out = ROOT / "artifacts"
    out.mkdir(exist_ok=True)
    _soft_labels_render(server, browser, out)
    _t_slider_moves_the_heading(browser)
    _heatmap_fills(browser, out)
    _compare_draws_soft_label_charts(browser, out)
    _methods_table_fits(browser, out)
    _beta_slider_redraws(browser, out)


def _playground_pictures(driver) -> list[str]:
    """The src of the Playground's four pictures (teacher, scratch, distilled, soft labels) on the visible tab."""
    from selenium.webdriver.common.by import By

    return [i.get_attribute("src") for i in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img')
            if i.is_displayed()][:4]


def test_playground_slider_redraws_the_boundary(server, browser):
    """The first tab: moving its alpha slider retrains the students and draws a new distilled boundary."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server["url"])
    wait = WebDriverWait(browser, WAIT_S, ignored_exceptions=_stale())
    wait.until(lambda d: len(_playground_pictures(d)) == 4)
    before = _playground_pictures(browser)

    def alpha_slider(driver):
        for box in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSlider"]'):
            if box.is_displayed() and box.text.startswith("alpha, the teacher's weight"):
                return box.find_element(By.CSS_SELECTOR, 'input[type="range"]')
        return False

    slider = wait.until(alpha_slider)
    browser.execute_script("arguments[0].focus()", slider)
    start = time.monotonic()
    ActionChains(browser).send_keys(Keys.ARROW_LEFT).perform()  # alpha 0.9 -> 0.8
    wait.until(lambda d: len(_playground_pictures(d)) == 4 and _playground_pictures(d)[2] != before[2])
    print(f"Playground: alpha slider step -> new distilled boundary in {time.monotonic() - start:.2f} s")
    after = _playground_pictures(browser)
    assert after[0] == before[0]  # the teacher is cached per data set and noise: the same picture
    assert "alpha=0.8" in browser.current_url  # the URL follows the slider
    time.sleep(1)
    errors = [e.text for e in browser.find_elements(By.CSS_SELECTOR, BAD)]
    assert not errors, errors
