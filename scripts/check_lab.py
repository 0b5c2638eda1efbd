"""Open notebook 02 in a real JupyterLab (headless Chromium), run it, move the T slider, screenshot.

Manual check that lessons render and the ipywidgets slider works: `make check-lab`.
Works on a temporary copy of notebooks/, so JupyterLab's autosave never dirties the repo.
Needs Debian's chromium + chromium-driver (scripts/system-deps.sh installs them).
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="kd-lab-"))
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    port = free_port()
    env = {**os.environ, "KD_QUICK": os.environ.get("KD_QUICK", "1")}
    lab = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
                            "--ServerApp.token=", "--ServerApp.password=", "--allow-root",
                            f"--ServerApp.root_dir={work}"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--window-size=1400,1800", f"--user-data-dir={work / 'chrome'}"):
        opts.add_argument(arg)
    opts.binary_location = "/usr/bin/chromium"
    driver = None
    try:
        time.sleep(5)
        driver = webdriver.Chrome(service=webdriver.ChromeService("/usr/bin/chromedriver"), options=opts)
        driver.get(f"http://127.0.0.1:{port}/lab/tree/notebooks/02_temperature.ipynb")
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"))
        time.sleep(3)
        driver.find_element(By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']").click()
        driver.find_element(By.XPATH, "//div[contains(@class,'lm-Menu-itemLabel')"
                                      " and starts-with(text(),'Run All Cells')]").click()
        WebDriverWait(driver, 300).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".widget-hslider"))
        slider = driver.find_elements(By.CSS_SELECTOR, ".widget-hslider")[0]
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", slider)
        readout = lambda: driver.find_elements(By.CSS_SELECTOR, ".widget-readout")[0].text  # noqa: E731
        before = readout()
        handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
        handle.click()
        for _ in range(40):
            handle.send_keys(Keys.ARROW_RIGHT)
        time.sleep(8)
        after = readout()
        OUT.mkdir(exist_ok=True)
        driver.save_screenshot(str(OUT / "lab_notebook02.png"))
        errors = driver.find_elements(By.CSS_SELECTOR, "[data-mime-type='application/vnd.jupyter.stderr']")
        print(f"slider readout {before} -> {after}; stderr outputs: {len(errors)}; "
              f"screenshot {OUT / 'lab_notebook02.png'}")
        return 0 if before != after and not errors else 1
    finally:
        if driver is not None:
            driver.quit()
        lab.terminate()
        lab.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
