"""Take the screenshot of the server's browser page (``docs/ui.png``) with a ranking shown.

    python scripts/ui_screenshot.py MODEL [--dtype fp32] [--out docs/ui.png]

Starts ``qwen3-rerank serve`` on MODEL (a folder, e.g. the tiny model of
``scripts/make_tiny_model.py``), opens ``/`` in the system's headless Chromium (``apt-get install
chromium chromium-driver``; needs the ``selenium`` package of the ``test`` extra), types a query
and a few documents, turns chunking on so the best chunk is highlighted, ranks, and saves the page.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server_child import ServerChild  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUERY = "what do cats eat"
DOCUMENTS = [
    "Cats are carnivores: they need meat, and most of their diet should be animal protein.",
    "The stock market closed higher today after a quiet week of trading.",
    "Kittens drink their mother's milk at first. From about four weeks they start on wet food, "
    "then dry food; adult cats often cannot digest cow's milk well.",
    "Paris is the capital of France.",
    "Dry cat food contains protein, fat and some carbohydrates.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "ui.png")
    parser.add_argument("--width", type=int, default=1100)
    args = parser.parse_args(argv)

    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        raise SystemExit("needs chromium and chromedriver on PATH (apt-get install chromium chromium-driver)")
    server = ServerChild(args.model, args.dtype)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={args.width},900")
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    try:
        driver.get(server.url + "/")
        driver.find_element(By.ID, "query").send_keys(QUERY)
        driver.find_element(By.ID, "documents").send_keys("\n".join(DOCUMENTS))
        driver.find_element(By.ID, "chunking").click()
        for field, value in (("chunk-tokens", "16"), ("chunk-overlap", "4")):
            element = driver.find_element(By.ID, field)
            element.clear()
            element.send_keys(value)
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, 120, poll_frequency=0.05).until(
            lambda d: d.find_element(By.ID, "results").is_displayed() or d.find_element(By.ID, "error").is_displayed()
        )
        if driver.find_element(By.ID, "error").is_displayed():
            raise SystemExit(f"the page shows an error: {driver.find_element(By.ID, 'error').text}")
        # The whole page in one picture: a viewport as tall as the page (a window cannot grow past the screen).
        height = driver.execute_script("return document.documentElement.scrollHeight")
        metrics = {"width": args.width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    finally:
        driver.quit()
        server.stop()
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
