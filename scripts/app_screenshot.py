"""Screenshot of the classroom app in headless Chromium (quick mode), for the rendered course's landing page.

`python scripts/app_screenshot.py [PNG]` (default artifacts/app_screenshot.png, which the browser test
also writes). Starts `streamlit run app.py` on a free port, waits for the soft-label panel, saves the
picture, stops the server. Needs Debian's chromium + chromium-driver (`make system-deps`); exits 1 without.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "artifacts" / "app_screenshot.png"
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        print(f"{CHROMIUM} or {CHROMEDRIVER} missing: run `make system-deps`", file=sys.stderr)
        return 1
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = Path(tempfile.mkdtemp(prefix="kd-shot-"))
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
                               "true", "--server.port", str(port), "--server.address", "127.0.0.1",
                               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                              cwd=ROOT, env={**os.environ, "KD_QUICK": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = None
    try:
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1800", f"--user-data-dir={work / 'profile'}"):
            opts.add_argument(arg)
        driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=opts)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.3)
        driver.get(f"http://127.0.0.1:{port}")
        WebDriverWait(driver, 300).until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]'))
        time.sleep(2)  # let the charts finish drawing
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
        print(f"wrote {out}")
        return 0
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
