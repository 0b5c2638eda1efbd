"""`make site` in quick mode, opened in the real headless Chromium: every lesson page loads, shows its figures
and no error output, says its mode, and the landing page lists the lessons in course order with the app's picture;
no page loads anything from a CDN, and a lesson's equations are typeset with the network blocked.

Slow. In a session that also runs the notebooks under nbval (`make test`), this module runs after them and the site
renders nbval's executions (scripts/site_executed.py, registered by conftest.py); run alone, or for a notebook
nbval did not run here, the builder executes the lesson itself. Skips without Chromium.
"""
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kd_lessons.course import NOTEBOOK_GLOB

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = "kd_site_capture"  # scripts/site_executed.py's PLUGIN
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
LESSONS = sorted(p.stem for p in (ROOT / "notebooks").glob(NOTEBOOK_GLOB))
# Lessons that draw no figure (so their pages cannot show one); every other lesson must show at least one.
NO_FIGURES = {"03_kl_loss": "tables and asserts only", "06_cifar10_gpu": "skips, saying why, without CIFAR-10",
              "08_interview_questions": "a question bank", "09_coding_exercises": "exercises with checks"}

if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
    pytest.skip(f"{CHROMIUM} / {CHROMEDRIVER} not installed; run `make system-deps`", allow_module_level=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("site")
    capture = request.config.pluginmanager.get_plugin(CAPTURE)
    ran = {name for name, mode in (capture.saved if capture else {}).items() if mode == "quick"}
    executed = ["--executed", str(capture.folder)] if ran else []
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_site.py"),
                           "--mode", "quick", "--out", str(out), *executed],
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, (f"build_site.py exited {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    report = json.loads((out / "build.json").read_text())
    reused = {r["notebook"] for r in report["lessons"] if r["ran"] == "reused"}
    print(f"site built in quick mode in {time.perf_counter() - start:.0f} s ({len(reused)} lessons rendered from "
          f"nbval's runs, {len(report['lessons']) - len(reused)} executed in {report['execute_seconds']:.0f} s)")
    changed = {r["notebook"] for r in report["lessons"] if r["why"] == "the notebook changed since it was run"}
    assert reused == ran - changed, f"nbval ran {sorted(ran)} in this session, the site reused {sorted(reused)}"
    return {"html": out / "html", "report": report}


def _chromium(tmp_path_factory, profile: str, *extra: str):
    """Headless Chromium through chromedriver, with its own profile folder and any extra switches."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path_factory.mktemp(profile)}", *extra):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = _chromium(tmp_path_factory, "chrome", "--window-size=1400,1800")
    yield driver
    driver.quit()


def _open(browser, page: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert page.is_file(), f"{page.name} was not built"
    browser.get(page.as_uri())
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    return By


def test_landing_page_lists_the_lessons_in_order_with_the_app_screenshot(site, browser):
    By = _open(browser, site["html"] / "index.html")
    assert "quick mode" in browser.find_element(By.CSS_SELECTOR, ".announcement").text
    hrefs = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "article .toctree-wrapper a")]
    pages = [Path(h.split("#")[0]).stem for h in hrefs]
    assert pages == LESSONS + (["results"] if (ROOT / "docs" / "results.md").is_file() else []) + ["references"], pages
    shots = [i for i in browser.find_elements(By.CSS_SELECTOR, "article img")
             if "app_screenshot" in i.get_attribute("src")]
    assert shots and browser.execute_script("return arguments[0].naturalWidth", shots[0]) > 400, "no app screenshot"


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_lesson_page_shows_its_figures_and_no_error(site, browser, lesson):
    By = _open(browser, site["html"] / f"{lesson}.html")
    assert browser.find_element(By.CSS_SELECTOR, "article h1").text.strip()
    assert "Executed in quick mode" in browser.find_element(By.CSS_SELECTOR, ".announcement").text
    text = browser.find_element(By.CSS_SELECTOR, "article").text
    tracebacks = browser.find_elements(By.CSS_SELECTOR, ".cell_output .traceback, .cell_output .output.error")
    assert not tracebacks and "Traceback (most recent call last)" not in text, f"{lesson} shows an error"
    figures = browser.find_elements(By.CSS_SELECTOR, ".cell_output img, .cell_output svg")
    loaded = [f for f in figures if f.tag_name == "svg" or browser.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", f)]
    made = next(r["figures"] for r in site["report"]["lessons"] if r["notebook"] == f"{lesson}.ipynb")
    assert len(loaded) >= made, f"{lesson}: the notebook made {made} figures, the page shows {len(loaded)}"
    if lesson not in NO_FIGURES:
        assert loaded, f"{lesson}: no figure on its page"


def test_references_page_is_there_with_the_anchors_the_lessons_link_to(site, browser):
    By = _open(browser, site["html"] / "references.html")
    assert browser.find_element(By.CSS_SELECTOR, "article h1").text.startswith("References")
    assert browser.find_elements(By.ID, "source-000") and browser.find_elements(By.ID, "sources")


# A resource (not a link) from another host: script, style, font, image or frame by URL, or a known CDN anywhere.
REMOTE = re.compile(r"""<(?:script|img|iframe|source|embed)\b[^>]*\ssrc=["']?(?:https?:)?//"""
                    r"""|<link\b[^>]*\shref=["']?(?:https?:)?//|url\(["']?(?:https?:)?//"""
                    r"|cdn\.jsdelivr|unpkg\.com|cdnjs\.|googleapis\.com|polyfill\.io|require\.js", re.I)


def test_no_page_loads_anything_from_a_cdn(site):
    pages = sorted(site["html"].rglob("*.html"))
    remote = {p.name: REMOTE.findall(p.read_text(encoding="utf-8")) for p in pages}
    assert pages and not {name: hits for name, hits in remote.items() if hits}, remote
    assert (site["html"] / "_static" / "mathjax" / "tex-mml-chtml.js").is_file(), "MathJax was not bundled"


@pytest.fixture(scope="module")
def offline_browser(tmp_path_factory):
    """Chromium that can reach no network: every host name fails to resolve and every proxy goes nowhere."""
    driver = _chromium(tmp_path_factory, "chrome-offline", "--host-resolver-rules=MAP * ~NOTFOUND",
                       "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>")
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def test_equations_are_typeset_offline(site, offline_browser):
    from selenium.webdriver.support.ui import WebDriverWait

    with pytest.raises(Exception, match="ERR_"):  # the browser really is offline
        offline_browser.get("https://www.example.com/")
    By = _open(offline_browser, site["html"] / "03_kl_loss.html")
    WebDriverWait(offline_browser, 30).until(
        lambda d: d.execute_script("return !!(window.MathJax && MathJax.startup && MathJax.startup.promise)"),
        "MathJax did not load")
    state = offline_browser.execute_async_script("""const done = arguments[arguments.length - 1];
        MathJax.startup.promise.then(() => document.fonts.ready).then(() => done({
          math: document.querySelectorAll('article .math').length,
          untypeset: [...document.querySelectorAll('article .math')].filter(e => !e.querySelector('mjx-container'))
                     .map(e => e.textContent.slice(0, 80)),
          font: [...document.fonts].filter(f => f.family === 'MJXTEX').map(f => f.status)}),
          e => done({error: String(e)}));""")
    assert state.get("math") and not state["untypeset"], state
    assert state["font"] == ["loaded"], f"MathJax's TeX font did not load from the site: {state}"
    text = offline_browser.find_element(By.CSS_SELECTOR, "article").text
    assert "$$" not in text and "\\frac" not in text, "raw TeX is visible on the page"
