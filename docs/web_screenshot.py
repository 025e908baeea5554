"""The README's ``osir web`` screenshot (``docs/web_demo.png``), made from trained weights:

    python docs/web_screenshot.py --weights experiments/demo_sr_x4/models/net_g_ema_4000.safetensors \\
        -o docs/web_demo.png

serves the page locally, uploads a held-out photo of the SR demo (scikit-image's ``coffee``, a 256x256 crop
downscaled x4 with PIL's bicubic, as the demo's validation makes its LQ), restores it and saves the page in
headless Chromium (Debian's chromium + chromium-driver through selenium, as ``tests/test_web.py``).
"""
from __future__ import annotations

import argparse
import socket
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def held_out_lq(scale: int = 4) -> np.ndarray:
    import skimage.data
    crop = skimage.data.coffee()[100:356, 150:406]
    return np.asarray(Image.fromarray(crop).resize((256 // scale, 256 // scale), Image.BICUBIC))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="trained weights (the SR demo's net_g_ema_*.safetensors)")
    parser.add_argument("-o", "--output", default="docs/web_demo.png")
    args = parser.parse_args(argv)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    from osir.web import build_app

    app = build_app([Path(args.weights)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            photo = Path(tmp) / "coffee_x4_lq.png"
            Image.fromarray(held_out_lq()).save(photo)
            driver.get(url)
            wait = WebDriverWait(driver, 120)
            upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#input-image input[type=file]")))
            upload.send_keys(str(photo))
            wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#input-image img")))
            driver.find_element(By.CSS_SELECTOR, "#restore-btn").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#slider img")) == 2)
            wait.until(lambda d: "→" in d.find_element(By.CSS_SELECTOR, "#status").text)
            driver.execute_script("window.scrollTo(0, 0)")
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.output))
            print(f"wrote {args.output}: {' '.join(driver.find_element(By.CSS_SELECTOR, '#status').text.split())}")
    finally:
        driver.quit()
        app.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
